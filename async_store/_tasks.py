"""Background tasks of the library's own (a writer of coalesced appends, the state manager's
consumer, the projector, a log sink): each runs in a context of its own.

``asyncio`` gives a new task a copy of the creating task's context variables, and a database's
``transaction()`` is one: a task started inside a caller's transaction block would run its every
query in that transaction, to be committed or rolled back with the caller's work, or wait on it
forever."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["start_background"]

T = TypeVar("T")


def start_background(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    """Run ``coro`` as a task named ``name``, in an empty context (see the module docstring).
    The caller keeps the reference."""
    return asyncio.get_running_loop().create_task(coro, name=name, context=contextvars.Context())
