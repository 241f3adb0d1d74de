"""The launcher side of the engine: check everything, prepare the run, start the workers, export.

A stage's ``run(cfg)`` is a few lines around these (see :mod:`pretrain.engine`)::

    with run_lock(cfg.run_dir, cfg.launch.node_rank):      # one `train` per run directory
        ds_config, resume = preflight(cfg)                 # every check; nothing written yet
        ... the stage prepares its data (packing, caches) ...
        launch(cfg, ds_config, resume, task="pkg.module:MyTask", task_spec={...}, identity={...})

:func:`launch` prepares ``run_dir`` (node 0), writes the worker spec, starts ``launch.nproc``
workers per node (``python -m pretrain.worker SPEC``) forwarding SIGINT/SIGTERM to all of them,
then on node 0 draws ``logs/loss.png``, exports ``final/`` and prints a one-line summary.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from pretrain.engine.config import EngineConfig, RunPaths
from pretrain.engine.rundir import (
    ResumePoint,
    check_identity,
    check_new_run,
    find_resume_point,
    prepare_run_dir,
)
from zhllama.cli import UserError


def ds_config_for(cfg: EngineConfig) -> dict:
    """The DeepSpeed config dict of a run: the template filled with batch sizes, clipping, precision."""
    import torch

    from pretrain.deepspeed_config import build_ds_config, load_ds_template

    return build_ds_config(
        load_ds_template(cfg.deepspeed_config), micro_batch_size=cfg.micro_batch_size,
        grad_accum_steps=cfg.grad_accum_steps, world_size=cfg.launch.world_size,
        grad_clip_norm=cfg.grad_clip_norm, bf16=torch.cuda.is_available(), source=str(cfg.deepspeed_config),
    )


def check_inputs(cfg: EngineConfig) -> dict:
    """Every input check that can fail before a worker starts; returns the DeepSpeed config dict.

    Raises :class:`UserError` for: a model dir that is not a Llama checkpoint, weights that are
    truncated or whose shapes differ from its ``config.json``, a tokenizer that does not extend the
    model's tokenizer or has ids beyond its embedding rows, a DeepSpeed config that DeepSpeed rejects
    or that contradicts this config, a bad multi-node launch setup.
    """
    from pretrain.launch import worker_command
    from pretrain.model import check_tokenizer_extends, check_weights_match_config, read_llama_config

    read_llama_config(cfg.model_dir)
    check_weights_match_config(cfg.model_dir)
    check_attention(cfg.attn_implementation)
    check_tokenizer_extends(cfg.model_dir, cfg.tokenizer_dir, require_fit=True)
    ds_config = ds_config_for(cfg)
    worker_command(cfg.launch, Path("spec.json"))  # raises on a bad multi-node launch setup
    return ds_config


def check_attention(attn_implementation: str) -> None:
    """``flash_attention_2``/``_3`` need a CUDA GPU and the ``flash_attn`` package: say so before launching."""
    import importlib.util

    import torch

    if not attn_implementation.startswith("flash_attention"):
        return
    if not torch.cuda.is_available():
        raise UserError(f"attn_implementation={attn_implementation} needs a CUDA GPU; use sdpa (PyTorch's fused "
                        "attention, flash kernels included on GPU) or eager")
    package = "flash_attn_interface" if attn_implementation.endswith("3") else "flash_attn"
    if importlib.util.find_spec(package) is None:
        raise UserError(f"attn_implementation={attn_implementation} needs the {package} package "
                        "(pip install flash-attn --no-build-isolation), or use sdpa")


def preflight(cfg: EngineConfig) -> tuple[dict, ResumePoint | None]:
    """:func:`check_inputs` plus the run directory's state: ``(ds_config, resume point or None)``.

    Writes nothing. A resume needs a verified checkpoint; a new run needs an empty run directory
    (or ``--overwrite``).
    """
    ds_config = check_inputs(cfg)
    if cfg.resume:
        return ds_config, find_resume_point(cfg)
    if cfg.launch.node_rank == 0:
        check_new_run(cfg)
    return ds_config, None


def launch(cfg: EngineConfig, ds_config: dict, resume: ResumePoint | None, *, task: str,
           task_spec: dict | None = None, identity: dict | None = None, meta: dict | None = None,
           exporter: str = "pretrain.export:export_final") -> list[dict]:
    """Prepare ``run_dir``, run the workers of ``task`` ("module:Class"), export; return the metrics records.

    ``task_spec`` reaches the task's constructor in every worker (JSON-able: paths, counts);
    ``identity`` (what decides the data order besides the seed and the global batch) is stored in
    every checkpoint and must match on resume; ``meta`` goes into ``checkpoints/meta.json``;
    ``exporter`` ("module:function", called as ``f(checkpoints_dir, None, final_dir, cfg)``) writes
    ``final/`` when ``cfg.export`` (the default consolidates a causal LM; a reward model brings its own).
    """
    from pretrain.launch import run_workers, worker_command, worker_env
    from pretrain.logging_utils import LOSS_PNG_NAME, METRICS_NAME, plot_loss, read_metrics
    from zhllama.artifacts import atomic_write_json
    from zhllama.config import to_dict

    t0 = time.monotonic()
    paths = RunPaths(Path(cfg.run_dir))
    identity = {"seed": cfg.seed, "global_batch_size": cfg.global_batch_size, **(identity or {})}
    if resume is not None:
        check_identity(paths.checkpoints, resume, identity)
        print(resume.describe(paths.checkpoints), flush=True)
    if cfg.launch.node_rank == 0:
        prepare_run_dir(cfg, resume, dict(meta or {}, task=task))
    spec = {"task": task, "config": to_dict(cfg), "ds_config": ds_config, "task_spec": task_spec or {},
            "identity": identity, "resume_tag": resume.tag if resume else None}
    spec_path = paths.worker_spec(cfg.launch.node_rank)
    atomic_write_json(spec_path, spec)
    cmd = worker_command(cfg.launch, spec_path)
    print(f"launching {cfg.launch.nproc} worker(s) on node {cfg.launch.node_rank}/{cfg.launch.num_nodes}: "
          f"{' '.join(cmd)}", flush=True)
    rc = run_workers(cmd, env=worker_env(malloc_tuning=cfg.launch.malloc_tuning), cwd=os.getcwd(),
                     grace_seconds=cfg.launch.stop_grace_seconds)
    if rc != 0:
        raise UserError(f"training workers failed (exit status {rc}); their output is above")
    if cfg.launch.node_rank != 0:
        print(f"node {cfg.launch.node_rank}: workers finished")
        return []
    records = read_metrics(paths.logs / METRICS_NAME)
    if records:
        plot_loss(records, paths.logs / LOSS_PNG_NAME, title=f"{paths.root.name} ({cfg.mode})")
    if cfg.export:
        from zhllama.cli import import_object

        import_object(exporter)(paths.checkpoints, None, paths.final, cfg)
    print(summary_line(cfg, records, paths, time.monotonic() - t0))
    return records


def summary_line(cfg: EngineConfig, records: list[dict], paths: RunPaths, seconds: float) -> str:
    """The closing line: steps, loss first -> last, tokens, throughput (run average and last step)."""
    train = [r for r in records if "loss" in r]
    first, last = (train[0], train[-1]) if train else ({}, {})
    evals = [r for r in records if "eval_loss" in r]
    held_out = f", held-out loss {evals[-1]['eval_loss']:.3f}" if evals else ""
    return (f"trained {cfg.mode} to step {last.get('step', '?')} ({cfg.launch.world_size} procs): loss "
            f"{first.get('loss', float('nan')):.3f} -> {last.get('loss', float('nan')):.3f}{held_out}, "
            f"{last.get('tokens_seen', 0):,} tokens, {last.get('run_tokens_per_second', 0):,.0f} tokens/s average "
            f"({last.get('tokens_per_second', 0):,.0f} last step); "
            f"{(paths.final if cfg.export else paths.checkpoints)} in {seconds:.0f}s")

