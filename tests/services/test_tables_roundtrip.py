"""Tables survive a trip through the NFT1000 layout: build, export, import, build again.

Against the real S3 server (SeaweedFS): real Moonbirds and Loot tokens are stored
as ingest stores them (blobs and block manifests), their tokens files and tables
are built in S3, exported to a local NFT1000 folder, imported under a fresh
prefix and built again there. Every table must come back the same; only Loot's
image columns change, since the export rasterised its SVGs to PNG.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
import torch

from infra import sql_shell
from tasks.core import paths
from tasks.core.content import inspect_image
from tasks.core.duck import connect
from tasks.core.folders import open_folder
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.evaluate.cvi import Top1, cvi_results
from tasks.evaluate.embedding_files import embeddings_to_parquet as to_embeddings
from tasks.evaluate.retrieval import result_rows, summarise, upsert_results
from tasks.export.items import ExportItem, export_items
from tasks.export.layout_export import export_batch, token_paths, write_dashboard
from tasks.export.layout_import import import_batch, plan_import
from tasks.ingest.blocks import BLOCK, BlockSpec, manifest_key
from tasks.ingest.manifest import ManifestRow, manifest_keys, to_parquet
from tasks.tables.build import build_tables
from tasks.tables.splits import Partitioning, load_split_rules
from tasks.tables.tokens import BlockResult, build_block, tokens_key
from tests.support import REPO
from tests.support.stack import Services, data_uri_bytes, read_moonbirds

MOONBIRDS = "0x23581767a106ae21c074b2276d25e5c3e136a68b"  # in NFT1000's collections.json
LOOT = "0xff9c1b15b16263c61d017ee9f65c50e4ae0113d7"
LOOT_NAME = "Loot (for Adventurers)"
BIRDS = 40  # Moonbirds ids 0..39
BAGS = 10  # Loot ids 1..10
TABLES = ("traits", "rarity", "captions", "prompts", "splits", "collection_splits")
# What rasterising an SVG to PNG changes in a token's row.
IMAGE_COLUMNS = ("image_key", "image_mime", "image_sha256", "width", "height")

Tokens = dict[int, tuple[bytes, bytes]]  # token id -> (metadata JSON, image bytes)
Row = dict[str, Any]


@pytest.fixture(scope="module")
def moonbirds() -> Tokens:
    """Real metadata and 42x42 PNGs of the first BIRDS Moonbirds."""
    return read_moonbirds(BIRDS)


@pytest.fixture(scope="module")
def loot(services: Services) -> Tokens:
    """Real Loot bags 1..BAGS: metadata from the on-chain data: URI, its SVG image."""
    bags = {}
    for token_id in range(1, BAGS + 1):
        metadata = data_uri_bytes(services.loot_uris[token_id - 1])
        bags[token_id] = (metadata, data_uri_bytes(json.loads(metadata)["image"]))
    return bags


@pytest.fixture(scope="module")
def partitioning() -> Partitioning:
    return load_split_rules(None, ())  # NFT1000's split, from the built-in registry


def store_manifest(store: ObjectStore, collection: str, contract: str, tokens: Tokens) -> str:
    """Store tokens' blobs and their block's manifest as ingest does; the manifest's key."""
    rows = []
    for token_id, (metadata, image) in sorted(tokens.items()):
        meta = store.put_blob(metadata, "application/json")
        info = inspect_image(image)
        blob = store.put_blob(image, info.mime)
        rows.append(
            ManifestRow(
                collection, contract, str(token_id),
                metadata_key=meta.key, metadata_sha256=meta.sha256,
                image_key=blob.key, mime=info.mime, bytes=blob.size, sha256=blob.sha256,
                width=info.width, height=info.height,
            )
        )  # fmt: skip
    key = manifest_key(store, BlockSpec(collection, contract, 0, BLOCK))
    store.put(key, to_parquet(rows))
    return key


