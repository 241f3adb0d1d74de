"""What the three alignment tasks share on the engine: batches of a step, evaluation plans, outputs.

- :func:`step_items`: this rank's item ids (pairs or prompts) for each micro-step of an optimizer
  step, via the pretraining data order (every item once per epoch, a pure function of
  ``(seed, step, rank)``: resume is exact);
- :func:`prepare_pair_inputs`: the launcher side of ``reward`` and ``dpo`` (encode, store, manifest);
- :func:`plot_curves`: one PNG with a panel per logged figure (reward, KL, length...).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from align.data import PrefDataConfig
from pretrain.engine import EngineConfig
from zhllama.artifacts import save_figure

ALIGN_DEFAULT_MODEL = Path("artifacts/sft/demo/final")
"""Every alignment stage starts from the SFT model (``make sft``)."""
DATA_DIR_NAME = "data"
"""``run_dir/data/``: the encoded inputs and their manifest, written by the launcher."""


@dataclass
class AlignConfig(EngineConfig):
    """The engine's settings, starting from the SFT model (every alignment stage)."""

    model_dir: Path = ALIGN_DEFAULT_MODEL
    """The SFT model the stage starts from (the policy's start and reference; the reward model's transformer)."""
    tokenizer_dir: Path = ALIGN_DEFAULT_MODEL
    """Its tokenizer (the SFT output directory holds it)."""


@dataclass
class PairStageConfig(AlignConfig):
    """An alignment stage trained on preference pairs (``reward``, ``dpo``)."""

    data: PrefDataConfig = field(default_factory=PrefDataConfig)
    """Preference files, tiers, ``max_seq_len``."""


def step_items(step: int, n_items: int, cfg: Any, rank: int, world_size: int) -> list[np.ndarray]:
    """Item ids of this rank's ``grad_accum_steps`` micro-batches of optimizer step ``step``.

    >>> from types import SimpleNamespace as NS
    >>> cfg = NS(micro_batch_size=2, grad_accum_steps=1, global_batch_size=4, seed=0)
    >>> sorted(np.concatenate(step_items(0, 4, cfg, 0, 2) + step_items(0, 4, cfg, 1, 2)).tolist())
    [0, 1, 2, 3]
    """
    from pretrain.train import rank_micro_blocks, step_blocks

    ids = step_blocks(step, n_items, cfg.global_batch_size, cfg.seed)
    return [rank_micro_blocks(ids, rank, world_size, cfg.micro_batch_size, m) for m in range(cfg.grad_accum_steps)]


def prepare_pair_inputs(cfg: Any) -> tuple[dict, Any, Any]:
    """Launcher side of ``reward`` and ``dpo``: encode the train/held-out pairs into ``run_dir/data/``
    in the SFT model's chat format.

    Returns ``(task_spec, train data, held-out data or None)``; ``data/manifest.json`` holds the
    accounting of both (read = used + rejected, by reason).
    """
    from align.chat import chat_setup
    from align.data import load_pref_data, save_encoded
    from zhllama.artifacts import atomic_write_json

    tokenizer, encoder = chat_setup(cfg.model_dir, cfg.tokenizer_dir)
    pad_id = int(tokenizer.pad_token_id)
    train = load_pref_data(cfg.data.train_files, cfg.data, encoder)
    held_out = load_pref_data(cfg.data.eval_files, cfg.data, encoder) if cfg.data.eval_files else None
    data_dir = Path(cfg.run_dir) / DATA_DIR_NAME
    spec: dict[str, Any] = {"pad_id": pad_id, "train_pairs": str(save_encoded(data_dir / "pairs_train.npz", train.pairs))}
    if held_out is not None:
        spec["eval_pairs"] = str(save_encoded(data_dir / "pairs_eval.npz", held_out.pairs))
    atomic_write_json(data_dir / "manifest.json", {"train": train.summary(),
                                                   "eval": held_out.summary() if held_out else None})
    print(f"pairs: train {train.manifest.summary()}" + (f"; held-out {held_out.manifest.summary()}" if held_out else ""),
          flush=True)
    return spec, train, held_out


def plot_curves(records: Sequence[dict], keys: Sequence[str], out_png: str | Path, title: str) -> Path | None:
    """One panel per key of ``keys`` found in ``records`` (x: optimizer step); ``None`` if none is."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [k for k in keys if any(k in r for r in records)]
    if not present:
        return None
    cols = min(3, len(present))
    rows = -(-len(present) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), dpi=110, squeeze=False)
    for ax, key in zip(axes.flat, present, strict=False):
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="." if len(pts) < 40 else None)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, out_png)

