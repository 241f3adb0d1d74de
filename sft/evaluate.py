"""Loss and bits per character on the assistant tokens of held-out chats; ``python -m sft eval``.

Each held-out dialog is encoded exactly as in training (``label_mode: all_turns``): the scored
tokens are every answer and its EOS, each predicted from the whole conversation before it::

    loss          = total NLL / supervised tokens            (nats per token, tokenizer-dependent)
    bits_per_char = total NLL / ln 2 / characters of the scored answers   (comparable across tokenizers)

The EOS (and the space before it) is part of the NLL: ending the answer is part of answering.
Example::

    python -m sft eval --model artifacts/sft/demo/final --baseline artifacts/pretrain/demo/final
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sft.data import SftDataConfig

LN2 = math.log(2)


@dataclass
class SftScore:
    """Summed NLL, supervised tokens and answer characters of some rows; :meth:`metrics` derives the rest."""

    nll_nats: float = 0.0
    tokens: int = 0
    characters: int = 0
    conversations: int = 0

    def metrics(self) -> dict[str, Any]:
        """``loss`` (nats/token), ``perplexity``, ``bits_per_char`` + the counts.

        >>> SftScore(nll_nats=4 * LN2, tokens=2, characters=4, conversations=1).metrics()["bits_per_char"]
        1.0
        """
        out: dict[str, Any] = dict(vars(self))
        out["loss"] = self.nll_nats / self.tokens if self.tokens else None
        out["perplexity"] = math.exp(out["loss"]) if out["loss"] is not None else None
        out["bits_per_char"] = self.nll_nats / LN2 / self.characters if self.characters else None
        return out


def eval_chunks(n_rows: int, micro_batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple[list[int], bool]]:
    """``[(row ids, counted?)]``: one rank's evaluation micro-batches.

    Every rank runs the same number of forward passes (ZeRO-3 gathers parameters collectively, so
    a rank that stopped early would hang the others); a rank with nothing left repeats a chunk and
    does not count it.

    >>> eval_chunks(5, 2, rank=1, world_size=2)
    [([2, 3], True), ([2, 3], False)]
    """
    chunks = [list(range(k, min(k + micro_batch_size, n_rows))) for k in range(0, n_rows, micro_batch_size)]
    mine = chunks[rank::world_size]
    per_rank = -(-len(chunks) // world_size)
    filler = mine[0] if mine else chunks[0]
    return [(c, True) for c in mine] + [(filler, False)] * (per_rank - len(mine))


def score_rows(forward: Any, examples: Sequence[Any], rows: Sequence[Sequence[int]],
               chunks: Sequence[tuple[list[int], bool]], pad_id: int, device: Any, packed: bool = True) -> SftScore:
    """Sum the supervised NLL of ``rows`` (indices into ``examples``), one chunk of rows per forward.

    ``forward`` is a model or ``engine.forward``; ``chunks`` come from :func:`eval_chunks`.
    """
    import torch

    from sft.loss import nll_sum
    from sft.packing import collate, to_torch

    score = SftScore()
    with torch.no_grad():
        for row_ids, counted in chunks:
            chunk = [rows[i] for i in row_ids]
            s, n = nll_sum(forward, to_torch(collate(examples, chunk, pad_id, packed), device))
            if counted:
                score.nll_nats += float(s)
                score.tokens += int(n)
                score.characters += sum(examples[i].n_label_chars for row in chunk for i in row)
                score.conversations += sum(len(row) for row in chunk)
    return score


@dataclass
class SftEvalConfig:
    """``python -m sft eval``: loss and bits/char on the assistant tokens of held-out chats."""

    model: Path = Path("artifacts/sft/demo/final")
    """The chat model (HF dir, LoRA adapter or DeepSpeed checkpoint)."""
    baseline: Path | None = None
    """Another model scored on the same conversations with its own tokenizer (e.g. the model before SFT);
    bits/char compare across tokenizers, loss per token only within one."""
    data: SftDataConfig = field(default_factory=lambda: SftDataConfig(label_mode="all_turns", max_seq_len=1024))
    """Which files (``data.eval_files``), format, tiers, ``max_seq_len`` (the rest as in training)."""
    micro_batch_size: int = 4
    """Rows per forward pass."""
    out_dir: Path = Path("artifacts/sft/eval")
    """report.json, report.md, report.png."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``."""


