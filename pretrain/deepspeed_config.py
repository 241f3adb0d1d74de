"""Build the DeepSpeed config dict from a JSON template in ``configs/deepspeed/`` and our TrainConfig.

The JSON templates say *how* to shard (ZeRO stage, offload, buckets); the training config says
*what* to run (batch sizes, clipping, precision). Keys the template leaves out or sets to
``"auto"`` are filled from the training config; a template value that contradicts it is an error
naming the file and key, never a silent override. Example::

    ds = build_ds_config(load_ds_template("configs/deepspeed/zero2.json"), micro_batch_size=2,
                         grad_accum_steps=1, world_size=2, grad_clip_norm=1.0, bf16=False)
    assert ds["train_batch_size"] == 4 and ds["zero_optimization"]["stage"] == 2

Invariants of every dict built here: ``train_batch_size == micro * accum * world_size``; no
``optimizer``/``scheduler`` blocks (the loop passes a client AdamW and sets the learning rate
itself, which keeps resume exact and avoids compiling FusedAdam on CPU), hence
``zero_allow_untested_optimizer``; bf16 only when a CUDA GPU is present (CPU stays fp32).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

from zhllama.cli import UserError

#: Keys the loop owns; a template may leave them out or set them to "auto".
FILLED_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping")
#: Blocks a template must not carry (the loop owns the optimizer and the learning-rate schedule).
FORBIDDEN_BLOCKS = ("optimizer", "scheduler", "fp16")


def load_ds_template(path: str | Path) -> dict:
    """Read a DeepSpeed JSON template; a missing file or bad JSON is a :class:`UserError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"DeepSpeed config not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a JSON object at the top level")
    return data


def build_ds_config(
    template: dict,
    *,
    micro_batch_size: int,
    grad_accum_steps: int,
    world_size: int,
    grad_clip_norm: float,
    bf16: bool,
    source: str = "<deepspeed config>",
) -> dict:
    """Fill ``template`` with the loop's batch sizes, clipping and precision; return a new dict.

    ``source`` names the template in error messages. Raises :class:`UserError` on a template that
    contradicts the training config or that DeepSpeed itself rejects (see :func:`validate_ds_config`).
    """
    cfg = copy.deepcopy(template)
    for block in FORBIDDEN_BLOCKS:
        if block in cfg:
            raise UserError(
                f"{source}: remove the {block!r} block: the training loop owns the optimizer (AdamW), the "
                "learning-rate schedule (warmup + cosine) and precision (bf16 on GPU, fp32 on CPU)"
            )
    wanted = {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "train_batch_size": micro_batch_size * grad_accum_steps * world_size,
        "gradient_clipping": grad_clip_norm,
    }
    for key, value in wanted.items():
        have = cfg.get(key, "auto")
        if have != "auto" and have != value:
            raise UserError(
                f"{source}: {key}={have!r} contradicts the training config ({key}={value!r}); "
                'set it to "auto" or remove it'
            )
        cfg[key] = value
    bf16_block = cfg.get("bf16", {})
    if not isinstance(bf16_block, dict):
        raise UserError(f"{source}: 'bf16' must be an object like {{\"enabled\": \"auto\"}}")
    if bf16_block.get("enabled", "auto") not in ("auto", bf16):
        where = "a CUDA GPU is present" if bf16 else "training on CPU (fp32 only)"
        raise UserError(f"{source}: bf16.enabled={bf16_block['enabled']!r} but {where}; set it to \"auto\"")
    cfg["bf16"] = {**bf16_block, "enabled": bf16}
    cfg["zero_allow_untested_optimizer"] = True  # client AdamW: no FusedAdam build, exact resume
    cfg.setdefault("steps_per_print", 10**9)  # our own logger prints; keep DeepSpeed's quiet
    cfg.setdefault("wall_clock_breakdown", False)
    zero = cfg.setdefault("zero_optimization", {"stage": 0})
    if not isinstance(zero, dict):
        raise UserError(f"{source}: 'zero_optimization' must be an object")
    validate_ds_config(cfg, source)
    return cfg


def validate_ds_config(cfg: dict, source: str = "<deepspeed config>") -> None:
    """Let DeepSpeed's own parser check ``cfg`` (in this process, before any worker starts).

    DeepSpeed's pydantic models reject unknown keys inside ``zero_optimization``, a ZeRO stage
    outside 0-3, an offload device it does not know... Its message is shortened to one line that
    names ``source``.
    """
    from deepspeed.runtime.config import DeepSpeedConfig

    # The parent process has no process group, so DeepSpeed would assume world size 1: validate a
    # copy without the total batch size (it is recomputed from micro * accum there).
    probe = {k: v for k, v in cfg.items() if k != "train_batch_size"}
    try:
        DeepSpeedConfig(probe)
    except Exception as e:  # pydantic ValidationError, AssertionError, ValueError: all user input
        lines = [line.strip() for line in str(e).splitlines() if line.strip() and "errors.pydantic.dev" not in line]
        raise UserError(f"{source}: invalid DeepSpeed config: {' / '.join(lines)[:500]}") from None
    stage = cfg.get("zero_optimization", {}).get("stage", 0)
    if stage not in (0, 1, 2, 3):
        raise UserError(f"{source}: zero_optimization.stage must be 0, 1, 2 or 3, got {stage!r}")


def zero_stage(cfg: dict) -> int:
    """The ZeRO stage of a DeepSpeed config dict (0 when absent). ``zero_stage({}) == 0``."""
    return int(cfg.get("zero_optimization", {}).get("stage", 0))


def uses_offload(cfg: dict) -> bool:
    """True when the optimizer or the parameters are offloaded (cpu_adam is then compiled on first use)."""
    zero = cfg.get("zero_optimization", {})
    return any(zero.get(k, {}).get("device", "none") not in ("none", None) for k in ("offload_optimizer", "offload_param"))
