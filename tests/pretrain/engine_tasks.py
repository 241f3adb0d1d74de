"""Tasks used by the engine tests (imported by the workers as ``tests.pretrain.engine_tasks:Name``)."""
from __future__ import annotations

import numpy as np
import torch

from pretrain.engine import IGNORE_INDEX, CausalLMTask

MAX_LEN = 24


def step_sequences(seed: int, step: int, n: int) -> list[np.ndarray]:
    """``n`` token sequences of different lengths (4..MAX_LEN), a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step, 12345])
    return [rng.integers(3, 1000, size=int(rng.integers(4, MAX_LEN + 1))) for _ in range(n)]


def pad(seqs: list[np.ndarray]) -> dict:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` (-100 on padding)."""
    ids = np.zeros((len(seqs), MAX_LEN), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = s, 1
    labels = np.where(mask == 1, ids, IGNORE_INDEX)
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "labels": torch.from_numpy(labels)}


class VarLenTask(CausalLMTask):
    """Sequences of unequal lengths: a split of the step into micro-batches changes the token counts."""

    def micro_batches(self, step: int) -> list[dict]:
        cfg = self.cfg
        seqs = step_sequences(cfg.seed, step, cfg.global_batch_size)
        out = []
        for m in range(cfg.grad_accum_steps):
            start = (m * self.world_size + self.rank) * cfg.micro_batch_size
            out.append(pad(seqs[start:start + cfg.micro_batch_size]))
        return out