def build_all(settings: Settings, partitioning: Partitioning) -> list[BlockResult]:
    """Tokens files for every manifest, then every table, all in S3 under the prefix."""
    store = ObjectStore(settings)
    blocks = [build_block(store, key) for key in manifest_keys(store)]
    root = paths.tables_root(settings)
    with connect(settings) as con:
        build_tables(
            con, f"{root}/tokens/*/*.parquet", open_folder(root, settings), partitioning,
            seed=5, mini_per_collection=20,
        )  # fmt: skip
    return blocks


def export_layout(settings: Settings, folder: Path) -> list[ExportItem]:
    """Export the tables' tokens and dashboards in the NFT1000 layout under folder."""
    root = paths.tables_root(settings)
    with connect(settings) as con:
        items = list(export_items(con, root))
    result = export_batch(items, str(folder), settings)
    assert (result.written, result.failed) == (len(items), [])
    tables = open_folder(root, settings)
    for contract, name in sorted({(i.contract, i.folder) for i in items}):
        assert write_dashboard(
            str(folder), settings, name, tables.get(f"dashboards/{contract}.json")
        )
    return items


def import_layout(folder: Path, settings: Settings) -> int:
    """Import the folder under settings' prefix; the tokens stored."""
    plan = plan_import(str(folder), settings)  # dashboards name the contracts
    assert (plan.errors, plan.notes) == ([], [])
    return sum(import_batch(batch, settings).ok for batch in plan.batches)


def _query(con: duckdb.DuckDBPyConnection, sql: str, *params: object) -> list[Row]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def read_tables(settings: Settings) -> dict[str, Any]:
    """Every table under the prefix, rows in a fixed order, and the dashboards' JSON."""
    root = paths.tables_root(settings)
    with connect(settings) as con:
        found: dict[str, Any] = {
            name: _query(
                con, "SELECT * FROM read_parquet(?) ORDER BY ALL", f"{root}/{name}.parquet"
            )
            for name in TABLES
        }
        tokens = _query(con, "SELECT * FROM read_parquet(?)", f"{root}/tokens/*/*.parquet")
    # Object keys start with the prefix; what they name must match, not where.
    for row in tokens:
        for column in ("metadata_key", "image_key"):
            row[column] = row[column].removeprefix(settings.s3_prefix)
    found["tokens"] = {(r["contract"], r["token_id"]): r for r in tokens}
    dashboards = open_folder(root, settings)
    found["dashboards"] = {
        path: json.loads(dashboards.get(path)) for path in dashboards.walk("dashboards/")
    }
    return found


def test_tables_come_back_the_same_through_the_nft1000_layout(
    settings: Settings,
    moonbirds: Tokens,
    loot: Tokens,
    partitioning: Partitioning,
    tmp_path: Path,
) -> None:
    store = ObjectStore(settings)
    store_manifest(store, "Moonbirds", MOONBIRDS, moonbirds)
    store_manifest(store, LOOT_NAME, LOOT, loot)
    blocks = build_all(settings, partitioning)
    assert sorted((b.tokens, b.skipped, b.problems) for b in blocks) == [
        (BAGS, False, 0), (BIRDS, False, 0)
    ]  # fmt: skip
    before = read_tables(settings)
    assert all(before[name] for name in TABLES)  # nothing compared is empty
    assert (len(before["tokens"]), len(before["dashboards"])) == (BIRDS + BAGS, 2)

    layout = tmp_path / "nft1000"
    items = export_layout(settings, layout)
    assert len(items) == BIRDS + BAGS
    preferred = {
        (r["contract"], r["token_id"]): r["caption"] for r in before["captions"] if r["preferred"]
    }
    for item in items:  # each token's file holds its preferred caption
        caption = (layout / token_paths(item.folder, item.token_id)[1]).read_text("utf-8")
        assert caption == item.caption == preferred[(item.contract, item.token_id)]

    again = settings.replace(s3_prefix=settings.s3_prefix.rstrip("/") + "-imported/")
    assert import_layout(layout, again) == BIRDS + BAGS
    build_all(again, partitioning)
    after = read_tables(again)

    for name in (*TABLES, "dashboards"):
        assert after[name] == before[name], name
    assert before["tokens"].keys() == after["tokens"].keys()
    for key, old in before["tokens"].items():
        new = after["tokens"][key]
        if key[0] == LOOT:  # rasterised: another image, the same token
            assert (old["image_mime"], new["image_mime"]) == ("image/svg+xml", "image/png")
            assert (new["width"], new["height"]) == (1024, 1024)
            old, new = _without(old, IMAGE_COLUMNS), _without(new, IMAGE_COLUMNS)
        # The import is a new fetch: only its time differs.
        old, new = _without(old, ("fetched_at",)), _without(new, ("fetched_at",))
        assert new == old  # Moonbirds: PNGs copied byte for byte, so every other column


