"""Does CVI rank retrieval difficulty? Collections of known difficulty, through the deployments.

Composes collections from the HashLips layers whose number of values per trait
type grows (tests.data.composed: same size, unique tokens, so few values = hard) and
exports them to the local stack's S3. The model is fine-tuned with the
nft1000/finetune deployment, from the tiny CLIP pretrained on our broad corpus
(bench.experiments.pretrain, uploaded to the stack's S3 and passed as
``pretrained``; ``--pretrained none`` starts from random weights as before), on a
separate composed collection that uses every
value (``--train-tokens`` tokens of the largest k), so each value is learned
equally well and the collections measured are unseen, as they are for a CLIP
that computes CVI on new collections. (Trained on the measured collections
themselves, values of the many-value collections are seen less often and the
known order drowns in that.) Then nft1000/cvi runs on the measured export, and
one JSON document is printed: per collection its values, CVI and parts and
top-1 within the collection, with Spearman's rho of CVI against top-1, and of
the known difficulty (values per type) against top-1 (is the order real for
this model?) and against CVI.

    python -m bench.experiments.cvi_validation [--values 3,4,5,6,8,10] [--tokens 400]
        [--train-tokens 12000] [--epochs 4] [--lr 1e-3] [--pretrained corpus|none|PATH]

Starts the local stack if it is down (the one `make demo` uses) and leaves it up.
The finetune run is named ``cvi-composed``; models/latest.json then points at it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.experiments import pretrain
from bench.measure import Meter
from infra import deployments, stack
from tasks.core import paths
from tasks.core.folders import open_folder
from tasks.core.paths import SIZES
from tasks.core.settings import Settings, load_settings
from tasks.evaluate.cvi import rank_correlations
from tests.data.composed import ComposedCollection, Plan, compose, neighbours, write_export

RUN_NAME = "cvi-composed"


def finetune_params(
    root: str, epochs: int, seed: int, pretrained: str = "", lr: float = 1e-3
) -> dict[str, str]:
    """Plain contrastive training of the tiny CLIP on the CPU, from ``pretrained`` (an
    ``s3://`` checkpoint) or from random weights ("")."""
    return {
        "train_data": f"{root}/train",
        "pretrained": pretrained,
        "mode": "plain",
        "epochs": str(epochs),
        "batch_size": "64",
        "lr": f"{lr:g}",
        "warmup_steps": "20",
        "precision": "fp32",
        "workers": "1",
        "name": RUN_NAME,
        "seed": str(seed),
    }


def run(
    plan: Plan, training: Plan, epochs: int, home: Path, pretrained: Path | None, lr: float
) -> dict[str, Any]:
    meter = Meter()
    cfg = (
        stack.load_config(home) if (home / "stack.json").exists() else stack.StackConfig(home=home)
    )
    env = stack.up(cfg)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    deployments.register(env)
    settings = load_settings(env)
    collections, root = _export(plan, settings)
    _, train_root = _export(training, settings)
    prepare_s = meter.lap()

    start = _upload(pretrained, settings) if pretrained else ""
    params = finetune_params(train_root, epochs, plan.seed, start, lr)
    trained = deployments.run(env, "nft1000/finetune", params)
    if not trained.completed:
        raise RuntimeError("nft1000/finetune did not complete")
    measured = deployments.run(
        env, "nft1000/cvi", {"model": RUN_NAME, "data": root, "workers": "1"}
    )
    if not measured.completed:
        raise RuntimeError("nft1000/cvi did not complete")
    report = _report(settings, root)
    values = {c.name: c.values_per_type for c in collections}
    near = {c.name: round(neighbours(c.tokens), 2) for c in collections}
    rows = [
        r
        | {
            "values_per_type": values[r["collection"]],
            "one_trait_neighbours": near[r["collection"]],
        }
        for r in report["rows"]
        if r["collection"] in values
    ]
    return {
        "plan": asdict(plan),
        "training": asdict(training),
        "epochs": epochs,
        "lr": lr,
        "pretrained": start or "none (random init)",
        "model": report["model"],
        "data": root,
        "spearman_cvi_top1": report["spearman"],
        "spearman_values_top1": _rho(rows, "values_per_type", "top1"),
        "spearman_values_cvi": _rho(rows, "values_per_type", "cvi"),
        "rows": rows,
        "seconds": {
            "compose_and_export": round(prepare_s, 1),
            "finetune_and_cvi": round(meter.lap(), 1),
        },
    }


def _export(plan: Plan, settings: Settings) -> tuple[list[ComposedCollection], str]:
    """The plan's collections, exported once under validation/composed-<plan digest>."""
    digest = hashlib.sha256(json.dumps(asdict(plan)).encode()).hexdigest()[:12]
    root = paths.url(settings, "validation", f"composed-{digest}")
    collections = compose(plan)
    if not open_folder(root, settings).exists("train/" + SIZES):
        write_export(collections, root, settings)
    return collections, root


def _upload(checkpoint: Path, settings: Settings) -> str:
    """The checkpoint in the stack's S3, under a key named by its digest; its URL."""
    data = checkpoint.read_bytes()
    key = f"pretrained/{hashlib.sha256(data).hexdigest()[:12]}/{checkpoint.name}"
    folder = open_folder(paths.url(settings, paths.MODELS), settings)
    if not folder.exists(key):
        folder.put(key, data)
    return paths.url(settings, paths.MODELS, key)


def _report(settings: Settings, root: str) -> dict[str, Any]:
    """nft1000/cvi's JSON report of the named run's latest model on ``root``."""
    pointer = json.loads(
        open_folder(paths.url(settings, "models"), settings).get(f"{RUN_NAME}/latest.json")
    )
    label = f"{pointer['name']}/{pointer['run_id']}"
    reports = open_folder(paths.url(settings, "reports", "cvi"), settings)
    for name in reports.walk():
        if name.endswith(".json"):
            doc: dict[str, Any] = json.loads(reports.get(name))
            if doc["data"] == root and doc["model"] == label:
                return doc
    raise RuntimeError(f"nft1000/cvi wrote no report for {label} on {root}")


def _rho(rows: list[dict[str, Any]], x: str, y: str) -> dict[str, float | None]:
    """Spearman's rho of two columns per group of rows (whole collections, each split)."""
    found = rank_correlations((r["split"] or "collection", r[x], r[y]) for r in rows)
    return {group: None if rho is None else round(rho, 3) for group, rho in found.items()}


@contextlib.contextmanager
def _logs_to_stderr() -> Iterator[None]:
    """Standard output is the JSON: the runs' logs, ours and subprocesses', go to stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--values", default="3,4,5,6,8,10", help="values per trait type")
    parser.add_argument("--tokens", type=int, default=400, help="tokens per collection")
    parser.add_argument(
        "--train-tokens", type=int, default=12000, help="of the training collection"
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument(
        "--pretrained",
        default="corpus",
        help="corpus (bench.experiments.pretrain), none, or a file",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--home", type=Path, default=Path(os.environ.get("NFT1000_HOME") or ".nft1000")
    )
    args = parser.parse_args()
    plan = Plan(
        values=tuple(int(v) for v in args.values.split(",")), tokens=args.tokens, seed=args.seed
    )
    training = Plan(
        values=(max(plan.values),),
        tokens=args.train_tokens,
        test_share=0.0,
        seed=args.seed + 1,
        name="Composed training",
    )
    with _logs_to_stderr():
        checkpoint = pretrain.chosen_checkpoint(args.pretrained)
        result = run(plan, training, args.epochs, args.home, checkpoint, args.lr)
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
