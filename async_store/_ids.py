"""Identifiers the store generates: UUID version 7 (RFC 9562), which begin with the time in
milliseconds. Ids made in the same moment sort next to each other, so the unique indexes on them
grow at one end instead of touching a random page per row: a group commit of a hundred events
writes a handful of index pages rather than a hundred."""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]

_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62
_RAND_A = (1 << 12) - 1
_RAND_B = (1 << 62) - 1


def new_id() -> str:
    """A new UUIDv7 as text (``xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx``): 48 bits of Unix time in
    milliseconds, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION_7
        | ((rand >> 64) & _RAND_A) << 64
        | _VARIANT
        | (rand & _RAND_B)
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
