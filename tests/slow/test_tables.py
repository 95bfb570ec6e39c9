"""The dataset tables (tasks.tables.build) built from tokens files on local disk, no S3.

Real Moonbirds and Loot metadata are checked against counts taken straight from
their JSON; adversarial metadata against open_clip's own tokenizer, text by
text; hand-made tokens cover the edge cases of captions, collections and reruns.
"""

from __future__ import annotations

import base64
import json
import random
import re
import tarfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from open_clip.tokenizer import SimpleTokenizer

from infra.stack import LOOT_ARCHIVE, MOONBIRDS_ARCHIVE
from tasks.core import duck
from tasks.core.folders import LocalFolder
from tasks.export.items import export_items
from tasks.tables.build import TablesResult, build_tables
from tasks.tables.splits import Partitioning, load_split_rules, split_for
from tasks.tables.tokens import TokenRecord, write_parquet
from tasks.train.masks import draw as masking
from tests.data.token_rows import Row, parquet_rows, record

MOONBIRDS = "0x23581767a106ae21c074b2276d25e5c3e136a68b"
LOOT = "0xff9c1b15b16263c61d017ee9f65c50e4ae0113d7"
LOOT_NAME = "Loot (for Adventurers)"
BIRDS = 300  # Moonbirds ids 0..299
BAGS = 50  # Loot ids 1..50
MINI = 100  # mini subset per collection in these builds: below the Moonbirds count
CONTEXT = 77  # CLIP's context, start and end tokens included
TABLES = ("traits", "rarity", "captions", "prompts", "splits", "collection_splits", "problems")
_MEMBER = re.compile(r"moonbirds/metadata/(\d+)\.json")

Count = Callable[[str], int]


# Reading the real data.


@pytest.fixture(scope="module")
def moonbirds() -> dict[int, bytes]:
    """Metadata bytes of the first BIRDS Moonbirds, as the collection served them."""
    found: dict[int, bytes] = {}
    with tarfile.open(MOONBIRDS_ARCHIVE, "r:gz") as tar:
        for member in tar:
            match = _MEMBER.fullmatch(member.name)
            if match and int(match[1]) < BIRDS:
                data = tar.extractfile(member)
                assert data is not None
                found[int(match[1])] = data.read()
    assert len(found) == BIRDS
    return found


@pytest.fixture(scope="module")
def loot() -> dict[int, bytes]:
    """Metadata bytes of the first BAGS Loot bags, decoded from their on-chain data: URIs."""
    found: dict[int, bytes] = {}
    with tarfile.open(LOOT_ARCHIVE, "r:gz") as tar:
        lines = tar.extractfile("loot/tokenURI.jsonl")
        assert lines is not None
        while len(found) < BAGS:
            entry = json.loads(lines.readline())
            found[int(entry["tokenId"])] = base64.b64decode(entry["tokenURI"].split(",", 1)[1])
    return found


@pytest.fixture(scope="module")
def partitioning() -> Partitioning:
    return load_split_rules(None, ())  # NFT1000's split, from the built-in registry


@pytest.fixture(scope="module")
def count() -> Count:
    """CLIP tokens of a text as open_clip reads it: its BPE tokens plus start and end."""
    tokenizer = SimpleTokenizer()
    return lambda text: len(tokenizer.encode(text)) + 2


# Building tables.


