"""What every contender library must offer the generic workloads: the `Client` protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = ["BUSY_TIMEOUT_MS", "Client", "DbSpec", "Library", "Mode", "connection_pragmas"]

Synchronous = Literal["FULL", "NORMAL"]
BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class DbSpec:
    """The database file a client opens, and the durability the scenario asks for."""

    path: Path
    synchronous: Synchronous = "NORMAL"


def connection_pragmas(spec: DbSpec) -> tuple[str, ...]:
    """The PRAGMAs every contender sets on each connection it opens.

    `journal_mode=WAL` is not among them: it is stored in the database file, which the template
    already created in WAL mode.
    """
    return (f"PRAGMA synchronous={spec.synchronous}", f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


class Client(Protocol):
    """The operations the generic workloads time, as one library would do them."""

    async def insert(self, payload: str) -> None:
        """Insert one row in its own committed transaction."""

    async def insert_many(self, rows: Sequence[tuple[str]]) -> None:
        """Insert all `rows` in one transaction (executemany where the library has it)."""

    async def get(self, item_id: int) -> str | None:
        """Read one payload by primary key; None when there is no such row."""

    async def select_one(self) -> object:
        """One `SELECT 1` round trip."""


Mode = Literal["sequential", "shared", "per-task"]
"""How concurrent workloads use a library's clients:

- ``sequential``: one client, every operation one after another in one task (raw sqlite3, which
  blocks the loop thread anyway);
- ``shared``: one client shared by all tasks;
- ``per-task``: one client per task, all opened before the timed section.
"""


@dataclass(frozen=True)
class Library:
    """A contender library: its display name, how to open a client, and how to share it."""

    name: str
    requires: tuple[str, ...]
    connect: Callable[[DbSpec], AbstractAsyncContextManager[Client]]
    mode: Mode = "shared"
