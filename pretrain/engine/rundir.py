"""The run directory on the launcher side: a lock, the resume point, and preparing it for workers.

- :func:`run_lock`: one ``train`` process per run directory and node. The lock is an ``flock`` on
  ``<parent>/.<run name>.lock.node<R>`` (beside the run, so a refused or failed start writes
  nothing inside it): the kernel drops it when its holder dies, so a stale lock of a dead process
  is simply taken over (and said so); a live holder is named in the refusal.
- :func:`find_resume_point`: the checkpoint ``latest`` names, verified (files, sizes, sha256),
  plus the newer checkpoints that are skipped and why.
- :func:`prepare_run_dir`: a new run starts clean (``--overwrite``) or is refused when a run is
  already there; a resumed one must have the same data identity (seed, global batch, data) and
  loses the log records after its checkpoint.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrain.engine.config import EngineConfig, RunPaths
from zhllama.artifacts import pid_running
from zhllama.cli import UserError


def lock_path(run_dir: str | Path, node_rank: int) -> Path:
    """``/abs/parent/.<name>.lock.node<R>`` for a run directory (any spelling of the same path)."""
    root = Path(run_dir).resolve()
    return root.parent / f".{root.name}.lock.node{node_rank}"


@contextlib.contextmanager
def run_lock(run_dir: str | Path, node_rank: int = 0) -> Iterator[Path]:
    """Hold the run directory's lock for the ``with`` block; :class:`UserError` if another process holds it.

        with run_lock("artifacts/pretrain/demo"):
            ...   # a second `train` on the same run now fails with "... is in use by pid N"
    """
    path = lock_path(run_dir, node_rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}" if holder else "another process"
            since = f" since {holder['started']}" if holder.get("started") else ""
            raise UserError(f"{Path(run_dir)} is in use by another training process ({who}{since}); wait for it to "
                            f"finish or stop it first (lock: {path})") from None
        # The holder we waited on may have removed the file between our open and our lock: retry then.
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    stale = _read_holder(fd)
    if stale.get("pid") and stale.get("host") == socket.gethostname() and not pid_running(int(stale["pid"])):
        print(f"taking over the stale lock of pid {stale['pid']} (no longer running): {path}", flush=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "run_dir": str(Path(run_dir).resolve())}
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)  # closing releases the flock


def _read_holder(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class ResumePoint:
    """The verified checkpoint a resumed run starts from."""

    tag: str
    """``global_step<N>`` folder name."""
    record: dict
    """Its completion marker (step, world size, data identity, file sizes and hashes)."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """Newer ``(tag, reason)`` pairs that are not resumed from."""

    def describe(self, ckpt_dir: Path) -> str:
        """One line per fact: what is loaded, what is skipped and why."""
        lines = [f"resuming from {ckpt_dir / self.tag} (step {self.record.get('step')})"]
        lines += [f"  skipping newer {tag}: {why}" for tag, why in self.skipped]
        return "\n".join(lines)


def find_resume_point(cfg: EngineConfig) -> ResumePoint:
    """Verify the checkpoint to resume from (see :func:`pretrain.checkpoint.verify_checkpoint`)."""
    from pretrain.checkpoint import newer_incomplete, verify_checkpoint

    ckpt_dir = RunPaths(Path(cfg.run_dir)).checkpoints
    tag, record = verify_checkpoint(ckpt_dir, world_size=cfg.launch.world_size)
    return ResumePoint(tag, record, newer_incomplete(ckpt_dir, tag))


def check_new_run(cfg: EngineConfig) -> None:
    """A run directory that already holds checkpoints needs ``--resume`` or ``--overwrite``."""
    from pretrain.checkpoint import list_tags, read_latest

    paths = RunPaths(Path(cfg.run_dir))
    has_run = read_latest(paths.checkpoints) is not None or bool(list_tags(paths.checkpoints))
    if has_run and not cfg.overwrite:
        raise UserError(f"{paths.root} already holds a run (checkpoints/); pass --resume to continue it "
                        "or --overwrite to start again")


def check_identity(ckpt_dir: Path, resume: ResumePoint, identity: dict) -> None:
    """Refuse to resume when anything that decides the data order differs from the checkpoint's."""
    saved = resume.record.get("data", {})
    for key, value in identity.items():
        if saved.get(key, value) != value:
            raise UserError(f"cannot resume {ckpt_dir / resume.tag}: it was trained with {key}={saved[key]}, "
                            f"this run has {key}={value}; the data order would differ")


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


def prepare_run_dir(cfg: EngineConfig, resume: ResumePoint | None, meta: dict[str, Any]) -> None:
    """Node 0, under the lock: clean or keep the run directory, write ``checkpoints/meta.json``.

    ``meta`` goes into ``meta.json`` (e.g. ``inputs={...}`` hashes, the task name).
    """
    from pretrain.logging_utils import truncate_logs
    from zhllama.artifacts import sha256_file, write_meta

    paths = RunPaths(Path(cfg.run_dir))
    if resume is not None:
        truncate_logs(paths.logs, int(resume.record["step"]))
    else:
        check_new_run(cfg)
        for sub in (paths.checkpoints, paths.final, paths.logs):  # nothing resumable there: start clean
            shutil.rmtree(sub, ignore_errors=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    copy_model_description(Path(cfg.model_dir), Path(cfg.tokenizer_dir), paths.checkpoints)
    inputs = {"model_config": sha256_file(Path(cfg.model_dir) / "config.json"), **meta.pop("inputs", {})}
    write_meta(
        paths.checkpoints, config=cfg, inputs=inputs, mode=cfg.mode, **meta,
        note="DeepSpeed checkpoints: `latest` names the newest complete global_step<N>/; consolidate with "
             "deepspeed.utils.zero_to_fp32.get_fp32_state_dict_from_zero_checkpoint(this dir, tag)"
             + (" (mode lora: keys are peft's; use ../final/ or pretrain.export)" if cfg.mode == "lora" else ""),
    )
