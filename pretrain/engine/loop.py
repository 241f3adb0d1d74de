"""The worker side of the engine: model, optimizer, DeepSpeed, and the loop, readable top to bottom.

:func:`train_worker` runs in every process (``python -m pretrain.worker SPEC.json``)::

    task = TaskClass(cfg, task_spec); model = task.build_model(cfg, ds_config)
    engine = deepspeed.initialize(model, client AdamW (decay on matrices only), ds_config)
    task.setup(engine, rank, world_size); load the checkpoint when resuming
    for step in range(start_step, max_steps):
        set lr = lr_at(step)                       # warmup + cosine, a pure function of the step
        train_step(engine, task, step)             # token-weighted over micro-batches, accumulation and ranks
        log; every eval_every_steps: task.evaluate; every save_every_steps: save_checkpoint

Token weighting, the invariant of :func:`train_step`: the gradient of a step is the gradient of
``sum(loss over every unit of the step) / units of the step``, whatever the split into micro-batches,
accumulation steps and ranks (tested: accumulation 4 x micro 1 == 1 x 4 == 2 ranks x 2).
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pretrain.engine.config import EngineConfig, RunPaths

EMBEDDING_PARAM_SUFFIXES = ("embed_tokens.weight", "lm_head.weight")
OPTIMIZER_GROUPS_NAME = "optimizer_groups.json"


@dataclass
class Engine:
    """What a task's hooks get: the DeepSpeed engine plus where and who this process is."""

    ds: Any
    """The ``deepspeed.DeepSpeedEngine`` (``ds.module`` is the model)."""
    cfg: Any
    """The stage's config (an :class:`EngineConfig` subclass)."""
    rank: int
    world_size: int
    paths: RunPaths

    @property
    def device(self) -> Any:
        return self.ds.device

    @property
    def module(self) -> Any:
        return self.ds.module

    def forward(self, **batch: Any) -> Any:
        """The model's forward through DeepSpeed (ZeRO-3 gathers parameters here)."""
        return self.ds(**batch)

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum each number over every rank (float64, one collective); every rank must call it."""
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()


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


# ----------------------------------------------------------------------------------------------
# Model and optimizer


def prepare_model(cfg: EngineConfig, ds_config: dict) -> Any:
    """The causal LM of ``cfg.model_dir`` for ``cfg.mode`` (``full``, ``embeddings``, ``lora``).

    Under ZeRO-3 (full and embeddings modes) an ``HfDeepSpeedConfig`` is alive during
    ``from_pretrained``, so each process loads only its shard (``zero.Init``): a 7B model is never
    materialised whole in every process; it stays referenced from the model. LoRA loads whole
    (peft copies ``modules_to_save``). With bf16 (GPU) the weights load in bf16 (DeepSpeed keeps
    the fp32 master copy in the optimizer).
    """
    import torch

    from pretrain.deepspeed_config import zero_stage
    from pretrain.model import load_llama

    keep_alive = None
    if zero_stage(ds_config) == 3 and cfg.mode != "lora":
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # must outlive from_pretrained
    dtype = torch.bfloat16 if ds_config.get("bf16", {}).get("enabled") else torch.float32
    model = load_llama(cfg.model_dir, attn_implementation=cfg.attn_implementation, dtype=dtype)
    model.config.use_cache = False
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.mode == "embeddings":
        for name, p in model.named_parameters():
            p.requires_grad_(name.endswith(EMBEDDING_PARAM_SUFFIXES))
    elif cfg.mode == "lora":
        from pretrain.lora import apply_lora

        torch.manual_seed(cfg.seed)  # LoRA A matrices are random
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, cfg.lora)
    model._zhllama_keep_alive = keep_alive
    return model


def real_shape(p: Any) -> tuple[int, ...]:
    """A parameter's shape; under ZeRO-3 a partitioned parameter is a 1-D slice and keeps it in ``ds_shape``."""
    return tuple(getattr(p, "ds_shape", None) or p.shape)


def decays(name: str, shape: tuple[int, ...]) -> bool:
    """Weight decay applies to weight matrices only: never to norms, biases or other 1-D parameters.

    >>> decays("model.layers.0.mlp.up_proj.weight", (128, 64)), decays("model.norm.weight", (64,))
    (True, False)
    """
    module = name.rsplit(".", 1)[0].rsplit(".", 1)[-1]  # "input_layernorm" of "...input_layernorm.weight"
    is_norm = "norm" in module
    return len(shape) >= 2 and not is_norm and not name.endswith(".bias")


