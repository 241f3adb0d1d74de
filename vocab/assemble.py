"""Assemble a merged model: the base's pieces unchanged, then added pieces with unique scores below them.

Why not the classic merge (:func:`classic_merge`: append every missing piece with score 0)?
SentencePiece BPE repeatedly merges the adjacent pair whose merged piece has the HIGHEST score.
Llama-2's scores are all negative, so a score-0 piece outranks every base merge: with a Chinese
model that learned ``20``, ``"2023"`` becomes ``20 2 3`` instead of four digits, and English
changes too (``Norgay``: ``▁N org ay`` -> ``▁Nor g ay`` through the Chinese model's ``▁Nor``).

:func:`assemble` gives added words scores in the Chinese model's merge order (that order is what
BPE uses: a word's parts are learned before it), all below every base piece except Llama-2's
whitespace runs (-1e9), each unique in float32; :func:`prune_dead` removes words BPE cannot reach.

Example::

    m = assemble(base, ["𠮷"], ["中国"])
    assert m.pieces[:32000] == base.pieces and m.pieces[-1].piece == "中国"
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from vocab.proto import NORMAL, SPIECE_UNDERLINE, ModelProto, copy_model, is_chinese_char


def classic_merge(base: ModelProto, zh: ModelProto) -> ModelProto:
    """The peers' merge (Chinese-LLaMA): append every Chinese-model piece the base lacks, score 0.

    Kept as the counter-example for tests and the benchmark: score 0 outranks every (negative)
    base score, so e.g. ``"2023"`` is split by the Chinese model's ``20`` + ``23``.

    >>> len(classic_merge(base, zh).pieces) > len(base.pieces)  # doctest: +SKIP
    True
    """
    out = copy_model(base)
    have = {p.piece for p in base.pieces}
    for p in zh.pieces:
        if p.piece not in have:
            new = out.pieces.add()
            new.piece, new.score, new.type = p.piece, 0.0, NORMAL
            have.add(p.piece)
    return out


def _whitespace_only(piece: str) -> bool:
    return set(piece) <= {SPIECE_UNDERLINE, " "}

def _score_floor(base: ModelProto) -> float:
    """Lowest score of a base NORMAL piece that is not a whitespace run (Llama-2: -31740)."""
    scores = [p.score for p in base.pieces if p.type == NORMAL and not _whitespace_only(p.piece)]
    return min(scores) if scores else 0.0


def assemble(base: ModelProto, chars: Iterable[str], words: Iterable[str]) -> ModelProto:
    """Base pieces unchanged, then ``chars``, then ``words`` (merge order) with unique scores
    descending from just below the base's lowest non-whitespace score. The additions must be new
    and distinct (as :func:`candidate_pieces` returns them); SentencePiece refuses duplicates.

    >>> m = assemble(base, ["𠮷"], ["中国"])  # doctest: +SKIP
    >>> m.pieces[-1].piece, m.pieces[-1].score < m.pieces[-2].score  # doctest: +SKIP
    ('中国', True)
    """
    out = copy_model(base)
    chars, words = list(chars), list(words)
    top = math.floor(_score_floor(base)) - 1.0
    # Words score in merge order (that order is what BPE uses); characters score below all words:
    # a character is never the result of a merge, so its score only has to be unique.
    for k, piece in enumerate(chars):
        p = out.pieces.add()
        p.piece, p.type, p.score = piece, NORMAL, top - len(words) - k
    for k, piece in enumerate(words):
        p = out.pieces.add()
        p.piece, p.type, p.score = piece, NORMAL, top - k
    # Scores are float32 in the proto: far from 0 consecutive integers collapse into ties, which
    # SentencePiece breaks leftmost-first and the HF export cannot mirror. Read them back to check.
    added = out.pieces[len(base.pieces):]
    if len({p.score for p in added}) != len(added):
        raise ValueError(f"added scores are not unique in float32 below {top} (base scores too low?)")
    return out


def _sp(m: ModelProto, dummy_prefix: bool | None = None):
    import sentencepiece as spm

    if dummy_prefix is not None and m.normalizer_spec.add_dummy_prefix != dummy_prefix:
        m = copy_model(m)
        m.normalizer_spec.add_dummy_prefix = dummy_prefix
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


def dead_pieces(m: ModelProto, ids: Iterable[int]) -> list[int]:
    """The ids among ``ids`` that BPE does not produce when their own text is encoded alone.

    Encoded without the dummy prefix, so ``中国`` is checked as ``中国`` and ``▁中国`` as ``" 中国"``.
    """
    ids = list(ids)
    sp = _sp(m, dummy_prefix=False)
    texts = [m.pieces[i].piece.replace(SPIECE_UNDERLINE, " ") for i in ids]
    encoded = sp.encode(texts)
    return [i for i, got in zip(ids, encoded, strict=True) if got != [i]]


def prune_dead(base: ModelProto, chars: list[str], words: list[str]) -> tuple[list[str], list[str]]:
    """Remove unreachable words until none is left; returns (kept words, removed words)."""
    removed: list[str] = []
    while True:
        m = assemble(base, chars, words)
        first = len(base.pieces) + len(chars)
        dead = set(dead_pieces(m, range(first, len(m.pieces))))
        if not dead:
            return words, removed
        removed.extend(m.pieces[i].piece for i in sorted(dead))
        words = [w for k, w in enumerate(words) if first + k not in dead]

def tokens_per_char(m: ModelProto, texts: list[str]) -> float:
    """Tokens per character of ``texts`` under ``m`` (lower = more text per context window).

    >>> tokens_per_char(base, ["你好"])  # doctest: +SKIP
    1.5

    (``base`` = Llama-2's model: '▁', '你', '好' -> 3 tokens / 2 chars.)
    """
    chars = sum(map(len, texts))
    if not chars:
        return float("nan")
    return sum(map(len, _sp(m).encode(texts))) / chars

def non_chinese_changes(base: ModelProto, merged: ModelProto, texts: Iterable[str]) -> list[str]:
    """The texts without Chinese characters whose ids differ between ``base`` and ``merged``."""
    texts = [t for t in texts if not any(is_chinese_char(c) for c in t)]
    a, b = _sp(base).encode(texts), _sp(merged).encode(texts)
    return [t for t, x, y in zip(texts, a, b, strict=True) if x != y]
