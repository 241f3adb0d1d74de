"""Tokenize a corpus split (plus a share of other text), pack it into fixed-size blocks, cache on disk.

``python -m pretrain pack`` and the trainer both call :func:`build_or_load_blocks`::

    blocks = build_or_load_blocks("artifacts/tokenizer", "artifacts/corpus", "artifacts/cache", PackConfig())
    blocks[0]            # int32 ids, shape (block_size_tokens,)
    blocks.labels(0)     # the same ids with -100 on padding (only the very last block has any)

How it works:

1. Each source (the corpus split, every mixture file) is read with ``datasets`` into Arrow and
   tokenized with ``Dataset.map`` (batched, ``num_proc`` processes) by the fast tokenizer's
   ``encode_batch_fast``; a batch returns one Arrow list column of ``BOS ids EOS`` documents, built
   with numpy, with no per-token Python lists handed to ``datasets``. Empty documents are dropped.
2. Mixture sources are sampled to their token share and interleaved by seed
   (:mod:`pretrain.packing`); the main corpus keeps its order.
3. The documents are streamed straight from the memory-mapped Arrow cache into ``blocks.npy``
   (an int32 ``[n_blocks, block_size_tokens]`` array), carrying every remainder across batch edges.
   The final partial block is padded and its valid length recorded, so no token is lost:
   ``n_blocks * block_size_tokens == n_tokens + n_pad_tokens``. ``doc_starts.npy`` holds each
   document's stream offset (for position ids that restart per document).

The cache directory ``cache_root/<split>-b<block>-<key>/`` is keyed by the sha256 of the tokenizer
files, of the split's corpus shards, of the mixture files and of the options that change the
blocks (not ``num_proc`` or the batch size: the blocks do not depend on them). It is built with
``atomic_dir``, so a crash leaves no half cache, and carries ``meta.json`` (config, versions, input
hashes, counts). Delete the directory to force a rebuild.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pretrain import packing
from zhllama.artifacts import atomic_dir, read_meta, sha256_file, write_meta
from zhllama.cli import UserError

CACHE_FORMAT_VERSION = 1
BLOCKS_FILE = "blocks.npy"
DOC_STARTS_FILE = "doc_starts.npy"
IGNORE_INDEX = -100  # label value that torch's cross-entropy (and HF models) skip

#: Files of a tokenizer directory that decide the ids (reports and meta.json beside them do not).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


@dataclass
class MixtureSource:
    """An extra text source mixed into the stream against forgetting, e.g.
    ``{path: tests/data/english.txt, share: 0.1}``."""

    path: str
    """A ``.jsonl`` file (one JSON object per line), a ``.txt`` file (one document per non-empty line),
    or a directory of such files (sorted by name)."""
    share: float
    """Target fraction of all packed tokens taken from this source (0 < share; all shares sum < 1).
    A small source is repeated (fresh seeded shuffle each pass), a large one subsampled."""
    text_field: str = "text"
    """JSONL key holding the text (ignored for .txt)."""


@dataclass
class PackConfig:
    """Packing options (``TrainConfig`` embeds this as ``data``); e.g. ``PackConfig(block_size_tokens=128)``."""

    block_size_tokens: int = 256
    """Tokens per block (the training sequence length)."""
    add_bos: bool = True
    """Start every document with the tokenizer's BOS id."""
    add_eos: bool = True
    """End every document with the EOS id (so the model learns where a document stops)."""
    mixture: list[MixtureSource] = field(default_factory=list)
    """Other text mixed in by token share, e.g. ``[{path: tests/data/english.txt, share: 0.1}]``."""
    restart_position_ids: bool = False
    """Read-side option: :meth:`PackedBlocks.example` adds position ids restarting at each document
    (for attention kernels that honour them). Does not change the cache."""
    seed: int = 0
    """Seed of mixture sampling and interleaving (the main corpus order never changes)."""
    text_field: str = "text"
    """Key of the text in the corpus JSONL records."""
    num_proc: int | None = None
    """Tokenizer processes for ``datasets.map``; ``None`` means all cores. Does not change the blocks."""
    map_batch_size_docs: int = 1000
    """Documents per ``datasets.map`` batch. Does not change the blocks."""

    def __post_init__(self):
        if self.block_size_tokens < 2:
            raise ValueError(f"block_size_tokens must be >= 2, got {self.block_size_tokens}")
        if self.num_proc is not None and self.num_proc < 1:
            raise ValueError(f"num_proc must be >= 1 or null, got {self.num_proc}")
        if self.map_batch_size_docs < 1:
            raise ValueError(f"map_batch_size_docs must be >= 1, got {self.map_batch_size_docs}")
        shares = [m.share for m in self.mixture]
        if any(s <= 0 for s in shares) or sum(shares) >= 1:
            raise ValueError(f"mixture shares must each be > 0 and sum to < 1, got {shares}")


