"""A real English corpus that ships with Python, for the demo and tests: the paragraphs of the standard
library's pydoc topics (``pydoc_corpus``), with natural-language questions about them (``pydoc_queries``).
Nothing is downloaded."""

from __future__ import annotations

import re

import numpy as np

from vecpack.errors import InvalidInput

_MIN_PARAGRAPH_CHARS = 40
_PARAGRAPH_SPLIT = re.compile(r"\n[ \t]*\n")
_UNDERLINE = re.compile(r"^[ \t]*([*=\-~^#+])\1{2,}[ \t]*$", re.MULTILINE)  # reST heading underlines


def pydoc_corpus(max_paragraphs: int | None = None) -> tuple[list[str], list[str]]:
    """A real English corpus that ships with Python: the paragraphs of ``pydoc_data.topics``.

    Returns ``(ids, texts)``.  Topics are taken in sorted order and paragraphs in
    document order; ids are ``"topic/N"`` with N counting the kept paragraphs of
    that topic from 0.  Each text has its whitespace collapsed to single spaces;
    heading underlines are dropped and paragraphs shorter than 40 characters
    (mostly headings) are skipped.  About 2,000 paragraphs on CPython 3.11; the
    exact count follows the Python version.

    ``max_paragraphs`` keeps an evenly spaced subset of that size (still in
    corpus order, so it spans all topics) instead of the first N.
    """
    if max_paragraphs is not None and (
        isinstance(max_paragraphs, bool) or not isinstance(max_paragraphs, (int, np.integer)) or max_paragraphs < 1
    ):
        raise InvalidInput(f"max_paragraphs must be a positive int or None, got {max_paragraphs!r}")
    from pydoc_data.topics import topics

    ids: list[str] = []
    texts: list[str] = []
    for topic in sorted(topics):
        kept = 0
        for raw in _PARAGRAPH_SPLIT.split(_UNDERLINE.sub("", topics[topic])):
            text = " ".join(raw.split())
            if len(text) < _MIN_PARAGRAPH_CHARS:
                continue
            ids.append(f"{topic}/{kept}")
            texts.append(text)
            kept += 1
    if max_paragraphs is not None and max_paragraphs < len(texts):
        pick = np.linspace(0, len(texts) - 1, int(max_paragraphs)).round().astype(np.int64)
        ids = [ids[i] for i in pick]
        texts = [texts[i] for i in pick]
    return ids, texts


# Each question with the pydoc topics that answer it (used by the tests and demos to check relevance).
_PYDOC_QUERIES: dict[str, tuple[str, ...]] = {
    "how do I catch an exception": ("try", "exceptions", "compound", "execmodel"),
    "what does the with statement do": ("with", "context-managers", "compound", "specialnames"),
    "how do I raise an error on purpose": ("raise", "exceptions", "execmodel"),
    "how do I stop a loop early": ("break", "while", "for", "compound"),
    "how do I skip to the next iteration of a loop": ("continue", "for", "while", "compound"),
    "how do I write an anonymous function": ("lambda", "compound", "function"),
    "how do I make a generator that produces values lazily": ("yield", "types"),
    "how do I assign to a global variable inside a function": ("global", "nonlocal", "naming", "execmodel"),
    "how do I import a module": ("import",),
    "how do I format a number with a fixed number of decimal places in a string": ("formatstrings", "string-methods"),
    "how do I take a slice of a list": ("slicings", "typesseq", "typesseq-mutable", "subscriptions", "lists"),
    "what methods does a dictionary have": ("typesmapping", "dict", "types"),
    "how do I split a string into words": ("string-methods",),
    "how do I define a class": ("class", "compound"),
    "how do I customize how an object is printed": ("customization", "specialnames"),
    "what values count as false in an if statement": ("truth", "booleans", "if", "else", "compound"),
    "how do I check that a condition holds while debugging": ("assert",),
    "what is a coroutine function defined with async def": ("async", "await", "types", "compound"),
    "how do I compare two objects for equality": ("comparisons", "customization", "specialnames"),
    "how do I delete an item from a list": ("del", "typesseq-mutable", "typesseq"),
    "what does the pass statement do": ("pass",),
    "how do I run the Python debugger": ("debugger",),
}


def pydoc_queries() -> list[str]:
    """22 hand-written questions a Python user might ask that the pydoc topics answer (fixed order)."""
    return list(_PYDOC_QUERIES)


def pydoc_query_topics() -> dict[str, tuple[str, ...]]:
    """For each of :func:`pydoc_queries`, the pydoc topics (id prefixes) that answer it."""
    return dict(_PYDOC_QUERIES)