def _write_tokens(folder: Path, blocks: dict[str, list[TokenRecord]]) -> list[str]:
    """One tokens parquet file per named block, as build_block writes one per manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, records in blocks.items():
        path = folder / f"{name}.parquet"
        assert write_parquet(records, path) == len(records)
        paths.append(str(path))
    return paths


def _build(
    tokens: str | list[str],
    out: Path,
    partitioning: Partitioning,
    con: duckdb.DuckDBPyConnection | None = None,
) -> TablesResult:
    con = con or duck.connect()
    return build_tables(
        con, tokens, LocalFolder(out), partitioning, seed=7, mini_per_collection=MINI
    )


def _dashboard(tables: Path, contract: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tables / "dashboards" / f"{contract}.json").read_text())
    return data


@dataclass(frozen=True)
class Built:
    tokens: Path  # folder of tokens files
    tables: Path
    result: TablesResult


@pytest.fixture(scope="module")
def real(
    tmp_path_factory: pytest.TempPathFactory,
    moonbirds: dict[int, bytes],
    loot: dict[int, bytes],
    partitioning: Partitioning,
) -> Built:
    """Tables of the real Moonbirds and Loot tokens, from three tokens files."""
    root = tmp_path_factory.mktemp("real")
    birds = [record("Moonbirds", MOONBIRDS, i, meta) for i, meta in sorted(moonbirds.items())]
    bags = [record(LOOT_NAME, LOOT, i, meta) for i, meta in sorted(loot.items())]
    files = _write_tokens(root / "tokens", {"mb-a": birds[:150], "mb-b": birds[150:], "loot": bags})
    result = _build(files, root / "tables", partitioning)
    return Built(root / "tokens", root / "tables", result)


# What the captions and prompts should be (the rules at the top of sql/tables/texts.sql).


@dataclass(frozen=True)
class Text:
    """An expected caption or prompt: a head, then the trait texts (or a body) after it."""

    kind: str  # caption or prompt
    method: str
    preferred: bool
    head: str
    body: str
    traits: tuple[str, ...] = ()  # the trait texts the body joins, in order
    separator: str = " "

    @property
    def text(self) -> str:
        return f"{self.head} {self.body}" if self.body else self.head

    def through(self, n: int) -> str:
        """The text up to and including the n-th trait."""
        return f"{self.head} {self.separator.join(self.traits[:n])}"


@dataclass(frozen=True)
class Token:
    collection: str
    contract: str
    token_id: str
    name: str | None
    description: str | None
    traits: tuple[tuple[str, str, bool], ...]  # (trait_type, value, visual) in metadata order


def _trait_text(trait_type: str, value: str) -> str:
    return f"{value} {trait_type}" if trait_type else value


def _caption(method: str, preferred: bool, collection: str, traits: list[str]) -> Text:
    head = f"A picture of {collection}" + (", containing" if traits else "")
    return Text("caption", method, preferred, head, " ".join(traits), tuple(traits))


def _prompt(method: str, preferred: bool, collection: str, traits: list[str]) -> Text:
    head = collection + ("," if traits else "")
    return Text("prompt", method, preferred, head, ", ".join(traits), tuple(traits), ", ")


def expected_texts(token: Token) -> list[Text]:
    """The authors' texts (every trait) and ours (visual traits, else name, else collection)."""
    c = token.collection
    every = [_trait_text(t, v) for t, v, _ in token.traits]
    visual = [_trait_text(t, v) for t, v, shown in token.traits if shown]
    texts = [_caption("template", False, c, every), _prompt("tags", False, c, every)]
    if visual:
        return [
            *texts,
            _caption("visual_template", True, c, visual),
            _prompt("visual_tags", True, c, visual),
        ]
    if token.name or token.description:
        named = f"{token.name}." if token.name else None
        body = " ".join(part for part in (named, token.description) if part)
        texts.append(Text("caption", "name_description", True, f"A picture of {c},", body))
    else:
        texts.append(Text("caption", "collection", True, f"A picture of {c}", ""))
    if token.name:
        texts.append(Text("prompt", "name", True, f"{c},", token.name))
    else:
        texts.append(Text("prompt", "collection", True, c, ""))
    return texts


