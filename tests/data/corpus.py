"""A broad pretraining corpus that holds neither evaluation target: many HashLips-composed
collections and real Loot bags, as the WebDataset train shards nft1000/export writes.

No pretrained CLIP weights can be downloaded here, so bench.experiments.pretrain makes
its own "pretrained" starting point from this corpus. The masking experiment then
fine-tunes it on targets the corpus must not contain: real Moonbirds, and the composed
collection ``Composed target k=06`` (``tests.data.composed.Plan(values=(6,),
tokens=2000, seed=15, name="Composed target")``). ``corpus`` refuses a plan whose
collections include an ``excluded`` name.

Composed collections ("Corpus 001", ...) vary what a model can learn from, each
drawn from a generator seeded by (``SALT``, seed, index), so a collection is the same
whatever else the plan holds and no draw repeats the composed targets' (seeded by
(seed, k)):

- trait types: Background always, and 2 to 5 of the other ``TRAIT_TYPES``, drawn in
  ``LAYER_ORDER``;
- values: per type a random subset (2 to 12) of ``VALUES``, not its first k; raised
  one at a time (or a type added) until the collection has a combination per token;
- geometry: every layer but the background at an inset from ``INSETS`` (0.6 to 0.9
  of the size), so the frame and the eye's size differ between collections;
- captions: one template per collection from ``TEMPLATES``, dealt in a seeded order,
  so any ``len(TEMPLATES)`` consecutive collections use them all. ``visual`` is the
  tables' visual template; ``visual-shuffled`` the same with the phrases in a random
  order per token; the others are free text (their traits are not recorded, as the
  export records traits only for visual-template captions).

Tokens draw unique trait combinations, as tests.data.composed does: an exact
duplicate would teach nothing and blur retrieval.

Loot bags are real: the first ``loot`` token URIs of ``infra.stack.LOOT_ARCHIVE``
(what Loot's contract returns), decoded as ingest decodes data: URIs. The SVG is
stored as it is and rasterised by the export's own path (``tasks.export.images``, in
its sandbox) at the plan's size; the caption names the bag's eight items, the text
lines of its SVG. At 64 px that text is unreadable, so Loot mostly teaches the
model what "text on black" looks like and that such captions go with it.

``prepare`` writes everything, split ``train``, through a private SeaweedFS into
``<cache>/corpus-<digest>/train/`` and finishes the folder with ``prepared.json``;
the digest covers the plan, the code that decides the bytes (``SOURCES``, and the
caption functions of tasks.train.masks.draw) and the two archives, so a rerun
returns at once.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

import numpy as np

from infra.stack import LOOT_ARCHIVE
from tasks.core.settings import Settings
from tasks.export.images import PNG_MIME, SVG_MIME, encode
from tasks.train.masks import draw
from tests.data import composed
from tests.data.composed import BACKDROP, MAX_VALUES, TRAIT_TYPES, VALUES
from tests.data.moonbird_shards import CACHE, LOCAL, PROJECT_ROOT
from tests.data.synthetic import LAYERS_ARCHIVE

# The evaluation targets of bench.experiments.masking: never in the corpus.
EXCLUDED = ("Moonbirds", "Composed target k=06")
LOOT_NAME = "Loot (for Adventurers)"
LOOT_CONTRACT = "0xff9c1b15b16263c61d017ee9f65c50e4ae0113d7"
SALT = 0xC0  # first entropy word of every corpus draw; composed.py's draws have none
INSETS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)  # a few, so art is loaded once per inset
SPLIT = "train"
DONE = "prepared.json"
VERSION = 1  # bump when what a prepared folder holds changes
SOURCES = (
    "tests/data/corpus.py",
    "tests/data/composed.py",
    "tests/data/synthetic.py",
    "tasks/export/images.py",
    "tasks/export/svg_sandbox.py",
    "tasks/core/svg_check.py",
    "tasks/export/webdataset.py",
    "tasks/ingest/uris.py",
    "infra/demo_chain.py",
)
Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CorpusPlan:
    """What the corpus holds; the same plan gives the same shards, byte for byte."""

    collections: int = 40  # composed collections
    tokens: int = 400  # per composed collection
    loot: int = 2000  # real Loot bags, ids 1..loot
    size: int = 64  # pixels a side (the tiny CLIP's input)
    seed: int = 0
    excluded: tuple[str, ...] = EXCLUDED
    per_shard: int = 500

    def __post_init__(self) -> None:
        if self.collections < 0 or self.loot < 0 or self.collections + self.loot == 0:
            raise ValueError("collections and loot must be >= 0, and not both 0")
        if not 1 <= self.tokens <= MAX_VALUES ** len(TRAIT_TYPES):
            raise ValueError(f"tokens must be in [1, {MAX_VALUES ** len(TRAIT_TYPES)}]")
        if not 0 <= self.loot <= 8000 or self.size < 8 or self.per_shard < 1:
            raise ValueError("loot in [0, 8000], size >= 8 and per_shard >= 1 please")

    def digest(self) -> str:
        """Names a prepared folder: the plan, the code and the data that decide its bytes."""
        code = hashlib.sha256()
        for path in SOURCES:
            code.update((PROJECT_ROOT / path).read_bytes())
        # Only the caption functions of draw.py decide corpus bytes; its masks do not.
        code.update(inspect.getsource(draw.trait_text).encode())
        code.update(inspect.getsource(draw.caption).encode())
        for archive in (LAYERS_ARCHIVE, LOOT_ARCHIVE):
            code.update(hashlib.sha256(archive.read_bytes()).digest())
        doc = {"version": VERSION, "code": code.hexdigest(), **asdict(self)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Design:
    """One composed collection's draw: its traits, values, geometry and caption template."""

    name: str
    values: tuple[tuple[str, tuple[int, ...]], ...]  # (trait type, indices into VALUES)
    inset: float
    template: str

    @property
    def combinations(self) -> int:
        return math.prod(len(picked) for _, picked in self.values)


