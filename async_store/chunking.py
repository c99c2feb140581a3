"""A simple text splitter for ingesting documents: paragraphs first, then sentences, then
words, packed into chunks of at most ``chunk_size`` characters that overlap by about
``chunk_overlap`` characters."""

from __future__ import annotations

import re

__all__ = ["split_text"]

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def split_text(text: str, *, chunk_size: int = 1000, chunk_overlap: int = 100) -> list[str]:
    """Split ``text`` into chunks of at most ``chunk_size`` characters, each starting with
    about the last ``chunk_overlap`` characters of the one before (cut at a word boundary).
    Empty text gives no chunks."""
    if chunk_size <= 0 or not 0 <= chunk_overlap < chunk_size:
        raise ValueError("need chunk_size > 0 and 0 <= chunk_overlap < chunk_size")
    pieces: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = " ".join(paragraph.split())
        if paragraph:
            pieces.extend(_fit(paragraph, chunk_size - chunk_overlap))
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current} {piece}" if current else piece
        if len(candidate) <= chunk_size:
            current = candidate
            continue
        chunks.append(current)
        tail = _tail(current, chunk_overlap)
        current = f"{tail} {piece}" if tail and len(tail) + 1 + len(piece) <= chunk_size else piece
    if current:
        chunks.append(current)
    return chunks


def _fit(paragraph: str, limit: int) -> list[str]:
    """Cut a paragraph into pieces no longer than ``limit``: by sentence, then by word, then
    (for a single overlong word) by character."""
    if len(paragraph) <= limit:
        return [paragraph]
    pieces: list[str] = []
    for sentence in _SENTENCE.split(paragraph):
        if len(sentence) <= limit:
            pieces.append(sentence)
            continue
        word_run = ""
        for word in sentence.split(" "):
            while len(word) > limit:
                if word_run:
                    pieces.append(word_run)
                    word_run = ""
                pieces.append(word[:limit])
                word = word[limit:]
            candidate = f"{word_run} {word}" if word_run else word
            if len(candidate) <= limit:
                word_run = candidate
            else:
                pieces.append(word_run)
                word_run = word
        if word_run:
            pieces.append(word_run)
    return pieces


def _tail(text: str, size: int) -> str:
    """The last whole words of ``text`` that fit in ``size`` characters."""
    if size <= 0:
        return ""
    if len(text) <= size:
        return text
    start = len(text) - size
    if text[start - 1] == " ":
        return text[start:]
    space = text.find(" ", start)
    return text[space + 1 :] if space != -1 else ""
