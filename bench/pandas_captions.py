"""The baseline for bench/tables: the caption build written plainly in pandas.

Same rules as the DuckDB build. Each token gets two rows:

- ``template`` (the NFT1000 authors', preferred=false): "A picture of
  {collection}, containing" then "{value} {trait_type}" per trait in order
  ("{value}" alone when the trait type is ""); with no traits "A picture of
  {collection}".
- ours (preferred=true): ``visual_template``, the same over the visual traits
  only, when there are any; else ``name_description``, "A picture of
  {collection}," then "{name}." and the description, when either is set; else
  ``collection``, "A picture of {collection}".

``clip_tokens`` is the number of open_clip CLIP tokens of the whole caption,
start and end included, before truncation to 77; ``traits_kept`` counts the
trait segments that end within the first 75 content tokens.

Written as a pandas user would: one DataFrame, traits exploded to one row per
trait, string columns concatenated, a ``map`` of the tokenizer over segment
texts, ``groupby`` for running totals. A caption's count is the sum of its
segments' counts: the tokenizer never makes a piece across a space, so this is
the whole caption's count (the tests check it against ``open_clip.tokenize``),
and the traits_kept rule needs the segment counts anyway. Caching: the
tokenizer's own per-word BPE cache, plus an ``lru_cache`` on segment texts
(trait segments, heads and descriptions repeat across tokens; names mostly do
not). pyarrow is not a dependency, so DuckDB reads the parquet into pandas and
writes the result back; all the work in between is pandas.

    python -m bench.pandas_captions TOKENS OUT.parquet   # prints JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from open_clip.tokenizer import SimpleTokenizer

from bench.measure import Meter
from tasks.core.sql import quote

CONTEXT_LENGTH = 77  # CLIP's, start and end tokens included
CONTENT_TOKENS = CONTEXT_LENGTH - 2
COLUMNS = [
    "collection",
    "contract",
    "token_id",
    "method",
    "preferred",
    "caption",
    "clip_tokens",
    "truncated",
    "traits_total",
    "traits_kept",
]


@cache
def _tokenizer() -> SimpleTokenizer:
    return SimpleTokenizer()


@lru_cache(maxsize=1 << 20)
def segment_tokens(segment: str) -> int:
    """Content tokens of one segment (tokens never span the space between segments)."""
    return len(_tokenizer().encode(segment))


def read_tokens(path: Path) -> pd.DataFrame:
    """The tokens table's caption columns from one parquet file or a folder of them."""
    source = str(path / "**" / "*.parquet") if path.is_dir() else str(path)
    with duckdb.connect() as con:
        return (
            con.read_parquet(source)
            .project("collection, contract, token_id, name, description, traits")
            .df()
        )


def build_captions(tokens: pd.DataFrame) -> pd.DataFrame:
    """Two caption rows per token (template, then ours), in the tokens' order."""
    tokens = tokens.reset_index(drop=True)
    traits = _exploded_traits(tokens)
    template = _trait_captions(tokens, traits, "template")
    visual = _trait_captions(tokens, traits[traits["visual"]], "visual_template")
    ours = _name_description(tokens)
    bare = ours["caption"].isna()
    ours.loc[bare] = _collection_only(tokens).loc[bare]
    has_visual = visual["traits_total"] > 0
    ours.loc[has_visual] = visual.loc[has_visual]
    ids = tokens[["collection", "contract", "token_id"]]
    out = pd.concat(
        [ids.join(template.assign(preferred=False)), ids.join(ours.assign(preferred=True))]
    )
    out = out.sort_index(kind="stable")
    out["clip_tokens"] = out["content_tokens"].astype("int64") + 2
    out["truncated"] = out["clip_tokens"] > CONTEXT_LENGTH
    return out[COLUMNS].reset_index(drop=True)


def _exploded_traits(tokens: pd.DataFrame) -> pd.DataFrame:
    """One row per trait, indexed by its token's row, in trait order, with its segment."""
    exploded = tokens["traits"].explode().dropna()
    traits = pd.DataFrame(exploded.tolist(), index=exploded.index)
    if traits.empty:
        traits = pd.DataFrame(
            {"trait_type": [], "value": [], "visual": []}, index=pd.Index([], dtype="int64")
        )
    traits["visual"] = traits["visual"].astype(bool)
    traits["segment"] = (traits["value"] + " " + traits["trait_type"]).where(
        traits["trait_type"] != "", traits["value"]
    )
    traits["tokens"] = traits["segment"].map(segment_tokens).astype("int64")
    return traits


