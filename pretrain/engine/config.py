"""The settings every training stage shares (:class:`EngineConfig`) and the run directory layout.

A stage's config extends :class:`EngineConfig` with its data settings, so ``--lr``,
``--max_steps``, ``--deepspeed_config`` or ``--mode lora`` mean the same in every stage::

    @dataclass
    class SftConfig(EngineConfig):
        data_path: Path = Path("artifacts/sft/train.jsonl")
        max_seq_tokens: int = 2048

    cfg = load_config(SftConfig, "configs/sft/train.yaml", ["--lr", "2e-5", "--mode", "lora"])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pretrain.launch import LaunchSettings
from pretrain.lora import LoraSettings

Mode = Literal["full", "embeddings", "lora"]


@dataclass
class EngineConfig:
    """Model, run directory, what to train, optimisation, checkpoints, logs and launch settings."""

    model_dir: Path = Path("artifacts/pretrain/demo/init")
    """The model to train (a local Hugging Face directory), with its tokenizer beside it."""
    tokenizer_dir: Path = Path("artifacts/tokenizer")
    """The tokenizer the data is encoded with; must extend the model's tokenizer and fit its rows."""
    run_dir: Path = Path("artifacts/pretrain/demo")
    """Where ``checkpoints/``, ``final/`` and ``logs/`` go."""
    nproc: int | None = None
    """Shortcut for ``launch.nproc`` (worker processes per node)."""
    mode: Mode = "full"
    """``full`` | ``embeddings`` (only embed_tokens + lm_head train) | ``lora`` (adapters + embeddings + head)."""
    deepspeed_config: Path = Path("configs/deepspeed/zero2.json")
    """DeepSpeed JSON template (ZeRO stage, offload); batch sizes, clipping and precision are filled in from here."""
    launch: LaunchSettings = field(default_factory=LaunchSettings)
    """Launcher, processes per node, nodes, rendezvous address."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """LoRA settings (``mode: lora`` only)."""
    max_steps: int = 200
    """Optimizer steps to train in total (a resumed run continues up to this many)."""
    micro_batch_size: int = 2
    """Examples (blocks, sequences, pairs) per process per forward pass."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step; global batch = micro * accum * world size."""
    lr: float = 3e-4
    """Peak learning rate (reached after the warmup)."""
    min_lr_ratio: float = 0.1
    """The cosine decays to ``lr * min_lr_ratio`` at ``max_steps``."""
    warmup_steps: int = 10
    """Linear warmup from 0 to ``lr`` over this many steps."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay on weight matrices (never on norms, biases or other 1-D parameters)."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    """AdamW (beta1, beta2)."""
    grad_clip_norm: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    attn_implementation: str = "sdpa"
    """Attention kernel for ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2`` on GPU)."""
    torch_compile: bool = False
    """Compile the model's forward with ``torch.compile`` (GPU: fuses norms, rotary, SiLU; slow to start)."""
    seed: int = 0
    """Seed of the data order (and of LoRA's initialisation)."""
    save_every_steps: int = 50
    """Checkpoint every this many steps (and always at the last step)."""
    keep_last_checkpoints: int = 2
    """How many ``global_step*`` checkpoints to keep."""
    log_every_steps: int = 1
    """Log a metrics record every this many steps."""
    eval_every_steps: int = 0
    """Run the task's held-out evaluation every this many steps, at the start and at the end (0: never)."""
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
        if self.eval_every_steps < 0:
            raise ValueError(f"eval_every_steps must be >= 0 (0: never), got {self.eval_every_steps}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ValueError("need lr > 0, 0 <= min_lr_ratio <= 1, warmup_steps >= 0")
        if len(self.adam_betas) != 2:
            raise ValueError(f"adam_betas must be [beta1, beta2], got {self.adam_betas}")
        if self.grad_clip_norm < 0 or self.weight_decay < 0:
            raise ValueError("grad_clip_norm and weight_decay must be >= 0")
        if self.resume and self.overwrite:
            raise ValueError("resume and overwrite exclude each other")

    @property
    def global_batch_size(self) -> int:
        """Examples per optimizer step over all processes: ``micro_batch_size * grad_accum_steps * world size``."""
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

    def lock(self, node_rank: int) -> Path:
        """The lock file held by this node's ``train`` process for the whole run."""
        return self.root / f".lock.node{node_rank}"

    def worker_spec(self, node_rank: int) -> Path:
        """What the launcher hands to this node's workers (resolved config + derived settings)."""
        return self.root / ".launch" / f"worker_spec.node{node_rank}.json"
