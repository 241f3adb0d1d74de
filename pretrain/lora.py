"""LoRA via peft with the (resized) embeddings and LM head fully trainable.

The new Chinese rows of ``embed_tokens``/``lm_head`` start from an initialisation, so they must
learn in full: they go to ``modules_to_save`` (a trainable copy saved inside the adapter), while
the transformer blocks get low-rank adapters. Example::

    model = apply_lora(load_llama("artifacts/pretrain/demo/init"), LoraSettings(r=8))
    ...train...
    model.save_pretrained("final/adapter")                 # adapter_config.json + adapter_model.safetensors
    again = load_adapter("artifacts/pretrain/demo/init", "final/adapter")   # onto the *resized* base
    merged = again.merge_and_unload()                      # a plain LlamaForCausalLM

The known failure of the peer projects is an adapter that cannot be loaded back because its
``embed_tokens``/``lm_head`` copies have the merged vocabulary's shape while the base it names has
Llama-2's 32k rows. Here the adapter always names the resized ``init`` directory as its base
(``base_model_name_or_path``, relative to the adapter, so a moved run keeps working) and
:func:`load_adapter` checks the shapes first, with a message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhllama.cli import UserError

ADAPTER_DIR_NAME = "adapter"


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (used only when ``mode: lora``)."""

    r: int = 8
    """Rank of the low-rank update matrices."""
    alpha: int = 16
    """Scaling numerator: the update is multiplied by ``alpha / r``."""
    dropout: float = 0.0
    """Dropout on the LoRA input (0 keeps a resumed run bit-identical to an uninterrupted one)."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Linear layers of each block that get adapters."""
    modules_to_save: list[str] = field(default_factory=lambda: ["embed_tokens", "lm_head"])
    """Modules trained in full and saved in the adapter (the resized embeddings and head)."""

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora.r must be >= 1, got {self.r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")


def apply_lora(model: Any, settings: LoraSettings) -> Any:
    """Wrap a causal LM in a ``PeftModel`` with LoRA adapters + trainable ``modules_to_save``.

    Tied input/output embeddings stay tied (``ensure_weight_tying``). Returns the peft model; only
    adapter weights and the ``modules_to_save`` copies require grad.
    """
    from peft import LoraConfig, get_peft_model

    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    modules_to_save = list(settings.modules_to_save)
    if tied and "lm_head" in modules_to_save and "embed_tokens" in modules_to_save:
        modules_to_save.remove("lm_head")  # one shared matrix: saving it once keeps the tie
    config = LoraConfig(
        r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules), modules_to_save=modules_to_save,
        task_type="CAUSAL_LM", ensure_weight_tying=tied,
    )
    return get_peft_model(model, config)


def load_adapter(base_model_dir: str | Path, adapter_dir: str | Path, **load_kwargs: Any) -> Any:
    """``PeftModel.from_pretrained`` onto the resized base, after checking the vocabulary sizes agree."""
    import json

    from peft import PeftModel

    from pretrain.model import load_llama, read_llama_config

    adapter = Path(adapter_dir)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter}: not a LoRA adapter directory (no adapter_config.json)")
    base_vocab = read_llama_config(base_model_dir)["vocab_size"]
    meta_path = adapter / "zhllama_adapter.json"
    if meta_path.is_file():
        saved_vocab = json.loads(meta_path.read_text(encoding="utf-8")).get("vocab_size")
        if saved_vocab is not None and saved_vocab != base_vocab:
            raise UserError(
                f"{adapter}: trained on a model with {saved_vocab} embedding rows but {base_model_dir} has "
                f"{base_vocab}; load it onto the resized base it was trained from (the run's init/ directory)"
            )
    base = load_llama(base_model_dir, **load_kwargs)
    return PeftModel.from_pretrained(base, str(adapter))


def save_adapter(peft_model: Any, out_dir: str | Path, base_model_dir: str | Path,
                 final_dir: str | Path | None = None) -> Path:
    """Save the adapter into ``out_dir`` naming ``base_model_dir`` (the resized base) as its base.

    The base is recorded relative to the adapter's final location ``final_dir`` (default ``out_dir``;
    differs when ``out_dir`` is a temp dir swapped in later), e.g. ``../../init`` for
    ``run/final/adapter`` and ``run/init``, so a moved or copied run still finds its base;
    ``zhllama_adapter.json`` also keeps the absolute path as a fallback.
    """
    import json
    import os

    out = Path(out_dir)
    base = Path(base_model_dir).resolve()
    # Saved naming the absolute path (peft reads the base's config from it while saving), then rewritten.
    peft_model.peft_config["default"].base_model_name_or_path = str(base)
    peft_model.save_pretrained(str(out))
    config_path = out / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = os.path.relpath(base, Path(final_dir or out).resolve())
    config_path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    vocab = int(peft_model.get_base_model().config.vocab_size)
    (out / "zhllama_adapter.json").write_text(
        json.dumps({"vocab_size": vocab, "base_model_dir_absolute": str(base)}) + "\n", encoding="utf-8")
    return out
