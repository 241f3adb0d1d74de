"""Reading text sources into ``datasets`` and tokenizing them into framed documents (``BOS ids EOS``).

:func:`load_texts` reads ``.jsonl``/``.txt`` files into an Arrow dataset (errors name the file and
line); :func:`tokenize_dataset` maps it with the fast tokenizer's ``encode_batch_fast`` (batched,
``num_proc`` processes) into one Arrow list column of documents, framing vectorised with numpy;
:class:`DocStore` gives zero-copy numpy views of the result for packing.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pretrain.cache_key import tokenizer_sha256
from zhllama.cli import UserError

if TYPE_CHECKING:
    from pretrain.data import PackConfig


def _find_bad_jsonl_line(files: list[Path], text_field: str) -> str | None:
    """Locate the first record the JSONL loader cannot use; a ``file:line: why`` message or None."""
    for f in files:
        with open(f, encoding="utf-8", errors="strict") as fh:
            try:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        return f"{f}:{lineno}: not valid JSON ({e.msg})"
                    if not isinstance(rec, dict):
                        return f"{f}:{lineno}: expected a JSON object, got {type(rec).__name__}"
                    if text_field not in rec:
                        return f"{f}:{lineno}: record has no key {text_field!r} (keys: {sorted(rec)})"
                    if not isinstance(rec[text_field], str):
                        return f"{f}:{lineno}: {text_field!r} must be a string, got {type(rec[text_field]).__name__}"
            except UnicodeDecodeError as e:
                return f"{f}: not UTF-8 ({e.reason} at byte {e.start})"
    return None


def load_texts(files: list[Path], text_field: str, scratch_dir: Path):
    """A ``datasets.Dataset`` with one string column ``text``, one row per document, in file order.

    JSONL goes through the fast Arrow JSON reader; any failure is re-checked line by line so the
    error names the file and line instead of a pyarrow traceback. TXT: one document per non-empty line.
    """
    import datasets

    kind = files[0].suffix
    names = [str(f) for f in files]
    try:
        if kind == ".txt":
            ds = datasets.load_dataset("text", data_files=names, split="train", cache_dir=str(scratch_dir))
            ds = ds.filter(lambda b: [bool(t.strip()) for t in b["text"]], batched=True, desc="drop blank lines")
            return ds
        ds = datasets.load_dataset("json", data_files=names, split="train", cache_dir=str(scratch_dir))
    except Exception as e:  # noqa: BLE001 - rethrown as a user error naming the bad line when we can
        bad = _find_bad_jsonl_line(files, text_field) if kind == ".jsonl" else None
        raise UserError(bad or f"cannot read {', '.join(names)}: {type(e).__name__}: {e}") from None
    if text_field not in ds.column_names or ds.features[text_field].dtype not in ("string", "large_string"):
        raise UserError(_find_bad_jsonl_line(files, text_field)
                        or f"{', '.join(names)}: no string field {text_field!r} (fields: {ds.column_names})")
    if ds.data.column(text_field).null_count:
        raise UserError(_find_bad_jsonl_line(files, text_field) or f"{names}: null {text_field!r} values")
    ds = ds.select_columns([text_field])
    return ds.rename_column(text_field, "text") if text_field != "text" else ds


def count_characters(ds) -> int:
    """Unicode characters in a ``text`` dataset, streamed in Arrow batches (for bits per character)."""
    import pyarrow.compute as pc

    return sum(int(pc.sum(pc.utf8_length(b.column("text"))).as_py() or 0)
               for b in ds.with_format("arrow").iter(batch_size=10_000))


# ----------------------------------------------------------------------------------------------
# Tokenizing with datasets.map


@dataclass
class TokenizerInfo:
    """What packing needs from a tokenizer: the ``tokenizers`` backend and the special ids."""

    path: Path
    """The tokenizer directory."""
    sha256: str
    """:func:`tokenizer_sha256` of the directory."""
    backend: Any
    """A ``tokenizers.Tokenizer`` (the fast tokenizer's Rust core)."""
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    vocab_size: int
    """Including added tokens (``len(AutoTokenizer...)``)."""


# Tokenizer classes whose ``tokenizer.json`` is the whole pipeline: transformers adds nothing to it
# at load time, so the ``tokenizers`` library alone gives the same ids (and spares a torch import).
_PLAIN_TOKENIZER_CLASSES = {"PreTrainedTokenizerFast", "TokenizersBackend"}


def _token_name(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def load_tokenizer(tokenizer_dir: str | Path) -> TokenizerInfo:
    """The tokenizer of an HF tokenizer directory, as :class:`TokenizerInfo`.

    A plain exported ``tokenizer.json`` (what ``vocab merge`` writes) loads with ``tokenizers`` directly;
    anything else goes through ``AutoTokenizer.from_pretrained`` (same ids, slower import).
    """
    d = Path(tokenizer_dir)
    sha = tokenizer_sha256(d)  # also checks the directory and its files
    config_path = d / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except json.JSONDecodeError as e:
        raise UserError(f"{config_path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if (d / "tokenizer.json").is_file() and config.get("tokenizer_class", "PreTrainedTokenizerFast") in _PLAIN_TOKENIZER_CLASSES:
        from tokenizers import Tokenizer

        try:
            backend = Tokenizer.from_file(str(d / "tokenizer.json"))
        except Exception as e:  # noqa: BLE001 - a corrupt file must name itself
            raise UserError(f"cannot load {d / 'tokenizer.json'}: {e}") from None
        ids = {k: backend.token_to_id(name) if (name := _token_name(config.get(k))) else None
               for k in ("bos_token", "eos_token", "pad_token")}
        return TokenizerInfo(d, sha, backend, ids["bos_token"], ids["eos_token"], ids["pad_token"],
                             backend.get_vocab_size(with_added_tokens=True))
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(d))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot load tokenizer from {d}: {type(e).__name__}: {e}") from None
    if not getattr(tok, "is_fast", False):
        raise UserError(f"tokenizer in {d} is not a fast (tokenizers-backed) tokenizer")
    return TokenizerInfo(d, sha, tok.backend_tokenizer, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, len(tok))


# Tokenizers by sha256, set in the parent before ``datasets.map``: forked map workers inherit them,
# so no multi-megabyte tokenizer is pickled to and parsed again in every worker.
_TOKENIZERS: dict[str, Any] = {}


def _tokenize_batch(batch, tokenizer_dir: str, tokenizer_sha256: str, bos_id: int | None, eos_id: int | None):
    """``datasets.map`` function (Arrow in, Arrow out): texts -> one ``input_ids`` list per non-empty
    document, framed as ``BOS ids EOS``. Framing is vectorised: ids are written once into a flat
    int32 array, the markers dropped in at the document edges."""
    import pyarrow as pa

    tokenizer = _TOKENIZERS.get(tokenizer_sha256)
    if tokenizer is None:  # a spawned (not forked) worker: load once per process
        tokenizer = _TOKENIZERS[tokenizer_sha256] = load_tokenizer(tokenizer_dir).backend
    # Read "</s>" written in a text as text: it must not become a real EOS inside a document. Set
    # here, in the worker, because pickling a tokenizer into a map process drops this flag.
    tokenizer.encode_special_tokens = True
    encodings = tokenizer.encode_batch_fast(batch.column("text").to_pylist(), add_special_tokens=False)
    ids = [e.ids for e in encodings]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    lengths = lengths[lengths > 0]  # an empty document would be just BOS EOS: drop it
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum()))
    n_markers = (bos_id is not None) + (eos_id is not None)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths + n_markers, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.int32)
    content = np.ones(out.size, dtype=bool)
    if bos_id is not None:
        out[offsets[:-1]] = bos_id
        content[offsets[:-1]] = False
    if eos_id is not None:
        out[offsets[1:] - 1] = eos_id
        content[offsets[1:] - 1] = False
    out[content] = flat
    return pa.table({"input_ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(out))})


def tokenize_dataset(ds, tokenizer: TokenizerInfo, bos_id: int | None, eos_id: int | None, cfg: PackConfig, desc: str):
    """``ds`` (column ``text``) -> Dataset with ``input_ids`` (framed documents), empties dropped."""
    _TOKENIZERS[tokenizer.sha256] = tokenizer.backend
    num_proc = cfg.num_proc or os.cpu_count() or 1
    # Below one batch per process, forking costs more than it saves.
    num_proc = max(1, min(num_proc, -(-len(ds) // cfg.map_batch_size_docs)))
    fingerprint = hashlib.sha256(f"{desc}-{bos_id}-{eos_id}-{ds._fingerprint}".encode()).hexdigest()[:32]
    return ds.with_format("arrow").map(
        _tokenize_batch, batched=True, batch_size=cfg.map_batch_size_docs, num_proc=num_proc if num_proc > 1 else None,
        remove_columns=["text"], fn_kwargs={"tokenizer_dir": str(tokenizer.path), "tokenizer_sha256": tokenizer.sha256,
                                           "bos_id": bos_id, "eos_id": eos_id},
        new_fingerprint=fingerprint, desc=f"tokenize {desc}",
    ).with_format(None)


class DocStore:
    """Zero-copy numpy views of a tokenized dataset's documents (memory-mapped Arrow chunks)."""

    def __init__(self, ds):
        import pyarrow.compute as pc

        column = ds.data.column("input_ids")
        self.chunks = [(c.values.to_numpy(), c.offsets.to_numpy()) for c in column.chunks if len(c)]
        sizes = np.array([len(o) - 1 for _, o in self.chunks], dtype=np.int64)
        self.chunk_first_doc = np.concatenate([[0], np.cumsum(sizes)])
        self.lengths = np.concatenate(
            [pc.list_value_length(c).to_numpy() for c in column.chunks if len(c)] or [np.zeros(0)]
        ).astype(np.int64)

    def __len__(self) -> int:
        return int(self.lengths.size)

    def slices(self, first: int, stop: int) -> Iterator[np.ndarray]:
        """Token arrays covering documents ``first..stop-1`` (one slice per Arrow chunk touched)."""
        k = int(np.searchsorted(self.chunk_first_doc, first, side="right")) - 1
        while first < stop:
            values, offsets = self.chunks[k]
            base = int(self.chunk_first_doc[k])
            end = min(stop, int(self.chunk_first_doc[k + 1]))
            yield values[offsets[first - base]: offsets[end - base]]
            first, k = end, k + 1
