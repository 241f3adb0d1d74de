"""Pure packing: token documents -> fixed-size blocks, mixture sampling, deterministic interleaving.

No tokenizer and no ``datasets`` here: numpy arrays in, numpy arrays (or bytes on a file object) out.
:mod:`pretrain.data` does the tokenizing and the cache around it.

The packed stream is every document as ``BOS ids... EOS`` (each marker optional), concatenated in
order and cut into blocks of ``block_size_tokens``. Invariants:

- no token is lost: the final partial block is kept, padded with ``pad_id`` up to the block size,
  and its valid length is recorded, so ``n_blocks * block_size_tokens == n_tokens + n_pad_tokens``;
- documents cross block edges freely (a document is never cut at a tokenizer batch edge);
- ``doc_starts[k]`` is the stream offset of document ``k``'s first token (its BOS), which is all a
  reader needs for position ids that restart at each document.

Example::

    >>> blocks, doc_starts, n_tokens = pack_documents([np.array([5, 6]), np.array([7])], 4, bos_id=1, eos_id=2, pad_id=0)
    >>> blocks.tolist(), doc_starts.tolist(), n_tokens
    ([[1, 5, 6, 2], [1, 7, 2, 0]], [0, 4], 7)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import BinaryIO

import numpy as np

TOKEN_DTYPE = np.int32


def with_markers(ids: np.ndarray, bos_id: int | None, eos_id: int | None) -> np.ndarray:
    """``ids`` framed as ``[bos] + ids + [eos]`` (a marker given as ``None`` is left out).

    >>> with_markers(np.array([5, 6]), 1, 2).tolist()
    [1, 5, 6, 2]
    """
    parts = []
    if bos_id is not None:
        parts.append(np.array([bos_id], dtype=TOKEN_DTYPE))
    parts.append(np.asarray(ids, dtype=TOKEN_DTYPE))
    if eos_id is not None:
        parts.append(np.array([eos_id], dtype=TOKEN_DTYPE))
    return np.concatenate(parts)


class BlockWriter:
    """Stream token chunks into a flat binary file of ``block_size_tokens``-wide int32 rows.

    Chunks may have any length (a document, a run of documents, an Arrow batch); the writer keeps
    no more than the chunk it is given in memory, so memory stays flat however large the corpus.
    ``finish()`` pads the last partial block with ``pad_id`` and returns the counts.

    >>> import io
    >>> f = io.BytesIO(); w = BlockWriter(f, block_size_tokens=3, pad_id=0)
    >>> w.write(np.array([1, 2])); w.write(np.array([3, 4])); w.finish()
    {'n_tokens': 4, 'n_pad_tokens': 2, 'n_blocks': 2, 'last_block_valid_tokens': 1}
    >>> np.frombuffer(f.getvalue(), dtype=np.int32).tolist()
    [1, 2, 3, 4, 0, 0]
    """

    def __init__(self, f: BinaryIO, block_size_tokens: int, pad_id: int):
        if block_size_tokens < 1:
            raise ValueError(f"block_size_tokens must be >= 1, got {block_size_tokens}")
        self.f = f
        self.block_size_tokens = block_size_tokens
        self.pad_id = pad_id
        self.n_tokens = 0

    def write(self, ids: np.ndarray) -> None:
        """Append ``ids`` to the stream (any length, cast to int32)."""
        arr = np.ascontiguousarray(ids, dtype=TOKEN_DTYPE)
        if arr.size:
            self.f.write(arr.tobytes())  # flat stream: blocks are just rows of it, no per-block work
            self.n_tokens += int(arr.size)

    def finish(self) -> dict[str, int]:
        """Pad the last block; return ``n_tokens``, ``n_pad_tokens``, ``n_blocks``, ``last_block_valid_tokens``."""
        rem = self.n_tokens % self.block_size_tokens
        n_pad = (self.block_size_tokens - rem) % self.block_size_tokens
        if n_pad:
            self.f.write(np.full(n_pad, self.pad_id, dtype=TOKEN_DTYPE).tobytes())
        n_blocks = (self.n_tokens + n_pad) // self.block_size_tokens
        return {
            "n_tokens": self.n_tokens,
            "n_pad_tokens": n_pad,
            "n_blocks": n_blocks,
            "last_block_valid_tokens": rem if rem else self.block_size_tokens,
        }


def pack_documents(
    docs: Iterable[Sequence[int] | np.ndarray],
    block_size_tokens: int,
    bos_id: int | None,
    eos_id: int | None,
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """In-memory packing of token documents: ``(blocks [n, block_size], doc_starts, n_tokens)``.

    The reference semantics of the on-disk packer (used by tests and small jobs).

    >>> blocks, starts, n = pack_documents([[5, 6, 7]], 2, None, 2, pad_id=0)
    >>> blocks.tolist(), starts.tolist(), n
    ([[5, 6], [7, 2]], [0], 4)
    """
    framed = [with_markers(np.asarray(d, dtype=TOKEN_DTYPE), bos_id, eos_id) for d in docs]
    lengths = np.array([len(d) for d in framed], dtype=np.int64)
    doc_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(framed) else np.zeros(0, np.int64)
    stream = np.concatenate(framed) if framed else np.zeros(0, TOKEN_DTYPE)
    n_tokens = int(stream.size)
    n_pad = (-n_tokens) % block_size_tokens
    stream = np.concatenate([stream, np.full(n_pad, pad_id, dtype=TOKEN_DTYPE)])
    return stream.reshape(-1, block_size_tokens), doc_starts, n_tokens


def restart_positions(doc_starts: np.ndarray, block_start: int, block_size_tokens: int) -> np.ndarray:
    """Position ids for the block starting at stream offset ``block_start``, restarting at 0 at every
    document start and at the block start (a document carried over from the previous block starts
    again at 0, so positions never exceed the block size).

    >>> restart_positions(np.array([0, 3, 9]), 4, 4).tolist()   # doc 1 spans 3..8
    [0, 1, 2, 3]
    >>> restart_positions(np.array([0, 3, 6]), 4, 4).tolist()   # doc 2 starts at offset 6
    [0, 1, 0, 1]
    """
    offsets = np.arange(block_start, block_start + block_size_tokens, dtype=np.int64)
    idx = np.searchsorted(doc_starts, offsets, side="right") - 1
    starts = np.where(idx >= 0, doc_starts[np.maximum(idx, 0)], 0)
    return (offsets - np.maximum(starts, block_start)).astype(np.int64)


def mixture_targets(main_tokens: int, shares: Sequence[float]) -> list[int]:
    """Token budget of each extra source so that source ``j`` is ``shares[j]`` of all packed tokens.

    The main corpus is used exactly once; it is the remaining ``1 - sum(shares)``.

    >>> mixture_targets(800, [0.2])
    [200]
    """
    total_share = float(sum(shares))
    if any(s <= 0 for s in shares) or total_share >= 1.0:
        raise ValueError(f"mixture shares must be > 0 and sum to < 1, got {list(shares)}")
    total = main_tokens / (1.0 - total_share)
    return [int(round(s * total)) for s in shares]


def sample_documents(doc_lengths: np.ndarray, target_tokens: int, seed: int) -> np.ndarray:
    """Indices of documents (a seeded shuffle, repeated in fresh shuffles when the source is too small)
    taken until their token count reaches ``target_tokens``; the overshoot is under one document.

    >>> sample_documents(np.array([10, 10, 10]), 25, seed=0).size
    3
    >>> sample_documents(np.array([10]), 35, seed=0).tolist()   # a small source repeats
    [0, 0, 0, 0]
    """
    lengths = np.asarray(doc_lengths, dtype=np.int64)
    if target_tokens <= 0:
        return np.zeros(0, dtype=np.int64)
    if lengths.size == 0 or lengths.sum() == 0:
        raise ValueError("cannot sample from a source with no tokens")
    rng = np.random.default_rng(seed)
    picked: list[np.ndarray] = []
    have = 0
    while have < target_tokens:
        perm = rng.permutation(lengths.size)
        cum = have + np.cumsum(lengths[perm])
        # Take docs up to and including the first one that reaches the target.
        n = int(np.searchsorted(cum, target_tokens, side="left")) + 1
        n = min(n, perm.size)
        picked.append(perm[:n])
        have = int(cum[n - 1])
    return np.concatenate(picked)


def interleave(n_main: int, n_extra: Sequence[int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic order of all documents: ``(source, rank)`` arrays, source 0 the main corpus.

    Main documents keep their order, evenly spaced on [0, 1); the k-th pick of each extra source
    lands at a seeded uniform random point (its picks keep their order), so extra text is spread
    through the whole stream instead of bunched at one end.

    >>> src, rank = interleave(3, [2], seed=0)
    >>> sorted(zip(src.tolist(), rank.tolist()))
    [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    >>> rank[src == 0].tolist()
    [0, 1, 2]
    """
    rng = np.random.default_rng(seed)
    keys = [(np.arange(n_main) + 0.5) / max(n_main, 1)]
    sources = [np.zeros(n_main, dtype=np.int64)]
    ranks = [np.arange(n_main, dtype=np.int64)]
    for j, n in enumerate(n_extra, start=1):
        keys.append(np.sort(rng.random(n)))
        sources.append(np.full(n, j, dtype=np.int64))
        ranks.append(np.arange(n, dtype=np.int64))
    key = np.concatenate(keys)
    src = np.concatenate(sources)
    order = np.lexsort((src, key))  # stable on ties: key first, then source
    return src[order], np.concatenate(ranks)[order]


def runs(src: np.ndarray, doc: np.ndarray) -> list[tuple[int, int, int]]:
    """Group an order of ``(source, doc index)`` into maximal runs ``(source, first, stop)`` of
    consecutive documents of one source, so long stretches of the main corpus copy in one slice.

    >>> runs(np.array([0, 0, 1, 0]), np.array([0, 1, 7, 2]))
    [(0, 0, 2), (1, 7, 8), (0, 2, 3)]
    """
    if src.size == 0:
        return []
    brk = np.flatnonzero((src[1:] != src[:-1]) | (doc[1:] != doc[:-1] + 1)) + 1
    starts = np.concatenate([[0], brk])
    stops = np.concatenate([brk, [src.size]])
    return [(int(src[a]), int(doc[a]), int(doc[b - 1]) + 1) for a, b in zip(starts, stops, strict=True)]
