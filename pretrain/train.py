"""Continued pretraining on packed blocks: the stage's config, its Task, and ``python -m pretrain train``.

The loop, DeepSpeed, checkpoints, logs and the launcher are the shared engine
(:mod:`pretrain.engine`); this module adds what is specific to pretraining:

- :class:`TrainConfig` = :class:`~pretrain.engine.EngineConfig` + the corpus, the cache and the
  packing options (``data``);
- the data order: :func:`step_blocks` (block ids of a step, every block once per epoch, a pure
  function of ``(seed, step)``) and :func:`rank_micro_blocks` (this rank's micro-batch of it);
- :class:`PretrainTask`: micro-batches of packed blocks; the loss is the summed next-token
  cross-entropy (the engine weights it by tokens);
- :func:`run`: lock the run, check every input, pack (cached), launch, export ``final/``.

Modes: ``full`` (every weight), ``embeddings`` (only ``embed_tokens`` + ``lm_head``: stage one of the
two-stage recipe, the transformer frozen) and ``lora`` (peft adapters + full embeddings and head).

Resume invariant: the data order depends only on ``(seed, step)`` and the learning rate only on
``step``, and the checkpoint holds the model, the optimizer state and the step; so a run resumed
from step N in a new process computes the same losses as an uninterrupted run.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pretrain.data import PackConfig
from pretrain.engine import CausalLMTask, EngineConfig, launch, lr_at, preflight, run_lock
from pretrain.provenance import refuse_training_text
from zhllama.cli import UserError

__all__ = ["PretrainTask", "TrainConfig", "lr_at", "rank_micro_blocks", "run", "step_blocks"]

TASK = "pretrain.train:PretrainTask"


@dataclass
class TrainConfig(EngineConfig):
    """``python -m pretrain train``: the engine's settings plus the corpus and packing options.

    Every key can be overridden on the command line, nested ones with dots::

        python -m pretrain train --config configs/pretrain/train.yaml --max_steps 40 \\
            --data.block_size_tokens 128 --launch.nproc 2 --deepspeed_config configs/deepspeed/zero3.json
    """

    corpus_dir: Path = Path("artifacts/corpus")
    """Corpus stage output (``train/*.jsonl``; ``heldout/*.jsonl`` for ``eval_every_steps``)."""
    cache_dir: Path = Path("artifacts/cache")
    """Root of the packed-blocks cache (shared with ``python -m pretrain pack``)."""
    data: PackConfig = field(default_factory=PackConfig)
    """Packing options (block size, mixture); the same cache as ``python -m pretrain pack`` with equal options."""
    eval_max_blocks: int = 64
    """Held-out blocks scored per evaluation (``eval_every_steps``), evenly spread over the split; 0 = all."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eval_max_blocks < 0:
            raise ValueError(f"eval_max_blocks must be >= 0 (0: all), got {self.eval_max_blocks}")

    @property
    def global_batch_blocks(self) -> int:
        """Blocks per optimizer step over all processes (the engine's ``global_batch_size``)."""
        return self.global_batch_size


# ----------------------------------------------------------------------------------------------
# Data order: pure functions of (seed, step)


@functools.lru_cache(maxsize=4)
def epoch_order(n_blocks: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled block order of one pass over the data (a fresh permutation per epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n_blocks)


def step_blocks(step: int, n_blocks: int, global_batch_blocks: int, seed: int) -> np.ndarray:
    """Block ids of optimizer step ``step``: items ``[step*G, (step+1)*G)`` of the stream of epoch orders.

    A pure function of its arguments: a resumed process gets the batches of an uninterrupted one.
    Every block is seen once per epoch (invariant tested). Example::

        >>> sorted(np.concatenate([step_blocks(s, 6, 3, 0) for s in range(2)]).tolist())
        [0, 1, 2, 3, 4, 5]
    """
    out, pos = [], step * global_batch_blocks
    while len(out) < global_batch_blocks:
        epoch, offset = divmod(pos, n_blocks)
        take = min(global_batch_blocks - len(out), n_blocks - offset)
        out.extend(epoch_order(n_blocks, seed, epoch)[offset:offset + take].tolist())
        pos += take
    return np.asarray(out, dtype=np.int64)


def rank_micro_blocks(blocks_of_step: np.ndarray, rank: int, world_size: int, micro_batch_size: int,
                      micro_step: int) -> np.ndarray:
    """This rank's slice of a step for micro-step ``micro_step`` (layout ``[micro_step][rank][micro]``).

    >>> rank_micro_blocks(np.arange(8), rank=1, world_size=2, micro_batch_size=2, micro_step=1).tolist()
    [6, 7]
    """
    start = (micro_step * world_size + rank) * micro_batch_size
    return blocks_of_step[start:start + micro_batch_size]


def batch_tensors(blocks: Any, ids: np.ndarray) -> dict:
    """Stack the examples of block ids ``ids`` into CPU tensors (labels -100 on padding)."""
    import torch

    examples = [blocks.example(int(i)) for i in ids]
    return {k: torch.from_numpy(np.stack([e[k] for e in examples])) for k in examples[0]}


# ----------------------------------------------------------------------------------------------
# The task


def eval_block_ids(n_blocks: int, max_blocks: int, rank: int, world_size: int) -> list[int]:
    """This rank's held-out blocks: ``max_blocks`` (0: all) evenly spread, dealt round-robin; ``-1`` pads
    every rank to the same count (under ZeRO-3 every rank must run the same number of forwards).

    >>> eval_block_ids(10, 4, 0, 2), eval_block_ids(10, 4, 1, 2), eval_block_ids(3, 0, 1, 2)
    ([0, 5], [2, 7], [1, -1])
    """
    n = n_blocks if max_blocks == 0 else min(max_blocks, n_blocks)
    chosen = np.linspace(0, n_blocks, num=n, endpoint=False).astype(np.int64).tolist()
    per_rank = -(-n // world_size)
    mine = chosen[rank::world_size]
    return mine + [-1] * (per_rank - len(mine))


class PretrainTask(CausalLMTask):
    """Packed blocks in the order of :func:`step_blocks`; summed next-token loss (engine: token-weighted).

    ``task_spec``: ``{"blocks_path": str}`` (the packed train split), and for ``eval_every_steps``
    ``{"eval_blocks_path": str, "eval_chars_per_token": float}`` (the packed held-out split).
    """

    config_class = TrainConfig

    def setup(self, engine: Any, rank: int, world_size: int) -> None:
        from pretrain.data import PackedBlocks

        super().setup(engine, rank, world_size)
        self.blocks = PackedBlocks(self.task_spec["blocks_path"], self.cfg.data.restart_position_ids)
        self.eval_blocks = None
        if self.task_spec.get("eval_blocks_path"):
            self.eval_blocks = PackedBlocks(self.task_spec["eval_blocks_path"], self.cfg.data.restart_position_ids)
            self.eval_ids = eval_block_ids(len(self.eval_blocks), self.cfg.eval_max_blocks, rank, world_size)

    def evaluate(self, engine: Any) -> dict:
        """Held-out loss (nats per predicted token) and bits per character.

        ``bits_per_char = NLL / ln 2 / characters``, the characters of the scored tokens estimated
        with the held-out split's characters per token (exact when every block is scored, up to the
        first token of each block, which nothing predicts). ``python -m pretrain eval`` gives the
        rolling-window figure on whole documents.
        """
        import math

        from pretrain.engine import causal_lm_loss_sum

        if self.eval_blocks is None:
            return {}
        nll, tokens = 0.0, 0
        micro = self.cfg.micro_batch_size
        for start in range(0, len(self.eval_ids), micro):
            ids = self.eval_ids[start:start + micro]
            batch = batch_tensors(self.eval_blocks, np.array([max(i, 0) for i in ids]))
            batch["labels"][[k for k, i in enumerate(ids) if i < 0]] = -100  # padding rows count for nothing
            tokens += self.units(batch)
            batch = {k: v.to(engine.device) for k, v in batch.items()}
            nll += float(causal_lm_loss_sum(engine.forward, batch))
        nll, tokens = engine.all_reduce_sum([nll, float(tokens)])
        chars = tokens * float(self.task_spec["eval_chars_per_token"])
        return {"loss": nll / tokens, "bits_per_char": nll / math.log(2) / chars}

    def micro_batches(self, step: int) -> list[dict]:
        cfg = self.cfg
        ids_of_step = step_blocks(step, len(self.blocks), cfg.global_batch_blocks, cfg.seed)
        return [batch_tensors(self.blocks, rank_micro_blocks(ids_of_step, self.rank, self.world_size,
                                                             cfg.micro_batch_size, m))
                for m in range(cfg.grad_accum_steps)]


# ----------------------------------------------------------------------------------------------
# CLI


def run(cfg: TrainConfig) -> int:
    """CLI: lock the run, check every input, pack (cached), launch the workers, export ``final/``."""
    from pretrain.data import build_or_load_blocks, tokenizer_sha256
    from pretrain.provenance import SOURCES_KEY, training_sources

    with run_lock(cfg.run_dir, cfg.launch.node_rank):
        ds_config, resume = preflight(cfg)
        blocks = build_or_load_blocks(cfg.tokenizer_dir, cfg.corpus_dir, cfg.cache_dir, cfg.data, split="train")
        if blocks.n_tokens < blocks.block_size_tokens:
            raise UserError(f"{cfg.corpus_dir}: the train split has {blocks.n_tokens} tokens, fewer than one block "
                            f"of {blocks.block_size_tokens}; add text or lower --data.block_size_tokens")
        sources = training_sources(cfg.corpus_dir, "train", cfg.data.mixture)
        task_spec = {"blocks_path": str(blocks.path)}
        if cfg.eval_every_steps:
            task_spec.update(held_out_spec(cfg, sources))
        launch(cfg, ds_config, resume, task=TASK, task_spec=task_spec, identity={"blocks": blocks.path.name},
               meta={"inputs": {"tokenizer": tokenizer_sha256(cfg.tokenizer_dir)}, "blocks_path": str(blocks.path),
                     SOURCES_KEY: sources})
    return 0


def held_out_spec(cfg: TrainConfig, sources: dict[str, str]) -> dict:
    """Pack the corpus's held-out split (no mixture) for ``eval_every_steps``; its path and chars/token.

    A held-out shard whose content is also a training source (``sources``) is refused.
    """
    import dataclasses

    from pretrain.data import build_or_load_blocks, corpus_files
    from zhllama.artifacts import sha256_file

    refuse_training_text({str(f): sha256_file(f) for f in corpus_files(cfg.corpus_dir, "heldout")}, sources,
                         f"this run ({cfg.run_dir})")
    held = build_or_load_blocks(cfg.tokenizer_dir, cfg.corpus_dir, cfg.cache_dir,
                                dataclasses.replace(cfg.data, mixture=[]), split="heldout")
    stats = held.stats
    return {"eval_blocks_path": str(held.path), "eval_chars_per_token": stats["corpus_chars"] / stats["corpus_tokens"]}
