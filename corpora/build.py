"""``python -m corpora build``: sources -> clean, deduplicated JSONL shards + manifest.json.

The flow (:func:`build_corpus`), the same steps in both engines::

    for each source, each file (config order, files sorted):    readers.py, wiki_readers.py (streaming)
        each document:                                           clean.py    (wikitext, NFC, OpenCC, filters)
                                                                  dedup.py    (digest + MinHash signature)
        exact + near dedup over all sources, first occurrence wins -> held-out split by text hash
        -> train/shard-NNNNN.jsonl | heldout/heldout.jsonl

``engine: local`` (:mod:`corpora.engine_local`) runs every step on this machine's cores, files cut
into parts (:mod:`corpora.units`) and dedup partitioned (:mod:`corpora.dedup_sharded`);
``engine: datatrove`` (:mod:`corpora.engine_datatrove`) runs them as datatrove stages (Slurm...).
Every record is ``{"id", "source", "domain", "script", "text"}``; ``script`` is the source's
script after its conversion, or, for a ``mixed`` source, the script detected in the document.
The accounting (read == written + rejected, per source, per domain and in total) is described in
:mod:`corpora.manifest`; the held-out split (per domain and script) in :mod:`corpora.domains`.

Example::

    python -m corpora build --config configs/corpora/build.yaml --data_dir ../shared/data --out_dir artifacts/corpus
"""
from __future__ import annotations

import collections
import dataclasses
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from corpora import readers
from corpora.clean import CleanConfig, clean_text, filter_reason
from corpora.dedup import DedupConfig, minhash_signature, text_digest
from corpora.domains import heldout_share
from corpora.engine_config import DatatroveConfig
from corpora.inputs import Part
from corpora.manifest import summary_line
from corpora.readers import Item, Rejection
from corpora.scripts import convert_text, detect_script, output_script
from corpora.sources import (
    SourceConfig,
    default_sources,
    read_file,
    resolve_source_files,
)
from corpora.wikitext import wikitext_to_text
from zhllama.artifacts import atomic_dir, write_meta
from zhllama.cli import UserError

__all__ = ["BuildConfig", "SourceConfig", "build_corpus", "heldout_split", "ordered_map", "process_item",
           "resolve_source_files", "run"]


@dataclass
class BuildConfig:
    """Config of ``python -m corpora build`` (YAML: ``configs/corpora/build.yaml``)."""

    data_dir: Path = Path("../shared/data")
    """Root that relative source paths are resolved against."""
    out_dir: Path = Path("artifacts/corpus")
    """Output corpus directory (replaced atomically)."""
    sources: list[SourceConfig] = field(default_factory=default_sources)
    """The inputs, read in this order (earlier sources win deduplication ties)."""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """Cleaning steps and filters."""
    dedup: DedupConfig = field(default_factory=DedupConfig)
    """Exact and near-duplicate removal across all sources."""
    heldout_fraction: float = 0.05
    """Share of documents (chosen by a hash of the cleaned text: stable) written to heldout/."""
    heldout_min_documents: int = 20
    """...and at least this many per (domain, script), the smallest hashes first, never more than
    half of a group: a small domain still gets a test split."""
    max_chars_per_source: int = 0
    """Read at most this many input characters per source, shared equally by its files (0 = all).
    A subset for the demo; the manifest marks the files that were cut."""
    shard_max_documents: int = 5000
    """A train shard holds at most this many documents..."""
    shard_max_bytes: int = 64 << 20
    """...and at most this many bytes (whichever limit comes first)."""
    max_line_bytes: int = readers.DEFAULT_MAX_LINE_BYTES
    """Input lines longer than this are skipped in constant memory and counted (``line_too_long``)."""
    num_workers: int = 0
    """Worker processes (reading, cleaning, dedup); 0 = all CPU cores, 1 = in the main process (no pool).
    The output does not depend on it."""
    unit_bytes: int = 1 << 20
    """Local engine: files larger than this are cut into parts of about this many bytes (compressed
    bytes for a multistream .xml.bz2) that workers read at once (:mod:`corpora.units`)."""
    hash_inputs: bool = True
    """Record each input file's sha256 in manifest.json (costs one extra read of the inputs)."""
    engine: Literal["local", "datatrove"] = "local"
    """``local``: every core of this machine on every step (files cut into parts, dedup partitioned
    with its state on disk, :mod:`corpora.engine_local`); the decisions of an exact in-memory dedup.
    ``datatrove``: the same readers and cleaners as steps of a datatrove pipeline with its disk-based
    MinHash dedup, on the local or Slurm executor (``datatrove`` settings): the cluster path."""
    datatrove: DatatroveConfig = field(default_factory=DatatroveConfig)
    """Executor settings of the ``datatrove`` engine."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.heldout_min_documents < 0 or self.max_chars_per_source < 0:
            raise ValueError("heldout_min_documents and max_chars_per_source must be >= 0")
        if self.shard_max_documents < 1 or self.shard_max_bytes < 1 or self.unit_bytes < 1:
            raise ValueError("shard_max_documents, shard_max_bytes and unit_bytes must be >= 1")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 = all cores), got {self.num_workers}")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if not self.sources:
            raise ValueError("sources is empty")


def heldout_split(digest: bytes, fraction: float) -> str:
    """``"heldout"`` for a stable ``fraction`` of texts (by their BLAKE2b digest), else ``"train"``.

    Same text -> same split, on every run and machine (the per-group minimum of
    :class:`~corpora.domains.HeldoutSplitter` adds a few more).

    >>> heldout_split(text_digest("数学"), 0.0), heldout_split(text_digest("数学"), 0.999999)
    ('train', 'heldout')
    """
    return "heldout" if heldout_share(digest) < fraction else "train"


# ---------------------------------------------------------------------------------------------
# Worker side: pure, picklable


@dataclass(frozen=True)
class SourceSettings:
    """What a worker needs to know about a source: its conversion and its records' script."""

    convert: str = "none"
    """OpenCC conversion (``none``, ``t2s``...)."""
    script: str = "mixed"
    """Script after conversion; ``mixed`` = detect per document."""

    @classmethod
    def of(cls, src: SourceConfig) -> SourceSettings:
        """The settings of a configured source."""
        return cls(src.convert, output_script(src.script, src.convert))