def _without(row: Row, columns: tuple[str, ...]) -> Row:
    return {k: v for k, v in row.items() if k not in columns}


def _stamp(store: ObjectStore, key: str) -> tuple[str, object]:
    head = store.client.head_object(Bucket=store.bucket, Key=key)
    return head["ETag"], head["LastModified"]


def test_build_block_skips_unchanged_manifests(settings: Settings, moonbirds: Tokens) -> None:
    store = ObjectStore(settings)
    five = {i: moonbirds[i] for i in range(5)}
    key = store_manifest(store, "Moonbirds", MOONBIRDS, five)
    target = tokens_key(store, key)
    assert build_block(store, key) == BlockResult(key, 5, skipped=False, problems=0)
    written = _stamp(store, target)

    assert build_block(store, key) == BlockResult(key, 0, skipped=True, problems=0)
    assert _stamp(store, target) == written

    # The block's manifest is rewritten with one token more: the tokens file follows.
    store_manifest(store, "Moonbirds", MOONBIRDS, {**five, 5: moonbirds[5]})
    assert build_block(store, key) == BlockResult(key, 6, skipped=False, problems=0)
    assert build_block(store, key).skipped
    with connect(settings) as con:
        ids = _query(con, "SELECT token_id FROM read_parquet(?)", f"s3://{store.bucket}/{target}")
    assert sorted(int(r["token_id"]) for r in ids) == list(range(6))
    assert not build_block(store, key, force=True).skipped


def readme_queries() -> list[str]:
    """The example queries of the tables and CVI pages (the README's two are among them),
    as users copy them."""
    text = "\n".join((REPO / "docs" / name).read_text() for name in ("tables.md", "cvi.md"))
    return [q.replace("\n", " ") for q in re.findall(r'nft1000 sql "(.*?)"', text, re.DOTALL)]


