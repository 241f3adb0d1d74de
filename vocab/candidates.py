"""Candidate pieces for the merge: what the Chinese model and the corpus offer, filtered by the invariant rules.

A piece may be added only if text without Chinese can never form it, so that English, code and
numbers keep exactly the base ids: it must contain a Chinese character
(:func:`vocab.proto.is_chinese_char`: Han, CJK punctuation, full-width forms, kana, bopomofo),
``▁`` may only be its first character, and every other character must be a base character or a
Chinese one. Characters are candidates too (every character of a word must be a piece: BPE starts
from characters); :data:`FULL_WIDTH_FORMS` are always offered (``Ａ``, ``１``: 3 byte tokens each
in Llama-2, common in Chinese text, and non-ASCII, so adding them cannot touch ASCII ids).

Example::

    c = candidate_pieces(base, zh, {"𠮷": 5})
    assert "𠮷" in c.chars and all(len(w) > 1 for w in c.words)
"""
from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vocab.assemble import _whitespace_only
from vocab.proto import NORMAL, SPIECE_UNDERLINE, ModelProto, is_chinese_char, mergeable_pieces

FULL_WIDTH_FORMS: tuple[str, ...] = tuple(chr(c) for c in range(0xFF01, 0xFF5F)) + ("\u3000",)
"""Full-width ASCII variants U+FF01..U+FF5E (``！`` .. ``～``, letters, digits) and the ideographic
space: all :func:`~vocab.proto.is_chinese_char`, so they obey the "contains a Chinese character" rule."""


@dataclass
class Candidates:
    """What the Chinese model and corpus offer, filtered, in the order they would be added."""

    chars: list[str]
    """Chinese characters missing from the base, most frequent first."""
    words: list[str]
    """Multi-character pieces missing from the base, in the Chinese model's merge order."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Chinese-model pieces left out, by reason (``in_base``, ``no_chinese_char``, ...)."""


def candidate_pieces(
    base: ModelProto, zh: ModelProto, char_counts: Mapping[str, float] | None = None, min_char_count: float = 2,
    extra_chars: Iterable[str] = FULL_WIDTH_FORMS,
) -> Candidates:
    """Filter the Chinese model's pieces into characters and words that may be added.

    A multi-character piece qualifies if the base lacks it, it has a Chinese character, ``▁``
    occurs only as its first character, and every other character is a base character or a
    Chinese one. Characters come from the qualifying pieces, the Chinese model's single-character
    pieces, ``char_counts`` (count >= ``min_char_count``) and ``extra_chars``, Chinese only.

    >>> c = candidate_pieces(base, zh, {"𠮷": 5})  # doctest: +SKIP
    >>> "𠮷" in c.chars, all(len(w) > 1 for w in c.words)  # doctest: +SKIP
    (True, True)
    """
    base_pieces = {p.piece for p in base.pieces}
    base_chars = {p for p in mergeable_pieces(base) if len(p) == 1}
    skipped: collections.Counter[str] = collections.Counter()
    zh_normal = sorted(
        ((p.score, i, p.piece) for i, p in enumerate(zh.pieces) if p.type == NORMAL), key=lambda t: (-t[0], t[1])
    )
    words: list[str] = []
    zh_rank: dict[str, int] = {}  # Chinese characters the zh model has or needs, in zh order
    for rank, (_, _, piece) in enumerate(zh_normal):
        if len(piece) == 1:
            if is_chinese_char(piece) and piece not in base_pieces:
                zh_rank.setdefault(piece, rank)
            continue
        if piece in base_pieces:
            skipped["in_base"] += 1
        elif _whitespace_only(piece):
            skipped["whitespace_only"] += 1
        elif not any(is_chinese_char(c) for c in piece):
            skipped["no_chinese_char"] += 1
        elif SPIECE_UNDERLINE in piece[1:]:
            skipped["inner_space"] += 1
        elif any(c not in base_chars and not is_chinese_char(c) for c in piece):
            skipped["non_base_non_chinese_char"] += 1
        else:
            words.append(piece)
            for c in piece:
                if c not in base_pieces:
                    zh_rank.setdefault(c, rank)  # must be a piece: BPE starts from characters
    counts = char_counts or {}
    chars = set(zh_rank) | {
        c for c, n in counts.items() if n >= min_char_count and len(c) == 1 and is_chinese_char(c) and c not in base_pieces
    } | {c for c in extra_chars if len(c) == 1 and is_chinese_char(c) and c not in base_pieces}
    # Most frequent in the corpus first, then the zh model's order: what a size cap cuts is the rarest.
    chars_sorted = sorted(chars, key=lambda c: (-counts.get(c, 0), zh_rank.get(c, len(zh_normal)), c))
    return Candidates(chars=chars_sorted, words=words, skipped=dict(skipped))