def param_groups(model: Any, weight_decay: float) -> tuple[list[dict], dict[str, dict[str, list[int]]]]:
    """AdamW groups over the trainable parameters, and ``{"decay": {name: shape}, "no_decay": {...}}``."""
    decay, no_decay, names = [], [], {"decay": {}, "no_decay": {}}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        shape = real_shape(p)
        which = "decay" if decays(name, shape) else "no_decay"
        (decay if which == "decay" else no_decay).append(p)
        names[which][name] = list(shape)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]], names


def make_optimizer(model: Any, cfg: EngineConfig, offload: bool) -> tuple[Any, dict]:
    """AdamW over the trainable parameters (see :func:`param_groups`); returns it and the group names.

    With ZeRO-Offload it must be DeepSpeed's CPU Adam (same maths, compiled on first use).
    """
    import torch

    groups, names = param_groups(model, cfg.weight_decay)
    betas = (cfg.adam_betas[0], cfg.adam_betas[1])
    if offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=cfg.lr, betas=betas, adamw_mode=True), names
    fused = torch.cuda.is_available()  # one kernel for every parameter on GPU
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, fused=fused or None), names


# ----------------------------------------------------------------------------------------------
# One optimizer step


def batch_tokens(batch: dict) -> int:
    """Input tokens of a batch (padding excluded when there is an attention mask)."""
    if "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].numel())


def train_step(engine: Engine, task: Any, step: int) -> dict:
    """Forward/backward every micro-batch of this rank for ``step``, then the optimizer update.

    The global number of units of the step comes first (one all_reduce); each micro-batch then
    back-propagates ``loss_sum * world_size * grad_accum_steps / global_units``: DeepSpeed divides by
    the accumulation steps and averages over ranks, leaving the gradient of ``sum / units``.
    Returns ``{"loss": sum / units, "units", "tokens", **metrics}`` (global figures).
    """
    import torch

    gas = engine.cfg.grad_accum_steps
    batches = task.micro_batches(step)
    if len(batches) != gas:
        raise RuntimeError(f"step {step}: the task gave {len(batches)} micro-batches, grad_accum_steps is {gas}")
    units, tokens = engine.all_reduce_sum([float(sum(task.units(b) for b in batches)),
                                           float(sum(batch_tokens(b) for b in batches))])
    if units <= 0:
        raise RuntimeError(f"step {step}: no unit to train on in any micro-batch of any rank (all labels ignored?)")
    scale = engine.world_size * gas / units
    sums: dict[str, Any] = {}
    for batch in batches:
        batch = {k: v.to(engine.device) if hasattr(v, "to") else v for k, v in batch.items()}
        loss_sum, _, metrics = task.loss(engine, batch)
        engine.ds.backward(loss_sum * scale)
        engine.ds.step()  # DeepSpeed only updates at the accumulation boundary
        for key, value in {"loss": loss_sum, **metrics}.items():
            value = value.detach().double() if torch.is_tensor(value) else torch.tensor(float(value), dtype=torch.float64)
            sums[key] = sums.get(key, 0.0) + value.to(engine.device)
    keys = sorted(sums)  # the same order on every rank
    totals = engine.all_reduce_sum([float(sums[k]) for k in keys])
    out = {k: v / units for k, v in zip(keys, totals, strict=True)}
    out.update(units=int(units), tokens=int(tokens))
    return out


def run_evaluate(engine: Engine, task: Any) -> dict:
    """``task.evaluate`` with the model in eval mode and no gradients; keys prefixed ``eval_``."""
    import torch

    engine.ds.eval()
    try:
        with torch.no_grad():
            result = task.evaluate(engine) or {}
    finally:
        engine.ds.train()
    return {f"eval_{k}": float(v) for k, v in result.items()}


# ----------------------------------------------------------------------------------------------
# The worker