@dataclass(frozen=True)
class Sample:
    """One corpus sample, as the export's item will carry it."""

    token_id: int
    image: bytes
    mime: str
    caption: str
    caption_method: str
    traits: Pairs  # the caption's (trait_type, value) pairs, visual-template captions only


@dataclass(frozen=True)
class Collection:
    name: str
    contract: str
    samples: tuple[Sample, ...]
    design: Design | None = None  # None: a real collection (Loot)
    shown: dict[str, tuple[str, ...]] = field(default_factory=dict)  # trait type -> values


@dataclass(frozen=True)
class Prepared:
    """A prepared corpus folder: ``train/`` shards and the corpus summary."""

    root: Path
    summary: dict[str, Any]

    @property
    def train(self) -> str:
        return str(self.root / SPLIT)


def _phrases(traits: Pairs) -> list[str]:
    return [draw.trait_text(t, v) for t, v in traits]


def _joined(phrases: Sequence[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _visual(name: str, _: int, traits: Pairs, __: np.random.Generator) -> tuple[str, Pairs]:
    return draw.caption(name, traits), traits


def _visual_shuffled(
    name: str, _: int, traits: Pairs, rng: np.random.Generator
) -> tuple[str, Pairs]:
    shuffled = tuple(traits[i] for i in rng.permutation(len(traits)))
    return draw.caption(name, shuffled), shuffled


def _numbered(name: str, token_id: int, traits: Pairs, _: np.random.Generator) -> tuple[str, Pairs]:
    return f"{name} #{token_id}: {', '.join(_phrases(traits))}", ()


def _nft(name: str, _: int, traits: Pairs, __: np.random.Generator) -> tuple[str, Pairs]:
    return f"an NFT from {name} with {_joined(_phrases(traits))}", ()


def _attributes(name: str, _: int, traits: Pairs, __: np.random.Generator) -> tuple[str, Pairs]:
    return "; ".join(f"{t}: {v}" for t, v in traits) + f" ({name})", ()


Template = Callable[[str, int, Pairs, np.random.Generator], tuple[str, Pairs]]
# name -> the caption (and the traits it records) of a token; visual ones are the tables'.
TEMPLATES: dict[str, Template] = {
    "visual": _visual,
    "visual-shuffled": _visual_shuffled,
    "numbered": _numbered,
    "nft": _nft,
    "attributes": _attributes,
}
VISUAL_TEMPLATES = ("visual", "visual-shuffled")


def designs(plan: CorpusPlan) -> list[Design]:
    """Every composed collection's draw, in plan order."""
    order = np.random.default_rng([SALT, plan.seed]).permutation(len(TEMPLATES))
    names = list(TEMPLATES)
    return [
        _design(plan, index, names[order[index % len(names)]]) for index in range(plan.collections)
    ]


def _design(plan: CorpusPlan, index: int, template: str) -> Design:
    rng = np.random.default_rng([SALT, plan.seed, index])
    others = [t for t in TRAIT_TYPES if t != BACKDROP]
    chosen = {str(t) for t in rng.choice(others, int(rng.integers(2, len(others) + 1)), False)}
    counts = {t: int(rng.integers(2, MAX_VALUES + 1)) for t in TRAIT_TYPES if t in chosen}
    counts = {BACKDROP: int(rng.integers(2, MAX_VALUES + 1))} | counts
    while math.prod(counts.values()) < plan.tokens:
        growable = [t for t in counts if counts[t] < MAX_VALUES]
        if growable:
            counts[str(rng.choice(growable))] += 1
        else:
            counts[str(rng.choice([t for t in others if t not in counts]))] = 2
    values = tuple(
        (t, tuple(sorted(int(i) for i in rng.choice(MAX_VALUES, counts[t], replace=False))))
        for t in TRAIT_TYPES
        if t in counts
    )
    inset = INSETS[int(rng.integers(len(INSETS)))]
    return Design(f"Corpus {index + 1:03d}", values, inset, template)


def corpus(plan: CorpusPlan) -> list[Collection]:
    """The plan's collections: composed ones in order, then Loot; refuses an excluded name."""
    planned = designs(plan)
    names = [d.name for d in planned] + ([LOOT_NAME] if plan.loot else [])
    clash = sorted(set(names) & set(plan.excluded))
    if clash:
        raise ValueError(f"the corpus would contain excluded collections {clash}")
    arts: dict[float, composed.Art] = {}
    collections = []
    for index, design in enumerate(planned):
        if design.inset not in arts:
            arts[design.inset] = composed.load_art(
                plan.size, MAX_VALUES, LAYERS_ARCHIVE, design.inset
            )
        collections.append(_compose(plan, index, design, arts[design.inset]))
    if plan.loot:
        collections.append(loot(plan.loot))
    return collections


def _compose(plan: CorpusPlan, index: int, design: Design, art: composed.Art) -> Collection:
    """Unique combinations, from a generator seeded by (SALT, seed, index, 1)."""
    rng = np.random.default_rng([SALT, plan.seed, index, 1])
    drawn = rng.choice(design.combinations, size=plan.tokens, replace=False)
    shape = tuple(len(picked) for _, picked in design.values)
    combos = np.stack(np.unravel_index(drawn, shape), axis=1)
    template = TEMPLATES[design.template]
    samples = []
    for token_id, combo in enumerate(combos.tolist()):
        picks = {t: picked[c] for (t, picked), c in zip(design.values, combo, strict=True)}
        traits = tuple((t, VALUES[t][i].name) for t, i in picks.items())
        text, recorded = template(design.name, token_id, traits, rng)
        png = encode(composed.render(art, picks).convert("RGB"), "png")
        method = "visual_template" if design.template in VISUAL_TEMPLATES else "corpus_template"
        samples.append(Sample(token_id, png, PNG_MIME, text, method, recorded))
    shown = {t: tuple(VALUES[t][i].name for i in picked) for t, picked in design.values}
    return Collection(design.name, composed._contract(design.name), tuple(samples), design, shown)


def loot(count: int) -> Collection:
    """Bags 1..count as Loot's contract serves them: SVG image, items read from its text."""
    from infra.demo_chain import read_loot_uris
    from tasks.core.content import parse_metadata
    from tasks.core.svg_check import check_svg
    from tasks.ingest.uris import DataLocation, resolve_uri

    samples = []
    for token_id, uri in enumerate(read_loot_uris(LOOT_ARCHIVE, count), start=1):
        meta = resolve_uri(uri, token_id, LOCAL)
        if not isinstance(meta, DataLocation):
            raise ValueError(f"Loot bag {token_id}: metadata is not a data: URI")
        image = resolve_uri(str(parse_metadata(meta.data)["image"]), token_id, LOCAL)
        if not isinstance(image, DataLocation) or image.mime != SVG_MIME:
            raise ValueError(f"Loot bag {token_id}: image is not an inline SVG")
        items = svg_lines(check_svg(image.data).text)
        text = f"A picture of {LOOT_NAME}, containing {', '.join(items)}"
        samples.append(Sample(token_id, image.data, SVG_MIME, text, "svg_text", ()))
    return Collection(LOOT_NAME, LOOT_CONTRACT, tuple(samples))


def svg_lines(text: str) -> list[str]:
    """The text of each ``<text>`` element, in document order (a checked SVG only)."""
    lines: list[str] = []
    inside: list[str] | None = None

    def start(name: str, _: dict[str, str]) -> None:
        nonlocal inside
        if name.rsplit(" ", 1)[-1] == "text":
            inside = []

    def end(name: str) -> None:
        nonlocal inside
        if inside is not None and name.rsplit(" ", 1)[-1] == "text":
            lines.append("".join(inside).strip())
            inside = None

    def data(chars: str) -> None:
        if inside is not None:
            inside.append(chars)

    parser = expat.ParserCreate(encoding="utf-8", namespace_separator=" ")
    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler = data
    parser.Parse(text.encode(), True)
    return [line for line in lines if line]


def write_corpus(
    collections: Sequence[Collection], root_url: str, settings: Settings, plan: CorpusPlan
) -> dict[str, Any]:
    """Store the images as blobs and write ``<root_url>/train/`` shards as the export does."""
    from tasks.core.s3 import ObjectStore
    from tasks.export.items import ExportItem, safe_names
    from tasks.export.webdataset import (
        ShardOptions,
        order_key,
        plan_shards,
        write_index,
        write_shard,
    )

    store = ObjectStore(settings)
    pairs = [(c, s) for c in collections for s in c.samples]
    with ThreadPoolExecutor(max(1, settings.concurrency)) as pool:
        keys = list(pool.map(lambda p: store.put_blob(p[1].image, p[1].mime).key, pairs))
    folders = safe_names([(c.name, c.contract) for c in collections])
    items = [
        ExportItem(
            collection=c.name,
            contract=c.contract,
            token_id=str(s.token_id),
            split=SPLIT,
            in_mini=False,
            metadata_key="",
            image_key=key,
            image_mime=s.mime,
            caption=s.caption,
            prompt="",
            folder=folders[(c.name, c.contract)],
            caption_method=s.caption_method,
            traits=s.traits,
        )
        for (c, s), key in zip(pairs, keys, strict=True)
    ]
    items.sort(key=lambda i: order_key(str(plan.seed), i.contract, i.token_id))
    options = ShardOptions(shortest_side=plan.size)
    results = [
        write_shard(shard, root_url, settings, options)
        for shard in plan_shards(SPLIT, items, plan.per_shard)
    ]
    return write_index(root_url, settings, results, options)


def summary(plan: CorpusPlan, collections: Sequence[Collection]) -> dict[str, Any]:
    """What the corpus holds: per collection its draw, and the totals."""
    made = [c for c in collections if c.design is not None]
    used = [t for t in TRAIT_TYPES if any(t in c.shown for c in made)]
    return {
        "plan": asdict(plan),
        "collections": [
            {
                "name": c.name,
                "contract": c.contract,
                "samples": len(c.samples),
                **(
                    {
                        "template": c.design.template,
                        "inset": c.design.inset,
                        "combinations": c.design.combinations,
                        "values": {t: list(v) for t, v in c.shown.items()},
                    }
                    if c.design is not None
                    else {"caption": "its eight items, from the SVG's text lines"}
                ),
            }
            for c in collections
        ],
        "composed_collections": len(made),
        "tokens_per_collection": plan.tokens,
        "trait_type_sets": len({tuple(c.shown) for c in made}),
        # Per trait type: the collections that have it, and its distinct values among them.
        "trait_types_used": {t: sum(t in c.shown for c in made) for t in used},
        "values_used": {t: len({v for c in made for v in c.shown.get(t, ())}) for t in used},
        "templates": dict(Counter(c.design.template for c in made if c.design is not None)),
        "loot_bags": sum(len(c.samples) for c in collections if c.name == LOOT_NAME),
        "samples": sum(len(c.samples) for c in collections),
    }


def prepare(plan: CorpusPlan, cache: Path = CACHE) -> Prepared:
    """The prepared corpus folder for ``plan``, built now unless an earlier run finished it."""
    root = (cache / f"corpus-{plan.digest()}").resolve()
    if (root / DONE).is_file():
        return Prepared(root, json.loads((root / DONE).read_text()))
    from tests.data.local_s3 import seaweedfs

    started = time.perf_counter()
    collections = corpus(plan)
    composed_s = time.perf_counter() - started
    with seaweedfs() as settings:
        index = write_corpus(collections, str(root), settings, plan)
    split = index["splits"][SPLIT]
    doc = summary(plan, collections) | {
        "root": str(root),
        "shards": len(split["shards"]),
        "written": split["samples"],
        "failed": split["failed"],
        "seconds": {
            "compose_and_read": round(composed_s, 1),
            "store_and_shards": round(time.perf_counter() - started - composed_s, 1),
        },
    }
    text = json.dumps(doc, indent=1)
    (root / DONE).write_text(text + "\n")
    return Prepared(root, json.loads(text))
