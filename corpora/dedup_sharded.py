"""The local engine's deduplication: partitioned over all cores, state on disk, the same decisions as
one in-memory :class:`~corpora.dedup.Deduplicator` fed the whole corpus in input order.

Why the decisions are the same: the Deduplicator decides a document from the earlier kept
documents that share a bucket with it: its exact key (the text digest) or one of its LSH bands.
Link every two documents that share a bucket; a decision then only involves documents of the same
connected component, whose relative order is the input order. So a fresh Deduplicator run over each
component's members, in input order, makes exactly the global decisions (a 64-bit hash of a bucket
that collides only adds a link: a bigger component, never a different decision). A document alone
in its component (most of a corpus) shares no bucket: it is kept without any run.

Steps, each a pool of tasks (documents are numbered in input order, ``gid``)::

    1 per work unit, in the read workers (:class:`UnitKeys`): digest + signature of every document
      that passed cleaning -> NNNNNN.docs.npy; its bucket keys, sorted -> NNNNNN.keys/rows.npy
    2 per key range (:func:`partition_edges`): that range of every unit's keys, sorted; a bucket of
      several documents gives edges (first document, each other one)
    3 main (:func:`components`): connected components of the edges (scipy), documents with edges only
    4 per group of components (:func:`resolve`): the Deduplicator over each, -> (gid, reason, match)

Memory: step 2 holds at most ``max_partition_entries`` keys (~64 B each at the sort's peak); step 3
~16 B per bucket a document shares with another (distinct documents cost nothing); step 4 one
component. On disk: ``17 + 4 * num_perm`` B per document (docs.npy) + 12 B per bucket key.

    >>> decisions = find_duplicates(prefixes, kept_per_unit, DedupConfig(), mapper, 4)   # doctest: +SKIP
    >>> decisions.reason(gid), decisions.match(gid)                                 # doctest: +SKIP
    ('near_duplicate', 17)
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from corpora.dedup import DedupConfig, Deduplicator, lsh_params

REASONS = ("", "exact_duplicate", "near_duplicate")
_PRIME = np.uint64(0x100000001B3)
_TASK_MEMBERS = 4096  # component members per resolve task


def doc_dtype(num_perm: int) -> np.dtype:
    """One row of ``docs.npy``: the text digest, whether it has a signature, the signature."""
    return np.dtype([("digest", "V16"), ("has_sig", "?"), ("sig", "<u4", (num_perm,))])


def _mix(h: np.ndarray) -> np.ndarray:
    # splitmix64's finaliser: spreads the keys over the whole 64-bit range (partitions by range).
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))


def bucket_keys(docs: np.ndarray, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(keys, rows)``: the bucket keys (``uint64``, sorted) of ``docs`` and the row of each: the
    digest (exact dedup) and each LSH band of the signature (near dedup, datasketch's band layout).

    >>> cfg = DedupConfig()
    >>> docs = np.zeros(2, doc_dtype(cfg.num_perm)); docs["has_sig"] = True
    >>> keys, rows = bucket_keys(docs, cfg)       # both rows: the same digest and the same 9 bands
    >>> keys.shape, bool((keys[0::2] == keys[1::2]).all()), rows[:4].tolist()
    ((20,), True, [0, 1, 0, 1])
    """
    rows, keys = [], []
    if cfg.exact:
        digest = np.frombuffer(docs["digest"].tobytes(), dtype="<u8")[0::2].copy()
        keys.append(_mix(digest))
        rows.append(np.arange(len(docs), dtype=np.int64))
    if cfg.near:
        bands, width = lsh_params(cfg.near_threshold, cfg.num_perm)
        signed = np.flatnonzero(docs["has_sig"])
        sig = docs["sig"][signed].astype(np.uint64)
        for band in range(bands):
            h = np.full(len(signed), band + 1, dtype=np.uint64)
            for col in range(band * width, (band + 1) * width):
                h = (h ^ sig[:, col]) * _PRIME  # uint64 arithmetic wraps mod 2**64
            keys.append(_mix(h))
            rows.append(signed)
    if not keys:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.uint32)
    all_keys = np.concatenate(keys)
    order = np.argsort(all_keys, kind="stable")
    return all_keys[order], np.concatenate(rows)[order].astype(np.uint32)


