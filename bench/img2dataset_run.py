"""One img2dataset run over the demo gateway's images: its URL list, command and counts.

img2dataset fetches the images as plain files (the gateway's path answers, not
CARs) and keeps their bytes as they came: no resize, no re-encoding
(``--disable_all_reencoding``), so it does the least an image downloader can.
Each process gets one shard (``--number_sample_per_shard`` = images / processes),
so none is spawned again mid-run and both are busy from the start.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.cpu_tree import MeasuredRun, run_measured

PROCESSES = 2
THREADS = 64  # per process


def image_urls(gateway: str, images_cid: str, token_ids: Iterable[int]) -> list[str]:
    """The gateway URL of each token's image in the demo's IPFS folder (``<id>.png``)."""
    base = gateway.rstrip("/")
    return [f"{base}/ipfs/{images_cid}/{i}.png" for i in token_ids]


def write_url_list(path: Path, urls: Iterable[str]) -> int:
    """img2dataset's ``txt`` input: one URL a line; how many were written."""
    lines = list(urls)
    path.write_text("".join(f"{url}\n" for url in lines))
    return len(lines)


def command(
    exe: Path, url_list: Path, output: Path, images: int, processes: int, threads: int
) -> list[str]:
    """The img2dataset command line for the bench."""
    options = {
        "--input_format": "txt",
        "--output_folder": output,
        "--output_format": "files",
        "--processes_count": processes,
        "--thread_count": threads,
        "--number_sample_per_shard": math.ceil(images / processes),
        "--resize_mode": "no",
        "--disable_all_reencoding": True,
        "--enable_wandb": False,
    }
    return [str(exe), str(url_list), *(str(x) for k, v in options.items() for x in (k, v))]


@dataclass(frozen=True)
class Counts:
    images: int  # samples img2dataset reports
    ok: int  # of them, downloaded and kept


def read_counts(output: Path) -> Counts:
    """Sum of the ``*_stats.json`` img2dataset writes per shard."""
    images = ok = 0
    for path in sorted(output.glob("*_stats.json")):
        stats = json.loads(path.read_text())
        images += int(stats["count"])
        ok += int(stats["successes"])
    return Counts(images, ok)


@dataclass(frozen=True)
class Img2datasetRun:
    counts: Counts
    measured: MeasuredRun


def run(
    exe: Path,
    urls: list[str],
    workdir: Path,
    *,
    processes: int = PROCESSES,
    threads: int = THREADS,
    timeout_s: float,
) -> Img2datasetRun:
    """Download `urls` with img2dataset into `workdir` (its log: ``img2dataset.log``)."""
    url_list, output = workdir / "urls.txt", workdir / "out"
    write_url_list(url_list, urls)
    argv = command(exe, url_list, output, len(urls), processes, threads)
    log = workdir / "img2dataset.log"
    quiet = {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}  # nothing online
    measured = run_measured(argv, log, env={**os.environ, **quiet}, timeout_s=timeout_s)
    if measured.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"img2dataset exited {measured.returncode}:\n{tail}")
    return Img2datasetRun(read_counts(output), measured)
