"""The ``async-store`` command line (also ``python -m async_store``).

Exit codes: 0 success, 1 the operation failed (the message is on stderr), 2 wrong usage.
With ``--json`` standard output holds only JSON; logs go to standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import SqlConfig
from .demo import DEFAULT_DATA, run_demo
from .errors import StoreError
from .service import SqlService

__all__ = ["main", "run"]


def _config(args: argparse.Namespace) -> SqlConfig:
    if args.data is not None:
        return SqlConfig.in_directory(args.data, mvp=args.mvp)
    return SqlConfig.from_env()


async def _migrate(args: argparse.Namespace) -> int:
    async with SqlService(_config(args), migrate=False) as sql:
        done = await sql.migrate(args.target, migration_set=args.set)
    for line in done or ["nothing to do: every migration is applied"]:
        print(line)
    return 0


async def _status(args: argparse.Namespace) -> int:
    async with SqlService(_config(args), migrate=False) as sql:
        status = await sql.migration_status()
    if args.json:
        print(json.dumps([dataclasses.asdict(item) for item in status], indent=2))
        return 0
    for item in status:
        state = f"applied {item.applied_at}" if item.applied else "pending"
        if item.checksum_ok is False:
            state += "  EDITED SINCE APPLIED"
        print(f"{item.migration_set:<10} {item.version:04d}_{item.name:<24} {state}")
    return 0


async def _demo(args: argparse.Namespace) -> int:
    await run_demo(args.data if args.data is not None else DEFAULT_DATA, out=sys.stdout)
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data",
        type=Path,
        help="data directory: DIR/app_meta.db and DIR/events.db (default: the environment)",
    )
    common.add_argument("--mvp", action="store_true", help="one file, DIR/app_meta.db")

    parser = argparse.ArgumentParser(prog="async-store", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", parents=[common], help="run the demo on a data directory")
    demo.set_defaults(run=_demo)

    migrate = commands.add_parser("migrate", parents=[common], help="apply or revert migrations")
    migrate.add_argument("--target", type=int, help="walk the set up or down to this version")
    migrate.add_argument("--set", help="the migration set --target applies to (app_meta)")
    migrate.set_defaults(run=_migrate)

    status = commands.add_parser("status", parents=[common], help="list applied and pending")
    status.add_argument("--json", action="store_true", help="print JSON only")
    status.set_defaults(run=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        code: int = asyncio.run(args.run(args))
    except StoreError as exc:
        print(f"async-store {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def run() -> None:
    """Console-script entry point."""
    raise SystemExit(main())