class UnitKeys:
    """Collects a work unit's digests and signatures (in a read worker), then writes its two files.

    >>> uk = UnitKeys(work_dir / "000007", DedupConfig())        # doctest: +SKIP
    >>> uk.add(text_digest(text), minhash_signature(text, cfg)); uk.close()   # doctest: +SKIP
    """

    def __init__(self, prefix: Path, cfg: DedupConfig) -> None:
        self.prefix, self.cfg = prefix, cfg
        self._rows: list[tuple] = []
        self._dtype = doc_dtype(cfg.num_perm)
        self._no_sig = np.zeros(cfg.num_perm, dtype=np.uint32)

    def add(self, digest: bytes, signature: np.ndarray | None) -> None:
        """Record the next document of the unit."""
        self._rows.append((digest, signature is not None, self._no_sig if signature is None else signature))

    def close(self) -> int:
        """Write ``PREFIX.docs.npy``, ``PREFIX.keys.npy`` and ``PREFIX.rows.npy``; the number of documents."""
        docs = np.array(self._rows, dtype=self._dtype)
        np.save(f"{self.prefix}.docs.npy", docs)
        keys, rows = bucket_keys(docs, self.cfg)
        np.save(f"{self.prefix}.keys.npy", keys)  # apart: a partition reads only its slice of each
        np.save(f"{self.prefix}.rows.npy", rows)
        self._rows = []
        return len(docs)


