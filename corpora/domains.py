"""Domains: weights for up/down-sampling by character share, and the per-domain held-out split.

Every corpus record carries ``domain`` (``legal``, ``dialogue``, ``encyclopedia``...) and
``script``. The corpus itself is written unweighted; consumers (vocabulary training, the
pretraining packer) apply weights from their own config with :func:`weighted_sample`, so one corpus
serves every mixture::

    >>> recs = [{"id": "a/1", "domain": "legal", "text": "甲"}, {"id": "b/1", "domain": "dialogue", "text": "乙"}]
    >>> [r["id"] for r in weighted_sample(recs, {"legal": 0.0, "dialogue": 2.0}, seed=0)]
    ['b/1', 'b/1']

A weight ``w`` is a multiplier on a domain's natural share: each record is used ``floor(w)`` times
plus once more with probability ``w - floor(w)``, decided by a hash of ``(seed, record id)`` so the
choice is stable whatever the order or the number of workers. Missing domains keep weight 1.
:func:`weights_for_shares` turns target character shares into such multipliers.
"""
from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Iterable, Iterator, Mapping


def check_weights(weights: Mapping[str, float], known: Iterable[str] | None = None,
                  where: str = "domain_weights") -> dict[str, float]:
    """Validate domain weights; a ``ValueError`` naming ``where.<domain>`` for a bad one.

    Bad: a negative, NaN or infinite weight, a domain the corpus does not have (when ``known`` is
    given), or weights that leave nothing (every known domain at 0).

    >>> check_weights({"legal": 2}, known=["legal", "news"])
    {'legal': 2.0}
    >>> check_weights({"lgeal": 2}, known=["legal", "news"])
    Traceback (most recent call last):
    ...
    ValueError: domain_weights.lgeal: unknown domain 'lgeal'; the corpus has legal, news
    """
    out: dict[str, float] = {}
    for domain, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ValueError(f"{where}.{domain}: weight must be a finite number >= 0, got {w!r}")
        out[domain] = float(w)
    domains = set(out)
    if known is not None:
        known = sorted(set(known))
        unknown = sorted(domains - set(known))
        if unknown:
            raise ValueError(f"{where}.{unknown[0]}: unknown domain {unknown[0]!r}; the corpus has {', '.join(known)}")
        domains = set(known)
    if domains and all(out.get(d, 1.0) == 0.0 for d in domains):
        raise ValueError(f"{where}: every domain has weight 0 ({', '.join(sorted(domains))}): nothing would be used")
    return out


