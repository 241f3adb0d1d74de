"""The packed-blocks store: the read side of a cache directory (``blocks.npy`` + ``doc_starts.npy``).

Written by :func:`pretrain.data.build_or_load_blocks`; read by training (``PackedBlocks``). Layout::

    <cache_root>/<split>-b<block>-<key>/
        blocks.npy        int32 [n_blocks, block_size_tokens]: the token stream cut into blocks
        doc_starts.npy    int64 [n_docs]: each document's offset in the stream
        meta.json         config, versions, input hashes, the key material, counts (``stats``)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pretrain import packing
from zhllama.artifacts import read_meta
from zhllama.cli import UserError

BLOCKS_FILE = "blocks.npy"
DOC_STARTS_FILE = "doc_starts.npy"
IGNORE_INDEX = -100  # label value that torch's cross-entropy (and HF models) skip


class PackedBlocks:
    """Read-only view of a cache directory: ``blocks[i]`` is an int32 array of ``block_size_tokens`` ids.

    A map-style dataset (``len``, ``[]``), usable directly by a torch ``DataLoader``; pickles by path
    (workers reopen the memmap instead of copying it).

    >>> blocks = PackedBlocks("artifacts/cache/train-b256-0123abcd")   # doctest: +SKIP
    >>> blocks[0].shape, blocks.labels(len(blocks) - 1)[-1]            # doctest: +SKIP
    ((256,), -100)
    """

    def __init__(self, path: str | Path, restart_position_ids: bool = False):
        self.path = Path(path)
        meta = read_meta(self.path)
        if meta is None or not (self.path / BLOCKS_FILE).is_file():
            raise UserError(f"not a packed-blocks cache (no meta.json/{BLOCKS_FILE}): {self.path}")
        self.meta: dict = meta
        self.stats: dict = meta["stats"]
        self.restart_position_ids = restart_position_ids
        self._blocks = np.load(self.path / BLOCKS_FILE, mmap_mode="r")
        self._doc_starts = np.load(self.path / DOC_STARTS_FILE, mmap_mode="r")
        self.block_size_tokens: int = int(self._blocks.shape[1])

    def __getstate__(self) -> dict:
        return {"path": self.path, "restart_position_ids": self.restart_position_ids}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["restart_position_ids"])

    def __len__(self) -> int:
        return int(self._blocks.shape[0])

    def _index(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"block {i} out of range for {n} blocks")
        return j

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array(self._blocks[self._index(i)])  # a private writable copy: safe for torch.from_numpy

    def __repr__(self) -> str:
        return f"PackedBlocks({str(self.path)!r}, n_blocks={len(self)}, block_size_tokens={self.block_size_tokens})"

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens in the stream."""
        return int(self.stats["n_tokens"])

    def valid_tokens(self, i: int) -> int:
        """Non-pad tokens in block ``i``: the block size, except possibly for the last block."""
        j = self._index(i)
        return self.block_size_tokens if j < len(self) - 1 else int(self.stats["last_block_valid_tokens"])

    def loss_mask(self, i: int) -> np.ndarray:
        """Boolean mask of the real tokens of block ``i`` (False on padding)."""
        mask = np.zeros(self.block_size_tokens, dtype=bool)
        mask[: self.valid_tokens(i)] = True
        return mask

    def labels(self, i: int) -> np.ndarray:
        """int64 labels for a causal LM: the ids, with ``-100`` on padding (HF shifts them itself)."""
        out = self[i].astype(np.int64)
        out[self.valid_tokens(i):] = IGNORE_INDEX
        return out

    def position_ids(self, i: int) -> np.ndarray:
        """Position ids restarting at 0 at each document start (and at the block start)."""
        j = self._index(i)
        return packing.restart_positions(self._doc_starts, j * self.block_size_tokens, self.block_size_tokens)

    def example(self, i: int) -> dict[str, np.ndarray]:
        """``{"input_ids", "labels"}`` (+ ``"position_ids"`` when ``restart_position_ids``) for block ``i``."""
        ex = {"input_ids": self[i].astype(np.int64), "labels": self.labels(i)}
        if self.restart_position_ids:
            ex["position_ids"] = self.position_ids(i)
        return ex
