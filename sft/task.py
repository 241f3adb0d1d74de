"""``SftTask``: supervised chat fine-tuning as a Task of the shared training engine (``pretrain.engine``).

The engine owns the loop (DeepSpeed, LoRA, checkpoints, resume, token-weighted loss, export); this
Task only says what a micro-batch is and what its loss is:

- ``setup``: read + validate + tokenize the chat files (:func:`sft.data.load_sft_data`), arrange
  the examples into rows (packed by default); every rank builds the same rows;
- ``micro_batches(step)``: the rows of optimizer step ``step`` are items ``[step*G, (step+1)*G)``
  of a stream of per-epoch permutations of the rows (``G`` = rows per step over all ranks), cut
  ``[micro_step][rank][micro]``: a pure function of (seed, step, rank), so resume is exact;
- ``loss``: summed token NLL over the supervised tokens and their count (the engine divides by the
  step's global count: a step's loss = sum of token NLL / supervised tokens of the whole step);
- ``evaluate``: loss and bits/char on the held-out files, rows spread over ranks, sums all-reduced.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from sft.packing import collate, to_torch


def step_rows(step: int, n_rows: int, global_rows: int, seed: int) -> np.ndarray:
    """Row ids of optimizer step ``step`` (every row once per epoch, a fresh order per epoch).

    >>> sorted(np.concatenate([step_rows(s, 6, 3, 0) for s in range(2)]).tolist())
    [0, 1, 2, 3, 4, 5]
    """
    from pretrain.train import step_blocks

    return step_blocks(step, n_rows, global_rows, seed)


def rank_slice(rows_of_step: np.ndarray, rank: int, world_size: int, micro_batch_size: int,
               micro_step: int) -> np.ndarray:
    """This rank's rows for ``micro_step`` (layout ``[micro_step][rank][micro]``)."""
    from pretrain.train import rank_micro_blocks

    return rank_micro_blocks(rows_of_step, rank, world_size, micro_batch_size, micro_step)


def eval_plan(n_rows: int, micro_batch_size: int, rank: int, world_size: int) -> list[tuple[list[int], bool]]:
    """``[(row ids, counted?)]`` of one rank's evaluation micro-batches.

    Every rank runs the same number of forward passes (ZeRO-3 gathers parameters collectively, so
    a rank that stops early would hang the others); a rank with nothing left repeats its first
    chunk and does not count it.

    >>> eval_plan(5, 2, rank=1, world_size=2)
    [([2, 3], True), ([2, 3], False)]
    """
    chunks = [list(range(k, min(k + micro_batch_size, n_rows))) for k in range(0, n_rows, micro_batch_size)]
    mine = chunks[rank::world_size]
    per_rank = -(-len(chunks) // world_size)
    filler = mine[0] if mine else chunks[0]
    return [(c, True) for c in mine] + [(filler, False)] * (per_rank - len(mine))


class SftTask:
    """The Task protocol of ``pretrain.engine`` for chat SFT (see the module docstring)."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.data = None
        self.eval_data = None
        self.pad_id = 0
        self.rank, self.world_size = 0, 1

    # ---- data
    def setup(self, engine: Any, rank: int, world_size: int) -> None:
        from transformers import AutoTokenizer

        from sft.data import load_sft_data

        self.rank, self.world_size = rank, world_size
        tokenizer = AutoTokenizer.from_pretrained(str(self.cfg.tokenizer_dir))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.data = load_sft_data(self.cfg.data.train_files, self.cfg.data, tokenizer)
        if self.cfg.data.eval_files and self.cfg.eval_every_steps:
            self.eval_data = load_sft_data(self.cfg.data.eval_files, self.cfg.data, tokenizer)

    @property
    def global_rows(self) -> int:
        return self.cfg.micro_batch_size * self.cfg.grad_accum_steps * self.world_size

    def micro_batches(self, step: int, device: Any = "cpu") -> list[dict]:
        assert self.data is not None, "setup() first"
        rows_of_step = step_rows(step, len(self.data.rows), self.global_rows, self.cfg.seed)
        out = []
        for micro_step in range(self.cfg.grad_accum_steps):
            ids = rank_slice(rows_of_step, self.rank, self.world_size, self.cfg.micro_batch_size, micro_step)
            rows = [self.data.rows[int(i)] for i in ids]
            out.append(to_torch(collate(self.data.examples, rows, self.pad_id, self.cfg.data.packing), device))
        return out

    # ---- loss
    def loss(self, engine: Any, batch: dict) -> tuple[Any, Any, dict]:
        from sft.loss import nll_sum

        loss_sum, n_tokens = nll_sum(engine, batch)
        return loss_sum, n_tokens, {}

    def evaluate(self, engine: Any) -> dict:
        import torch
        import torch.distributed as dist

        from sft.evaluate import SftScore
        from sft.loss import nll_sum

        if self.eval_data is None or not self.eval_data.rows:
            return {}
        data = self.eval_data
        device = getattr(engine, "device", "cpu")
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # nll, tokens, chars, conversations
        was_training = engine.training
        engine.eval()
        with torch.no_grad():
            for row_ids, counted in eval_plan(len(data.rows), self.cfg.micro_batch_size, self.rank, self.world_size):
                rows = [data.rows[i] for i in row_ids]
                s, n = nll_sum(engine, to_torch(collate(data.examples, rows, self.pad_id, self.cfg.data.packing), device))
                if counted:
                    chars = sum(data.examples[i].n_label_chars for r in rows for i in r)
                    sums += torch.tensor([float(s), float(n), chars, sum(len(r) for r in rows)],
                                         dtype=torch.float64, device=device)
        if was_training:
            engine.train()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
        score = SftScore(float(sums[0]), int(sums[1]), int(sums[2]), int(sums[3]))
        m = score.metrics()
        return {"eval_loss": m["loss"], "eval_bits_per_char": m["bits_per_char"], "eval_tokens": m["tokens"]}
