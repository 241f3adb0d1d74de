"""Resolve a MODEL path to ``(model, tokenizer)``: Hugging Face dir, LoRA adapter dir, DeepSpeed checkpoint.

What a path holds decides how it loads (:func:`detect_kind`):

- ``adapter_config.json``: a peft LoRA adapter; its ``base_model_name_or_path`` (a local dir:
  relative to the adapter dir (what training writes), absolute, or relative to the working
  directory; else the absolute path in ``zhllama_adapter.json``) is loaded first, the adapter
  applied and merged (``merge_and_unload``), so scoring runs a plain model;
- ``latest`` or ``global_step<N>/`` (or a ``global_step<N>`` dir itself): a DeepSpeed checkpoint
  (``run_dir/checkpoints/``) with ``config.json`` beside it; ZeRO-1/2/3 shards are consolidated to
  fp32 with DeepSpeed's ``zero_to_fp32``; a stage-0 checkpoint is read from its model-states file;
- ``config.json``: a Hugging Face model directory (``run_dir/final``, the stand-in, ...).

The tokenizer comes from the same directory (for an adapter: the adapter dir if it holds one, else
the base), unless given explicitly. A tokenizer larger than the model's embedding table is refused,
since its extra ids would index past the table. Example::

    loaded = load_model_and_tokenizer("artifacts/pretrain/demo/final")
    loaded.model, loaded.tokenizer, loaded.kind  # (LlamaForCausalLM, tokenizer, "hf")
"""
from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from zhllama.cli import UserError

Kind = Literal["hf", "lora", "deepspeed"]
_STEP_DIR = re.compile(r"global_step(\d+)$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


@dataclass
class LoadedModel:
    """A model ready for scoring, with what it was loaded from.

    >>> # LoadedModel(model, tokenizer, kind="hf", path=Path("final"), base_path=None)
    """

    model: Any
    """The causal LM (``eval()`` mode, on its device), adapters merged."""
    tokenizer: Any
    """The Hugging Face tokenizer scoring uses."""
    kind: Kind
    """"hf", "lora" or "deepspeed"."""
    path: Path
    """The MODEL path as given."""
    base_path: Path | None = None
    """For a LoRA adapter: the base model directory it was applied to."""
    tokenizer_path: Path | None = None
    """Directory the tokenizer was read from."""


def _step_dirs(path: Path) -> list[Path]:
    return sorted((p for p in path.glob("global_step*") if p.is_dir() and _STEP_DIR.search(p.name)),
                  key=lambda p: int(_STEP_DIR.search(p.name).group(1)))  # type: ignore[union-attr]


def detect_kind(path: str | Path) -> Kind:
    """What kind of model directory ``path`` is; a clear :class:`UserError` if none.

    >>> # detect_kind("artifacts/pretrain/demo/checkpoints") -> "deepspeed"
    """
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"model directory not found: {p}")
    if (p / "adapter_config.json").is_file():
        return "lora"
    if (p / "latest").is_file() or _step_dirs(p) or _STEP_DIR.search(p.name):
        return "deepspeed"
    if (p / "config.json").is_file():
        return "hf"
    raise UserError(
        f"{p}: not a model directory: expected config.json (Hugging Face model), adapter_config.json "
        "(LoRA adapter) or a DeepSpeed checkpoint (a 'latest' file or global_step<N>/ folders)"
    )


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in _TOKENIZER_FILES)


