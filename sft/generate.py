"""Batched generation in the Llama-2 chat format, stopping at EOS; ``python -m sft generate``.

Prompts are built with :func:`sft.chat_format.encode_prompt` (Meta's ids; message text is never
read as control tokens), left-padded into batches of similar length, and decoded until EOS or
``max_new_tokens``::

    outs = generate_ids(model, [encode_prompt(dialog, enc)], pad_id=0, eos_id=2, settings=GenerationSettings())
    outs[0].ids, outs[0].stopped_at_eos

``python -m sft generate --model DIR --input conversations.jsonl --output out.jsonl``: each record's
dialog (a trailing assistant message is taken as the reference answer and removed) -> one JSONL line
``{"id", "messages", "reference", "generation", "new_tokens", "stopped_at_eos"}``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sft.dialog import OnDelimiter, validate
from zhllama.cli import UserError


@dataclass
class GenerationSettings:
    """Decoding options shared by ``generate`` and ``chat``."""

    max_new_tokens: int = 256
    """Stop after this many new tokens if no EOS came."""
    do_sample: bool = False
    """false: greedy; true: sample with ``temperature`` and ``top_p``."""
    temperature: float = 0.7
    """Sampling temperature (``do_sample`` only)."""
    top_p: float = 0.9
    """Nucleus sampling mass (``do_sample`` only)."""
    seed: int = 0
    """Seed of the sampler (the same seed and batch give the same text)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError("need max_new_tokens >= 1, temperature > 0, 0 < top_p <= 1")


@dataclass(frozen=True)
class Generated:
    ids: list[int]
    """New tokens, EOS excluded."""
    stopped_at_eos: bool
    """True when the model emitted EOS (false: cut at ``max_new_tokens``)."""


def generate_ids(model: Any, prompts: Sequence[Sequence[int]], pad_id: int, eos_id: int,
                 settings: GenerationSettings, batch_size: int = 8) -> list[Generated]:
    """Generate for every prompt (ids), in batches of similar length; results in input order."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[Generated | None] = [None] * len(prompts)
    torch.manual_seed(settings.seed)
    sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
        if settings.do_sample else {"do_sample": False}
    for k in range(0, len(order), batch_size):
        idx = order[k:k + batch_size]
        width = max(len(prompts[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):  # left padding: every prompt ends where generation starts
            ids[r, width - len(prompts[i]):] = torch.tensor(list(prompts[i]))
            mask[r, width - len(prompts[i]):] = 1
        with torch.no_grad():
            seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                  max_new_tokens=settings.max_new_tokens, eos_token_id=eos_id,
                                  pad_token_id=pad_id, **sampling)
        for r, i in enumerate(idx):
            new = seqs[r, width:].tolist()
            stop = new.index(eos_id) if eos_id in new else None
            out[i] = Generated(new[:stop] if stop is not None else new, stop is not None)
    return out  # type: ignore[return-value]


def prompt_and_reference(dialog: list[dict]) -> tuple[list[dict], str | None]:
    """Split a trailing assistant message off as the reference answer.

    >>> prompt_and_reference([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])
    ([{'role': 'user', 'content': 'q'}], 'a')
    """
    if dialog and dialog[-1].get("role") == "assistant":
        return dialog[:-1], dialog[-1].get("content")
    return dialog, None


@dataclass
class GenerateConfig:
    """``python -m sft generate``: answer every conversation of a JSONL file."""

    model: Path = Path("artifacts/sft/demo/final")
    """A chat model directory (``sft train`` output), a LoRA adapter or a DeepSpeed checkpoint."""
    input: Path = Path("../shared/data/sft/sft_heldout.jsonl")
    """Conversations (JSONL, ``format``); a final assistant message is the reference and is not shown."""
    output: Path = Path("artifacts/sft/demo/generations.jsonl")
    """Where the JSONL results go (written atomically)."""
    format: str = "messages"
    """Format name (``sft/formats.yaml``)."""
    formats_file: Path | None = None
    """Extra format specs."""
    tiers: list[str] | None = None
    """Only records of these tiers (null: all)."""
    limit: int | None = None
    """Only the first N usable conversations."""
    on_delimiter: OnDelimiter = "reject"
    """A prompt containing format delimiters: ``reject`` (counted, as Meta's reference refuses) or ``escape``."""
    batch_size: int = 8
    """Prompts per generate call."""
    chat_format: str | None = None
    """null: the format the model was trained in (its ``chat_format.json``; Llama-2 if absent); or a name."""
    chat_formats_file: Path | None = None
    """Extra chat formats (YAML)."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """Decoding options."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``."""


def load_chat_model(path: Path, device: str = "auto") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for chat/generate/eval from any model path ``pretrain.loading`` reads."""
    import torch

    from pretrain.loading import load_model_and_tokenizer

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    loaded = load_model_and_tokenizer(path, device=dev, dtype="bfloat16" if dev == "cuda" else "float32")
    return loaded.model, loaded.tokenizer


def run(cfg: GenerateConfig) -> int:
    """CLI: read conversations, generate (batched), write JSONL + a one-line summary."""
    from sft.chat_format import HFTextEncoder, encode_prompt
    from sft.formats import get_format
    from sft.records import Manifest, read_chat_file
    from sft.templates import resolve_chat_format
    from zhllama.artifacts import atomic_write_text
    from zhllama.cli import existing_file

    path = existing_file(cfg.input, "conversations file")
    spec = get_format(cfg.format, cfg.formats_file)
    manifest = Manifest()
    items = []
    # Records are read with no rule on the ending (a prompt ends with the user), then checked as prompts.
    for rec in read_chat_file(path, spec, manifest, tiers=cfg.tiers, end=None):
        prompt, reference = prompt_and_reference(rec.dialog)
        prompt, reason, _ = validate(prompt, cfg.on_delimiter, end="user")
        if prompt is None:
            manifest.reject(rec.record_id, reason or "bad_prompt")
            continue
        if cfg.limit is not None and len(items) >= cfg.limit:
            manifest.reject(rec.record_id, "over_limit")
            continue
        manifest.use()
        items.append((rec.record_id, prompt, reference))
    manifest.check()
    if not items:
        raise UserError(f"{path}: no usable conversation ({manifest.summary()})")
    model, tokenizer = load_chat_model(cfg.model, cfg.device)
    enc = HFTextEncoder(tokenizer)
    fmt = resolve_chat_format(cfg.model, cfg.chat_format, cfg.chat_formats_file)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t0 = time.monotonic()
    outs = generate_ids(model, [encode_prompt(p, enc, fmt) for _, p, _ in items], pad, enc.eos_id,
                        cfg.generation, cfg.batch_size)
    seconds = time.monotonic() - t0
    lines = []
    for (rid, prompt, reference), g in zip(items, outs, strict=True):
        lines.append(json.dumps({"id": rid, "messages": prompt, "reference": reference,
                                 "generation": tokenizer.decode(g.ids, skip_special_tokens=True).strip(),
                                 "new_tokens": len(g.ids), "stopped_at_eos": g.stopped_at_eos}, ensure_ascii=False))
    atomic_write_text(cfg.output, "\n".join(lines) + "\n")
    n_tokens = sum(len(g.ids) for g in outs)
    print(f"generated {len(outs)} answers ({sum(g.stopped_at_eos for g in outs)} stopped at EOS), {n_tokens} tokens "
          f"in {seconds:.1f}s -> {cfg.output}; input {manifest.summary()}")
    return 0