def expected_counts(text: Text, count: Count) -> dict[str, Any]:
    """clip_tokens, truncated, traits_total and traits_kept, straight from the tokenizer.

    A trait is kept when the text through its own words fits CLIP's context. A longer
    text never takes fewer tokens, so only cut texts are rebuilt, trait by trait, up
    to the first trait that does not fit.
    """
    tokens = count(text.text)
    total = len(text.traits)
    kept = total
    if tokens > CONTEXT:
        kept = 0
        while kept < total and count(text.through(kept + 1)) <= CONTEXT:
            kept += 1
    return {
        "clip_tokens": tokens,
        "truncated": tokens > CONTEXT,
        "traits_total": total,
        "traits_kept": kept,
    }


def _tokens(tokens: Path) -> list[Token]:
    """The described tokens of a tokens folder, with their cleaned traits."""
    found = []
    for row in parquet_rows(tokens / "*.parquet", "metadata_key IS NOT NULL"):
        traits = tuple((t["trait_type"], t["value"], t["visual"]) for t in row["traits"])
        found.append(
            Token(
                row["collection"], row["contract"], row["token_id"],
                row["name"], row["description"], traits,
            )
        )  # fmt: skip
    return found


def _texts_by_token(tables: Path) -> dict[tuple[str, str], list[Row]]:
    """Caption and prompt rows per (contract, token_id), each with its kind and text."""
    out: dict[tuple[str, str], list[Row]] = {}
    for kind in ("caption", "prompt"):
        for row in parquet_rows(tables / f"{kind}s.parquet"):
            row["kind"], row["text"] = kind, row.pop(kind)
            out.setdefault((row["contract"], row["token_id"]), []).append(row)
    return out


def check_texts(built: Built, count: Count) -> list[Row]:
    """Every caption and prompt row is the expected text with exact counts; all rows."""
    rows = _texts_by_token(built.tables)
    tokens = _tokens(built.tokens)
    assert len(rows) == len(tokens)
    checked = []
    for token in tokens:
        found = {(r["kind"], r["method"]): r for r in rows[(token.contract, token.token_id)]}
        wanted = expected_texts(token)
        assert set(found) == {(t.kind, t.method) for t in wanted}, token
        for text in wanted:
            row = found[(text.kind, text.method)]
            assert (row["text"], row["preferred"]) == (text.text, text.preferred)
            got = {k: row[k] for k in ("clip_tokens", "truncated", "traits_total", "traits_kept")}
            assert got == expected_counts(text, count), (text.text, token)
            checked.append(row)
    return checked


# Real Moonbirds and Loot.


def _attributes(metadata: bytes) -> list[tuple[str, str]]:
    return [(a["trait_type"], a["value"]) for a in json.loads(metadata)["attributes"]]


def _preferred(tables: Path, kind: str, contract: str) -> dict[str, Row]:
    """A collection's preferred captions or prompts by token id."""
    rows = parquet_rows(tables / f"{kind}.parquet", f"preferred AND contract = '{contract}'")
    return {r["token_id"]: r for r in rows}


def test_moonbirds_captions_are_their_traits_in_metadata_order(
    real: Built, moonbirds: dict[int, bytes]
) -> None:
    captions = _preferred(real.tables, "captions", MOONBIRDS)
    prompts = _preferred(real.tables, "prompts", MOONBIRDS)
    for token_id, metadata in moonbirds.items():
        traits = [f"{value} {trait_type}" for trait_type, value in _attributes(metadata)]
        caption = captions[str(token_id)]
        assert caption["method"] == "visual_template"
        assert caption["caption"] == "A picture of Moonbirds, containing " + " ".join(traits)
        assert prompts[str(token_id)]["method"] == "visual_tags"
        assert prompts[str(token_id)]["prompt"] == "Moonbirds, " + ", ".join(traits)


