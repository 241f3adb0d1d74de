"""Chat files -> tokenized training examples -> rows (packed or one per row), with the manifest.

The whole SFT data path in one call, shared by training, evaluation and the benchmark::

    data = load_sft_data([Path("sft_train.jsonl")], SftDataConfig(), tokenizer)
    data.manifest.summary()      # read = used + rejected, by reason (tier, rules, too long...)
    data.rows                    # [[example indices], ...]: best-fit-decreasing packed rows

Every record read is used or rejected with a reason: the file reader's reasons
(:mod:`sft.records`), then ``too_long`` (the last turn alone exceeds ``max_seq_len``),
``prompt_not_prefix`` and ``no_labels``. Dropped oldest turns are counted in ``manifest.notes``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sft.chat_format import (
    IGNORE_INDEX,
    EncodedDialog,
    HFTextEncoder,
    LabelMode,
    PromptNotPrefixError,
    TextEncoder,
    TooLongError,
    encode_dialog,
)
from sft.dialog import DEFAULT_DELIMITERS, OnDelimiter
from sft.formats import get_format
from sft.packing import pack_rows, single_rows
from sft.records import ChatRecord, Manifest, read_chat_files
from sft.templates import LLAMA2, ChatFormat, get_chat_format
from zhllama import default_data_dir


@dataclass
class SftDataConfig:
    """What to read and how to turn it into training rows (``--data.KEY value``)."""

    train_files: list[Path] = field(default_factory=lambda: [default_data_dir() / "sft" / "sft_train.jsonl"])
    """Chat JSONL files to train on (one format for all of them)."""
    eval_files: list[Path] = field(default_factory=lambda: [default_data_dir() / "sft" / "sft_heldout.jsonl"])
    """Held-out chat files: loss and bits/char on their assistant tokens (every ``eval_every_steps``)."""
    format: str = "messages"
    """A format name from ``sft/formats.yaml`` (``messages``, ``sharegpt``, ``alpaca``) or ``formats_file``."""
    formats_file: Path | None = None
    """Extra format specs (YAML, same shape as ``sft/formats.yaml``); entries override built-ins by name."""
    tiers: list[str] | None = field(default_factory=lambda: ["A"])
    """Keep records whose ``tier_field`` is one of these (A = written by people); ``null`` keeps all."""
    tier_field: str = "tier"
    """Record key holding the tier."""
    on_delimiter: OnDelimiter = "reject"
    """A message containing ``[INST]``, ``[/INST]``, ``<<SYS>>``, ``<</SYS>>``, ``<s>``, ``</s>`` or
    ``<unk>``: ``reject`` the record (counted) or ``escape`` it (``[INST]`` -> ``[ INST]``)."""
    max_seq_len: int = 512
    """Tokens per row; longer dialogs lose their oldest whole turns (the system message is kept)."""
    chat_format: str = "llama2"
    """How turns are written: ``llama2`` (Meta's, exact) or ``alpaca`` (``sft/chat_formats.yaml``), or a
    name in ``chat_formats_file``."""
    chat_formats_file: Path | None = None
    """Extra chat formats (YAML, same shape as ``sft/chat_formats.yaml``)."""
    label_mode: LabelMode = "all_turns"
    """``all_turns`` (every answer + EOS), ``last_turn`` (the last answer + EOS) or
    ``prompt_and_answers`` (every token)."""
    packing: bool = True
    """Pack several conversations per row (attention kept inside each); false = one per row, padded."""

    def __post_init__(self) -> None:
        if self.max_seq_len < 8:
            raise ValueError(f"max_seq_len must be >= 8, got {self.max_seq_len}")
        if self.tiers is not None and not self.tiers:
            raise ValueError("tiers: give at least one tier, or null for all records")


@dataclass
class SftData:
    """Tokenized examples of some chat files, the rows they form, and the accounting."""

    examples: list[EncodedDialog]
    record_ids: list[str]
    rows: list[list[int]]
    manifest: Manifest

    @property
    def n_tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)

    @property
    def n_supervised_tokens(self) -> int:
        return sum(e.n_labels for e in self.examples)


def encode_records(records: Iterable[ChatRecord], enc: TextEncoder, manifest: Manifest, max_seq_len: int,
                   label_mode: LabelMode, fmt: ChatFormat = LLAMA2) -> tuple[list[EncodedDialog], list[str]]:
    """Encode each record (turn-aware truncation); count rejections and dropped turns in ``manifest``."""
    examples, ids = [], []
    for rec in records:
        try:
            ex = encode_dialog(rec.dialog, enc, label_mode, max_seq_len, fmt)
        except TooLongError as e:
            manifest.reject(rec.record_id, "too_long", str(e))
            continue
        except PromptNotPrefixError as e:
            manifest.reject(rec.record_id, "prompt_not_prefix", str(e))
            continue
        if ex.n_labels == 0:
            manifest.reject(rec.record_id, "no_labels")
            continue
        manifest.use()
        if ex.n_turns_dropped:
            manifest.notes["rows_truncated"] += 1
            manifest.notes["turns_dropped_by_truncation"] += ex.n_turns_dropped
        examples.append(ex)
        ids.append(rec.record_id)
    return examples, ids


def load_sft_data(files: Sequence[Path], cfg: SftDataConfig, tokenizer: Any, packing: bool | None = None,
                  fmt: ChatFormat | None = None) -> SftData:
    """Read, validate, tokenize and arrange ``files`` into rows (``packing`` overrides ``cfg.packing``,
    ``fmt`` the chat format named in ``cfg``)."""
    spec = get_format(cfg.format, cfg.formats_file)
    manifest = Manifest()
    records = read_chat_files(files, spec, manifest, tiers=cfg.tiers, tier_field=cfg.tier_field,
                              on_delimiter=cfg.on_delimiter, delimiters=DEFAULT_DELIMITERS)
    enc = tokenizer if hasattr(tokenizer, "encode_many") else HFTextEncoder(tokenizer)
    fmt = fmt or get_chat_format(cfg.chat_format, cfg.chat_formats_file)
    examples, ids = encode_records(records, enc, manifest, cfg.max_seq_len, cfg.label_mode, fmt)
    manifest.check()
    pack = cfg.packing if packing is None else packing
    rows = pack_rows([len(e.input_ids) for e in examples], cfg.max_seq_len) if pack else single_rows(len(examples))
    return SftData(examples, ids, rows, manifest)


@dataclass(frozen=True)
class ExampleView:
    """One tokenized conversation read back from disk (views into flat arrays)."""

    input_ids: np.ndarray
    labels: np.ndarray
    n_label_chars: int

    @property
    def n_labels(self) -> int:
        return int((self.labels[1:] != IGNORE_INDEX).sum())


def _flat(arrays: list) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.concatenate([np.asarray(a, dtype=np.int32) for a in arrays]) if arrays else np.zeros(0, np.int32)
    return flat, offsets


def tokenized_arrays(data: SftData) -> dict[str, np.ndarray]:
    """The examples and rows of ``data`` as flat arrays (what :func:`save_tokenized` writes)."""
    ids, offsets = _flat([e.input_ids for e in data.examples])
    labels, _ = _flat([e.labels for e in data.examples])
    rows, row_offsets = _flat(data.rows)
    chars = np.array([e.n_label_chars for e in data.examples], dtype=np.int64)
    return {"input_ids": ids, "labels": labels, "offsets": offsets, "label_chars": chars,
            "rows": rows.astype(np.int64), "row_offsets": row_offsets}


def arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    """A hash of the arrays' contents (names, dtypes, shapes, bytes): the data identity of a run."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_tokenized(path: Path, data: SftData) -> str:
    """Write ``data``'s examples and rows to ``path`` (``.npz``, atomically); returns :func:`arrays_sha256`."""
    from zhllama.artifacts import atomic_write_npz

    arrays = tokenized_arrays(data)
    atomic_write_npz(path, arrays)
    return arrays_sha256(arrays)


def load_tokenized(path: Path) -> tuple[list[ExampleView], list[list[int]]]:
    """``(examples, rows)`` written by :func:`save_tokenized`."""
    with np.load(path) as z:
        a = {k: z[k] for k in z.files}
    off = a["offsets"]
    examples = [ExampleView(a["input_ids"][off[i]:off[i + 1]].astype(np.int64), a["labels"][off[i]:off[i + 1]].astype(np.int64),
                            int(a["label_chars"][i])) for i in range(len(off) - 1)]
    ro = a["row_offsets"]
    rows = [a["rows"][ro[i]:ro[i + 1]].tolist() for i in range(len(ro) - 1)]
    return examples, rows
