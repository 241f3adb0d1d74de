"""Continued pretraining with DeepSpeed: the config, the launcher-side checks, and the training loop.

``python -m pretrain train`` runs :func:`run` in one process: it checks every input (a Llama
checkpoint, a tokenizer that extends it, a valid DeepSpeed config, at least one block of tokens, a
usable checkpoint when resuming) *before* any worker starts, packs the corpus (cached), prepares
``run_dir``, then starts ``launch.nproc`` workers per node with the ``deepspeed`` launcher (or
``torchrun``). Each worker runs :func:`train_worker`, the loop, readable top to bottom::

    engine = deepspeed.initialize(model, client AdamW, ds_config)
    for step in range(start_step, max_steps):
        set lr = lr_at(step)                      # warmup + cosine, a pure function of the step
        for each micro-batch of this rank:        # batches are a pure function of (seed, step, rank)
            loss = engine(input_ids, labels).loss; engine.backward(loss); engine.step()
        log; every save_every_steps: save_checkpoint (DeepSpeed global_step<N>/ + latest)

When the workers are done, :func:`run` exports ``run_dir/final/`` (a Hugging Face model with the
tokenizer, consolidated from the ZeRO checkpoint) and draws ``logs/loss.png``.

Modes: ``full`` (every weight), ``embeddings`` (only ``embed_tokens`` + ``lm_head``: stage one of the
two-stage recipe, the transformer frozen) and ``lora`` (peft adapters + full embeddings and head).

Resume invariant: the data order depends only on ``(seed, step)`` and the learning rate only on
``step``, and the checkpoint holds the model, the optimizer state and the step; so a run resumed
from step N in a new process computes the same losses as an uninterrupted run.
"""
from __future__ import annotations

import functools
import math
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pretrain.data import PackConfig
from pretrain.launch import LaunchSettings
from pretrain.lora import LoraSettings
from zhllama.cli import UserError

Mode = Literal["full", "embeddings", "lora"]
EMBEDDING_PARAM_SUFFIXES = ("embed_tokens.weight", "lm_head.weight")


@dataclass
class TrainConfig:
    """``python -m pretrain train``: paths, what to train, how long, how to shard and launch.

    Every key can be overridden on the command line, nested ones with dots::

        python -m pretrain train --config configs/pretrain/train.yaml --max_steps 40 \\
            --data.block_size_tokens 128 --launch.nproc 2 --deepspeed_config configs/deepspeed/zero3.json
    """

    model_dir: Path = Path("artifacts/pretrain/demo/init")
    """The resized base model (``python -m pretrain init`` output), with its tokenizer beside it."""
    tokenizer_dir: Path = Path("artifacts/tokenizer")
    """The merged tokenizer the corpus is packed with; must extend the model's tokenizer and fit its rows."""
    corpus_dir: Path = Path("artifacts/corpus")
    """Corpus stage output (``train/*.jsonl``)."""
    cache_dir: Path = Path("artifacts/cache")
    """Root of the packed-blocks cache (shared with ``python -m pretrain pack``)."""
    run_dir: Path = Path("artifacts/pretrain/demo")
    """Where ``checkpoints/``, ``final/`` and ``logs/`` go."""
    nproc: int | None = None
    """Shortcut for ``launch.nproc`` (worker processes per node), as the Makefile passes ``--nproc``."""
    mode: Mode = "full"
    """``full`` | ``embeddings`` (only embed_tokens + lm_head train) | ``lora`` (adapters + embeddings + head)."""
    deepspeed_config: Path = Path("configs/deepspeed/zero2.json")
    """DeepSpeed JSON template (ZeRO stage, offload); batch sizes and precision are filled in from here."""
    data: PackConfig = field(default_factory=PackConfig)
    """Packing options (block size, mixture); the same cache as ``python -m pretrain pack`` with equal options."""
    launch: LaunchSettings = field(default_factory=LaunchSettings)
    """Launcher, processes per node, nodes, rendezvous address."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (``mode: lora`` only)."""
    max_steps: int = 200
    """Optimizer steps to train in total (a resumed run continues up to this many)."""
    micro_batch_size: int = 2
    """Blocks per process per forward pass."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step; global batch = micro * accum * world size."""
    lr: float = 3e-4
    """Peak learning rate (reached after the warmup)."""
    min_lr_ratio: float = 0.1
    """The cosine decays to ``lr * min_lr_ratio`` at ``max_steps``."""
    warmup_steps: int = 10
    """Linear warmup from 0 to ``lr`` over this many steps."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay on matrices (not on norms)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW (beta1, beta2)."""
    grad_clip_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    attn_implementation: str = "sdpa"
    """Attention kernel for ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2`` on GPU)."""
    seed: int = 0
    """Seed of the data order (and of LoRA's initialisation)."""
    save_every_steps: int = 50
    """Checkpoint every this many steps (and always at the last step)."""
    keep_last_checkpoints: int = 2
    """How many ``global_step*`` checkpoints to keep."""
    log_every_steps: int = 1
    """Log a metrics record every this many steps."""
    resume: bool = False
    """Continue from ``run_dir/checkpoints/latest`` (same data order; losses match an uninterrupted run)."""
    overwrite: bool = False
    """Delete an existing run in ``run_dir`` and start again (without it, an existing run is an error)."""
    export: bool = True
    """Write ``run_dir/final/`` (HF model + tokenizer) after training."""
    dist_timeout_minutes: int = 30
    """Give up on a collective (a dead peer) after this long."""

    def __post_init__(self) -> None:
        if self.nproc is not None:
            if self.nproc < 1:
                raise ValueError(f"nproc must be >= 1, got {self.nproc}")
            self.launch.nproc = self.nproc
        for name in ("max_steps", "micro_batch_size", "grad_accum_steps", "save_every_steps",
                     "keep_last_checkpoints", "log_every_steps", "dist_timeout_minutes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, 0 <= min_lr_ratio <= 1, warmup_steps >= 0")
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas must be [beta1, beta2], got {self.adam_betas}")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")

    @property
    def global_batch_blocks(self) -> int:
        """Blocks per optimizer step over all processes."""
        return self.micro_batch_size * self.grad_accum_steps * self.launch.world_size


