"""Embedding files: a split's CLIP vectors as float16 parquet, the format nft1000/cvi writes.

Columns: collection, contract, token_id, split (VARCHAR) and image, text (the
L2-normalised vectors, list<float16>, which DuckDB reads as FLOAT[] and
``sql/evaluate/cvi.sql`` consumes). DuckDB cannot write float16, so pyarrow writes the
files. No torch here: reading and writing files should not cost its import.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.core.folders import open_folder
from tasks.core.settings import Settings

TOKEN_COLUMNS = ("collection", "contract", "token_id", "split")
Token = tuple[str, str, str, str]  # (collection, contract, token id, split)
Contents = tuple[list[Token], np.ndarray, np.ndarray]  # tokens, images, texts (float32)


def embeddings_to_parquet(
    tokens: Sequence[Token], images: npt.ArrayLike, texts: npt.ArrayLike
) -> bytes:
    """One parquet file of pairs: token columns and float16 image and text vectors."""
    image = np.asarray(images, np.float16)
    text = np.asarray(texts, np.float16)
    if image.ndim != 2 or image.shape != text.shape or len(image) != len(tokens):
        raise ValueError(
            f"{len(tokens)} tokens need image and text arrays of one (N, D) shape, "
            f"got {image.shape} and {text.shape}"
        )
    columns: dict[str, pa.Array] = {
        name: pa.array([t[i] for t in tokens], pa.string()) for i, name in enumerate(TOKEN_COLUMNS)
    }
    columns["image"] = _vectors(image)
    columns["text"] = _vectors(text)
    out = io.BytesIO()
    # Dictionary-encoding float vectors costs three quarters of the write and saves nothing.
    pq.write_table(pa.table(columns), out, compression="zstd", use_dictionary=list(TOKEN_COLUMNS))
    return out.getvalue()


def embeddings_from_parquet(data: bytes) -> Contents:
    """(tokens, images, texts) of a file embeddings_to_parquet wrote, vectors as float32."""
    table = pq.read_table(io.BytesIO(data))
    tokens = list(zip(*(table[name].to_pylist() for name in TOKEN_COLUMNS), strict=True))
    return tokens, _matrix(table["image"]), _matrix(table["text"])


def read_files(urls: Iterable[str], settings: Settings) -> Iterator[Contents]:
    """The contents of embedding files (local or s3:// URLs), one file at a time."""
    for url in urls:
        folder, name = url.rsplit("/", 1)
        yield embeddings_from_parquet(open_folder(folder, settings).get(name))


def _vectors(matrix: np.ndarray) -> pa.Array:
    flat = pa.array(matrix.reshape(-1), pa.float16())
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]).cast(pa.list_(pa.float16()))


def _matrix(column: pa.ChunkedArray) -> np.ndarray:
    rows = column.combine_chunks()
    if len(rows) == 0:
        return np.zeros((0, 0), np.float32)
    values: np.ndarray = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    return values.reshape(len(rows), -1)
