"""Embeddings of real Moonbirds shards to float16 parquet in the real S3, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tasks.core import paths
from tasks.core.duck import connect
from tasks.core.folders import open_folder
from tasks.core.s3 import ObjectStore
from tasks.core.settings import Settings
from tasks.evaluate.embed import SHARDS_PER_FILE, embed_shards, embed_split, shard_groups
from tasks.evaluate.embedding_files import (
    embeddings_from_parquet,
    embeddings_to_parquet,
    read_files,
)
from tasks.train.model import ClipModel, load_clip
from tasks.train.model_configs import TINY_ARCHITECTURE
from tasks.train.shards import ShardSet, open_shards
from tests.support.train_data import MOONBIRDS, moonbird_items, write_split

PAIRS = 45  # 12 shards of 4 (the last 1): two groups, the second short
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def clip() -> ClipModel:
    torch.manual_seed(0)
    return load_clip(TINY_ARCHITECTURE, "", Settings(), CPU)


@pytest.fixture
def shards(store: ObjectStore, settings: Settings, tmp_path: Path) -> ShardSet:
    items = moonbird_items(store, range(PAIRS), "test")
    write_split(items, str(tmp_path / "export"), settings, per_shard=4)
    return open_shards(str(tmp_path / "export" / "test"), settings)


def test_a_split_is_embedded_once_per_group_and_a_lost_group_alone_is_redone(
    clip: ClipModel, shards: ShardSet, settings: Settings
) -> None:
    out = paths.url(settings, "embeddings", "run", "test")
    first = embed_split(clip, shards, out, settings, device=CPU, batch_size=16, workers=2)
    groups = shard_groups(shards)
    assert [len(g) for g in groups] == [SHARDS_PER_FILE, 12 - SHARDS_PER_FILE]
    assert len(first.files) == 2 and first.embedded == PAIRS

    tokens, images, texts = zip(*read_files(first.files, settings), strict=True)
    found = [t for group in tokens for t in group]
    assert sorted(found) == sorted((*MOONBIRDS, str(i), "test") for i in range(PAIRS))
    # float16 files hold what the model gave, to float16 precision, rows still unit length.
    direct = embed_shards(clip, shards, settings, device=CPU, batch_size=16, workers=1)
    order = {t: i for i, t in enumerate(direct.tokens)}
    rows = [order[t] for t in found]
    assert np.abs(np.concatenate(images) - direct.images.numpy()[rows]).max() < 2e-3
    assert np.abs(np.concatenate(texts) - direct.texts.numpy()[rows]).max() < 2e-3
    assert np.allclose(np.linalg.norm(np.concatenate(images), axis=1), 1, atol=2e-3)

    again = embed_split(clip, shards, out, settings, device=CPU, batch_size=16, workers=2)
    assert again.embedded == 0 and again.files == first.files

    store = ObjectStore(settings)
    kept, lost = (f.removeprefix(f"s3://{settings.s3_bucket}/") for f in first.files)
    before = store.get(kept)
    store.delete([lost])
    resumed = embed_split(clip, shards, out, settings, device=CPU, batch_size=16, workers=2)
    short_group = sum(shards.sizes[n] for n in groups[1])
    assert resumed.embedded == short_group == PAIRS - SHARDS_PER_FILE * 4
    assert store.get(kept) == before  # the finished group was not rewritten


def test_duckdb_reads_the_float16_files_as_float_lists(settings: Settings) -> None:
    rng = np.random.default_rng(0)
    tokens = [("A $x$", "0xa", "1", "train"), ("B", "0xb", "2", "test")]
    images, texts = rng.normal(size=(2, 8)), rng.normal(size=(2, 8))
    data = embeddings_to_parquet(tokens, images, texts)
    back = embeddings_from_parquet(data)
    assert back[0] == tokens
    assert np.array_equal(back[1], images.astype(np.float16).astype(np.float32))
    folder = open_folder(paths.url(settings, "embeddings"), settings)
    folder.put("x.parquet", data)
    con = connect(settings)
    try:
        url = paths.url(settings, "embeddings", "x.parquet")
        rows = con.execute(
            "SELECT collection, typeof(image), image FROM read_parquet(?) ORDER BY 1", [url]
        ).fetchall()
    finally:
        con.close()
    assert [(r[0], r[1]) for r in rows] == [("A $x$", "FLOAT[]"), ("B", "FLOAT[]")]
    assert np.array_equal(np.array(rows[0][2], np.float32), back[1][0])


def test_mismatched_arrays_are_refused() -> None:
    with pytest.raises(ValueError, match="one \\(N, D\\) shape"):
        embeddings_to_parquet([("A", "0xa", "1", "train")], np.zeros((1, 4)), np.zeros((1, 3)))
    with pytest.raises(ValueError, match="1 tokens"):
        embeddings_to_parquet([("A", "0xa", "1", "train")], np.zeros((2, 4)), np.zeros((2, 4)))
