"""The ``nft1000`` command: one entry point for the local stack and the demo.

    nft1000 stack up|down|status|env [--home H] [--s3-port N ...]
    NFT1000_PREFECT_DB=postgres nft1000 stack up    # Prefect's database in PostgreSQL
    eval "$(nft1000 stack env)"
    nft1000 deploy | demo | summary [--home H]

Each subcommand is a (configure parser, run) pair in COMMANDS, so new ones are
one entry more.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from infra import collections_cmd, demo, deployments, sql_shell, stack
from infra.process import ServiceError
from tasks.core.s3 import ObjectStore
from tasks.core.settings import load_settings
from tasks.ingest.summary import summarize

Run = Callable[[argparse.Namespace], int]


def _stack_config(args: argparse.Namespace) -> stack.StackConfig:
    """The config `up` saved in the home, then this shell's switches
    (NFT1000_PREFECT_DB), then any flags given on top."""
    saved = stack.with_environment(stack.load_config(args.home), os.environ)
    changes = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(stack.StackConfig)
        if f.name != "home" and getattr(args, f.name) is not None
    }
    return dataclasses.replace(saved, **changes)


def _stack_up(cfg: stack.StackConfig) -> int:
    try:
        env = stack.up(cfg)
    except ServiceError as e:
        hint = f"logs: {cfg.services_dir}; `nft1000 stack down` stops what did start"
        print(f"{e}\n{hint}", file=sys.stderr)
        return 1
    print(f'stack up in {cfg.home}; for a shell: eval "$(nft1000 stack env --home {cfg.home})"')
    print(f"Prefect UI: {env['PREFECT_API_URL'].removesuffix('/api')}")
    print(f"Dask dashboard: http://{stack.HOST}:{cfg.dask_dashboard_port}/status")
    return 0


def _stack_down(cfg: stack.StackConfig) -> int:
    stopped = stack.down(cfg)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _stack_status(cfg: stack.StackConfig) -> int:
    services = stack.status(cfg)
    for name, pid in services.items():
        print(f"{name:18} {'pid ' + str(pid) if pid else 'stopped'}")
    return 0 if all(services.values()) else 1


def _stack_env(cfg: stack.StackConfig) -> int:
    for key, value in stack.stack_env(cfg).items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


STACK_ACTIONS: dict[str, Callable[[stack.StackConfig], int]] = {
    "up": _stack_up,
    "down": _stack_down,
    "status": _stack_status,
    "env": _stack_env,
}


def _configure_stack(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=STACK_ACTIONS)
    _configure_home(parser)
    defaults = stack.StackConfig()
    for f in dataclasses.fields(stack.StackConfig):
        if f.name != "home":
            default = getattr(defaults, f.name)
            parser.add_argument(
                "--" + f.name.replace("_", "-"),
                type=type(default),
                help=f"default {default}, or what the last `up` in this home used",
            )


def _run_stack(args: argparse.Namespace) -> int:
    try:
        cfg = _stack_config(args)
    except ValueError as e:  # a switch or flag out of range
        print(e, file=sys.stderr)
        return 2
    return STACK_ACTIONS[args.action](cfg)


def _configure_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=Path(os.environ.get("NFT1000_HOME") or stack.StackConfig().home),
        help="state folder of the local stack (default: $NFT1000_HOME, else .nft1000)",
    )


def _run_deploy(args: argparse.Namespace) -> int:
    deployments.register(stack.pipeline_env(args.home))
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    return _print_summary(stack.pipeline_env(args.home))


def _print_summary(env: dict[str, str]) -> int:
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    rows = summarize(ObjectStore(load_settings(env)))
    if not rows:
        print("no manifests in the object store yet")
        return 1
    columns = list(rows[0])
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    for line in [dict(zip(columns, columns, strict=True)), *rows]:
        print("  ".join(str(line[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    """Start the stack, register deployments, run every stage on the demo; see infra.demo."""
    try:
        cfg = stack.with_environment(stack.load_config(args.home), os.environ)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    return demo.run_demo(cfg, lambda: stack.pipeline_env(args.home))


def _configure_collections(parser: argparse.ArgumentParser) -> None:
    _configure_home(parser)
    collections_cmd.configure(parser)


def _configure_sql(parser: argparse.ArgumentParser) -> None:
    _configure_home(parser)
    parser.add_argument("query", nargs="?", help="SQL to run (default: read from stdin)")
    parser.add_argument("--max-rows", type=int, default=40, help="rows printed per result")


def _run_sql(args: argparse.Namespace) -> int:
    env = stack.pipeline_env(args.home)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    return sql_shell.run(load_settings(env), args.query, args.max_rows)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Run]] = {
    "stack": ("start, stop and inspect the local services", _configure_stack, _run_stack),
    "deploy": ("register the nft1000/* deployments of prefect.yaml", _configure_home, _run_deploy),
    "demo": ("stack up, deploy, run every nft1000/* stage on the demo", _configure_home, _run_demo),
    "summary": ("per-collection counts from the manifests in S3", _configure_home, _run_summary),
    "sql": ("DuckDB SQL over the tables in S3 (views: captions, ...)", _configure_sql, _run_sql),
    "collections": (
        "list and search the collections a name can mean (NFT1000's and NFT1000_REGISTRIES')",
        _configure_collections,
        collections_cmd.run,
    ),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nft1000", description="NFT1000 pipeline tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, configure, _) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    return COMMANDS[args.command][2](args)


if __name__ == "__main__":
    sys.exit(main())
