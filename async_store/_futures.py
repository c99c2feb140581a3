"""Answering a caller's future from the side that did the work (the writer, the state
manager's consumer), whether or not the caller is still waiting."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["fail", "resolve"]


def resolve(future: asyncio.Future[Any], value: Any) -> None:
    """Set the result, unless the future is done already (its caller was cancelled)."""
    if not future.done():
        future.set_result(value)


def fail(
    future: asyncio.Future[Any], error: BaseException, cause: BaseException | None = None
) -> None:
    """Set the error (with ``cause`` as its ``__cause__``), or cancel the future for a
    ``CancelledError``; nothing if the future is done already."""
    if cause is not None and cause is not error:
        error.__cause__ = cause
    if future.done():
        return
    if isinstance(error, asyncio.CancelledError):
        future.cancel()
        return
    future.set_exception(error)
    # Its caller may be gone (cancelled); don't report the error as never retrieved.
    future.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
