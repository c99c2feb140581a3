"""The ``async-store`` command line (also ``python -m async_store``).

Exit codes: 0 success, 1 the operation failed (the message is on stderr), 2 wrong usage;
``health`` exits 3 when the service is degraded and 4 when it is failing. With ``--json``
standard output holds only JSON; logs and progress go to standard error.

The databases are ``--data DIR`` (``--mvp``: one file) or, without ``--data``, the environment's
(``SqlConfig.from_env``); ``--mvp`` without ``--data`` is wrong usage. Every command creates the
database files that are missing and migrates them.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .backups import BackupManifest
from .config import SqlConfig
from .demo import run_demo
from .errors import StoreError
from .migrations._sets import BUILTIN_SETS
from .service import SqlService
from .sqlite.backup import restore_offline, verify_backup

EXIT_DEGRADED = 3
EXIT_FAILING = 4

__all__ = ["main", "run"]


def _config(args: argparse.Namespace) -> SqlConfig:
    if args.data is not None:
        return SqlConfig.in_directory(args.data, mvp=args.mvp)
    return SqlConfig.from_env()


def _missing(config: SqlConfig) -> list[str]:
    """The databases of ``config`` whose file does not exist yet."""
    return [database.name for database in config.databases if not database.path.exists()]


async def _create_missing(sql: SqlService, missing: Sequence[str]) -> list[str]:
    """Migrate the databases whose files the service just created (a service opened with
    ``migrate=False`` leaves them empty); return what was applied. Files that existed keep
    their state, so ``status`` still shows what is pending there."""
    if not missing:
        return []
    # MVP mode: every built-in set lives in the one file. Production: each set in its own.
    sets = BUILTIN_SETS if sql.config.mode == "mvp" else tuple(missing)
    applied: list[str] = []
    for migration_set in sets:
        applied += await sql.migrate(migration_set=migration_set)
    for name in missing:
        path = next(db.path for db in sql.databases if db.name == name)
        print(f"created and migrated {path}", file=sys.stderr)
    return applied


def _migration_json(done: Sequence[str]) -> list[dict[str, object]]:
    """The labels ``migrate()`` returns (``"applied events 0002_hash_length_check"``) as
    objects."""
    result: list[dict[str, object]] = []
    for label in done:
        action, migration_set, numbered = label.split(" ", 2)
        version, _, name = numbered.partition("_")
        result.append(
            {
                "action": action,
                "migration_set": migration_set,
                "version": int(version),
                "name": name,
            }
        )
    return result


async def _migrate(args: argparse.Namespace) -> int:
    config = _config(args)
    missing = _missing(config)
    async with SqlService(config, migrate=False) as sql:
        done = await _create_missing(sql, missing)
        done += await sql.migrate(args.target, migration_set=args.set)
    if args.json:
        print(json.dumps({"migrations": _migration_json(done)}, indent=2))
        return 0
    for line in done or ["nothing to do: every migration is applied"]:
        print(line)
    return 0


async def _status(args: argparse.Namespace) -> int:
    config = _config(args)
    missing = _missing(config)
    # migrate=False: a database that exists is shown as it is, pending migrations included.
    async with SqlService(config, migrate=False) as sql:
        await _create_missing(sql, missing)
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


def _manifest_text(manifest: BackupManifest) -> str:
    lines = [
        f"backup {manifest.directory} ({manifest.mode}, event position {manifest.event_position})"
    ]
    for item in manifest.files:
        versions = ", ".join(f"{k} {v}" for k, v in sorted(item.schema_versions.items()))
        lines.append(
            f"  {item.name}: {item.size_bytes:,} bytes, sha256 {item.sha256[:16]}…, {versions}"
        )
    return "\n".join(lines)


def _manifest_json(manifest: BackupManifest) -> str:
    return json.dumps({"directory": str(manifest.directory), **manifest.to_dict()}, indent=2)


class _Progress:
    """A progress bar on standard error, drawn only when it is a terminal."""

    def __init__(self, label: str) -> None:
        self._label = label
        self._shown = sys.stderr.isatty()
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        if not self._shown or total <= 0:
            return
        percent = min(100, done * 100 // total)
        if percent == self._last:
            return
        self._last = percent
        bar = "#" * (percent // 4)
        sys.stderr.write(f"\r{self._label} [{bar:<25}] {percent:3d}%")
        if percent == 100:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def _backup(args: argparse.Namespace) -> int:
    async with SqlService(_config(args)) as sql:
        progress = _Progress("backup")
        task = asyncio.ensure_future(sql.backup(args.dest))
        total = sum(db.path.stat().st_size for db in sql.databases)
        root = Path(args.dest) if args.dest is not None else sql.backup_root
        while not task.done():
            await asyncio.wait({task}, timeout=0.2)
            progress(_partial_bytes(root), total)
        manifest = await task
        progress(total, total)
    print(_manifest_json(manifest) if args.json else _manifest_text(manifest))
    return 0


def _partial_bytes(root: Path) -> int:
    """What the backup under way has written so far: its ``.partial`` folder's databases (the
    folder may be renamed into place at any moment)."""
    written = 0
    for path in root.glob("*.partial/*.db"):
        try:
            written += path.stat().st_size
        except FileNotFoundError:
            pass
    return written


async def _verify(args: argparse.Namespace) -> int:
    manifest = await verify_backup(args.backup)
    print(_manifest_json(manifest) if args.json else "ok: " + _manifest_text(manifest))
    return 0


async def _restore(args: argparse.Namespace) -> int:
    config = _config(args)
    targets = {database.name: database.path for database in config.databases}
    aside = await restore_offline(args.backup, targets, progress=_Progress("restore"))
    # Opened without migrating, then migrated explicitly: that returns what a backup taken by
    # older code needed to come up to the current schema (opening with migrate=True would
    # apply it silently).
    async with SqlService(config, migrate=False) as sql:
        applied = await sql.migrate()
    if args.json:
        report = {
            "restored": str(args.backup),
            "replaced": str(aside),
            "migrations": _migration_json(applied),
        }
        print(json.dumps(report, indent=2))
        return 0
    print(f"restored {args.backup}; the replaced files are in {aside}")
    for line in applied:
        print(line)
    if not applied:
        print("the backup's schema is current: no migration applied")
    return 0


async def _health(args: argparse.Namespace) -> int:
    async with SqlService(_config(args)) as sql:
        report = await sql.health()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"status: {report.status}")
        for reason in report.reasons:
            print(f"  {reason}")
        for name, db in report.databases.items():
            print(
                f"{name}: {db.size_bytes:,} bytes, WAL {db.wal_bytes:,} bytes, "
                f"journal {db.journal_mode}, synchronous {db.synchronous}, "
                f"schema {db.schema_version}"
            )
        print(f"event position {report.event_position}, free disk {report.disk_free_bytes:,} bytes")
    return {"ok": 0, "degraded": EXIT_DEGRADED, "failing": EXIT_FAILING}[report.status]


async def _metrics(args: argparse.Namespace) -> int:
    async with SqlService(_config(args)) as sql:
        sys.stdout.write(await sql.metrics_text())
    return 0


async def _demo(args: argparse.Namespace) -> int:
    # With no variable set, the environment's configuration is the demo's default directory.
    await run_demo(_config(args), out=sys.stdout)
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data",
        type=Path,
        help="data directory: DIR/app_meta.db and DIR/events.db (default: the environment)",
    )
    common.add_argument("--mvp", action="store_true", help="with --data: one file, DIR/app_meta.db")

    parser = argparse.ArgumentParser(prog="async-store", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", parents=[common], help="run the demo on a data directory")
    demo.set_defaults(run=_demo)

    migrate = commands.add_parser("migrate", parents=[common], help="apply or revert migrations")
    migrate.add_argument("--target", type=int, help="walk the set up or down to this version")
    migrate.add_argument("--set", help="the migration set --target applies to (app_meta)")
    migrate.add_argument("--json", action="store_true", help="print JSON only")
    migrate.set_defaults(run=_migrate)

    status = commands.add_parser("status", parents=[common], help="list applied and pending")
    status.add_argument("--json", action="store_true", help="print JSON only")
    status.set_defaults(run=_status)

    backup = commands.add_parser("backup", parents=[common], help="take a verified backup")
    backup.add_argument("--dest", type=Path, help="folder for the backup (default: backups/)")
    backup.add_argument("--json", action="store_true", help="print the manifest as JSON")
    backup.set_defaults(run=_backup)

    restore = commands.add_parser(
        "restore", parents=[common], help="restore a backup (the service must be stopped)"
    )
    restore.add_argument("backup", type=Path, help="the backup folder")
    restore.add_argument("--json", action="store_true", help="print JSON only")
    restore.set_defaults(run=_restore)

    verify = commands.add_parser("verify", help="check a backup against its manifest")
    verify.add_argument("backup", type=Path, help="the backup folder")
    verify.add_argument("--json", action="store_true", help="print the manifest as JSON")
    verify.set_defaults(run=_verify)

    health = commands.add_parser("health", parents=[common], help="status and facts")
    health.add_argument("--json", action="store_true", help="print JSON only")
    health.set_defaults(run=_health)

    metrics = commands.add_parser("metrics", parents=[common], help="Prometheus text")
    metrics.set_defaults(run=_metrics)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "mvp", False) and args.data is None:
        parser.error(
            f"{args.command}: --mvp needs --data DIR (without --data the configuration comes "
            "from the environment: set ASYNC_STORE_MODE=mvp there)"
        )
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
