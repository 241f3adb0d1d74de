"""Which pieces to add, and in what order of worth: measured gain on weighted multi-domain evidence.

The Chinese BPE's merge order says which merges were frequent in its *training mix*; it does not
say what a piece is worth to each kind of text the tokenizer will meet. Here every candidate
(Chinese characters and multi-character pieces) is scored by the tokens it saves:

    score(p) = sum over evidence groups g of  W_g * uses_g(p) / chars_g * saving(p)

- ``uses_g(p)``: how often ``p`` is used when group ``g``'s text is encoded by the merged model
  holding the current candidates (so a piece shadowed by a longer one earns only what is left);
- ``chars_g``: the group's characters, so every group counts per character, whatever its size;
- ``W_g``: the group's weight (config: each domain of the training corpus, and the word-list proxy
  for text we have no corpus of: reviews, social media, mainland news);
- ``saving(p)``: tokens saved per use: UTF-8 bytes - 1 for a character (it would be byte
  fallback), 1 for a multi-character piece (it would be its two merge parts).

A piece can only be produced if every piece on its BPE derivation is in the vocabulary, so a
piece is worth at least as much as the best piece that needs it (:func:`effective_scores`);
ranking by that value gives prefixes that are closed under derivation (no dead pieces). Scores
change as pieces are removed (a parent earns what a dropped child used to take), so the ranking
is recomputed over a few rounds, shrinking toward the budget (:func:`rank_candidates`).

Example::

    ranked = rank_candidates(base, chars, words, [Evidence("wiki", texts)], budget=20000)
    chosen = ranked.order[:20000]          # any prefix is closed: every piece stays reachable
"""
from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from vocab.proto import NORMAL, SPIECE_UNDERLINE, ModelProto


@dataclass
class Evidence:
    """One evidence group: texts (each with a weight, e.g. a word's frequency) and the group weight.

    ``dummy_prefix=False`` encodes each text as it occurs inside running text (words of a word
    list); corpus documents are encoded as documents (True).
    """

    name: str
    texts: Sequence[str]
    weight: float = 1.0
    text_weights: Sequence[float] | None = None
    dummy_prefix: bool = True

    @property
    def chars(self) -> float:
        if self.text_weights is None:
            return float(sum(map(len, self.texts)))
        return float(sum(w * len(t) for t, w in zip(self.texts, self.text_weights, strict=True)))


@dataclass
class Ranking:
    """Candidates in order of worth (any prefix is derivation-closed) and how they were scored."""

    order: list[str]
    """Added pieces, most valuable first."""
    score: dict[str, float] = field(default_factory=dict)
    """Effective score of each ranked piece in the last round (tokens saved per character, weighted)."""
    rounds: list[dict] = field(default_factory=list)
    """Per round: candidates scored, kept, pieces with no use."""


def saving(piece: str) -> int:
    """Tokens saved per use of ``piece``: UTF-8 bytes - 1 for one character (else byte fallback),
    1 for a longer piece (else its two merge parts). ``saving("中") == 2``, ``saving("中国") == 1``."""
    return len(piece.encode("utf-8")) - 1 if len(piece) == 1 else 1


def derivation(piece: str, scores: Mapping[str, float]) -> list[str] | None:
    """The pieces BPE forms, in order, when it encodes ``piece``'s text alone (no dummy prefix):
    repeatedly merge the adjacent pair whose merged piece has the highest score. None if it does
    not end as the single piece ``piece`` (a dead piece) or a character is not a piece.

    >>> derivation("abc", {"a": 0, "b": 0, "c": 0, "bc": -1, "ab": -2, "abc": -3})
    ['bc', 'abc']
    """
    symbols = list(piece)
    if any(s not in scores for s in symbols):
        return None
    formed: list[str] = []
    while len(symbols) > 1:
        best, best_i = None, -1
        for i in range(len(symbols) - 1):
            s = scores.get(symbols[i] + symbols[i + 1])
            if s is not None and (best is None or s > best):
                best, best_i = s, i
        if best is None:
            return None
        symbols[best_i:best_i + 2] = [symbols[best_i] + symbols[best_i + 1]]
        formed.append(symbols[best_i])
    return formed if symbols == [piece] else None


def piece_uses(model_bytes: bytes, ev: Evidence, ids_of_interest: range) -> collections.Counter:
    """``{id: weighted uses}`` of the ids in ``ids_of_interest`` when ``ev``'s texts are encoded."""
    import sentencepiece as spm

    from vocab.proto import parse_model

    m = parse_model(model_bytes)
    m.normalizer_spec.add_dummy_prefix = ev.dummy_prefix
    sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
    lo, hi = ids_of_interest.start, ids_of_interest.stop
    uses: collections.Counter = collections.Counter()
    encoded = sp.encode(list(ev.texts))
    weights = ev.text_weights if ev.text_weights is not None else [1.0] * len(encoded)
    for ids, w in zip(encoded, weights, strict=True):
        for i in ids:
            if lo <= i < hi:
                uses[i] += w
    return uses


