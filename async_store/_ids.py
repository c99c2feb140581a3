"""Identifiers the store generates: UUID version 7 (RFC 9562), which begin with the time in
milliseconds. Ids made in the same moment sort next to each other, so the unique indexes on them
grow at one end instead of touching a random page per row: a group commit of a hundred events
writes a handful of index pages rather than a hundred."""

from __future__ import annotations

import os
import time

__all__ = ["new_id"]

_VARIANT = {digit: "89ab"[int(digit, 16) & 0b11] for digit in "0123456789abcdef"}
"""The hex digit that opens the fourth group: the variant bits ``10``, then two random bits."""


def new_id() -> str:
    """A new UUIDv7 as text (``xxxxxxxx-xxxx-7xxx-yxxx-xxxxxxxxxxxx``): 48 bits of Unix time in
    milliseconds, then 74 random bits (written as hex directly: every append makes one)."""
    millis = f"{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}"
    rand = os.urandom(10).hex()  # 80 bits: 12 for rand_a, 62 for rand_b, 6 unused
    return f"{millis[:8]}-{millis[8:]}-7{rand[:3]}-{_VARIANT[rand[3]]}{rand[4:7]}-{rand[7:19]}"
