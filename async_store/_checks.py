"""Checks of the arguments the storage APIs take, made before anything is queued: a wrong type
is a :class:`QueryError` naming the argument and the type it got (never the value, which may be
private), not a ``TypeError`` from deep inside or a value SQLite quietly coerces."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import QueryError

__all__ = ["check_int", "check_json_text", "check_mapping", "check_sequence", "check_text"]


def check_text(value: object, what: str) -> str:
    """A non-empty ``str`` that is valid UTF-8 (no lone surrogates)."""
    if not isinstance(value, str) or not value:
        shown = "an empty string" if value == "" else f"a {type(value).__name__}"
        raise QueryError(f"{what} must be a non-empty string, not {shown}")
    if value.isascii():  # a flag of the str: no copy
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise QueryError(
            f"{what} holds a lone surrogate at {exc.start} (not valid UTF-8)"
        ) from None
    return value


def check_int(value: object, what: str, minimum: int | None = None) -> int:
    """An ``int`` (not a ``bool``), at least ``minimum`` when given."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise QueryError(f"{what} must be an int, not a {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise QueryError(f"{what} must be at least {minimum}, not {value}")
    return value


def check_sequence(value: object, what: str) -> Sequence[Any]:
    """A list or tuple (a ``str`` is a sequence too, but never the one meant)."""
    if not isinstance(value, list | tuple):
        raise QueryError(f"{what} must be a list or a tuple, not a {type(value).__name__}")
    return value


def check_mapping(value: object, what: str) -> Mapping[str, Any]:
    """A mapping (``None`` is taken as an empty one)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise QueryError(f"{what} must be a mapping, not a {type(value).__name__}")
    return value


def check_json_text(value: object, what: str) -> str:
    """Text said to be JSON already: a ``str`` (the database's ``json_valid`` CHECK refuses
    text that is not JSON)."""
    if not isinstance(value, str):
        raise QueryError(f"{what} must be JSON text, not a {type(value).__name__}")
    return value
