"""ZeRO checkpoint -> a Hugging Face model directory with the tokenizer (``run_dir/final/``).

The DeepSpeed checkpoint is consolidated into one fp32 state dict (ZeRO-2 and ZeRO-3 alike, frozen
parameters included) with DeepSpeed's ``get_fp32_state_dict_from_zero_checkpoint``, loaded into the
model the run started from, and saved as safetensors in the base model's dtype::

    export_final("artifacts/pretrain/demo/checkpoints", None, "artifacts/pretrain/demo/final", cfg)
    AutoModelForCausalLM.from_pretrained("artifacts/pretrain/demo/final")   # + AutoTokenizer

In ``lora`` mode ``final/`` holds the *merged* model (a plain Llama) and ``final/adapter/`` the
adapter itself, loadable with ``PeftModel.from_pretrained`` onto the resized base (``init/``).
Invariant checked on every export: the consolidated state dict covers every weight of the model
(only a tied ``lm_head`` may be absent), with no key left over.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zhllama.cli import UserError


def consolidated_state_dict(ckpt_dir: str | Path, tag: str | None = None) -> dict:
    """fp32 ``{name: tensor}`` of checkpoint ``tag`` (default: ``latest``), gathered from every ZeRO shard."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from pretrain.checkpoint import read_latest

    d = Path(ckpt_dir)
    tag = tag or read_latest(d)
    if tag is None or not (d / tag).is_dir():
        raise UserError(f"no DeepSpeed checkpoint to export in {d} (tag {tag!r})")
    return get_fp32_state_dict_from_zero_checkpoint(str(d), tag=tag)


def load_into(model: Any, state_dict: dict, where: str) -> None:
    """Copy ``state_dict`` into ``model``; raise if any weight is missing or any key is left over."""
    result = model.load_state_dict(state_dict, strict=False)
    tied = bool(getattr(getattr(model, "config", None), "tie_word_embeddings", False))
    missing = [k for k in result.missing_keys if not (tied and k.endswith("lm_head.weight"))]
    if missing or result.unexpected_keys:
        raise UserError(f"{where}: checkpoint does not match the model: missing {missing[:5]}, "
                        f"unexpected {list(result.unexpected_keys)[:5]}")
    if tied:
        model.tie_weights()


def trained_model(cfg: Any, ckpt_dir: str | Path, tag: str | None = None) -> Any:
    """The model of a training run at checkpoint ``tag``: a ``LlamaForCausalLM``, or a ``PeftModel`` for LoRA."""
    import torch

    from pretrain.model import load_llama

    state_dict = consolidated_state_dict(ckpt_dir, tag)
    model = load_llama(cfg.model_dir)
    if cfg.mode == "lora":
        from pretrain.lora import apply_lora

        torch.manual_seed(cfg.seed)
        model = apply_lora(model, cfg.lora)
    load_into(model, state_dict, str(ckpt_dir))
    model.eval()
    return model


def _source_dtype(model_dir: Path) -> Any:
    """The dtype the base checkpoint was stored in (``config.json``'s dtype), fp32 if unknown."""
    import json

    import torch

    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    name = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    return getattr(torch, str(name), torch.float32)


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy a tokenizer directory's own files (``tokenizer*``, special tokens map) into ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(src).iterdir()):
        if f.is_file() and (f.name.startswith("tokenizer") or f.name in ("special_tokens_map.json", "added_tokens.json")):
            shutil.copy2(f, dst / f.name)


def export_final(ckpt_dir: str | Path, tag: str | None, out_dir: str | Path, cfg: Any,
                 finalize: Callable[[Path], None] | None = None) -> Path:
    """Write ``out_dir`` atomically: safetensors model + tokenizer + meta.json (+ ``adapter/`` for LoRA).

    ``finalize(tmp_dir)``, if given, adds a stage's own files (e.g. SFT's chat template and
    generation config) before the directory is swapped in, so ``out_dir`` is complete or absent.
    """
    from pretrain.checkpoint import read_latest
    from pretrain.data import tokenizer_sha256
    from pretrain.lora import ADAPTER_DIR_NAME, save_adapter
    from pretrain.provenance import SOURCES_KEY, recorded_sources
    from zhllama.artifacts import atomic_dir, write_meta

    ckpt = Path(ckpt_dir)
    tag = tag or read_latest(ckpt)
    model = trained_model(cfg, ckpt, tag)
    dtype = _source_dtype(Path(cfg.model_dir))
    with atomic_dir(out_dir) as tmp:
        if cfg.mode == "lora":
            save_adapter(model, tmp / ADAPTER_DIR_NAME, base_model_dir=Path(cfg.model_dir),
                         final_dir=Path(out_dir) / ADAPTER_DIR_NAME)
            model = model.merge_and_unload()
        model.to(dtype).save_pretrained(tmp)
        copy_tokenizer_files(Path(cfg.tokenizer_dir), tmp)
        recorded = {SOURCES_KEY: sources} if (sources := recorded_sources(ckpt)) else {}
        write_meta(tmp, config=cfg, inputs={"tokenizer": tokenizer_sha256(cfg.tokenizer_dir)},
                   checkpoint=str(ckpt / tag), mode=cfg.mode, **recorded,
                   note="merged LoRA model; the adapter is in adapter/" if cfg.mode == "lora" else "")
        if finalize is not None:
            finalize(tmp)
    return Path(out_dir)
