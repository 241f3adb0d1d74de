"""Preference files -> validated pairs -> fitted ids, with one manifest; stored for the workers.

The launcher of ``reward`` and ``dpo`` reads and encodes the pairs once (:func:`load_pref_data`)
and writes them as flat integer arrays (:func:`save_encoded`); every worker maps them back
(:func:`load_encoded`), so all ranks train on the same ids and the reference cache is keyed by
exactly those ids::

    tokenizer, encoder = chat_setup("artifacts/sft/demo/final")
    data = load_pref_data(cfg.data.train_files, cfg.data, encoder)
    data.manifest.summary()   # read 981 = used 708 + rejected 273 (tier_not_selected 273)
    save_encoded(run_dir / "pairs_train.npz", data.pairs)
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from align.pairs import EncodedPair, EncodeStats, encode_pairs
from sft.dialog import OnDelimiter
from sft.records import Manifest
from zhllama import default_data_dir


@dataclass
class PrefDataConfig:
    """Which preference files to read and how to fit them (``--data.KEY value``)."""

    train_files: list[Path] = field(default_factory=lambda: [default_data_dir() / "sft" / "pref_train.jsonl"])
    """Preference JSONL files to train on (``prompt``, ``chosen``, ``rejected``, ``tier``)."""
    eval_files: list[Path] = field(default_factory=lambda: [default_data_dir() / "sft" / "pref_heldout.jsonl"])
    """Held-out preference files (accuracy every ``eval_every_steps``; ``[]`` for none)."""
    tiers: list[str] | None = field(default_factory=lambda: ["A"])
    """Keep pairs whose ``tier`` is listed (A = ranked by people); ``null`` keeps all."""
    on_delimiter: OnDelimiter = "reject"
    """A message or reply containing ``[INST]``, ``<<SYS>>``, ``<s>``...: ``reject`` the pair or ``escape`` it."""
    max_seq_len: int = 512
    """Prompt + reply tokens; older turns are dropped first, then both replies are cut to fit."""
    min_reply_tokens: int = 8
    """A pair whose newest user turn leaves less room than this for the replies is rejected."""
    limit: int | None = None
    """Use only the first N valid pairs of each split (the rest counted as ``over_limit``); null: all."""

    def __post_init__(self) -> None:
        if self.max_seq_len < 16 or not 1 <= self.min_reply_tokens < self.max_seq_len:
            raise ValueError("need max_seq_len >= 16 and 1 <= min_reply_tokens < max_seq_len")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1 (or null), got {self.limit}")
        if self.tiers is not None and not self.tiers:
            raise ValueError("tiers: give at least one tier, or null for all records")


@dataclass
class PrefData:
    """Encoded pairs of some files, with the accounting (read = used + rejected) and fitting stats."""

    pairs: list[EncodedPair]
    manifest: Manifest
    fitting: EncodeStats
    prompts: dict[str, list[dict]] = field(default_factory=dict)
    """``pair_id -> prompt messages`` (as read, before any old turn was dropped to fit)."""

    def summary(self) -> dict[str, Any]:
        return {**self.manifest.to_dict(), "fitting": self.fitting.to_dict()}


def load_pref_data(files: Sequence[Path], cfg: PrefDataConfig, encoder: Any) -> PrefData:
    """Read, validate and encode ``files`` with ``encoder`` (:class:`align.chat.ChatEncoder`); pairs
    rejected while fitting are counted in the manifest too."""
    from align.prefs import drop_used, read_pairs

    pairs, manifest = read_pairs(files, cfg.tiers, cfg.on_delimiter)
    if cfg.limit is not None:
        for extra in pairs[cfg.limit:]:
            drop_used(manifest, extra.pair_id, "over_limit")
        pairs = pairs[:cfg.limit]
    encoded, stats = encode_pairs(pairs, encoder, cfg.max_seq_len, cfg.min_reply_tokens)
    for pair_id, reason in stats.rejected_ids:  # refused while fitting: from "used" to "rejected"
        drop_used(manifest, pair_id, reason)
    manifest.notes["turns_dropped_by_truncation"] += stats.turns_dropped
    manifest.notes["pairs_with_replies_cut"] += stats.replies_truncated
    manifest.check()
    kept = {e.pair_id for e in encoded}
    return PrefData(encoded, manifest, stats, {p.pair_id: list(p.prompt) for p in pairs if p.pair_id in kept})


_FIELDS = ("prompt_ids", "chosen_ids", "rejected_ids")


def save_encoded(path: str | Path, pairs: Sequence[EncodedPair]) -> Path:
    """Write pairs as flat int32 arrays + offsets (``np.savez``, atomically); ids and order kept exactly."""
    from zhllama.artifacts import atomic_write_npz

    arrays: dict[str, np.ndarray] = {}
    for name in _FIELDS:
        seqs = [getattr(p, name) for p in pairs]
        arrays[name] = np.fromiter((t for s in seqs for t in s), dtype=np.int32)
        arrays[name + "_offsets"] = np.cumsum([0] + [len(s) for s in seqs]).astype(np.int64)
    arrays["chars"] = np.array([[p.chosen_chars, p.rejected_chars] for p in pairs], dtype=np.int64).reshape(-1, 2)
    arrays["pair_ids"] = np.array([p.pair_id for p in pairs], dtype=str)
    atomic_write_npz(path, arrays)
    return Path(path)


def load_encoded(path: str | Path) -> list[EncodedPair]:
    """The pairs :func:`save_encoded` wrote (``load_encoded(save_encoded(p, pairs)) == pairs``)."""
    data = np.load(path)

    def seqs(name: str) -> list[tuple[int, ...]]:
        flat, off = data[name], data[name + "_offsets"]
        return [tuple(int(t) for t in flat[off[i]:off[i + 1]]) for i in range(len(off) - 1)]

    prompt, chosen, rejected = (seqs(n) for n in _FIELDS)
    chars, ids = data["chars"], data["pair_ids"]
    return [EncodedPair(str(ids[i]), prompt[i], chosen[i], rejected[i], int(chars[i, 0]), int(chars[i, 1]))
            for i in range(len(prompt))]
