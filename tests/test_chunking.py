"""``split_text``: chunks of at most ``chunk_size`` characters, consecutive chunks overlapping by
at most ``chunk_overlap`` characters, and nothing of the input lost, added or reordered.

The central check, :func:`assert_well_split`, strips each chunk's overlap with the one before
(a suffix of the previous chunk, at most ``chunk_overlap`` characters, followed by a space) and
requires the words that remain to be the input's words in order: a word that fits in
``chunk_size - chunk_overlap`` characters appears whole, a longer one is cut into consecutive
pieces. Several ways of stripping may exist for repetitive text; the check accepts the chunks
when any one of them works (a memoised search, so it stays polynomial).
"""

from __future__ import annotations

import functools
import itertools

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from async_store.chunking import split_text


def assert_well_split(text: str, chunks: list[str], chunk_size: int, chunk_overlap: int) -> None:
    """Fail unless ``chunks`` is a valid split of ``text`` (see the module docstring)."""
    assert all(chunk and len(chunk) <= chunk_size for chunk in chunks), chunks
    words = text.split()
    if not words:
        assert chunks == []
        return
    limit = chunk_size - chunk_overlap

    def consume(out_words: list[str], word: int, partial: int) -> tuple[int, int] | None:
        """Match ``out_words`` against the input from word ``word`` (``partial`` characters of
        it already seen); return the new position, or None when they do not match."""
        for out in out_words:
            if word == len(words):
                return None
            current = words[word]
            if partial == 0 and out == current:
                word += 1
            elif len(current) > limit and out and current.startswith(out, partial):
                partial += len(out)
                if partial == len(current):
                    word, partial = word + 1, 0
            else:
                return None
        return word, partial

    def new_parts(index: int) -> list[str]:
        """The candidate new text of chunk ``index``: all of it, or what follows an overlap."""
        chunk = chunks[index]
        if index == 0:
            return [chunk]
        previous = chunks[index - 1]
        parts = [chunk]
        for size in range(1, min(chunk_overlap, len(previous)) + 1):
            if chunk.startswith(previous[-size:] + " "):
                parts.append(chunk[size + 1 :])
        return parts

    @functools.cache
    def fits(index: int, word: int, partial: int) -> bool:
        if index == len(chunks):
            return word == len(words) and partial == 0
        for part in new_parts(index):
            position = consume(part.split(), word, partial)
            if position is not None and fits(index + 1, *position):
                return True
        return False

    assert fits(0, 0, 0), (text, chunks)


PROSE = (
    "Write-ahead logging keeps readers and the writer apart. A commit appends pages to the log!"
    " Readers keep reading the old pages? Yes.\n\n"
    "A checkpoint copies the pages back into the database file, and the log starts over.\n"
    "   Indented   line with   runs of spaces.\n\n\n"
    "Supercalifragilisticexpialidocious-and-then-some is one long word."
)


@pytest.mark.parametrize(
    ("chunk_size", "chunk_overlap"),
    [
        pytest.param(1000, 100, id="defaults-one-chunk"),
        pytest.param(80, 20, id="sentences"),
        pytest.param(40, 0, id="no-overlap"),
        pytest.param(30, 29, id="overlap-one-less-than-size"),
        pytest.param(12, 4, id="words-cut-by-character"),
        pytest.param(1, 0, id="one-character-chunks"),
    ],
)
def test_split_prose(chunk_size: int, chunk_overlap: int) -> None:
    chunks = split_text(PROSE, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    assert_well_split(PROSE, chunks, chunk_size, chunk_overlap)
    if chunk_size >= len(PROSE):
        assert len(chunks) == 1


def test_chunks_overlap_when_asked() -> None:
    text = " ".join(f"word{i}" for i in range(200))
    chunks = split_text(text, chunk_size=100, chunk_overlap=30)
    assert len(chunks) > 5
    assert_well_split(text, chunks, 100, 30)
    # Each chunk starts with words the one before ended with.
    for previous, chunk in itertools.pairwise(chunks):
        assert chunk.split()[0] in previous.split()[-6:]


def test_no_overlap_means_disjoint_chunks() -> None:
    text = " ".join(f"w{i}" for i in range(300))
    chunks = split_text(text, chunk_size=50, chunk_overlap=0)
    assert " ".join(chunks).split() == text.split()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(" \t\n\n  \n", id="whitespace-only"),
    ],
)
def test_nothing_to_split_gives_no_chunks(text: str) -> None:
    assert split_text(text) == []
    assert split_text(text, chunk_size=5, chunk_overlap=0) == []


@pytest.mark.parametrize(
    ("chunk_size", "chunk_overlap"),
    [
        pytest.param(0, 0, id="size-zero"),
        pytest.param(-10, 0, id="size-negative"),
        pytest.param(10, -1, id="overlap-negative"),
        pytest.param(10, 10, id="overlap-equals-size"),
        pytest.param(10, 11, id="overlap-above-size"),
    ],
)
def test_invalid_sizes_are_refused(chunk_size: int, chunk_overlap: int) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        split_text("some text", chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def test_overlap_is_cut_at_a_word_boundary() -> None:
    text = "alpha beta gamma delta"
    chunks = split_text(text, chunk_size=12, chunk_overlap=3)
    input_words = set(text.split())
    assert [w for chunk in chunks for w in chunk.split() if w not in input_words] == []


texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(list("aaabbbcde      .!?\n\n\t")),
        st.characters(codec="utf-8"),
    ),
    max_size=400,
)


@st.composite
def sizes(draw: st.DrawFn) -> tuple[int, int]:
    chunk_size = draw(st.integers(min_value=1, max_value=120))
    chunk_overlap = draw(st.integers(min_value=0, max_value=chunk_size - 1))
    return chunk_size, chunk_overlap


@settings(max_examples=300, deadline=None)
@given(text=texts, size_and_overlap=sizes())
@example(text="a a a a a a a a a a a a", size_and_overlap=(5, 3))
@example(text="abcdefghijklmnopqrstuvwxyz", size_and_overlap=(7, 2))
@example(text="one. two! three? four.\n\nfive", size_and_overlap=(6, 5))
def test_split_property(text: str, size_and_overlap: tuple[int, int]) -> None:
    chunk_size, chunk_overlap = size_and_overlap
    chunks = split_text(text, chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    assert_well_split(text, chunks, chunk_size, chunk_overlap)