def test_loot_captions_are_its_name_and_description(real: Built, loot: dict[int, bytes]) -> None:
    captions = _preferred(real.tables, "captions", LOOT)
    prompts = _preferred(real.tables, "prompts", LOOT)
    for token_id, metadata in loot.items():
        bag = json.loads(metadata)
        caption = captions[str(token_id)]
        assert caption["method"] == "name_description"
        assert bag["description"] in caption["caption"]
        assert (
            caption["caption"] == f"A picture of {LOOT_NAME}, {bag['name']}. {bag['description']}"
        )
        assert (prompts[str(token_id)]["method"], prompts[str(token_id)]["prompt"]) == (
            "name", f"{LOOT_NAME}, {bag['name']}"
        )  # fmt: skip


def test_real_token_counts_match_the_tokenizer(real: Built, count: Count) -> None:
    rows = check_texts(real, count)
    assert len(rows) == 4 * (BIRDS + BAGS)
    # Loot has no traits: its authors' caption is the bare head, still counted.
    bare = [r for r in rows if r["token_id"] == "1" and r["method"] == "template"]
    assert [(r["text"], r["clip_tokens"]) for r in bare if r["contract"] == LOOT] == [
        (f"A picture of {LOOT_NAME}", count(f"A picture of {LOOT_NAME}"))
    ]


def test_dashboards_count_what_the_raw_json_holds(
    real: Built, moonbirds: dict[int, bytes], loot: dict[int, bytes]
) -> None:
    counts = Counter(pair for metadata in moonbirds.values() for pair in _attributes(metadata))
    expected: dict[str, dict[str, dict[str, float]]] = {}
    for (trait_type, value), n in counts.items():
        expected.setdefault(trait_type, {})[value] = {"count": n, "frequency": n / BIRDS}
    birds = _dashboard(real.tables, MOONBIRDS)
    assert (birds["collection"], birds["contract"], birds["split"]) == (
        "Moonbirds", MOONBIRDS, "train"
    )  # fmt: skip
    assert birds["tokens"] == BIRDS
    assert birds["traits"] == expected
    traits = parquet_rows(real.tables / "traits.parquet", f"contract = '{MOONBIRDS}'")
    assert {(r["trait_type"], r["value"]): r["count"] for r in traits} == counts

    bags = _dashboard(real.tables, LOOT)
    assert (bags["tokens"], bags["traits"]) == (len(loot), {})
    assert sorted(p.name for p in (real.tables / "dashboards").iterdir()) == sorted(
        [f"{MOONBIRDS}.json", f"{LOOT}.json"]
    )