@dataclass
class Processed:
    """A document after cleaning in a worker: kept text + dedup keys, or a rejection reason."""

    source_index: int
    """Index of the source in ``BuildConfig.sources``."""
    doc_id: str
    """Id within the source (``file#id`` / ``file:line``)."""
    input_chars: int
    """Characters as read (the unit of the accounting identity)."""
    text: str | None = None
    """Cleaned text, None when rejected."""
    reason: str | None = None
    """Rejection reason, None when kept so far."""
    digest: bytes | None = None
    """Exact-dedup key of the cleaned text."""
    signature: np.ndarray | None = None
    """MinHash signature (None when near-dedup is off or the text is shorter than a shingle)."""
    detail: str = ""
    """Human-readable detail for a rejection (JSON error, byte offset...)."""
    script: str = ""
    """The record's script: the source's, or the detected one for a ``mixed`` source."""
    detected: str = ""
    """The script detected in the cleaned text (reported as a check of the declared one)."""


def process_item(source_index: int, item: Item, clean_cfg: CleanConfig, dedup_cfg: DedupConfig,
                 settings: SourceSettings = SourceSettings()) -> Processed:
    """Clean, convert and filter one reader item and compute its dedup keys (pure; runs in a worker).

    >>> p = process_item(0, readers.RawDoc("a:1", "數學是研究數量、結構以及空間等概念的一門學科。"), CleanConfig(min_chars=5),
    ...                  DedupConfig(), SourceSettings("t2s", "simplified"))
    >>> p.text, p.reason, p.script
    ('数学是研究数量、结构以及空间等概念的一门学科。', None, 'simplified')
    """
    if isinstance(item, Rejection):
        return Processed(source_index, item.doc_id, item.chars, reason=item.reason, detail=item.detail)
    text = item.text
    if item.markup == "wikitext":
        try:
            text = wikitext_to_text(text, item.title)
        except Exception as e:  # wikiextractor on hostile markup: count it, don't die
            return Processed(source_index, item.doc_id, len(item.text), reason="wikitext_error", detail=repr(e)[:200])
    text = clean_text(text, clean_cfg, settings.convert)
    reason = filter_reason(text, clean_cfg)
    if reason is not None:
        return Processed(source_index, item.doc_id, len(item.text), reason=reason)
    signature = minhash_signature(text, dedup_cfg) if dedup_cfg.near else None
    detected = detect_script(text)
    return Processed(source_index, item.doc_id, len(item.text), text=text, digest=text_digest(text),
                     signature=signature, script=detected if settings.script == "mixed" else settings.script,
                     detected=detected)