def load_tokenizer(path: str | Path) -> Any:
    """An HF tokenizer from a directory; a :class:`UserError` if there is none or it is unreadable."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not p.is_dir() or not _has_tokenizer(p):
        raise UserError(f"no tokenizer in {p} (expected tokenizer.json or tokenizer.model; pass --tokenizer DIR)")
    try:
        return AutoTokenizer.from_pretrained(str(p))
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot load the tokenizer in {p}: {e}") from None


def _torch_dtype(dtype: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _from_pretrained(path: Path, dtype: str):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=_torch_dtype(dtype))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"cannot load the model in {path}: {e}") from None


def _resolve_base(adapter_dir: Path) -> Path:
    cfg_path = adapter_dir / "adapter_config.json"
    try:
        base = json.loads(cfg_path.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{cfg_path}: unreadable adapter config: {e}") from None
    if not base:
        raise UserError(f"{cfg_path}: no base_model_name_or_path; cannot tell which base model the adapter needs")
    candidates = [Path(base)] if Path(base).is_absolute() else [adapter_dir / base, Path(base)]
    extra = adapter_dir / "zhllama_adapter.json"
    if extra.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError, TypeError, KeyError):
            candidates.append(Path(json.loads(extra.read_text(encoding="utf-8"))["base_model_dir_absolute"]))
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    raise UserError(f"{cfg_path}: base model {base!r} is not a local model directory (no config.json there)")


def _load_lora(adapter_dir: Path, dtype: str):
    from peft import PeftModel

    base_dir = _resolve_base(adapter_dir)
    base = _from_pretrained(base_dir, dtype)
    try:
        peft_model = PeftModel.from_pretrained(base, str(adapter_dir))
    except (OSError, ValueError, RuntimeError) as e:  # RuntimeError: shape mismatch against the base
        raise UserError(f"cannot apply the adapter {adapter_dir} to {base_dir}: {e}") from None
    # Merged weights score exactly like the adapter-wrapped model and run as fast as the base.
    return peft_model.merge_and_unload(), base_dir


def _checkpoint_dirs(path: Path) -> tuple[Path, str]:
    """(checkpoint dir holding ``latest``/``config.json``, tag) for a checkpoints dir or a step dir."""
    if _STEP_DIR.search(path.name) and not (path / "latest").is_file():
        return path.parent, path.name
    latest = path / "latest"
    if latest.is_file():
        return path, latest.read_text(encoding="utf-8").strip()
    return path, _step_dirs(path)[-1].name


def _deepspeed_state_dict(ckpt_dir: Path, tag: str) -> dict:
    import torch

    step_dir = ckpt_dir / tag
    if not step_dir.is_dir():
        raise UserError(f"{ckpt_dir}: checkpoint tag {tag!r} has no folder {step_dir}")
    if any(step_dir.glob("*_optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            return get_fp32_state_dict_from_zero_checkpoint(str(ckpt_dir), tag=tag)
        except (OSError, ValueError, KeyError) as e:
            raise UserError(f"cannot consolidate the ZeRO checkpoint {step_dir}: {e}") from None
    states = step_dir / "mp_rank_00_model_states.pt"
    if not states.is_file():
        raise UserError(f"{step_dir}: neither ZeRO optimizer shards nor mp_rank_00_model_states.pt")
    # DeepSpeed pickles its own objects (config, args) beside the tensors: weights_only cannot read it.
    return torch.load(states, map_location="cpu", weights_only=False)["module"]


def _load_deepspeed(path: Path, dtype: str):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    ckpt_dir, tag = _checkpoint_dirs(path)
    if not (ckpt_dir / "config.json").is_file():
        raise UserError(f"{ckpt_dir}: DeepSpeed checkpoint without config.json (the model architecture) beside it")
    config = AutoConfig.from_pretrained(str(ckpt_dir))
    state = {k.removeprefix("module."): v for k, v in _deepspeed_state_dict(ckpt_dir, tag).items()}
    if any("lora_" in k for k in state):
        raise UserError(f"{ckpt_dir / tag}: a LoRA training checkpoint; evaluate the saved adapter directory instead")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if set(missing) - tied or unexpected:
        raise UserError(
            f"{ckpt_dir / tag}: weights do not match config.json: missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    model.tie_weights()
    return model.to(_torch_dtype(dtype)), ckpt_dir


def check_vocab(model: Any, tokenizer: Any, where: str) -> None:
    """Refuse a tokenizer whose ids can exceed the model's embedding rows.

    A table *larger* than the tokenizer is fine (vocabularies are often padded to a multiple of 64).
    """
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise UserError(
            f"{where}: model/tokenizer mismatch: the tokenizer has {len(tokenizer)} tokens but the model's "
            f"embedding has {rows} rows (resize the model with `pretrain init`, or pass the matching --tokenizer)"
        )


def load_model_and_tokenizer(
    path: str | Path, *, tokenizer_path: str | Path | None = None, device: str = "cpu", dtype: str = "float32"
) -> LoadedModel:
    """Load any supported MODEL path for evaluation (see the module docstring).

    ``dtype`` is "float32", "bfloat16" or "float16"; ``device`` a torch device string.
    """
    p = Path(path)
    kind = detect_kind(p)
    base_path = None
    if kind == "lora":
        model, base_path = _load_lora(p, dtype)
        tok_dir = p if _has_tokenizer(p) else base_path
    elif kind == "deepspeed":
        model, tok_dir = _load_deepspeed(p, dtype)
    else:
        model, tok_dir = _from_pretrained(p, dtype), p
    tok_dir = Path(tokenizer_path) if tokenizer_path else tok_dir
    tokenizer = load_tokenizer(tok_dir)
    check_vocab(model, tokenizer, str(p))
    model.eval().to(device)
    return LoadedModel(model, tokenizer, kind, p, base_path, tok_dir)