def skip_cpu_shm_allreduce() -> None:
    """Keep DeepSpeed from building its CPU shared-memory all-reduce op (call before ``init_distributed``).

    Why: that op serves only ``inference_all_reduce``; training reduces through the process group
    (gloo on CPU). It is compiled on first use (~35 s of C++ per machine), and every process that
    initialises it leaves a 69 MB ``/dev/shm/deepspeed_allreduce_buffer_*`` file that DeepSpeed
    0.19 never unlinks: a few dozen 2-process runs filled 20 GB of ``/dev/shm`` (RAM) here. GPU
    accelerators have no such op, so this changes nothing there. DeepSpeed caches its op table
    in ``deepspeed.ops`` and documents edits to it as persistent.

    >>> import contextlib, io
    >>> with contextlib.redirect_stdout(io.StringIO()):  # DeepSpeed logs its accelerator on first import
    ...     skip_cpu_shm_allreduce()
    >>> import deepspeed.ops; deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"]
    False
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def train_worker(spec: dict) -> None:
    """The training loop of one worker process (launched by the stage's ``run`` via ``pretrain.worker``)."""
    import datetime

    import deepspeed
    import torch
    import torch.distributed as dist

    from pretrain.checkpoint import load_checkpoint, save_checkpoint
    from pretrain.deepspeed_config import uses_offload, zero_stage
    from pretrain.logging_utils import MetricsLogger
    from zhllama.artifacts import atomic_write_json
    from zhllama.cli import import_object
    from zhllama.config import from_dict

    task_cls = import_object(spec["task"])
    cfg = from_dict(task_cls.config_class, spec["config"], source="worker spec")
    ds_config = spec["ds_config"]
    paths = RunPaths(Path(cfg.run_dir))

    # 1. Device first (NCCL binds the current device), then the process group (NCCL on GPU, gloo on CPU).
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    skip_cpu_shm_allreduce()
    deepspeed.init_distributed(timeout=datetime.timedelta(minutes=cfg.dist_timeout_minutes))
    rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size != cfg.launch.world_size:
        raise RuntimeError(f"expected {cfg.launch.world_size} processes, the launcher started {world_size}")

    # 2. Task, model, optimizer, engine.
    task = task_cls(cfg, spec.get("task_spec", {}))
    model = task.build_model(cfg, ds_config)
    optimizer, group_names = make_optimizer(model, cfg, offload=uses_offload(ds_config))
    ds_engine, optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    if cfg.torch_compile:
        ds_engine.compile()
    engine = Engine(ds_engine, cfg, rank, world_size, paths)
    n_trainable = sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters() if p.requires_grad)
    task.setup(engine, rank, world_size)

    # 3. Where to start.
    start_step, tokens_seen = 0, 0
    if spec.get("resume_tag"):
        client = load_checkpoint(ds_engine, paths.checkpoints, spec["resume_tag"])
        start_step, tokens_seen = int(client["completed_steps"]), int(client.get("tokens_seen", 0))
        task.load_client_state(client.get("task", {}))
    logger = MetricsLogger(paths.logs, enabled=rank == 0)
    if rank == 0:
        atomic_write_json(paths.logs / OPTIMIZER_GROUPS_NAME, {"weight_decay": cfg.weight_decay, **group_names})
        print(f"[train] task={spec['task']} mode={cfg.mode} world={world_size} zero={zero_stage(ds_config)} "
              f"trainable={n_trainable:,} params, steps {start_step}->{cfg.max_steps}, "
              f"global batch {cfg.global_batch_size}", flush=True)

    # 4. The loop.
    progress = None
    if rank == 0:
        from tqdm import tqdm

        progress = tqdm(total=cfg.max_steps, initial=start_step, desc="train", unit="step", file=sys.stdout)
    ds_engine.train()
    if cfg.eval_every_steps and start_step == 0:
        logger.log({"step": 0, **run_evaluate(engine, task)})
    t_start, tokens_at_start = time.monotonic(), tokens_seen
    for step in range(start_step, cfg.max_steps):
        t_step = time.monotonic()
        lr = lr_at(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        result = train_step(engine, task, step)
        loss = result.pop("loss")
        step_tokens = result.pop("tokens")
        tokens_seen += step_tokens
        completed = step + 1
        last = completed == cfg.max_steps
        if completed % cfg.log_every_steps == 0 or last:
            now = time.monotonic()
            record = {"step": completed, "loss": loss, "lr": lr, "tokens_seen": tokens_seen,
                      "tokens_per_second": step_tokens / max(now - t_step, 1e-9),
                      # over this launch's wall time, evaluations and saves included
                      "run_tokens_per_second": (tokens_seen - tokens_at_start) / max(now - t_start, 1e-9),
                      "elapsed_s": now - t_start, **result}
            grad_norm = ds_engine.get_global_grad_norm()
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            logger.log(record)
        if cfg.eval_every_steps and (completed % cfg.eval_every_steps == 0 or last):
            logger.log({"step": completed, **run_evaluate(engine, task)})
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        if completed % cfg.save_every_steps == 0 or last:
            client_state = {"completed_steps": completed, "tokens_seen": tokens_seen, "task": task.client_state()}
            save_checkpoint(ds_engine, paths.checkpoints, completed, client_state, cfg.keep_last_checkpoints,
                            data=spec.get("identity", {}))

    # 5. Clean shutdown (a missing barrier sometimes ends in "terminate called without an active exception").
    if progress is not None:
        progress.close()
    logger.close()
    dist.barrier()
    dist.destroy_process_group()