def test_nft1000_sql_runs_the_readme_queries(
    settings: Settings,
    moonbirds: Tokens,
    partitioning: Partitioning,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store_manifest(ObjectStore(settings), "Moonbirds", MOONBIRDS, moonbirds)
    build_all(settings, partitioning)
    results = ("retrieval_results", "FROM cvi ")
    queries = [q for q in readme_queries() if not any(r in q for r in results)]
    (results_query,) = [q for q in readme_queries() if results[0] in q]
    (cvi_query,) = [q for q in readme_queries() if results[1] in q]
    assert len(queries) == 3
    rarest = queries[0]
    assert sql_shell.run(settings, rarest) == 0
    printed = capsys.readouterr().out
    with connect(settings) as con:
        top = _query(con, f"SELECT token_id FROM '{paths.tables_root(settings)}/rarity.parquet' "
                     "ORDER BY rarity_rank, length(token_id), token_id LIMIT 1")  # fmt: skip
    assert f"│ {top[0]['token_id']} " in printed
    assert sql_shell.run(settings, ";".join(queries)) == 0
    printed = capsys.readouterr().out
    assert "train" in printed and "Background" in printed  # Moonbirds is in NFT1000's train
    # DuckDB's parser splits statements: a ';' in a literal or a comment is no break.
    assert sql_shell.run(settings, "SELECT 'x;y' AS semi -- z;\n; SELECT 42 AS answer") == 0
    printed = capsys.readouterr().out
    assert "│ x;y " in printed and " 42 │" in printed
    assert sql_shell.run(settings, "SELECT 1; SELEC 2") == 1
    assert "SELEC" in capsys.readouterr().err
    assert sql_shell.run(settings, "SELECT * FROM no_such_table") == 1
    assert "no_such_table" in capsys.readouterr().err

    # The results query works once nft1000/evaluate has written a results file.
    assert sql_shell.run(settings, results_query) == 1  # no view before any evaluation
    capsys.readouterr()
    ranks = torch.tensor([1, 3, 1, 7])
    result = summarise(ranks, ["Moonbirds"] * 4, "within")
    with connect(settings) as con:
        upsert_results(con, result_rows(result, model="tiny/abc", data="test"))
        con.execute(
            f"COPY retrieval_results TO '{paths.tables_root(settings)}/retrieval_results/x.parquet'"
        )
    assert sql_shell.run(settings, results_query) == 0
    printed = capsys.readouterr().out
    assert "tiny/abc" in printed and "within" in printed and "0.5" in printed

    # And the CVI query once nft1000/cvi has written one.
    assert sql_shell.run(settings, cvi_query) == 1
    capsys.readouterr()
    rng = np.random.default_rng(0)
    tokens = [("Moonbirds", MOONBIRDS, str(i), "train") for i in range(4)]
    embeddings = paths.url(settings, "embeddings", "e.parquet")
    open_folder(paths.url(settings, "embeddings"), settings).put(
        "e.parquet", to_embeddings(tokens, rng.normal(size=(4, 8)), rng.normal(size=(4, 8)))
    )
    top1 = [Top1("Moonbirds", MOONBIRDS, None, 4, 0.75)]
    with connect(settings) as con:
        cvi_results(con, [embeddings], top1, model="tiny/abc", data="exports")
        con.execute(f"COPY cvi_results TO '{paths.tables_root(settings)}/cvi/x.parquet'")
    assert sql_shell.run(settings, cvi_query) == 0
    printed = capsys.readouterr().out
    assert "Moonbirds" in printed and "0.75" in printed


def test_a_wheel_installed_outside_the_checkout_runs_nft1000_sql(
    settings: Settings, moonbirds: Tokens, partitioning: Partitioning, tmp_path: Path
) -> None:
    """The SQL ships inside the wheel and is found through the installed package, not
    through a path beside the source tree: a wheel in a venv of its own, run from a folder
    that is not the checkout, answers a query over the tables."""
    store_manifest(ObjectStore(settings), "Moonbirds", MOONBIRDS, moonbirds)
    build_all(settings, partitioning)
    # setuptools builds in the source folder (build/, *.egg-info): build from a copy of
    # the tracked files, so the checkout is left as it was.
    source = tmp_path / "source"
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.decode()
    for name in filter(None, tracked.split("\0")):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", str(wheels), str(source)], check=True, cwd=tmp_path)
    (wheel,) = wheels.glob("nft1000-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies (torch, duckdb...) come from this venv's site-packages, listed after
    # the new venv's own; this venv's editable nft1000 is not activated there.
    (Path(site) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    subprocess.run([*install, "--no-deps", str(wheel)], check=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NFT1000_", "PYTHON"))} | {
        "NFT1000_S3_ENDPOINT_URL": str(settings.s3_endpoint_url),
        "NFT1000_S3_BUCKET": settings.s3_bucket,
        "NFT1000_S3_PREFIX": settings.s3_prefix,
    }
    query = "SELECT count(*) AS tokens FROM tokens"
    where = "import sql, tasks; print(sql.__file__); print(tasks.__file__)"
    located = subprocess.run(
        [python, "-c", where], cwd=outside, env=env, check=True, capture_output=True, text=True
    ).stdout.split()
    assert all(path.startswith(site) for path in located)
    ran = subprocess.run(
        [venv / "bin" / "nft1000", "sql", query],
        cwd=outside, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    with connect(settings) as con:
        tokens = f"{paths.tables_root(settings)}/tokens/*/*.parquet"
        (row,) = _query(con, "SELECT count(*) AS n FROM read_parquet(?)", tokens)
    assert row["n"] > 0
    assert re.search(rf"│\s*{row['n']}\s*│", ran.stdout), ran.stdout
