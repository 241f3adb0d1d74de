"""Deduplication across all sources: exact (hash of the cleaned text) and near (MinHash + LSH).

Signatures are computed where the cleaning happens (worker processes, :func:`minhash_signature`).
The :class:`Deduplicator` defines the decisions: documents in input order, the first occurrence
kept, a later one dropped when it has the digest of a kept one or an LSH candidate among the kept
ones whose signature agrees on >= ``near_threshold`` of its values. Each check is one set lookup
plus one LSH query (``bands`` hash-table lookups): linear, never pairwise. The local engine makes
the same decisions with its state on disk and the work partitioned (:mod:`corpora.dedup_sharded`).

Example::

    >>> cfg = DedupConfig()
    >>> d = Deduplicator(cfg)
    >>> a = "数学是研究数量、结构、变化以及空间等概念的一门学科，从某种角度看属于形式科学的一种。"
    >>> d.check("a", a, minhash_signature(a, cfg))
    >>> d.check("b", a, minhash_signature(a, cfg))
    'exact_duplicate'
    >>> b = a[:-1] + "！"                             # the last character differs
    >>> d.check("c", b, minhash_signature(b, cfg))
    'near_duplicate'

Memory: ~3.3 KB per kept document in Python objects (signature, LSH tables, exact set; measured by
``bench/corpus.py --dedup``), which is why the build runs it per linked group of documents only.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

import numpy as np

_WHITESPACE = str.maketrans("", "", " \t\n\r\u3000")


@dataclass
class DedupConfig:
    """Deduplication settings.

    Example (YAML)::

        dedup: {exact: true, near: true, near_threshold: 0.8, shingle_chars: 5}
    """

    exact: bool = True
    """Drop documents whose cleaned text is identical to an earlier one (``exact_duplicate``)."""
    near: bool = True
    """Drop documents whose estimated Jaccard similarity to an earlier one is >= ``near_threshold``."""
    near_threshold: float = 0.8
    """Jaccard similarity of character shingle sets above which two documents are near duplicates."""
    num_perm: int = 128
    """MinHash permutations: more is more accurate and slower (memory is 4 bytes each per document)."""
    shingle_chars: int = 5
    """Characters per shingle (whitespace removed first: Chinese has no word spaces)."""
    seed: int = 1
    """MinHash seed (fixed: the same corpus always deduplicates the same way)."""
    max_partition_entries: int = 2_000_000
    """Local engine: bucket keys (1 + LSH bands per document) one dedup task sorts at most (~64 B
    each at the peak of the sort, so ~115 MB): bounds a worker's memory whatever the corpus size.
    Decisions do not depend on it."""

    def __post_init__(self) -> None:
        if not 0.0 < self.near_threshold <= 1.0:
            raise ValueError(f"near_threshold must be in (0, 1], got {self.near_threshold}")
        if self.num_perm < 2 or self.shingle_chars < 1 or self.max_partition_entries < 1:
            raise ValueError("num_perm must be >= 2, shingle_chars and max_partition_entries >= 1")


def text_digest(text: str) -> bytes:
    """16-byte BLAKE2b digest of the text: the exact-duplicate key.

    >>> text_digest("数学") == text_digest("数学") != text_digest("数學")
    True
    """
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """Distinct 32-bit hashes of the ``n``-character shingles of ``text`` (whitespace removed).

    Vectorised (an FNV-style hash over code points): hashing each shingle with SHA-1 in Python,
    datasketch's default, was 70% of the build time. Collisions in 32 bits are negligible at
    document scale, and datasketch mixes the values again (fmix) before permuting.

    >>> len(shingle_hashes("数 学是科学", 3)), len(shingle_hashes("数学", 3))
    (3, 0)
    >>> bool(np.array_equal(shingle_hashes("数学是科学", 3), shingle_hashes("数学 是\\n科学", 3)))
    True
    """
    compact = text.translate(_WHITESPACE)
    count = len(compact) - n + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint32)
    codes = np.frombuffer(compact.encode("utf-32-le"), dtype="<u4").astype(np.uint32)
    h = np.full(count, 0x811C9DC5, dtype=np.uint32)
    for k in range(n):
        h = (h ^ codes[k : k + count]) * np.uint32(0x01000193)  # uint32 arithmetic wraps mod 2**32
    return np.unique(h)


@functools.lru_cache(maxsize=8)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """``(bands, rows)`` of the LSH index: datasketch's optimum for ``threshold`` (equal weights on
    false positives and negatives), computed once per process.

    >>> lsh_params(0.8, 128)
    (9, 13)
    """
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


@functools.lru_cache(maxsize=4)
def _template(num_perm: int, seed: int):
    from datasketch import MinHash

    # hashfunc=int: the inputs are already 32-bit shingle hashes.
    return MinHash(num_perm=num_perm, seed=seed, hashfunc=int)


def minhash_signature(text: str, cfg: DedupConfig) -> np.ndarray | None:
    """The MinHash signature (``uint32[num_perm]``) of the text's shingle set; None if too short.

    Uses ``datasketch.MinHash`` (affine32 scheme) with permutations built once per process.

    >>> cfg = DedupConfig()
    >>> sig = minhash_signature("数学是研究数量、结构以及空间等概念的一门学科。", cfg)
    >>> sig.dtype, sig.shape, minhash_signature("短", cfg)
    (dtype('uint32'), (128,), None)
    """
    hashes = shingle_hashes(text, cfg.shingle_chars)
    if hashes.size == 0:
        return None
    m = _template(cfg.num_perm, cfg.seed).copy()
    m.update_batch(hashes.tolist())
    return np.asarray(m.hashvalues, dtype=np.uint32).copy()


class Deduplicator:
    """Stateful exact + near duplicate filter; feed documents in a fixed order.

    ``check`` returns the rejection reason (``exact_duplicate`` / ``near_duplicate``) or None,
    in which case the document is registered as kept. After a rejection, ``match`` is the key of
    the earlier document it duplicates (for the manifest's examples).
    """

    def __init__(self, cfg: DedupConfig) -> None:
        from datasketch import MinHashLSH

        self.cfg = cfg
        self._exact: dict[bytes, str] = {}
        self._lsh = (MinHashLSH(threshold=cfg.near_threshold, num_perm=cfg.num_perm,
                                params=lsh_params(cfg.near_threshold, cfg.num_perm)) if cfg.near else None)
        self._signatures: list[np.ndarray] = []
        self._keys: list[str] = []
        self.match: str | None = None

    def check(self, key, text: str, signature: np.ndarray | None, digest: bytes | None = None) -> str | None:
        """Reason to drop ``text`` as a duplicate of an earlier document, else None (and remember it)."""
        self.match = None
        if self.cfg.exact:
            digest = digest if digest is not None else text_digest(text)
            if digest in self._exact:
                self.match = self._exact[digest]
                return "exact_duplicate"
        if self._lsh is not None and signature is not None:
            from datasketch import LeanMinHash

            lean = LeanMinHash(seed=self.cfg.seed, hashvalues=signature, scheme="affine32")
            # LSH candidates are approximate: confirm with the signature-estimated Jaccard.
            for cand in sorted(self._lsh.query(lean)):
                if float(np.mean(self._signatures[cand] == signature)) >= self.cfg.near_threshold:
                    self.match = self._keys[cand]
                    return "near_duplicate"
            self._lsh.insert(len(self._signatures), lean, check_duplication=False)
            self._signatures.append(signature)
            self._keys.append(key)
        if self.cfg.exact:
            self._exact[digest] = key  # type: ignore[index]
        return None
