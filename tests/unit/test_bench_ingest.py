"""The pure parts of bench/ingest.py: CPU accounting over process trees, img2dataset's
input and counts, the gateway's added latency from its command line, and the aims."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from bench import img2dataset_run
from bench.cpu_tree import run_measured, snapshot, spent, tree_cpu_seconds
from bench.img2dataset_env import MARKER, ensure_img2dataset
from bench.ingest import CPU_AIM_MS, aims, gateway_spec, per_item_ms
from infra.process import free_port, running
from infra.stack import StackConfig
from tasks.ingest.ipfs.car import write_car
from tasks.ingest.ipfs.importer import add_directory

BURN_S = 0.3
# Burns BURN_S of CPU, then exits.
BURNER = (
    f"import time\nend = time.process_time() + {BURN_S}\nwhile time.process_time() < end: pass\n"
)


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_tree_counts_the_cpu_of_children_that_ended() -> None:
    # The parent runs a burner to its end, waits for it, then idles until stopped.
    parent = (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {BURNER!r}], check=True)\n"
        "print('burnt', flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen(_python(parent), stdout=subprocess.PIPE, text=True) as proc:
        try:
            before = snapshot({"parent": proc.pid})
            assert proc.stdout is not None and proc.stdout.readline() == "burnt\n"
            used = spent(before, snapshot({"parent": proc.pid}))["parent"]
        finally:
            proc.kill()
    assert BURN_S <= used < BURN_S + 2.0  # the burner, ended and reaped, plus interpreter starts
    assert tree_cpu_seconds(proc.pid) == 0.0  # gone: nothing to count


def test_a_tree_counts_running_descendants() -> None:
    burn_then_idle = BURNER + "time.sleep(60)\n"
    parent = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {burn_then_idle!r}])\n"
    with subprocess.Popen(_python(parent)) as proc:
        try:
            deadline = time.monotonic() + 30
            while tree_cpu_seconds(proc.pid) < BURN_S and time.monotonic() < deadline:
                time.sleep(0.05)
            children = psutil.Process(proc.pid).children()
            assert len(children) == 1 and children[0].is_running()  # not ended, not reaped
            assert tree_cpu_seconds(proc.pid) >= BURN_S
        finally:
            for child in psutil.Process(proc.pid).children():
                child.kill()
            proc.kill()


def test_the_subreaper_counts_orphans(tmp_path: Path) -> None:
    # The command forks a burner and exits at once: the burner is orphaned mid-burn.
    orphaning = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', {BURNER!r}])\n"
        "print('parent gone', flush=True)\n"
    )
    done = run_measured(_python(orphaning), tmp_path / "log", timeout_s=60)
    assert done.returncode == 0
    assert (tmp_path / "log").read_text() == "parent gone\n"
    assert BURN_S <= done.cpu_seconds < BURN_S + 2.0
    assert done.wall_seconds >= BURN_S  # waited for the orphan too


def test_the_subreaper_reports_the_command_failing(tmp_path: Path) -> None:
    done = run_measured(_python("raise SystemExit(3)"), tmp_path / "log", timeout_s=60)
    assert done.returncode == 3


def test_url_list_names_each_image_raw_from_the_gateway(tmp_path: Path) -> None:
    urls = img2dataset_run.image_urls("http://127.0.0.1:8899/", "bafyimages", range(3))
    assert urls == [f"http://127.0.0.1:8899/ipfs/bafyimages/{i}.png" for i in range(3)]
    path = tmp_path / "urls.txt"
    assert img2dataset_run.write_url_list(path, urls) == 3
    assert path.read_text().splitlines() == urls  # img2dataset's txt input: one URL a line


def test_img2dataset_command_keeps_bytes_and_splits_work_per_process(tmp_path: Path) -> None:
    argv = img2dataset_run.command(
        tmp_path / "img2dataset", tmp_path / "urls.txt", tmp_path / "out", 10_001, 2, 64
    )
    options = dict(zip(argv[2::2], argv[3::2], strict=True))
    assert argv[:2] == [str(tmp_path / "img2dataset"), str(tmp_path / "urls.txt")]
    assert options["--resize_mode"] == "no"
    assert options["--disable_all_reencoding"] == "True"
    assert (options["--processes_count"], options["--thread_count"]) == ("2", "64")
    assert options["--number_sample_per_shard"] == str(math.ceil(10_001 / 2))  # a shard each


def test_counts_sum_img2dataset_shard_stats(tmp_path: Path) -> None:
    for shard, (count, ok) in enumerate([(5000, 4998), (5000, 5000)]):
        stats = {"count": count, "successes": ok, "failed_to_download": count - ok}
        (tmp_path / f"{shard:05d}_stats.json").write_text(json.dumps(stats))
    assert img2dataset_run.read_counts(tmp_path) == img2dataset_run.Counts(10_000, 9998)
    assert img2dataset_run.read_counts(tmp_path / "none") == img2dataset_run.Counts(0, 0)


def test_a_made_environment_is_reused(tmp_path: Path) -> None:
    venv = tmp_path / "img2dataset-9.9"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "img2dataset").write_text("")
    (venv / MARKER).write_text("img2dataset==9.9\n")
    assert ensure_img2dataset(tmp_path, "9.9") == venv / "bin" / "img2dataset"


def test_the_stack_gateway_runs_with_the_added_latency(tmp_path: Path) -> None:
    cfg = StackConfig(home=tmp_path, gateway_port=free_port())
    root, blocks = add_directory({"0.png": b"\x89PNG\r\n\x1a\n" + b"x" * 100})
    (tmp_path / "ipfs").mkdir()
    (tmp_path / "ipfs" / "demo.car").write_bytes(write_car([root], blocks.items()))
    spec = gateway_spec(cfg, 300)
    assert spec.argv[-2:] == ["--latency-ms", "300"]
    with running(spec):
        url = f"http://127.0.0.1:{cfg.gateway_port}/ipfs/{root}/0.png"
        started = time.monotonic()
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = reply.read()
        assert time.monotonic() - started >= 0.3
    assert body.startswith(b"\x89PNG")
    assert not os.path.exists(spec.pid_file)


def test_aims_and_per_item_figures() -> None:
    assert per_item_ms({"gateway": 2.5, "s3": 0.0}, 1000) == {"gateway": 2.5, "s3": 0.0}
    assert aims({"cpu_ms_per_token": CPU_AIM_MS}, 1.0) == {"cpu": True, "rate": True}
    assert aims({"cpu_ms_per_token": CPU_AIM_MS + 0.01}, 0.99) == {"cpu": False, "rate": False}