@dataclass(frozen=True)
class RunPaths:
    """The layout of a run directory. ``RunPaths(Path("r")).checkpoints == Path("r/checkpoints")``."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def worker_spec(self, node_rank: int) -> Path:
        """What the launcher hands to this node's workers (resolved config + derived settings)."""
        return self.root / ".launch" / f"worker_spec.node{node_rank}.json"


# ----------------------------------------------------------------------------------------------
# Pure pieces of the loop: learning rate and data order


def lr_at(step: int, peak_lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup, then cosine to ``peak * min_ratio``.

    >>> lr_at(0, 1.0, 10, 100, 0.1), lr_at(9, 1.0, 10, 100, 0.1), round(lr_at(99, 1.0, 10, 100, 0.1), 3)
    (0.1, 1.0, 0.1)
    """
    if step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    decay_steps = max(max_steps - 1 - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * cosine)


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


# ----------------------------------------------------------------------------------------------
# Launcher side: checks, run directory, launch, export


def check_inputs(cfg: TrainConfig) -> dict:
    """Every check that can fail before a worker starts; returns the DeepSpeed config dict.

    Raises :class:`UserError` for: a model dir that is not a Llama checkpoint, a tokenizer that does
    not extend the model's tokenizer or has ids beyond its embedding rows, a DeepSpeed config that
    DeepSpeed rejects or that contradicts this config, a missing hostfile.
    """
    import torch

    from pretrain.deepspeed_config import build_ds_config, load_ds_template
    from pretrain.launch import worker_command
    from pretrain.model import check_tokenizer_extends, read_llama_config

    read_llama_config(cfg.model_dir)
    check_tokenizer_extends(cfg.model_dir, cfg.tokenizer_dir, require_fit=True)
    ds_config = build_ds_config(
        load_ds_template(cfg.deepspeed_config), micro_batch_size=cfg.micro_batch_size,
        grad_accum_steps=cfg.grad_accum_steps, world_size=cfg.launch.world_size,
        grad_clip_norm=cfg.grad_clip_norm, bf16=torch.cuda.is_available(), source=str(cfg.deepspeed_config),
    )
    worker_command(cfg.launch, Path("spec.json"))  # raises on a bad multi-node launch setup
    return ds_config


def copy_model_description(model_dir: Path, tokenizer_dir: Path, out_dir: Path) -> None:
    """Copy ``config.json`` (+ generation config) and the tokenizer files into ``out_dir``.

    Makes ``checkpoints/`` self-describing: consolidating it with ``zero_to_fp32`` and loading the
    result into ``LlamaForCausalLM(config.json)`` needs nothing else.
    """
    from pretrain.export import copy_tokenizer_files

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "generation_config.json"):
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, out_dir / name)
    copy_tokenizer_files(tokenizer_dir, out_dir)


def prepare_run_dir(cfg: TrainConfig, paths: RunPaths, blocks_path: Path) -> str | None:
    """Create (or check, when resuming) the run directory; return the tag to resume from, if any.

    A run directory that already has checkpoints is an error unless ``resume`` (continue) or
    ``overwrite`` (start again): a typo in ``--run_dir`` must not wipe a week of training.
    """
    from pretrain.checkpoint import list_tags, read_latest, verify_checkpoint
    from pretrain.data import tokenizer_sha256
    from pretrain.logging_utils import METRICS_NAME, truncate_metrics
    from zhllama.artifacts import sha256_file, write_meta

    has_run = read_latest(paths.checkpoints) is not None or bool(list_tags(paths.checkpoints))
    resume_tag = None
    if cfg.resume:
        resume_tag, record = verify_checkpoint(paths.checkpoints, world_size=cfg.launch.world_size)
        saved = record.get("data", {})
        now = {"global_batch_blocks": cfg.global_batch_blocks, "seed": cfg.seed, "blocks": blocks_path.name}
        for key, value in now.items():
            if key in saved and saved[key] != value:
                raise UserError(f"cannot resume {paths.checkpoints / resume_tag}: it was trained with {key}={saved[key]}, "
                                f"this run has {key}={value}; the data order would differ")
        truncate_metrics(paths.logs / METRICS_NAME, int(record["step"]))
    else:
        if has_run and not cfg.overwrite:
            raise UserError(f"{paths.root} already holds a run (checkpoints/); pass --resume to continue it "
                            "or --overwrite to start again")
        for sub in (paths.checkpoints, paths.final, paths.logs):  # nothing resumable there: start clean
            shutil.rmtree(sub, ignore_errors=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    copy_model_description(Path(cfg.model_dir), Path(cfg.tokenizer_dir), paths.checkpoints)
    write_meta(
        paths.checkpoints, config=cfg,
        inputs={"model_config": sha256_file(Path(cfg.model_dir) / "config.json"),
                "tokenizer": tokenizer_sha256(cfg.tokenizer_dir)},
        blocks_path=str(blocks_path), mode=cfg.mode,
        note="DeepSpeed checkpoints: `latest` names the newest complete global_step<N>/; consolidate with "
             "deepspeed.utils.zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(this dir, tag)"
             + (" (mode lora: keys are peft's; use ../final/ or pretrain.export)" if cfg.mode == "lora" else ""),
    )
    return resume_tag


def run(cfg: TrainConfig) -> int:
    """CLI: check, pack, prepare ``run_dir``, launch the workers, export ``final/``, draw the loss curve."""
    import os

    from pretrain.data import build_or_load_blocks
    from pretrain.launch import worker_command, worker_env
    from pretrain.logging_utils import LOSS_PNG_NAME, METRICS_NAME, plot_loss, read_metrics
    from zhllama.artifacts import atomic_write_json
    from zhllama.config import to_dict

    t0 = time.monotonic()
    paths = RunPaths(Path(cfg.run_dir))
    ds_config = check_inputs(cfg)
    blocks = build_or_load_blocks(cfg.tokenizer_dir, cfg.corpus_dir, cfg.cache_dir, cfg.data, split="train")
    if blocks.n_tokens < blocks.block_size_tokens:
        raise UserError(f"{cfg.corpus_dir}: the train split has {blocks.n_tokens} tokens, fewer than one block "
                        f"of {blocks.block_size_tokens}; add text or lower --data.block_size_tokens")
    resume_tag = None
    if cfg.launch.node_rank == 0:
        resume_tag = prepare_run_dir(cfg, paths, blocks.path)
    elif cfg.resume:
        from pretrain.checkpoint import verify_checkpoint

        resume_tag, _ = verify_checkpoint(paths.checkpoints, world_size=cfg.launch.world_size)
    spec = {"config": to_dict(cfg), "ds_config": ds_config, "blocks_path": str(blocks.path),
            "n_blocks": len(blocks), "resume_tag": resume_tag}
    spec_path = paths.worker_spec(cfg.launch.node_rank)
    atomic_write_json(spec_path, spec)
    cmd = worker_command(cfg.launch, spec_path)
    print(f"launching {cfg.launch.nproc} worker(s) on node {cfg.launch.node_rank}/{cfg.launch.num_nodes}: "
          f"{' '.join(cmd)}", flush=True)
    rc = subprocess.call(cmd, env=worker_env(), cwd=os.getcwd())
    if rc != 0:
        raise UserError(f"training workers failed (exit status {rc}); their output is above")
    if cfg.launch.node_rank != 0:
        print(f"node {cfg.launch.node_rank}: workers finished")
        return 0
    records = read_metrics(paths.logs / METRICS_NAME)
    if records:
        plot_loss(records, paths.logs / LOSS_PNG_NAME, title=f"{paths.root.name} ({cfg.mode})")
    if cfg.export:
        from pretrain.export import export_final

        export_final(paths.checkpoints, None, paths.final, cfg)
    last = records[-1] if records else {}
    first = records[0] if records else {}
    print(f"trained {cfg.mode} to step {last.get('step', '?')} ({cfg.launch.world_size} procs): loss "
          f"{first.get('loss', float('nan')):.3f} -> {last.get('loss', float('nan')):.3f}, "
          f"{last.get('tokens_seen', 0):,} tokens, {last.get('tokens_per_second', 0):,.0f} tokens/s; "
          f"{(paths.final if cfg.export else paths.checkpoints)} in {time.monotonic() - t0:.0f}s")
    return 0


# ----------------------------------------------------------------------------------------------
# Worker side: the loop


def prepare_model(cfg: TrainConfig, ds_config: dict) -> tuple[Any, Any]:
    """Load the model for ``cfg.mode``; return ``(model, keep_alive)`` (keep the second referenced).

    Under ZeRO-3 (full and embeddings modes) an ``HfDeepSpeedConfig`` is alive during
    ``from_pretrained``, so each process loads only its shard (``zero.Init``): a 7B model is never
    materialised whole in every process. LoRA loads whole (peft copies modules_to_save).
    """
    from pretrain.deepspeed_config import zero_stage
    from pretrain.model import load_llama

    keep_alive = None
    if zero_stage(ds_config) == 3 and cfg.mode != "lora":
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # must outlive from_pretrained
    model = load_llama(cfg.model_dir, attn_implementation=cfg.attn_implementation)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.mode == "embeddings":
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(EMBEDDING_PARAM_SUFFIXES))
    elif cfg.mode == "lora":
        import torch

        from pretrain.lora import apply_lora

        torch.manual_seed(cfg.seed)  # LoRA A matrices are random
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, cfg.lora)
    return model, keep_alive


def make_optimizer(model: Any, cfg: TrainConfig, offload: bool) -> Any:
    """AdamW over the trainable parameters: decay on matrices, none on norms (1-D).

    With ZeRO-Offload it must be DeepSpeed's CPU Adam (same maths, compiled on first use).
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    betas = (cfg.adam_betas[0], cfg.adam_betas[1])
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=cfg.lr, betas=betas, adamw_mode=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas)


