"""Finishing clean-up whatever cancellation arrives: asyncio's ``task.cancel()`` (once or
repeatedly) and anyio cancel scopes alike."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import anyio

__all__ = ["uncancellable"]

T = TypeVar("T")


async def uncancellable(aw: Awaitable[T]) -> T:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile, then re-raise the
    cancellation (so ``asyncio.timeout`` and cancel scopes still see it).

    Used for the steps that must never be cut short: a rollback, returning a connection to its
    pool, telling the writer a transaction is over.
    """
    task = asyncio.ensure_future(aw)
    cancellation: asyncio.CancelledError | None = None
    # The shielded scope stops anyio from re-delivering its cancellation on every await; the
    # loop below absorbs plain asyncio cancellation, which anyio's shield does not cover.
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError as exc:
                if not task.cancelled() and cancellation is None:
                    cancellation = exc
            except BaseException:
                if not task.done():
                    raise  # not the task's error: KeyboardInterrupt, SystemExit, ...
                # the task's own error is re-raised below
    if cancellation is not None:
        if not task.cancelled():
            task.exception()  # mark retrieved; the cancellation takes precedence
        # The one received, not a new one: anyio recognises its own cancellations by their
        # message, and a cancel scope lets through one it does not recognise.
        raise cancellation
    return task.result()
