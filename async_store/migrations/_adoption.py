"""Adopting another application's store: a file with tables but no migration record, whose
schema an application's migration set describes up to its baseline (``MigrationSet.baseline``;
Flyway's ``baselineVersion``, Alembic's ``stamp``).

The runner hands an :class:`Adoption` the first transaction it opens under the migration lock
(``take``). There, re-read under the lock, the store has no record yet (else another process
adopted it first and nothing is done): each baselined set's versions up to its baseline are
recorded as applied, with their checksums, marked as baselined and never run, and
``user_version`` (the other application's until now) is reset. They commit together with the
migration that transaction runs, so a migration that fails leaves the file as it was found, and
a process that starts meanwhile sees either the foreign file or the adopted one, never half of
it. The application's tables stay untouched; the library's own sets then run as on any store.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from ._backend import MigrationSession
from ._record import StoreFacts
from ._sets import MigrationSet

__all__ = ["Adoption"]


class Adoption:
    """The baselined sets of one store found foreign, until they are recorded."""

    __slots__ = ("pending", "sets")

    def __init__(self, sets: Sequence[MigrationSet]) -> None:
        self.sets = {s.name: s for s in sets if s.baseline}
        self.pending = True
        """Until the first transaction under the lock took the adoption in."""

    def take(self, session: MigrationSession, found: StoreFacts) -> list[str]:
        """Inside the migration lock's transaction, with ``found`` read in it: record every
        baselined set at its baseline, unless the store has a record already. Returns what
        was recorded, one label per set."""
        self.pending = False
        if found.record:
            return []  # another process adopted the store first
        session.create_record()
        applied_at = datetime.now(UTC).isoformat(timespec="microseconds")
        done: list[str] = []
        for migration_set in self.sets.values():
            for migration in migration_set.migrations[: migration_set.baseline]:
                session.record_applied(
                    migration, applied_at=applied_at, duration_ms=0.0, baselined=True
                )
            done.append(f"baselined {migration_set.name} at {migration_set.baseline:04d}")
        # The other application's version number, if it kept one: from now on user_version
        # follows the library's set, which sets it as its migrations run.
        session.set_user_version(0)
        return done