def batch_tensors(blocks: Any, ids: np.ndarray, device: Any) -> dict:
    """Stack the examples of block ids ``ids`` into model inputs on ``device`` (labels -100 on padding)."""
    import torch

    examples = [blocks.example(int(i)) for i in ids]
    return {k: torch.from_numpy(np.stack([e[k] for e in examples])).to(device) for k in examples[0]}


def train_worker(spec: dict) -> None:
    """The training loop of one worker process (launched by :func:`run` via ``pretrain.worker``)."""
    import datetime

    import deepspeed
    import torch
    import torch.distributed as dist

    from pretrain.checkpoint import load_checkpoint, save_checkpoint
    from pretrain.data import PackedBlocks
    from pretrain.deepspeed_config import uses_offload
    from pretrain.logging_utils import MetricsLogger
    from zhllama.config import from_dict

    cfg = from_dict(TrainConfig, spec["config"], source="worker spec")
    ds_config = spec["ds_config"]
    paths = RunPaths(Path(cfg.run_dir))

    # 1. Process group (NCCL on GPU, gloo on CPU: DeepSpeed picks the accelerator's backend).
    deepspeed.init_distributed(timeout=datetime.timedelta(minutes=cfg.dist_timeout_minutes))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if torch.cuda.is_available():
        import os

        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if world_size != cfg.launch.world_size:
        raise RuntimeError(f"expected {cfg.launch.world_size} processes, the launcher started {world_size}")

    # 2. Model, optimizer, engine.
    model, _keep_alive = prepare_model(cfg, ds_config)
    optimizer = make_optimizer(model, cfg, offload=uses_offload(ds_config))
    engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    n_trainable = sum(p.numel() if not hasattr(p, "ds_numel") else p.ds_numel for p in model.parameters() if p.requires_grad)

    # 3. Data, and where to start.
    blocks = PackedBlocks(spec["blocks_path"], cfg.data.restart_position_ids)
    n_blocks = len(blocks)
    start_step, tokens_seen = 0, 0
    if spec.get("resume_tag"):
        client = load_checkpoint(engine, paths.checkpoints, spec["resume_tag"])
        start_step, tokens_seen = int(client["completed_steps"]), int(client.get("tokens_seen", 0))
    logger = MetricsLogger(paths.logs, enabled=rank == 0)
    tokens_per_step = cfg.global_batch_blocks * blocks.block_size_tokens
    if rank == 0:
        print(f"[train] mode={cfg.mode} world={world_size} zero={ds_config['zero_optimization'].get('stage', 0)} "
              f"trainable={n_trainable:,} params, {n_blocks} blocks x {blocks.block_size_tokens} tokens, "
              f"steps {start_step}->{cfg.max_steps}, {tokens_per_step} tokens/step", flush=True)

    # 4. The loop.
    progress = None
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=cfg.max_steps, initial=start_step, desc="train", unit="step", file=sys.stdout)
    engine.train()
    t_start = time.monotonic()
    for step in range(start_step, cfg.max_steps):
        t_step = time.monotonic()
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        ids_of_step = step_blocks(step, n_blocks, cfg.global_batch_blocks, cfg.seed)
        loss_sum = torch.zeros((), dtype=torch.float64)
        for micro_step in range(cfg.grad_accum_steps):
            ids = rank_micro_blocks(ids_of_step, rank, world_size, cfg.micro_batch_size, micro_step)
            loss = engine(**batch_tensors(blocks, ids, engine.device)).loss
            engine.backward(loss)
            engine.step()  # DeepSpeed only updates at the accumulation boundary
            loss_sum += loss.detach().double().cpu()
        # Mean loss over every micro-batch of every rank, for the log (the update already happened).
        loss_mean = loss_sum.to(engine.device) / cfg.grad_accum_steps
        dist.all_reduce(loss_mean, op=dist.ReduceOp.SUM)
        loss_value = float(loss_mean) / world_size
        tokens_seen += tokens_per_step
        completed = step + 1
        if completed % cfg.log_every_steps == 0 or completed == cfg.max_steps:
            seconds = time.monotonic() - t_step
            grad_norm = engine.get_global_grad_norm()
            record = {"step": completed, "loss": loss_value, "lr": lr, "tokens_seen": tokens_seen,
                      "tokens_per_second": tokens_per_step / max(seconds, 1e-9),
                      "elapsed_s": time.monotonic() - t_start}
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            logger.log(record)
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
        if completed % cfg.save_every_steps == 0 or completed == cfg.max_steps:
            client_state = {"completed_steps": completed, "tokens_seen": tokens_seen}
            save_checkpoint(engine, paths.checkpoints, completed, client_state, cfg.keep_last_checkpoints,
                            data={"global_batch_blocks": cfg.global_batch_blocks, "seed": cfg.seed,
                                  "blocks": Path(spec["blocks_path"]).name, "n_blocks": n_blocks})

    # 5. Clean shutdown (a missing barrier sometimes ends in "terminate called without an active exception").
    if progress is not None:
        progress.close()
    logger.close()
    dist.barrier()
    dist.destroy_process_group()