def _trait_captions(tokens: pd.DataFrame, traits: pd.DataFrame, method: str) -> pd.DataFrame:
    """The template over the given traits; tokens without any get the collection alone."""
    head = "A picture of " + tokens["collection"] + ", containing"
    head_tokens = head.map(segment_tokens)
    by_token = traits.groupby(level=0)
    ends = by_token["tokens"].cumsum() + head_tokens.loc[traits.index].to_numpy()
    kept = (ends <= CONTENT_TOKENS).groupby(level=0).sum()
    # Summing " "-prefixed strings joins them; agg(" ".join) is 8x slower (a Python call per group).
    body = (" " + traits["segment"]).groupby(level=0).sum()
    frame = pd.DataFrame(
        {
            "method": method,
            "caption": head + body.reindex(tokens.index),
            "content_tokens": head_tokens + by_token["tokens"].sum().reindex(tokens.index),
            "traits_total": by_token.size().reindex(tokens.index, fill_value=0).astype("int64"),
            "traits_kept": kept.reindex(tokens.index, fill_value=0).astype("int64"),
        },
        index=tokens.index,
    )
    bare = frame["traits_total"] == 0
    columns = ["caption", "content_tokens"]
    frame.loc[bare, columns] = _collection_only(tokens).loc[bare, columns]
    return frame


def _name_description(tokens: pd.DataFrame) -> pd.DataFrame:
    """The name and description caption; caption is NA where the token has neither."""
    head = "A picture of " + tokens["collection"] + ","
    name = (tokens["name"].fillna("") + ".").where(tokens["name"].fillna("") != "", "")
    description = tokens["description"].fillna("")
    caption = (
        head + (" " + name).where(name != "", "") + (" " + description).where(description != "", "")
    )
    parts = [head, name, description]  # "" counts no tokens
    return pd.DataFrame(
        {
            "method": "name_description",
            "caption": caption.where((name != "") | (description != "")),
            "content_tokens": sum(part.map(segment_tokens) for part in parts),
            "traits_total": 0,
            "traits_kept": 0,
        },
        index=tokens.index,
    )


def _collection_only(tokens: pd.DataFrame) -> pd.DataFrame:
    caption = "A picture of " + tokens["collection"]
    return pd.DataFrame(
        {
            "method": "collection",
            "caption": caption,
            "content_tokens": caption.map(segment_tokens),
            "traits_total": 0,
            "traits_kept": 0,
        },
        index=tokens.index,
    )


def write_captions(captions: pd.DataFrame, path: Path) -> None:
    """Write the captions as parquet (through DuckDB, as there is no pyarrow)."""
    with duckdb.connect() as con:
        con.register("captions", captions)
        con.execute(f"COPY captions TO {quote(str(path))} (FORMAT parquet)")


def run(tokens_path: Path, out_path: Path) -> dict[str, Any]:
    """Read, build and write once; the timings and this process's peak RSS."""
    meter = Meter()
    _tokenizer()
    load_s = meter.lap()
    tokens = read_tokens(tokens_path)
    read_s = meter.lap()
    captions = build_captions(tokens)
    build_s = meter.lap()
    write_captions(captions, out_path)
    write_s = meter.lap()
    return {
        "tokens": len(tokens),
        "captions": len(captions),
        "tokenizer_load_seconds": round(load_s, 3),
        "read_seconds": round(read_s, 3),
        "build_seconds": round(build_s, 3),
        "write_seconds": round(write_s, 3),
        "tokens_per_s": round(len(tokens) / (read_s + build_s + write_s)),
        "peak_rss_mib": meter.peak_rss_mib(),
    }


def command(tokens_path: Path, out_path: Path) -> list[str]:
    """The command line that runs the baseline alone in a fresh process.

    Run it with subprocess and read the child's peak RSS from the printed JSON's
    ``peak_rss_mib`` (or ``bench.measure.Meter.children_peak_rss_mib``); both include
    the open_clip/torch import.
    """
    return [sys.executable, "-m", "bench.pandas_captions", str(tokens_path), str(out_path)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tokens", type=Path, help="a tokens parquet file or folder")
    parser.add_argument("out", type=Path, help="the captions parquet to write")
    args = parser.parse_args()
    print(json.dumps(run(args.tokens, args.out)))


if __name__ == "__main__":
    main()
