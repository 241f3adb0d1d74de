"""Packing several conversations per training row, attention kept inside each conversation.

A *row* is a list of example indices. Packed rows hold several conversations back to back, each
with position ids restarting at 0; padded rows hold one conversation each (the baseline)::

    rows = pack_rows([300, 200, 900, 100], capacity_tokens=1024)   # best-fit decreasing
    # -> [[2, 3], [0, 1]]: 1000 and 500 tokens
    batch = collate([examples[i] for i in ...], rows_of_micro_batch, pad_id=0, packed=True)

Attention: :func:`collate` returns ``position_ids`` that restart at every conversation and, for
packed rows, *no* ``attention_mask``. Transformers (>= 4.56) reads the restarts: with ``sdpa`` or
``eager`` it builds the block-diagonal causal mask (a token sees only earlier tokens of its own
conversation), with ``flash_attention_2`` it calls the variable-length kernel with the
conversations' boundaries (no mask, no wasted FLOPs). Padded rows get the usual 2-D padding mask.
Invariant (tested with a real tiny Llama): every conversation's loss is the same packed or alone.

Labels need no change at the seams: each conversation's first label is ``IGNORE_INDEX`` (see
:func:`sft.chat_format.encode_dialog`), so no token is trained to predict the next conversation.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from sft.chat_format import IGNORE_INDEX


class Example(Protocol):
    input_ids: Sequence[int]
    labels: Sequence[int]


def pack_rows(lengths: Sequence[int], capacity_tokens: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: example indices per row, each row's tokens <= capacity.

    Deterministic (ties broken by index); longest examples first, each into the row it fills
    best. O(n log n) with a sorted list of free spaces.

    >>> pack_rows([300, 200, 900, 100], 1024)
    [[2, 3], [0, 1]]
    """
    if any(n > capacity_tokens for n in lengths):
        raise ValueError(f"an example is longer than the row capacity {capacity_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (free tokens, row index)
    for i in order:
        n = lengths[i]
        k = bisect.bisect_left(free, (n, -1))
        if k == len(free):
            rows.append([i])
            bisect.insort(free, (capacity_tokens - n, len(rows) - 1))
            continue
        space, r = free.pop(k)
        rows[r].append(i)
        bisect.insort(free, (space - n, r))
    return rows


def single_rows(n_examples: int) -> list[list[int]]:
    """One example per row (the padding baseline). ``single_rows(2) == [[0], [1]]``."""
    return [[i] for i in range(n_examples)]


def row_arrays(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(input_ids, labels, position_ids)`` of the examples of one row, concatenated.

    >>> class E: pass
    >>> a, b = E(), E(); a.input_ids, a.labels, b.input_ids, b.labels = [1, 5], [-100, 5], [1, 7, 2], [-100, 7, 2]
    >>> [x.tolist() for x in row_arrays([a, b])]
    [[1, 5, 1, 7, 2], [-100, 5, -100, 7, 2], [0, 1, 0, 1, 2]]
    """
    ids = np.concatenate([np.asarray(e.input_ids, dtype=np.int64) for e in examples])
    labels = np.concatenate([np.asarray(e.labels, dtype=np.int64) for e in examples])
    pos = np.concatenate([np.arange(len(e.input_ids), dtype=np.int64) for e in examples])
    return ids, labels, pos


def collate(examples: Sequence[Example], rows: Sequence[Sequence[int]], pad_id: int, packed: bool,
            pad_to_multiple_of: int = 1) -> dict[str, np.ndarray]:
    """Model inputs for ``rows`` (indices into ``examples``), right-padded to the longest row.

    Returns ``input_ids``, ``labels`` (``IGNORE_INDEX`` on padding), ``position_ids`` (restarting per
    conversation; the padding tail counts from 0 as a conversation of its own) and, for padded
    (unpacked) batches, ``attention_mask``.
    """
    arrays = [row_arrays([examples[i] for i in row]) for row in rows]
    width = max(len(a[0]) for a in arrays)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    n = len(arrays)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    labels = np.full((n, width), IGNORE_INDEX, dtype=np.int64)
    pos = np.zeros((n, width), dtype=np.int64)
    mask = np.zeros((n, width), dtype=np.int64)
    for r, (a_ids, a_labels, a_pos) in enumerate(arrays):
        k = len(a_ids)
        ids[r, :k], labels[r, :k], pos[r, :k], mask[r, :k] = a_ids, a_labels, a_pos, 1
        pos[r, k:] = np.arange(width - k)
    out = {"input_ids": ids, "labels": labels, "position_ids": pos}
    if not packed:
        out["attention_mask"] = mask
    return out


def to_torch(batch: dict[str, np.ndarray], device: Any) -> dict[str, Any]:
    """The numpy batch of :func:`collate` as torch tensors on ``device``."""
    import torch

    return {k: torch.from_numpy(v).to(device) for k, v in batch.items()}


def padding_efficiency(examples: Sequence[Example], rows: Sequence[Sequence[int]], micro_batch_size: int) -> float:
    """Real tokens / computed tokens when consecutive ``rows`` form micro-batches padded to their longest."""
    lengths = [sum(len(examples[i].input_ids) for i in row) for row in rows]
    real = sum(lengths)
    computed = sum(max(lengths[k:k + micro_batch_size]) * len(lengths[k:k + micro_batch_size])
                   for k in range(0, len(lengths), micro_batch_size))
    return real / computed if computed else 1.0