def partition_edges(p: int, n_partitions: int, prefixes: list[Path], base: np.ndarray) -> np.ndarray:
    """Edges ``int64[e, 2]`` (first gid of a bucket, another gid of it) of the buckets whose key falls in
    the ``p``-th of ``n_partitions`` equal ranges of 64-bit keys, over every unit."""
    lo = np.uint64((p << 64) // n_partitions)
    hi = np.uint64(((p + 1) << 64) // n_partitions) if p + 1 < n_partitions else None
    keys, gids = [], []
    for u, prefix in enumerate(prefixes):
        unit_keys = np.load(f"{prefix}.keys.npy", mmap_mode="r")
        if not len(unit_keys):
            continue
        a = int(np.searchsorted(unit_keys, lo))
        b = int(np.searchsorted(unit_keys, hi)) if hi is not None else len(unit_keys)
        keys.append(np.array(unit_keys[a:b]))
        gids.append(np.load(f"{prefix}.rows.npy", mmap_mode="r")[a:b].astype(np.int64) + base[u])
    if not keys:
        return np.empty((0, 2), dtype=np.int64)
    k, g = np.concatenate(keys), np.concatenate(gids)
    order = np.lexsort((g, k))
    k, g = k[order], g[order]
    first_of_bucket = np.ones(len(k), dtype=bool)
    first_of_bucket[1:] = k[1:] != k[:-1]
    first = g[np.maximum.accumulate(np.where(first_of_bucket, np.arange(len(k)), 0))]
    return np.stack([first[~first_of_bucket], g[~first_of_bucket]], axis=1)


def components(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the edges: ``(members, starts)``: the gids of each component in input
    order, components ordered by their first gid; component ``i`` is ``members[starts[i]:starts[i + 1]]``.

    >>> members, starts = components(np.array([[5, 9], [1, 2], [9, 7]]))
    >>> [members[a:b].tolist() for a, b in zip(starts, starts[1:])]
    [[1, 2], [5, 7, 9]]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not len(edges):
        return np.empty(0, dtype=np.int64), np.zeros(1, dtype=np.int64)
    nodes, inverse = np.unique(edges, return_inverse=True)
    inverse = inverse.reshape(-1, 2)
    graph = coo_matrix((np.ones(len(inverse), dtype=np.int8), (inverse[:, 0], inverse[:, 1])),
                       shape=(len(nodes), len(nodes)))
    _, labels = connected_components(graph, directed=False)
    # Number the components by their first (smallest) gid: nodes are sorted, so a label's first
    # occurrence is its smallest member.
    _, first_seen = np.unique(labels, return_index=True)
    rank = np.empty(len(first_seen), dtype=np.int64)
    rank[np.argsort(first_seen)] = np.arange(len(first_seen))
    order = np.lexsort((nodes, rank[labels]))
    sizes = np.bincount(rank[labels])
    return nodes[order], np.concatenate([[0], np.cumsum(sizes)])


def resolve(task: tuple[np.ndarray, np.ndarray], prefixes: list[Path], base: np.ndarray,
            cfg: DedupConfig) -> np.ndarray:
    """Run a Deduplicator over each component of ``task = (members, starts)``: ``int64[k, 3]`` rows
    ``(gid, reason code, matched gid)`` of the rejected documents (codes index :data:`REASONS`)."""
    members, starts = task
    docs: dict[int, np.ndarray] = {}
    out = []
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        dedup = Deduplicator(cfg)
        for gid in members[a:b].tolist():
            u = int(np.searchsorted(base, gid, side="right")) - 1
            if u not in docs:
                docs[u] = np.load(f"{prefixes[u]}.docs.npy", mmap_mode="r")
            row = docs[u][gid - base[u]]
            signature = np.array(row["sig"]) if row["has_sig"] else None
            reason = dedup.check(gid, "", signature, bytes(row["digest"]))
            if reason is not None:
                out.append((gid, REASONS.index(reason), dedup.match))
    return np.array(out, dtype=np.int64).reshape(-1, 3)


class Decisions:
    """The rejected documents, by gid: ``reason(gid)`` (None when kept) and ``match(gid)``."""

    def __init__(self, rows: np.ndarray) -> None:
        rows = rows[np.argsort(rows[:, 0])] if len(rows) else rows.reshape(0, 3)
        self.gids, self.codes, self.matches = rows[:, 0], rows[:, 1], rows[:, 2]

    def _at(self, gid: int) -> int:
        i = int(np.searchsorted(self.gids, gid))
        return i if i < len(self.gids) and self.gids[i] == gid else -1

    def reason(self, gid: int) -> str | None:
        """``exact_duplicate`` / ``near_duplicate``, or None for a kept document."""
        i = self._at(gid)
        return REASONS[self.codes[i]] if i >= 0 else None

    def match(self, gid: int) -> int:
        """The gid of the kept document that ``gid`` duplicates."""
        return int(self.matches[self._at(gid)])

    def __len__(self) -> int:
        return len(self.gids)


Mapper = Callable[[Callable, Iterable], Iterator]


def find_duplicates(prefixes: list[Path], counts: list[int], cfg: DedupConfig, mapper: Mapper,
                    n_partitions: int) -> Decisions:
    """Steps 2-4 over the units' files (``prefixes``, ``counts`` documents each, in input order);
    ``mapper(fn, tasks)`` maps over a process pool, results in task order."""
    base = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if counts else np.zeros(0, np.int64)
    if not (cfg.exact or cfg.near) or not counts:
        return Decisions(np.empty((0, 3), dtype=np.int64))
    entries = sum(int(np.load(f"{p}.keys.npy", mmap_mode="r").shape[0]) for p in prefixes)
    n_partitions = max(n_partitions, -(-entries // cfg.max_partition_entries))
    edges = list(mapper(functools.partial(partition_edges, n_partitions=n_partitions, prefixes=prefixes, base=base),
                        range(n_partitions)))
    members, starts = components(np.concatenate(edges) if edges else np.empty((0, 2), dtype=np.int64))
    tasks, first = [], 0
    for i in range(1, len(starts)):  # whole components, about _TASK_MEMBERS members per task
        if starts[i] - starts[first] >= _TASK_MEMBERS or i == len(starts) - 1:
            tasks.append((members[starts[first]:starts[i]], starts[first:i + 1] - starts[first]))
            first = i
    rows = list(mapper(functools.partial(resolve, prefixes=prefixes, base=base, cfg=cfg), tasks))
    return Decisions(np.concatenate(rows) if rows else np.empty((0, 3), dtype=np.int64))
