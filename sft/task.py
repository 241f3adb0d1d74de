"""``SftTask``: supervised chat fine-tuning as a Task of the shared training engine (``pretrain.engine``).

The engine owns the loop (DeepSpeed, LoRA, checkpoints, exact resume, token-weighted loss across
micro-batches, accumulation steps and ranks, export); this Task only says what a micro-batch is:

- ``setup``: load the conversations the launcher tokenized once (``task_spec["data_path"]``: flat
  arrays of ids and labels, and the rows: packed or one conversation each);
- ``micro_batches(step)``: the rows of optimizer step ``step`` are items ``[step*G, (step+1)*G)``
  of a stream of per-epoch permutations of the rows (``G`` = rows per step over all ranks), cut
  ``[micro_step][rank][micro]`` (:func:`pretrain.train.step_blocks` / ``rank_micro_blocks``): a pure
  function of (seed, step, rank), so a resumed run sees the batches of an uninterrupted one;
- ``loss``: the engine's summed next-token cross-entropy over the labelled tokens (answers + EOS by
  default), ``units`` = those tokens: a step's loss = sum of token NLL / supervised tokens of the step;
- ``evaluate``: loss and bits per character on the held-out conversations, rows spread over ranks.
"""
from __future__ import annotations

import math
from typing import Any

from pretrain.engine import CausalLMTask
from pretrain.train import rank_micro_blocks, step_blocks
from sft.evaluate import eval_chunks, score_rows
from sft.packing import collate, to_torch
from sft.train import SftTrainConfig


class SftTask(CausalLMTask):
    """Chat SFT rows in the order of :func:`pretrain.train.step_blocks`; summed NLL of the answers.

    ``task_spec``: ``{"data_path": str, "eval_data_path": str | None, "pad_id": int}`` (written by
    :func:`sft.train.run`).
    """

    config_class = SftTrainConfig

    def setup(self, engine: Any, rank: int, world_size: int) -> None:
        from pathlib import Path

        from sft.data import load_tokenized

        super().setup(engine, rank, world_size)
        self.pad_id = int(self.task_spec.get("pad_id", 0))
        self.examples, self.rows = load_tokenized(Path(self.task_spec["data_path"]))
        self.eval_examples, self.eval_rows = [], []
        if self.task_spec.get("eval_data_path"):
            self.eval_examples, self.eval_rows = load_tokenized(Path(self.task_spec["eval_data_path"]))

    def micro_batches(self, step: int) -> list[dict]:
        cfg = self.cfg
        rows_of_step = step_blocks(step, len(self.rows), cfg.global_batch_size, cfg.seed)
        out = []
        for micro_step in range(cfg.grad_accum_steps):
            ids = rank_micro_blocks(rows_of_step, self.rank, self.world_size, cfg.micro_batch_size, micro_step)
            rows = [self.rows[int(i)] for i in ids]
            out.append(to_torch(collate(self.examples, rows, self.pad_id, cfg.data.packing), "cpu"))
        return out

    def loss(self, engine: Any, batch: dict) -> tuple[Any, Any, dict]:
        """Summed NLL of the labelled tokens (KV cache off, see :func:`sft.loss.nll_sum`), their count."""
        from sft.loss import nll_sum

        loss_sum, n_tokens = nll_sum(engine.forward, batch)
        return loss_sum, n_tokens, {}

    def evaluate(self, engine: Any) -> dict:
        """Held-out loss (nats per answer token) and bits per character of the answers."""
        if not self.eval_rows:
            return {}
        chunks = eval_chunks(len(self.eval_rows), self.cfg.micro_batch_size, self.rank, self.world_size)
        score = score_rows(engine.forward, self.eval_examples, self.eval_rows, chunks, self.pad_id, engine.device,
                           packed=self.cfg.data.packing)
        nll, tokens, chars = engine.all_reduce_sum([score.nll_nats, float(score.tokens), float(score.characters)])
        return {"loss": nll / tokens, "bits_per_char": nll / math.log(2) / chars}