@dataclass
class PackCommandConfig:
    """``python -m pretrain pack``: the paths plus the packing options (``--data.block_size_tokens 128``)."""

    tokenizer_dir: str = "artifacts/tokenizer"
    """HF tokenizer directory (``AutoTokenizer.from_pretrained``)."""
    corpus_dir: str = "artifacts/corpus"
    """Corpus stage output: ``<corpus_dir>/<split>/*.jsonl``."""
    cache_dir: str = "artifacts/cache"
    """Cache root; the blocks go to ``<cache_dir>/<key>/``."""
    split: str = "train"
    """Corpus split to pack (``train`` or ``heldout``)."""
    data: PackConfig = field(default_factory=PackConfig)
    """Packing options."""


# ----------------------------------------------------------------------------------------------
# Reading the packed blocks


class PackedBlocks:
    """Read-only view of a cache directory: ``blocks[i]`` is an int32 array of ``block_size_tokens`` ids.

    A map-style dataset (``len``, ``[]``), usable directly by a torch ``DataLoader``; pickles by path
    (workers reopen the memmap instead of copying it).

    >>> blocks = PackedBlocks("artifacts/cache/train-b256-0123abcd")   # doctest: +SKIP
    >>> blocks[0].shape, blocks.labels(len(blocks) - 1)[-1]            # doctest: +SKIP
    ((256,), -100)
    """

    def __init__(self, path: str | Path, restart_position_ids: bool = False):
        self.path = Path(path)
        meta = read_meta(self.path)
        if meta is None or not (self.path / BLOCKS_FILE).is_file():
            raise UserError(f"not a packed-blocks cache (no meta.json/{BLOCKS_FILE}): {self.path}")
        self.meta: dict = meta
        self.stats: dict = meta["stats"]
        self.restart_position_ids = restart_position_ids
        self._blocks = np.load(self.path / BLOCKS_FILE, mmap_mode="r")
        self._doc_starts = np.load(self.path / DOC_STARTS_FILE, mmap_mode="r")
        self.block_size_tokens: int = int(self._blocks.shape[1])

    def __getstate__(self) -> dict:
        return {"path": self.path, "restart_position_ids": self.restart_position_ids}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["restart_position_ids"])

    def __len__(self) -> int:
        return int(self._blocks.shape[0])

    def _index(self, i: int) -> int:
        n = len(self)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"block {i} out of range for {n} blocks")
        return j

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array(self._blocks[self._index(i)])  # a private writable copy: safe for torch.from_numpy

    def __repr__(self) -> str:
        return f"PackedBlocks({str(self.path)!r}, n_blocks={len(self)}, block_size_tokens={self.block_size_tokens})"

    @property
    def n_tokens(self) -> int:
        """Real (non-pad) tokens in the stream."""
        return int(self.stats["n_tokens"])

    def valid_tokens(self, i: int) -> int:
        """Non-pad tokens in block ``i``: the block size, except possibly for the last block."""
        j = self._index(i)
        return self.block_size_tokens if j < len(self) - 1 else int(self.stats["last_block_valid_tokens"])

    def loss_mask(self, i: int) -> np.ndarray:
        """Boolean mask of the real tokens of block ``i`` (False on padding)."""
        mask = np.zeros(self.block_size_tokens, dtype=bool)
        mask[: self.valid_tokens(i)] = True
        return mask

    def labels(self, i: int) -> np.ndarray:
        """int64 labels for a causal LM: the ids, with ``-100`` on padding (HF shifts them itself)."""
        out = self[i].astype(np.int64)
        out[self.valid_tokens(i):] = IGNORE_INDEX
        return out

    def position_ids(self, i: int) -> np.ndarray:
        """Position ids restarting at 0 at each document start (and at the block start)."""
        j = self._index(i)
        return packing.restart_positions(self._doc_starts, j * self.block_size_tokens, self.block_size_tokens)

    def example(self, i: int) -> dict[str, np.ndarray]:
        """``{"input_ids", "labels"}`` (+ ``"position_ids"`` when ``restart_position_ids``) for block ``i``."""
        ex = {"input_ids": self[i].astype(np.int64), "labels": self.labels(i)}
        if self.restart_position_ids:
            ex["position_ids"] = self.position_ids(i)
        return ex