def _rarity_scores(attributes: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    """rarity.tools' score: per trait type, 1 / frequency of the value (lacking it is a value)."""
    tokens = len(attributes)
    values = Counter(pair for traits in attributes.values() for pair in set(traits))
    holders = Counter(t for traits in attributes.values() for t in {t for t, _ in traits})
    scores = {}
    for token_id, traits in attributes.items():
        had = dict(traits)
        scores[token_id] = sum(
            tokens / values[(t, had[t])] if t in had else tokens / (tokens - holders[t])
            for t in holders
        )
    return scores


def test_rarity_follows_rarity_tools_and_ranks_by_score(
    real: Built, moonbirds: dict[int, bytes]
) -> None:
    rows = parquet_rows(real.tables / "rarity.parquet")
    birds = {r["token_id"]: r for r in rows if r["contract"] == MOONBIRDS}
    expected = _rarity_scores({str(i): _attributes(m) for i, m in moonbirds.items()})
    assert {t: r["rarity_score"] for t, r in birds.items()} == pytest.approx(expected, rel=1e-12)
    for contract in (MOONBIRDS, LOOT):
        scores = [r["rarity_score"] for r in rows if r["contract"] == contract]
        for r in (r for r in rows if r["contract"] == contract):
            assert r["rarity_rank"] == 1 + sum(s > r["rarity_score"] for s in scores)
        top = [
            r["rarity_score"] for r in rows if r["contract"] == contract and r["rarity_rank"] == 1
        ]
        assert top and set(top) == {max(scores)}
    assert {r["rarity_score"] for r in rows if r["contract"] == LOOT} == {0.0}
    dashboard = _dashboard(real.tables, MOONBIRDS)["rarity"]
    assert dashboard == {
        t: {"score": round(r["rarity_score"], 6), "rank": r["rarity_rank"]}
        for t, r in birds.items()
    }


def test_splits_hold_every_token_once_with_a_bounded_mini(
    real: Built, partitioning: Partitioning
) -> None:
    rows = parquet_rows(real.tables / "splits.parquet")
    pairs = Counter((r["contract"], r["token_id"]) for r in rows)
    assert set(pairs.values()) == {1}
    assert set(pairs) == {(MOONBIRDS, str(i)) for i in range(BIRDS)} | {
        (LOOT, str(i)) for i in range(1, BAGS + 1)
    }
    for r in rows:
        assert r["split"] == split_for(r["collection"], partitioning)
    mini = Counter(r["contract"] for r in rows if r["in_mini"])
    assert mini == {MOONBIRDS: MINI, LOOT: BAGS}  # at most MINI per collection
    assert parquet_rows(real.tables / "collection_splits.parquet") == [
        {"collection": LOOT_NAME, "split": "train"},
        {"collection": "Moonbirds", "split": "train"},
    ]
    assert real.result.rows["splits"] == BIRDS + BAGS


# Adversarial metadata: every count checked against the tokenizer.

ASTRONAUT = "\U0001f469\u200d\U0001f680"  # an emoji joined with ZWJ
RAINBOW_FLAG = "\U0001f3f3\ufe0f\u200d\U0001f308"  # variation selector and ZWJ
FULLWIDTH = "\uff26\uff55\uff4c\uff4c"  # "Full" in fullwidth letters
WORDS = (
    "Rock!", "a,b", "&amp;", "&#49;", "&#x32;", "#1234", "#98", "007", "😀", ASTRONAUT,
    RAINBOW_FLAG, "日本語", "한국어", "MiXeD", "UPPER", "it's", "O'Neil", "co-op", FULLWIDTH,
    "x²", "…", "Σσς", "İzmir", "ﬁne", "3/10", "25%", "1e9", "(big)", "--", "$", "ñandú",
    "e\u0301", "Hat", "Red", "Gold", "laser-eyes", "?!", "a.b.c", "über", "straße", "x_y",
    # Mojibake and markup, which ftfy repairs looking at the whole text.
    "Ã¼ber", "cafÃ©", "Â", "Â©", "â€™s", "naïve", "<b>", "&amp;amp;amp;", "<", "&lt;",
)  # fmt: skip
TYPES = (
    "Eyes", "", "Rarity Score", "Token ID", "Background", "Hat & Cap", "日本", "Level",
    "generationCount", "BodyType", "Mouth!", "#", "Rock! Band", "&amp;",
)  # fmt: skip
DISPLAY = (None, None, None, "number", "boost_percentage", "date", "string")
NONE_LIKE = (None, "", "none", "N/A", "-", "null")
ODD = "Rock! &amp; Roll 日本 #7"  # a collection name that is itself adversarial


def _phrase(rng: random.Random, words: int) -> str:
    spaces = ("  " if rng.random() < 0.1 else " " for _ in range(words))
    return "".join(rng.choice(WORDS) + space for space in spaces).rstrip()


def _value(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.55:
        return _phrase(rng, rng.randint(1, 3))
    if roll < 0.65:
        return rng.randint(-5, 10**6)
    if roll < 0.7:
        return rng.random() * 100
    if roll < 0.8:
        return rng.choice(NONE_LIKE)
    if roll < 0.93:
        return _phrase(rng, rng.randint(15, 60))  # long: forces cuts, some past 256 chars
    return [_phrase(rng, 1), _phrase(rng, 2)]


def _attribute(rng: random.Random) -> dict[str, Any]:
    attribute = {"trait_type": rng.choice(TYPES), "value": _value(rng)}
    display = rng.choice(DISPLAY)
    return attribute if display is None else {**attribute, "display_type": display}


def adversarial_metadata(rng: random.Random) -> bytes:
    """One token's metadata JSON: odd names, descriptions and a few to many traits."""
    metadata: dict[str, Any] = {}
    if rng.random() < 0.6:
        metadata["name"] = rng.choice([_phrase(rng, 2), f"#{rng.randint(0, 99999)}", 42])
    if rng.random() < 0.35:
        metadata["description"] = _phrase(rng, rng.randint(1, 40))
    traits = rng.choice([0, 0, 1, 3, 6, 10, 25])
    metadata["attributes"] = [_attribute(rng) for _ in range(traits)]
    return json.dumps(metadata, ensure_ascii=rng.random() < 0.5).encode()


def test_token_counts_are_exact_on_adversarial_metadata(
    tmp_path: Path, partitioning: Partitioning, count: Count
) -> None:
    rng = random.Random(20240611)
    blocks = {
        name: [record(name, contract, i, adversarial_metadata(rng)) for i in range(150)]
        for name, contract in ((ODD, "0x" + "a" * 40), ("Plain Cats", "0x" + "b" * 40))
    }
    _write_tokens(tmp_path / "tokens", {"odd": blocks[ODD], "cats": blocks["Plain Cats"]})
    result = _build(str(tmp_path / "tokens" / "*.parquet"), tmp_path / "tables", partitioning)
    assert (result.tokens, result.described) == (300, 300)

    rows = check_texts(Built(tmp_path / "tokens", tmp_path / "tables", result), count)
    assert len(rows) == 4 * 300
    # The data reach every case the counts have: texts right at CLIP's limit and one
    # token past it, cut texts that keep some traits or none, and each of our methods.
    assert {CONTEXT, CONTEXT + 1} <= {r["clip_tokens"] for r in rows}
    assert sum(0 < r["traits_kept"] < r["traits_total"] for r in rows) >= 100
    assert any(r["traits_kept"] == 0 < r["traits_total"] for r in rows)
    assert any(r["truncated"] and r["traits_total"] == 0 for r in rows)  # long descriptions
    assert {r["method"] for r in rows if r["preferred"]} == {
        "visual_template", "visual_tags", "name_description", "name", "collection"
    }  # fmt: skip


def test_exports_carry_the_traits_the_masking_draw_rebuilds_captions_from(
    tmp_path: Path, partitioning: Partitioning
) -> None:
    """Dynamic masking rebuilds a caption from the traits it keeps; with every trait
    kept that must be the tables' visual_template caption, byte for byte."""
    rng = random.Random(7)
    records = [record(ODD, "0x" + "c" * 40, i, adversarial_metadata(rng)) for i in range(200)]
    tables = tmp_path / "tables"
    _write_tokens(tables / "tokens" / "odd", {"block": records})
    _build(str(tables / "tokens" / "*" / "*.parquet"), tables, partitioning)
    items = list(export_items(duck.connect(), str(tables)))
    assert len(items) == 200
    methods = Counter(i.caption_method for i in items)
    assert methods["visual_template"] >= 50 and len(methods) >= 2
    for item in items:
        if item.caption_method == "visual_template":
            assert item.traits
            assert masking.caption(item.collection, item.traits) == item.caption
        else:
            assert item.traits == ()


def test_a_holdout_takes_a_seeded_draw_of_each_train_collection(
    tmp_path: Path, partitioning: Partitioning
) -> None:
    """holdout=N exports N tokens of every train-split collection as split 'holdout': the
    same tokens for the same seed, other ones for another seed; other splits untouched."""
    trained, tested = "0x" + "a" * 40, "0x" + "b" * 40
    assert (split_for("Moonbirds", partitioning), split_for("0xAzuki", partitioning)) == (
        "train",
        "test",
    )
    blocks = {
        "moonbirds": [record("Moonbirds", trained, i, _hat(str(i % 7))) for i in range(60)],
        "azuki": [record("0xAzuki", tested, i, _hat(str(i % 5))) for i in range(20)],
    }
    tables = tmp_path / "tables"
    _write_tokens(tables / "tokens" / "all", blocks)
    _build(str(tables / "tokens" / "*" / "*.parquet"), tables, partitioning)

    def split_ids(holdout: int, seed: int) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        splits = ["train", "test", "holdout"]
        for item in export_items(
            duck.connect(), str(tables), splits=splits, holdout=holdout, seed=seed
        ):
            found.setdefault(f"{item.split} {item.collection}", set()).add(item.token_id)
        return found

    none = split_ids(0, 3)
    assert {k: len(v) for k, v in none.items()} == {"train Moonbirds": 60, "test 0xAzuki": 20}
    held = split_ids(10, 3)
    assert {k: len(v) for k, v in held.items()} == {
        "train Moonbirds": 50,
        "holdout Moonbirds": 10,
        "test 0xAzuki": 20,
    }
    assert held["holdout Moonbirds"] | held["train Moonbirds"] == none["train Moonbirds"]
    assert split_ids(10, 3) == held
    assert split_ids(10, 4)["holdout Moonbirds"] != held["holdout Moonbirds"]
    assert split_ids(1000, 3) == {
        "holdout Moonbirds": none["train Moonbirds"],
        **{"test 0xAzuki": none["test 0xAzuki"]},
    }
    train_only = export_items(duck.connect(), str(tables), splits=["train"], holdout=10, seed=3)
    assert {i.token_id for i in train_only} == held["train Moonbirds"]
    with pytest.raises(ValueError, match="holdout must be >= 0"):
        next(export_items(duck.connect(), str(tables), holdout=-1))


# Edge cases.

EDGE = "0x" + "e" * 40
TWIN_A, TWIN_B = "0x" + "1" * 40, "0x" + "2" * 40


def _edge_records() -> dict[str, list[TokenRecord]]:
    ledger = {
        "name": "Ledger",
        "attributes": [
            {"trait_type": "Rarity Score", "value": 12},
            {"trait_type": "Generation", "value": "3"},
            {"trait_type": "Power", "value": 40, "display_type": "number"},
        ],
    }
    edge = [
        record("Edge", EDGE, 1, None),  # never fetched
        record("Edge", EDGE, 2, json.dumps(ledger).encode()),
        record("Edge", EDGE, 3, b"{}"),
        record("Edge", EDGE, 4, b'{"name": "cut'),  # unreadable JSON: a problem, no text
        record("Edge", EDGE, 5, b'{"description": "Only words here"}'),
        record("Edge", EDGE, 6, b'{"attributes": [{"trait_type": "Hat", "value": "Red"}]}'),
    ]
    twins = [
        *(record("Twins", TWIN_A, i, _hat("Red")) for i in (1, 2, 3)),
        *(record("Twins", TWIN_B, i, _hat("Blue")) for i in (1, 2)),
    ]
    return {"edge": edge, "twins": twins}


def _hat(colour: str) -> bytes:
    return json.dumps({"attributes": [{"trait_type": "Hat", "value": colour}]}).encode()


def _texts(tables: Path, contract: str, token_id: str) -> set[tuple[str, str, bool, str]]:
    """(kind, method, preferred, text) of a token's captions and prompts."""
    rows = _texts_by_token(tables).get((contract, token_id), [])
    return {(r["kind"], r["method"], r["preferred"], r["text"]) for r in rows}


def test_edge_cases_of_captions_and_collections(
    tmp_path: Path, partitioning: Partitioning, count: Count
) -> None:
    _write_tokens(tmp_path / "tokens", _edge_records())
    result = _build(str(tmp_path / "tokens" / "*.parquet"), tmp_path / "tables", partitioning)
    tables = tmp_path / "tables"
    assert (result.tokens, result.described) == (11, 10)
    check_texts(Built(tmp_path / "tokens", tables, result), count)

    assert _texts(tables, EDGE, "1") == set()  # no metadata, no text
    assert not parquet_rows(tables / "rarity.parquet", f"contract = '{EDGE}' AND token_id = '1'")
    assert _dashboard(tables, EDGE)["tokens"] == 5
    assert _texts(tables, EDGE, "2") == {
        ("caption", "template", False,
         "A picture of Edge, containing 12 Rarity Score 3 Generation 40 Power"),
        ("caption", "name_description", True, "A picture of Edge, Ledger."),
        ("prompt", "tags", False, "Edge, 12 Rarity Score, 3 Generation, 40 Power"),
        ("prompt", "name", True, "Edge, Ledger"),
    }  # fmt: skip
    bare = {
        ("caption", "template", False, "A picture of Edge"),
        ("caption", "collection", True, "A picture of Edge"),
        ("prompt", "tags", False, "Edge"),
        ("prompt", "collection", True, "Edge"),
    }
    assert _texts(tables, EDGE, "3") == _texts(tables, EDGE, "4") == bare
    assert ("caption", "name_description", True, "A picture of Edge, Only words here") in _texts(
        tables, EDGE, "5"
    )

    # One name, two contracts: two collections in every table.
    traits = parquet_rows(tables / "traits.parquet", "collection = 'Twins'")
    assert [(r["contract"], r["value"], r["count"], r["frequency"]) for r in traits] == [
        (TWIN_A, "Red", 3, 1.0),
        (TWIN_B, "Blue", 2, 1.0),
    ]
    assert (_dashboard(tables, TWIN_A)["tokens"], _dashboard(tables, TWIN_B)["tokens"]) == (3, 2)
    assert _texts(tables, TWIN_A, "1") != _texts(tables, TWIN_B, "1")
    assert ("caption", "visual_template", True, "A picture of Twins, containing Blue Hat") in (
        _texts(tables, TWIN_B, "1")
    )
    splits = parquet_rows(tables / "splits.parquet", "collection = 'Twins'")
    assert Counter(r["contract"] for r in splits) == {TWIN_A: 3, TWIN_B: 2}


def _same_tables(a: Path, b: Path) -> None:
    for name in TABLES:
        assert parquet_rows(a / f"{name}.parquet") == parquet_rows(b / f"{name}.parquet"), name
    dashboards = sorted(p.name for p in (a / "dashboards").iterdir())
    assert dashboards == sorted(p.name for p in (b / "dashboards").iterdir())
    for name in dashboards:
        assert (a / "dashboards" / name).read_bytes() == (b / "dashboards" / name).read_bytes()


def test_a_rerun_writes_identical_tables(
    tmp_path: Path, partitioning: Partitioning, moonbirds: dict[int, bytes]
) -> None:
    records = _edge_records()
    records["birds"] = [record("Moonbirds", MOONBIRDS, i, m) for i, m in moonbirds.items()]
    files = _write_tokens(tmp_path / "tokens", records)
    # Threads add up floats in whatever order they finish; more of them than cores
    # makes that order vary from run to run, as it does between machines.
    con = duck.connect(threads=8)
    first = _build(files, tmp_path / "first", partitioning, con)
    again = _build(files, tmp_path / "again", partitioning, con)  # same connection, again
    fresh = _build(list(reversed(files)), tmp_path / "fresh", partitioning, duck.connect())
    assert first.rows == again.rows == fresh.rows
    assert first.rows["captions"] > 0
    _same_tables(tmp_path / "first", tmp_path / "again")
    _same_tables(tmp_path / "first", tmp_path / "fresh")


def test_an_export_before_any_tables_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="run nft1000/tables first"):
        list(export_items(duck.connect(), str(tmp_path)))