def warm_worker(dedup_cfg: DedupConfig, settings: tuple[SourceSettings, ...]) -> None:
    """Build the OpenCC converters, script tables and MinHash permutations once per process."""
    for s in set(settings):
        convert_text("预热", s.convert)
    detect_script("预热")
    if dedup_cfg.near:
        minhash_signature("预热预热预热预热", dedup_cfg)


def ordered_map(fn: Callable, tasks: Iterable, num_workers: int, initializer: Callable | None = None,
                initargs: tuple = (), max_inflight: int | None = None, pool=None) -> Iterator:
    """``map(fn, tasks)`` over a process pool, results in task order, at most ``max_inflight`` queued.

    Unlike ``Pool.imap`` (whose feeder thread drains the whole input at once), this keeps memory
    bounded however long the input stream is. ``pool``: an open pool to use (else one is made for
    this map); ``num_workers <= 1`` without a pool runs in this process.

    >>> list(ordered_map(abs, [-1, 2, -3], num_workers=1))
    [1, 2, 3]
    """
    if pool is None and num_workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, tasks)
        return
    if pool is None:
        with multiprocessing.get_context().Pool(num_workers, initializer=initializer, initargs=initargs) as own:
            yield from ordered_map(fn, tasks, num_workers, max_inflight=max_inflight, pool=own)
        return
    max_inflight = max_inflight or 4 * num_workers
    pending: collections.deque = collections.deque()
    for task in tasks:
        pending.append(pool.apply_async(fn, (task,)))
        if len(pending) >= max_inflight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


# ---------------------------------------------------------------------------------------------
# The build


def iter_file_items(src: SourceConfig, path: Path, display_name: str, budget: int, max_line_bytes: int,
                    counts: dict, part: Part | None = None) -> Iterator[Item]:
    """The items of one file (or ``part`` of it), ids renamed to ``display_name``, stopping once
    ``budget`` characters were read (0 = no limit). ``counts`` gets ``documents_read`` and ``truncated``."""
    n = chars = 0
    rename = display_name != path.name  # readers prefix ids with path.name; keep ids unique
    items = read_file(src, path, max_line_bytes, part)
    counts["truncated"] = False
    for item in items:
        if budget and chars >= budget:
            counts["truncated"] = True
            items.close()  # type: ignore[attr-defined]
            break
        n += 1
        chars += item.chars if isinstance(item, Rejection) else len(item.text)
        if rename:
            item = dataclasses.replace(item, doc_id=display_name + item.doc_id[len(path.name):])
        yield item
    counts["documents_read"] = n


def check_conversions(cfg: BuildConfig) -> None:
    """Load every source's OpenCC config once here: one clear line, not a traceback per worker."""
    for src in cfg.sources:
        try:
            convert_text("测试", src.convert)
        except Exception as e:
            raise UserError(f"source {src.name!r}: convert: cannot load OpenCC config {src.convert!r} ({e})") from None


def build_corpus(cfg: BuildConfig, out_dir: Path) -> dict:
    """Read every source, clean, deduplicate, split and write shards into ``out_dir`` (an empty dir).

    Returns the manifest dict (also written as ``out_dir/manifest.json``). Raises ``UserError``
    for fatal input problems (see :mod:`corpora.readers`).
    """
    if cfg.engine == "datatrove":
        from corpora.engine_datatrove import build_with_datatrove

        return build_with_datatrove(cfg, out_dir)
    from corpora.engine_local import build_local

    return build_local(cfg, out_dir)


def run(cfg: BuildConfig) -> int:
    """CLI entry: build into ``cfg.out_dir`` atomically, write meta.json, print the summary line."""
    out_dir = Path(cfg.out_dir)
    if not Path(cfg.data_dir).is_dir():
        raise UserError(f"data_dir not found or not a directory: {cfg.data_dir}")
    if cfg.engine == "datatrove" and cfg.datatrove.executor == "slurm":
        from corpora.engine_datatrove import submit_slurm

        job = submit_slurm(cfg)
        print(f"corpus: submitted the datatrove stages to Slurm (last job {job}); {out_dir} appears when it ends")
        return 0
    with atomic_dir(out_dir) as tmp:
        manifest = build_corpus(cfg, tmp)
        write_meta(tmp, config=cfg, inputs=manifest["inputs_sha256"], run=manifest["_run"])
    print(summary_line(manifest, out_dir))
    return 0
