"""The ``nft1000`` command: one entry point for the local stack and the demo.

    nft1000 stack up|down|status|env [--home H] [--s3-port N ...]
    NFT1000_PREFECT_DB=postgres nft1000 stack up    # Prefect's database in PostgreSQL
    NFT1000_MAX_RETRIES=2 nft1000 stack up          # any setting reaches every worker
    eval "$(nft1000 stack env)"                     # the settings, and where each came from
    nft1000 deploy | demo | summary [--home H]

Each subcommand is a (configure parser, run) pair in COMMANDS, so new ones are
one entry more.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shlex
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
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
    note = stack.stale_note(stack.stale_services(cfg, os.environ))
    if note:
        print(f"warning: {note}", file=sys.stderr)
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


# Variables whose whole value is a secret; other values are masked where they hold one.
SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD")
# A path segment that looks like an API key (RPC providers put theirs in the path).
_KEY_LIKE = re.compile(r"(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{16,}")


def mask(key: str, value: str) -> str:
    """``value`` fit to print: a secret variable as ***; in URLs, the userinfo, query
    values and key-like path segments as ***."""
    if any(word in key.upper() for word in SECRET_WORDS):
        return "***" if value else ""
    return ",".join(_mask_url(item) for item in value.split(","))


def _mask_url(text: str) -> str:
    try:
        url = urllib.parse.urlsplit(text)
    except ValueError:
        return "***"
    if not url.scheme or not url.netloc:
        return text
    host = url.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in url.netloc else host
    path = "/".join("***" if _KEY_LIKE.fullmatch(seg) else seg for seg in url.path.split("/"))
    pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    query = "&".join(f"{name}=***" for name, _ in pairs)
    return urllib.parse.urlunsplit((url.scheme, netloc, path, query, url.fragment))


def render_settings(resolved: Mapping[str, stack.Setting], environ: Mapping[str, str]) -> list[str]:
    """`stack env`: an export line for each value the stack sets (eval-able), a comment
    for each the user's shell or NFT1000_CONFIG file sets (masked), with where it came from."""
    lines = []
    for key, s in resolved.items():
        if s.source == stack.STACK:
            lines.append(f"export {key}={shlex.quote(s.value)}  # stack")
        elif s.source == stack.MERGED:
            added = mask(key, s.stack_value or "")
            lines.append(f"export {key}={shlex.quote(s.value)}  # yours, with the stack's {added}")
        else:
            where = f"from the {s.source}"
            if s.stack_value is not None and key in stack.MERGED_SETTINGS:
                where += f"; holds the stack's {mask(key, s.stack_value)}"
            elif s.stack_value is not None:
                where += f"; overrides the stack's {mask(key, s.stack_value)}"
            lines.append(f"# {key}={mask(key, s.value)}  # {where}")
    ignored = sorted(
        k
        for k, v in environ.items()
        if k.startswith("AWS_") and (k not in resolved or resolved[k].value != v)
    )
    if ignored:
        lines.append(
            f"# not passed on: the shell's {', '.join(ignored)} (AWS_* all come from the stack "
            "while its own S3 is used; with your NFT1000_S3_ENDPOINT_URL, all from the shell)"
        )
    return lines


def _stack_env(cfg: stack.StackConfig) -> int:
    try:
        resolved = stack.resolve_settings(cfg, os.environ)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    print(f"# the pipeline's settings for the stack in {cfg.home}, with this shell's")
    for line in render_settings(resolved, os.environ):
        print(line)
    note = stack.stale_note(stack.stale_services(cfg, os.environ))
    if note:
        print(f"# {note}")
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
        if args.action == "up":  # fail before anything starts
            stack.resolve_settings(cfg, os.environ)
    except ValueError as e:  # a switch, flag or setting out of range
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
        stack.resolve_settings(cfg, os.environ)  # fail before anything starts
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