# ----------------------------------------------------------------------------------------------
# Inputs: tokenizer and text sources


def tokenizer_sha256(tokenizer_dir: str | Path) -> str:
    """sha256 over the tokenizer files that decide ids (``tokenizer.json``, ``tokenizer.model``, configs)."""
    d = Path(tokenizer_dir)
    if not d.is_dir():
        raise UserError(f"tokenizer directory not found: {d}")
    present = [name for name in TOKENIZER_FILES if (d / name).is_file()]
    if "tokenizer.json" not in present and "tokenizer.model" not in present:
        raise UserError(f"no tokenizer.json or tokenizer.model in tokenizer directory: {d}")
    h = hashlib.sha256()
    for name in present:
        h.update(f"{name}\0{sha256_file(d / name)}\0".encode())
    return h.hexdigest()


def corpus_files(corpus_dir: str | Path, split: str) -> list[Path]:
    """The split's JSONL shards, sorted: ``<corpus_dir>/<split>/*.jsonl``."""
    from corpora.shards import shard_files

    return shard_files(corpus_dir, split)


def source_files(path: str | Path) -> list[Path]:
    """Files of a mixture source: the file itself, or a directory's ``*.jsonl``/``*.txt`` sorted."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(x for x in p.iterdir() if x.suffix in (".jsonl", ".txt") and x.is_file())
    else:
        raise UserError(f"mixture source not found: {p}")
    if not files:
        raise UserError(f"mixture source has no .jsonl or .txt files: {p}")
    kinds = {f.suffix for f in files}
    if len(kinds) > 1 or not kinds <= {".jsonl", ".txt"}:
        raise UserError(f"mixture source must be all .jsonl or all .txt files, got {sorted(kinds)}: {p}")
    return files


def files_sha256(files: list[Path]) -> str:
    """sha256 over the contents of ``files`` in order (names excluded: a renamed shard is the same text)."""
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()


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


class _DocStore:
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


# ----------------------------------------------------------------------------------------------
# Cache key and build


def _cache_key(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _cache_material(tokenizer_dir: Path, corpus: list[Path], split: str, cfg: PackConfig) -> dict:
    """Everything that decides the blocks, hashed into the cache key (and stored in meta.json)."""
    return {
        "format": CACHE_FORMAT_VERSION,
        "tokenizer_sha256": tokenizer_sha256(tokenizer_dir),
        "corpus_sha256": files_sha256(corpus),
        "split": split,
        "block_size_tokens": cfg.block_size_tokens,
        "add_bos": cfg.add_bos,
        "add_eos": cfg.add_eos,
        "text_field": cfg.text_field,
        "seed": cfg.seed if cfg.mixture else None,
        "mixture": [
            {"sha256": files_sha256(source_files(m.path)), "share": m.share, "text_field": m.text_field}
            for m in cfg.mixture
        ],
    }


def cache_path(tokenizer_dir: str | Path, corpus_dir: str | Path, cache_root: str | Path, cfg: PackConfig,
               split: str = "train") -> Path:
    """Where the blocks for these inputs and options live (built or not)."""
    material = _cache_material(Path(tokenizer_dir), corpus_files(corpus_dir, split), split, cfg)
    return Path(cache_root) / f"{split}-b{cfg.block_size_tokens}-{_cache_key(material)}"


def build_or_load_blocks(tokenizer_dir: str | Path, corpus_dir: str | Path, cache_root: str | Path,
                         cfg: PackConfig, split: str = "train") -> PackedBlocks:
    """The packed blocks of ``corpus_dir/split`` for this tokenizer and ``cfg``: reused from
    ``cache_root`` when the key matches, else built (atomically) and cached.

    >>> blocks = build_or_load_blocks("artifacts/tokenizer", "artifacts/corpus", "artifacts/cache",
    ...                               PackConfig(block_size_tokens=128))    # doctest: +SKIP
    """
    corpus = corpus_files(corpus_dir, split)
    material = _cache_material(Path(tokenizer_dir), corpus, split, cfg)
    path = Path(cache_root) / f"{split}-b{cfg.block_size_tokens}-{_cache_key(material)}"
    meta = read_meta(path)
    if meta is not None and meta.get("cache_key_material") == material and (path / BLOCKS_FILE).is_file():
        return PackedBlocks(path, cfg.restart_position_ids)
    _build(path, Path(tokenizer_dir), corpus, split, cfg, material)
    return PackedBlocks(path, cfg.restart_position_ids)


def remove_stale_scratch(cache_root: Path) -> list[Path]:
    """Delete ``.scratch-<pid>-*`` dirs (tokenized Arrow files) left by builds whose process died."""
    removed = []
    for d in cache_root.glob(".scratch-*-*"):
        pid = d.name.split("-")[1]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _build(path: Path, tokenizer_dir: Path, corpus: list[Path], split: str, cfg: PackConfig, material: dict) -> None:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    tok = load_tokenizer(tokenizer_dir)
    bos_id = tok.bos_id if cfg.add_bos else None
    eos_id = tok.eos_id if cfg.add_eos else None
    if cfg.add_bos and bos_id is None:
        raise UserError(f"add_bos is set but the tokenizer in {tokenizer_dir} has no BOS token")
    if cfg.add_eos and eos_id is None:
        raise UserError(f"add_eos is set but the tokenizer in {tokenizer_dir} has no EOS token")
    # Padding only ever fills the tail of the last block and is masked out of the loss.
    pad_id = next(i for i in (tok.pad_id, tok.eos_id, 0) if i is not None)

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(path.parent)
    with tempfile.TemporaryDirectory(prefix=f".scratch-{os.getpid()}-", dir=path.parent) as scratch:
        scratch_dir = Path(scratch)
        stores = [_DocStore(tokenize_dataset(load_texts(corpus, cfg.text_field, scratch_dir), tok, bos_id, eos_id,
                                             cfg, desc=f"{split} corpus"))]
        names = [f"corpus/{split}"]
        for j, m in enumerate(cfg.mixture):
            files = source_files(m.path)
            ds = load_texts(files, m.text_field, scratch_dir)
            stores.append(_DocStore(tokenize_dataset(ds, tok, bos_id, eos_id, cfg, desc=f"mixture {j}")))
            names.append(str(m.path))
            if stores[-1].lengths.sum() == 0:
                raise UserError(f"mixture source has no tokens: {m.path}")

        # Which documents, in which order: the main corpus once, in order; extra sources sampled to share.
        main_tokens = int(stores[0].lengths.sum())
        targets = packing.mixture_targets(main_tokens, [m.share for m in cfg.mixture]) if cfg.mixture else []
        picks = [np.arange(len(stores[0]), dtype=np.int64)]
        picks += [packing.sample_documents(s.lengths, t, seed=cfg.seed + 1000 * (j + 1))
                  for j, (s, t) in enumerate(zip(stores[1:], targets, strict=True))]
        src, rank = packing.interleave(len(stores[0]), [p.size for p in picks[1:]], seed=cfg.seed)
        doc = np.empty_like(rank)
        for j, p in enumerate(picks):
            doc[src == j] = p[rank[src == j]]
        doc_lengths = np.empty(src.size, dtype=np.int64)
        for j, s in enumerate(stores):
            doc_lengths[src == j] = s.lengths[doc[src == j]]
        n_tokens = int(doc_lengths.sum())
        if n_tokens < cfg.block_size_tokens:
            raise UserError(
                f"{split} corpus in {corpus[0].parent} has {n_tokens} tokens, fewer than one block of "
                f"{cfg.block_size_tokens}: add text or lower data.block_size_tokens"
            )
        n_blocks = -(-n_tokens // cfg.block_size_tokens)
        per_source = {
            name: {"docs": int((src == j).sum()), "tokens": int(doc_lengths[src == j].sum()),
                   "share": float(doc_lengths[src == j].sum() / n_tokens)}
            for j, name in enumerate(names)
        }

        with atomic_dir(path) as tmp:
            with open(tmp / BLOCKS_FILE, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(np.dtype(packing.TOKEN_DTYPE)),
                        "fortran_order": False, "shape": (n_blocks, cfg.block_size_tokens)})
                writer = packing.BlockWriter(f, cfg.block_size_tokens, pad_id)
                with tqdm(total=n_tokens, unit="tok", unit_scale=True, desc="pack blocks") as bar:
                    for j, first, stop in packing.runs(src, doc):
                        for piece in stores[j].slices(first, stop):
                            writer.write(piece)
                            bar.update(piece.size)
                stats = writer.finish()
            assert stats["n_tokens"] == n_tokens and stats["n_blocks"] == n_blocks, stats
            doc_starts = np.zeros(src.size, dtype=np.int64)
            np.cumsum(doc_lengths[:-1], out=doc_starts[1:])
            np.save(tmp / DOC_STARTS_FILE, doc_starts)
            seconds = time.perf_counter() - t0
            stats.update(n_docs=int(src.size), block_size_tokens=cfg.block_size_tokens, bos_id=bos_id,
                         eos_id=eos_id, pad_id=pad_id, vocab_size=tok.vocab_size, sources=per_source,
                         build_seconds=round(seconds, 3), tokens_per_second=round(n_tokens / max(seconds, 1e-9)))
            inputs = {"tokenizer": material["tokenizer_sha256"], f"corpus/{split}": material["corpus_sha256"]}
            inputs.update({f"mixture/{m.path}": x["sha256"] for m, x in zip(cfg.mixture, material["mixture"], strict=True)})
            write_meta(tmp, config=cfg, inputs=inputs, cache_key_material=material, stats=stats,
                       tokenizer_dir=str(tokenizer_dir), corpus_files=[str(c) for c in corpus])


# ----------------------------------------------------------------------------------------------
# CLI


def summary_line(blocks: PackedBlocks, reused: bool) -> str:
    """One line: what the cache holds and whether it was reused."""
    s = blocks.stats
    shares = ", ".join(f"{name} {v['share']:.1%}" for name, v in s["sources"].items())
    how = "reused cache" if reused else f"built in {s['build_seconds']:.1f}s ({s['tokens_per_second']:,} tokens/s)"
    return (f"{len(blocks):,} blocks x {blocks.block_size_tokens} tokens: {s['n_tokens']:,} tokens from "
            f"{s['n_docs']:,} docs + {s['n_pad_tokens']} pad ({shares}); {how}")


def run(cfg: PackCommandConfig) -> int:
    """CLI: build (or reuse) the blocks, print the cache path and a one-line summary."""
    path = cache_path(cfg.tokenizer_dir, cfg.corpus_dir, cfg.cache_dir, cfg.data, cfg.split)
    reused = read_meta(path) is not None
    blocks = build_or_load_blocks(cfg.tokenizer_dir, cfg.corpus_dir, cfg.cache_dir, cfg.data, cfg.split)
    print(blocks.path)
    print(summary_line(blocks, reused))
    return 0