def render_markdown(report: dict) -> str:
    """The report as a Markdown table (one row per model)."""
    lines = [f"# SFT evaluation: assistant tokens of {', '.join(report['files'])}", "",
             f"Conversations: {report['manifest']['used']} used of {report['manifest']['read']} read "
             f"(rejected: {report['manifest']['rejected'] or 'none'})", "",
             "| model | conversations | tokens | answer chars | loss (nats/token) | perplexity | bits/char |",
             "|---|---|---|---|---|---|---|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | {m['conversations']:,} | {m['tokens']:,} | {m['characters']:,} | {m['loss']:.4f} | "
                     f"{m['perplexity']:.2f} | {m['bits_per_char']:.4f} |")
    return "\n".join(lines) + "\n"


def render_png(report: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["models"])
    values = [report["models"][n]["bits_per_char"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.5 * len(names)))
    ax.barh([Path(n).name or n for n in names], values, color="tab:blue")
    ax.set_xlabel("bits per character on held-out answers (lower is better)")
    from zhllama.artifacts import figure_png

    return figure_png(fig, dpi=120)


def run(cfg: SftEvalConfig) -> int:
    """CLI: score the model (and the baseline) on the same held-out ids; write report.{json,md,png}."""
    from sft.data import load_sft_data
    from sft.generate import load_chat_model
    from sft.templates import CHAT_FORMAT_FILE, resolve_chat_format
    from zhllama.artifacts import (
        atomic_write_bytes,
        atomic_write_json,
        atomic_write_text,
        sha256_file,
        write_meta,
    )
    from zhllama.cli import UserError, existing_file

    files = [existing_file(f, "held-out chat file") for f in cfg.data.eval_files]
    models: dict[str, Any] = {}
    manifests: dict[str, Any] = {}
    for path in [cfg.model] + ([cfg.baseline] if cfg.baseline else []):
        model, tokenizer = load_chat_model(path, cfg.device)
        # Each model with its own tokenizer and the format it was trained in (chat_format.json), else data.chat_format.
        fmt = resolve_chat_format(path, None if (Path(path) / CHAT_FORMAT_FILE).is_file() else cfg.data.chat_format,
                                  cfg.data.chat_formats_file)
        data = load_sft_data(files, cfg.data, tokenizer, fmt=fmt)
        if not data.examples:
            raise UserError(f"no usable held-out conversation in {files}: {data.manifest.summary()}")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        chunks = eval_chunks(len(data.rows), cfg.micro_batch_size)
        device = next(model.parameters()).device
        models[str(path)] = score_rows(model, data.examples, data.rows, chunks, pad, device).metrics()
        manifests[str(path)] = data.manifest.to_dict()
        del model
    report = {"files": [str(f) for f in files], "manifest": manifests[str(cfg.model)], "manifests": manifests,
              "models": models}
    out = Path(cfg.out_dir)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", render_markdown(report))
    atomic_write_bytes(out / "report.png", render_png(report))
    write_meta(out, config=cfg, inputs={str(f): sha256_file(f) for f in files})
    main = models[str(cfg.model)]
    print(f"sft eval: {main['conversations']} conversations, {main['tokens']:,} answer tokens: loss {main['loss']:.4f}, "
          f"{main['bits_per_char']:.4f} bits/char" + "".join(
              f"; baseline {n}: {m['bits_per_char']:.4f} bits/char" for n, m in models.items()
              if n != str(cfg.model)) + f" -> {out / 'report.md'}")
    return 0
