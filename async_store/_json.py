"""JSON values as the store keeps them: encoded compactly, and refused when they would not read
back unchanged."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, TypeAlias

from .errors import QueryError

__all__ = ["FrozenDict", "FrozenList", "JsonInput", "dumps", "encode_json", "freeze", "thaw"]

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
    if not _is_json(value, 0):
        _check_json(value, what, "$", 0)  # raises, saying where
    try:
        text = _encode(value)
    except ValueError as exc:
        # An int past Python's digit limit for str(): it could not be read back either.
        raise QueryError(f"{what} is not JSON: {exc}") from None
    if text.isascii():  # a flag of the str, no scan: most JSON needs no UTF-8 check
        return text
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


_JSON_SCALARS = frozenset((str, int, bool, type(None)))
_MAX_DEPTH = 200

_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
"""``json.dumps`` with these options builds an encoder per call; one is enough."""


def _one_shot(encoder: json.JSONEncoder) -> Callable[[object], str]:
    """``encoder.encode``, without building the C encoder anew on every call (what
    ``JSONEncoder.encode`` does): it was a third of the cost of encoding a small event. No
    cycle check: callers pass values ``_is_json`` has bounded in depth (or the state's, which
    passed it). ``encoder.encode`` itself where the C accelerator is missing or differs."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    try:
        iterencode = make(
            None,
            encoder.default,
            json.encoder.encode_basestring,
            encoder.indent,
            encoder.key_separator,
            encoder.item_separator,
            encoder.sort_keys,
            encoder.skipkeys,
            encoder.allow_nan,
        )
    except TypeError:  # another signature than this interpreter's json module passes
        return encoder.encode

    def encode(value: object) -> str:
        return "".join(iterencode(value, 0))

    probe = {"a": [1, 2.5, "\u00e9\n", None, True, {}], "b": ""}
    return encode if encode(probe) == encoder.encode(probe) else encoder.encode


_encode = _one_shot(_ENCODER)

dumps = _one_shot(json.JSONEncoder(ensure_ascii=False))
"""``json.dumps(value, ensure_ascii=False)`` (spaced separators) of a value that is JSON already,
such as one held in the state: the settings table's format."""


def _is_json(value: object, depth: int) -> bool:
    """What ``_check_json`` accepts, without building the paths its errors name: every event
    and every mutation is checked, and almost all of them pass."""
    kind = type(value)
    if kind in _JSON_SCALARS:
        return True
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if depth > _MAX_DEPTH:
        return False
    # (Loops rather than all() over a generator: a generator per container cost more than
    # checking a small event's values.)
    if kind is list:
        for item in value:  # type: ignore[attr-defined]
            if type(item) not in _JSON_SCALARS and not _is_json(item, depth + 1):
                return False
        return True
    if kind is dict:
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                return False
            if type(item) not in _JSON_SCALARS and not _is_json(item, depth + 1):
                return False
        return True
    return False


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
                raise QueryError(
                    f"{what} is not JSON: {path} has a non-string key (a {type(key).__name__})"
                )
            _check_json(item, what, f"{path}.{key}", depth + 1)
        return
    # The type, not the value: values may be secrets, and error messages end up in logs.
    raise QueryError(
        f"{what} is not JSON: {path} is a {kind.__name__}; use lists, str-keyed dicts, str, int, "
        "float, bool and None"
    )


class FrozenDict(dict[str, Any]):
    """A JSON object inside the immutable state: a ``dict`` (so ``json.dumps``, equality and
    ``isinstance`` work as usual) whose mutating methods raise ``TypeError``."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("this value is part of the immutable state; copy it to change it")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse
    __ior__ = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))


class FrozenList(list[Any]):
    """A JSON array inside the immutable state: a ``list`` whose mutating methods raise."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("this value is part of the immutable state; copy it to change it")

    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = _refuse
    sort = reverse = __iadd__ = __imul__ = _refuse

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self))


def freeze(value: Any) -> Any:
    """``value`` with every dict and list (deeply) made read-only."""
    kind = type(value)
    if kind is dict:
        return FrozenDict(
            {k: v if type(v) in _JSON_SCALARS else freeze(v) for k, v in value.items()}
        )
    if kind is list:
        return FrozenList([v if type(v) in _JSON_SCALARS else freeze(v) for v in value])
    return value  # a scalar, or frozen already


def thaw(value: Any) -> Any:
    """A plain, mutable copy of a (possibly frozen) JSON value. Anything that is not a dict or
    a list is returned as it is (so ``encode_json`` still refuses a tuple from a caller)."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    return value