def effective_scores(own: Mapping[str, float], needs: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """``eff(q) = max(own(q), own(p) for every p whose derivation needs q)``.

    Because a piece's derivation contains the derivations of the pieces formed on it, ``q`` in the
    derivation of ``p`` implies ``eff(q) >= eff(p)``: sorting by ``eff`` (ties: earlier merge first)
    gives derivation-closed prefixes.

    >>> effective_scores({"ab": 0.1, "abc": 0.5}, {"abc": ["ab"]})
    {'ab': 0.5, 'abc': 0.5}
    """
    eff = dict(own)
    for p, deps in needs.items():
        for q in deps:
            if q in eff and eff[q] < own.get(p, 0.0):
                eff[q] = own[p]
    return eff


def _assemble(base: ModelProto, chars: list[str], words: list[str]) -> ModelProto:
    from vocab.assemble import assemble

    return assemble(base, chars, words)


def score_round(base: ModelProto, chars: list[str], words: list[str], evidence: Sequence[Evidence],
                char_weight: float = 1.0) -> tuple[dict[str, float], dict[str, list[str]], list[str]]:
    """One scoring pass: (effective score per candidate, derivation needs per candidate, dead words).
    ``char_weight`` multiplies the score of single characters (see :func:`rank_candidates`)."""
    m = _assemble(base, chars, words)
    n_base = len(base.pieces)
    model_bytes = m.SerializeToString()
    added = range(n_base, len(m.pieces))
    own = {m.pieces[i].piece: 0.0 for i in added}
    total_weight = sum(ev.weight for ev in evidence) or 1.0
    for ev in evidence:
        chars_g = ev.chars
        if not chars_g or ev.weight <= 0:
            continue
        for i, n in piece_uses(model_bytes, ev, added).items():
            p = m.pieces[i].piece
            own[p] += ev.weight / total_weight * n / chars_g * saving(p) * (char_weight if len(p) == 1 else 1.0)
    scores = {p.piece: p.score for p in m.pieces if p.type == NORMAL}
    candidate = set(own)
    needs: dict[str, list[str]] = {}
    dead: list[str] = []
    for w in words:
        d = derivation(w.replace(SPIECE_UNDERLINE, " ").replace(" ", SPIECE_UNDERLINE), scores)
        if d is None:
            dead.append(w)
            continue
        needs[w] = [q for q in d[:-1] if q in candidate] + [c for c in w if c in candidate]
    return effective_scores(own, needs), needs, dead


def rank_candidates(base: ModelProto, chars: list[str], words: list[str], evidence: Sequence[Evidence],
                    budget: int, rounds: int = 3, char_weight: float = 1.0) -> Ranking:
    """Rank candidate characters and words (words in merge order) by measured, weighted gain.

    ``char_weight`` > 1 favours single characters: a character's saving carries over to any text
    that uses it, a word's mostly to text like the evidence (docs/vocab-experiments.md measures it).

    Each round scores the current candidates and keeps the best ones, shrinking geometrically from
    all candidates to ``budget``; the last round's order is returned (length <= ``budget``).
    Derivation-closed: every prefix of ``order`` holds each kept word's derivation and characters.
    """
    if budget <= 0:
        return Ranking(order=[])
    merge_rank = {w: k for k, w in enumerate(words)}
    cur_chars, cur_words = list(chars), list(words)
    out = Ranking(order=[])
    total = len(cur_chars) + len(cur_words)
    for r in range(max(rounds, 1)):
        frac = (r + 1) / max(rounds, 1)
        keep = round(total * (budget / total) ** frac) if total > budget else total
        eff, _, dead = score_round(base, cur_chars, cur_words, evidence, char_weight)
        dead_set = set(dead)
        # Ties: characters first, then the earlier merge (its derivation comes first).
        order = sorted((p for p in eff if p not in dead_set),
                       key=lambda p: (-eff[p], len(p) > 1, merge_rank.get(p, -1)))
        kept = order[:keep]
        out.rounds.append({"round": r + 1, "candidates": len(eff), "kept": len(kept), "dead": len(dead),
                           "unused": sum(1 for v in eff.values() if v == 0.0)})
        kept_set = set(kept)
        cur_chars = [c for c in cur_chars if c in kept_set]
        cur_words = [w for w in cur_words if w in kept_set]
        out.order, out.score = kept, {p: eff[p] for p in kept}
    return out


def split_ranked(order: Sequence[str], n: int, words_in_merge_order: Sequence[str]) -> tuple[list[str], list[str]]:
    """The first ``n`` ranked pieces as (characters, words in merge order) for :func:`vocab.assemble.assemble`.

    >>> split_ranked(["中国", "龘", "人民"], 2, ["人民", "中国"])
    (['龘'], ['中国'])
    """
    chosen = set(order[:n])
    return [p for p in order[:n] if len(p) == 1], [w for w in words_in_merge_order if w in chosen]
