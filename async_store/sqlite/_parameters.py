"""Parameter values on SQLite: besides what ``sqlite3`` binds itself (``str``, ``int``,
``float``, ``bytes``, ``None``), the values DESIGN.md promises on every backend, written as text
a reader of the file can compare and sort:

========================  =================================================================
``datetime``              ``2024-01-02 03:04:05.000000`` (always with microseconds, as
                          SQLAlchemy and encode/databases write it; ``+HH:MM`` after it when
                          the value carries a time zone)
``date``                  ``2024-01-02``
``time``                  ``03:04:05.000000`` (``+HH:MM`` after it when it carries a zone)
``Decimal``, ``UUID``     ``str(value)``: the exact digits; the hyphenated form
``Enum``                  its value (itself adapted)
``bool``                  ``1`` or ``0`` (sqlite3 binds it as the int it is)
========================  =================================================================

Anything else is a :class:`QueryError` naming the parameter and its type, before the statement
is queued. ``sqlite3`` has process-wide adapters that would do part of this, but registering
them would change how every other user of ``sqlite3`` in the process binds its values.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

from ..database import Parameters
from ..errors import QueryError

__all__ = ["adapted", "adapted_rows"]

# What sqlite3 binds as it is. A value of exactly one of these types skips every check below:
# a point read pays one set lookup per parameter.
_NATIVE = frozenset({str, int, float, bytes, type(None), bool, bytearray, memoryview})


def adapted(parameters: Parameters | None) -> Parameters:
    """``parameters`` checked and ready for ``sqlite3``: ``()`` for ``None``, the same object
    when every value is bound as it is, else a copy with the values above written as text.

    Raises :class:`QueryError` for parameters that are neither a sequence nor a mapping, and
    for a value of a type SQLite cannot store."""
    if parameters is None:
        return ()
    if isinstance(parameters, dict):
        for value in parameters.values():
            if value.__class__ not in _NATIVE:
                return {name: _value(value, f":{name}") for name, value in parameters.items()}
        return parameters
    if isinstance(parameters, tuple | list):
        for value in parameters:
            if value.__class__ not in _NATIVE:
                return [_value(value, f"{index}") for index, value in enumerate(parameters, 1)]
        return parameters
    if isinstance(parameters, str | bytes):
        # The value itself stays out of the message: parameters may be secrets, and error
        # messages end up in logs.
        raise QueryError(
            f"parameters must be a sequence or a mapping, not {type(parameters).__name__}; "
            "write (value,) for a single parameter"
        )
    if isinstance(parameters, Mapping):
        return {name: _value(value, f":{name}") for name, value in parameters.items()}
    if isinstance(parameters, Sequence):
        return [_value(value, f"{index}") for index, value in enumerate(parameters, 1)]
    raise QueryError(f"parameters must be a sequence or a mapping, not {type(parameters).__name__}")


def adapted_rows(rows: Sequence[Parameters]) -> Sequence[Parameters]:
    """Every parameter set of ``execute_many`` adapted as :func:`adapted` does; the message
    of an error names the set by its position (from 1)."""
    result: list[Parameters] | None = None
    for index, row in enumerate(rows):
        try:
            ready = adapted(row)
        except QueryError as exc:
            raise QueryError(f"parameter set {index + 1} of execute_many(): {exc}") from None
        if ready is not row and result is None:
            result = list(rows[:index])
        if result is not None:
            result.append(ready)
    return rows if result is None else result


def _value(value: Any, where: str) -> Any:
    kind = value.__class__
    if kind in _NATIVE:
        return value
    if isinstance(value, enum.Enum):
        return _value(value.value, where)
    if isinstance(value, datetime):
        return value.isoformat(" ", "microseconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat("microseconds")
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, str | int | float | bytes | bytearray | memoryview):
        return value  # a subclass: sqlite3 binds it as its base type
    type_name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    raise QueryError(
        f"parameter {where} is a {type_name}, which SQLite cannot "
        "store; pass str, int, float, bytes, None, bool, datetime, date, time, Decimal, UUID "
        "or an Enum (JSON: encode it with json.dumps)"
    )