def _unit_hash(seed: int, key: str) -> float:
    """A stable number in [0, 1) for ``(seed, key)``."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def repeat_count(record: Mapping, weights: Mapping[str, float], seed: int = 0) -> int:
    """How many times to use ``record`` under ``weights`` (see the module docstring).

    The record is identified by its ``id`` (its ``text`` if it has none).

    >>> [repeat_count({"id": "x", "domain": "legal"}, {"legal": w}) for w in (0.0, 1.0, 3.0)]
    [0, 1, 3]
    """
    w = weights.get(record.get("domain", ""), 1.0)
    whole = math.floor(w)
    frac = w - whole
    if frac == 0.0:
        return whole
    key = record.get("id") or record.get("text", "")
    return whole + (_unit_hash(seed, key) < frac)


def weighted_sample(records: Iterable[Mapping], weights: Mapping[str, float], seed: int = 0) -> Iterator[Mapping]:
    """Stream ``records``, each repeated :func:`repeat_count` times (0 = dropped). Pure and lazy."""
    for rec in records:
        for _ in range(repeat_count(rec, weights, seed)):
            yield rec


def weights_for_shares(domain_chars: Mapping[str, int], target_shares: Mapping[str, float],
                       where: str = "domain_shares") -> dict[str, float]:
    """Multipliers that turn the natural character shares into ``target_shares`` (same total size).

    ``target_shares`` must name every domain with ``chars > 0`` and sum to 1 (within 1e-6).

    >>> weights_for_shares({"legal": 300, "dialogue": 100}, {"legal": 0.5, "dialogue": 0.5})
    {'legal': 0.6666666666666666, 'dialogue': 2.0}
    """
    check_weights(target_shares, known=domain_chars, where=where)
    missing = sorted(d for d, c in domain_chars.items() if c > 0 and d not in target_shares)
    if missing:
        raise ValueError(f"{where}.{missing[0]}: no target share for domain {missing[0]!r} (give every domain one)")
    total_share = sum(target_shares.values())
    if abs(total_share - 1.0) > 1e-6:
        raise ValueError(f"{where}: shares sum to {total_share:.6g}, not 1")
    total = sum(domain_chars.values())
    out = {}
    for d, share in target_shares.items():
        if share > 0 and domain_chars.get(d, 0) == 0:
            raise ValueError(f"{where}.{d}: share {share} for a domain with no characters")
        out[d] = share * total / domain_chars[d] if domain_chars.get(d, 0) else 0.0
    return out


def heldout_share(digest: bytes) -> float:
    """The text digest as a number in [0, 1): a document is held out when it is below the fraction.

    >>> 0.0 <= heldout_share(bytes(16)) < 1.0
    True
    """
    return int.from_bytes(digest[:8], "big") / 2.0**64


class HeldoutSplitter:
    """Decide train/heldout per document, with at least ``min_documents`` held out per group.

    A document is held out when its text-hash share is below ``fraction`` (stable: same text,
    same split) or when it is among the ``min_documents`` smallest-hash documents of its group
    (``(domain, script)``), so a small domain still gets a test split; the second rule never
    takes more than half a group. Memory: at most ``min_documents`` records per group are held
    back until :meth:`finish`.

    >>> s = HeldoutSplitter(fraction=0.0, min_documents=1)
    >>> [(split, r) for d, r in [(bytes([9] * 16), "a"), (bytes([1] * 16), "b")] for split, r in s.add("g", d, r)]
    [('train', 'a')]
    >>> s.finish()
    [('heldout', 'b')]
    """

    def __init__(self, fraction: float, min_documents: int) -> None:
        self.fraction = fraction
        self.min_documents = min_documents
        self.heldout: dict = {}  # group -> documents held out so far
        self.seen: dict = {}  # group -> documents seen
        self._reserve: dict = {}  # group -> max-heap of (-share, seq, record): smallest shares kept
        self._seq = 0

    def _need(self, group) -> int:
        return max(0, self.min_documents - self.heldout.get(group, 0))

    def add(self, group, digest: bytes, record) -> list[tuple[str, object]]:
        """Take one document; returns the ``(split, record)`` pairs that can be written now."""
        self.seen[group] = self.seen.get(group, 0) + 1
        share = heldout_share(digest)
        ready: list[tuple[str, object]] = []
        heap = self._reserve.setdefault(group, [])
        if share < self.fraction:
            self.heldout[group] = self.heldout.get(group, 0) + 1
            ready.append(("heldout", record))
        else:
            self._seq += 1
            heapq.heappush(heap, (-share, self._seq, record))
        while len(heap) > self._need(group):  # the largest shares can no longer be held out
            ready.append(("train", heapq.heappop(heap)[2]))
        return ready

    def finish(self) -> list[tuple[str, object]]:
        """The held-back documents: the smallest shares to heldout (at most half a group), the rest to train."""
        out: list[tuple[str, object]] = []
        for group, heap in self._reserve.items():
            reserve = sorted(heap, key=lambda x: (-x[0], x[1]))  # smallest share first
            take = min(len(reserve), self._need(group), max(0, self.seen[group] // 2 - self.heldout.get(group, 0)))
            self.heldout[group] = self.heldout.get(group, 0) + take
            out += [("heldout", r) for _, _, r in reserve[:take]] + [("train", r) for _, _, r in reserve[take:]]
        self._reserve = {}
        return out
