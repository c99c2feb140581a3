"""JSON values as the store keeps them: encoded compactly, and refused when they would not read
back unchanged."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TypeAlias

from .errors import QueryError

__all__ = ["JsonInput", "encode_json"]

JsonInput: TypeAlias = (
    "bool | int | float | str | Sequence[JsonInput] | Mapping[str, JsonInput] | None"
)
"""A value ``json`` can store and give back unchanged: ``None``, ``bool``, ``int``, finite
``float``, ``str``, lists and ``str``-keyed dicts of these. (Decoded values are typed ``Any``,
as ``httpx.Response.json()`` does.)"""


def encode_json(value: object, what: str) -> str:
    """Encode ``value`` as compact JSON, refusing what would not read back unchanged: NaN and
    infinities, non-string keys, tuples, sets, other objects. Raises :class:`QueryError`
    naming ``what`` and the path to the offending value."""
    _check_json(value, what, "$", 0)
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError(
            f"{what} is not JSON: {_first_unencodable(value, '$')} holds a lone surrogate, "
            "which is not valid UTF-8 text"
        ) from None
    return text


def _first_unencodable(value: object, path: str) -> str:
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_unencodable(item, f"{path}[{index}]")
            if found:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            try:
                str(key).encode("utf-8")
            except UnicodeEncodeError:
                return f"a key of {path}"
            found = _first_unencodable(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
    return ""


_JSON_SCALARS = (str, int, bool, type(None))
_MAX_DEPTH = 200


def _check_json(value: object, what: str, path: str, depth: int) -> None:
    kind = type(value)
    if kind in _JSON_SCALARS:
        return
    if isinstance(value, float) and kind is float:
        if not math.isfinite(value):
            raise QueryError(f"{what} is not JSON: {path} is {value!r}")
        return
    if depth > _MAX_DEPTH:
        raise QueryError(f"{what} is nested more than {_MAX_DEPTH} levels deep at {path}")
    if isinstance(value, list) and kind is list:
        for index, item in enumerate(value):
            _check_json(item, what, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, dict) and kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise QueryError(f"{what} is not JSON: {path} has the non-string key {key!r}")
            _check_json(item, what, f"{path}.{key}", depth + 1)
        return
    raise QueryError(
        f"{what} is not JSON: {path} is a {kind.__name__} ({value!r:.60}); use lists, str-keyed "
        "dicts, str, int, float, bool and None"
    )
