"""``python -m corpora build``: sources -> clean, deduplicated JSONL shards + manifest.json.

The flow, top to bottom (:func:`build_corpus`)::

    for each source, each file (config order, files sorted):    readers.py  (streaming, main process)
        batches of documents -> worker pool:                     clean.py    (wikitext, NFC, OpenCC, filters)
                                                                  dedup.py    (digest + MinHash signature)
        results in input order -> Deduplicator (main process) -> held-out split by text hash
        -> train/shard-NNNNN.jsonl | heldout/heldout.jsonl

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
import functools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from corpora import readers
from corpora.clean import CleanConfig, clean_text, filter_reason
from corpora.dedup import DedupConfig, Deduplicator, minhash_signature, text_digest
from corpora.domains import HeldoutSplitter, heldout_share
from corpora.manifest import SourceStats, check_accounting, manifest_markdown, summary_line
from corpora.readers import Item, Rejection
from corpora.scripts import convert_text, detect_script, output_script
from corpora.shards import HELDOUT_FILE, ShardWriter
from corpora.sources import (
    SourceConfig,
    default_sources,
    display_names,
    read_file,
    rel_path,
    resolve_source_files,
)
from corpora.wikitext import wikitext_to_text
from zhllama.artifacts import atomic_dir, atomic_write_json, atomic_write_text, sha256_file, write_meta
from zhllama.cli import UserError
from zhllama.config import to_dict

__all__ = ["BuildConfig", "SourceConfig", "build_corpus", "heldout_split", "ordered_map", "process_item",
           "resolve_source_files", "run"]

MANIFEST_VERSION = 2  # 2: records carry domain and script; per-domain counts
_LOGGED_PER_REASON = 3  # read-level rejections printed per source and reason; all are counted


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
    """Cleaning processes; 0 = all CPU cores, 1 = in the main process (no pool)."""
    batch_documents: int = 64
    """Documents per task sent to a worker (amortises inter-process overhead)."""
    hash_inputs: bool = True
    """Record each input file's sha256 in manifest.json (costs one extra read of the inputs)."""
    progress: bool = True
    """Show a tqdm progress bar."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if self.heldout_min_documents < 0 or self.max_chars_per_source < 0:
            raise ValueError("heldout_min_documents and max_chars_per_source must be >= 0")
        if self.shard_max_documents < 1 or self.shard_max_bytes < 1 or self.batch_documents < 1:
            raise ValueError("shard_max_documents, shard_max_bytes and batch_documents must be >= 1")
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


def _process_batch(batch: list[tuple[int, Item]], clean_cfg: CleanConfig, dedup_cfg: DedupConfig,
                   settings: tuple[SourceSettings, ...]) -> list[Processed]:
    return [process_item(i, item, clean_cfg, dedup_cfg, settings[i]) for i, item in batch]


def _warm_worker(dedup_cfg: DedupConfig, settings: tuple[SourceSettings, ...]) -> None:
    # Build the OpenCC converters, script tables and MinHash permutations once per process.
    for s in set(settings):
        convert_text("预热", s.convert)
    detect_script("预热")
    if dedup_cfg.near:
        minhash_signature("预热预热预热预热", dedup_cfg)


def ordered_map(fn: Callable, tasks: Iterable, num_workers: int, initializer: Callable | None = None,
                initargs: tuple = (), max_inflight: int | None = None) -> Iterator:
    """``map(fn, tasks)`` over a process pool, results in task order, at most ``max_inflight`` queued.

    Unlike ``Pool.imap`` (whose feeder thread drains the whole input at once), this keeps memory
    bounded however long the input stream is. ``num_workers <= 1`` runs in this process.

    >>> list(ordered_map(abs, [-1, 2, -3], num_workers=1))
    [1, 2, 3]
    """
    if num_workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(fn, tasks)
        return
    max_inflight = max_inflight or 4 * num_workers
    with multiprocessing.get_context().Pool(num_workers, initializer=initializer, initargs=initargs) as pool:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= max_inflight:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---------------------------------------------------------------------------------------------
# The build


# ---------------------------------------------------------------------------------------------
# The build


def _stream_items(cfg: BuildConfig, files: list[list[Path]], file_counts: dict[Path, int],
                  truncated: set[Path]) -> Iterator[tuple[int, Item]]:
    for si, src in enumerate(cfg.sources):
        names = display_names(files[si], Path(cfg.data_dir))
        # The demo subset: each file of the source gets an equal share of the source's budget.
        budget = -(-cfg.max_chars_per_source // len(files[si])) if cfg.max_chars_per_source else 0
        for path in files[si]:
            n = chars = 0
            rename = names[path] != path.name  # readers prefix ids with path.name; keep ids unique
            items = read_file(src, path, cfg.max_line_bytes)
            for item in items:
                if budget and chars >= budget:
                    truncated.add(path)
                    items.close()  # type: ignore[attr-defined]
                    break
                n += 1
                chars += item.chars if isinstance(item, Rejection) else len(item.text)
                if rename:
                    item = dataclasses.replace(item, doc_id=names[path] + item.doc_id[len(path.name):])
                yield si, item
            file_counts[path] = n


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for x in items:
        batch.append(x)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def check_conversions(cfg: BuildConfig) -> None:
    """Load every source's OpenCC config once here: one clear line, not a traceback per worker."""
    for src in cfg.sources:
        try:
            convert_text("测试", src.convert)
        except Exception as e:
            raise UserError(f"source {src.name!r}: convert: cannot load OpenCC config {src.convert!r} ({e})") from None


def _group_stats(cfg: BuildConfig, stats: list[SourceStats], key: Callable[[SourceConfig], str]) -> dict[str, dict]:
    groups: dict[str, tuple[list[str], SourceStats]] = {}
    for src, st in zip(cfg.sources, stats, strict=True):
        names, total = groups.setdefault(key(src), ([], SourceStats()))
        names.append(src.name)
        total.add(st)
    out = {}
    for name, (names, total) in groups.items():
        counts = total.to_dict()
        check_accounting(counts, f"domain {name}")
        out[name] = {"sources": names, **counts}
    return out


def build_corpus(cfg: BuildConfig, out_dir: Path) -> dict:
    """Read every source, clean, deduplicate, split and write shards into ``out_dir`` (an empty dir).

    Returns the manifest dict (also written as ``out_dir/manifest.json``). Raises ``UserError``
    for fatal input problems (see :mod:`corpora.readers`).
    """
    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir)
    files = [resolve_source_files(src, data_dir) for src in cfg.sources]
    check_conversions(cfg)
    input_bytes = sum(f.stat().st_size for fs in files for f in fs)
    num_workers = cfg.num_workers or (os.cpu_count() or 1)
    settings = tuple(SourceSettings.of(src) for src in cfg.sources)
    stats = [SourceStats() for _ in cfg.sources]
    index = {src.name: i for i, src in enumerate(cfg.sources)}
    dedup = Deduplicator(cfg.dedup)
    splitter = HeldoutSplitter(cfg.heldout_fraction, cfg.heldout_min_documents)
    writers = {"train": ShardWriter(out_dir / "train", cfg.shard_max_documents, cfg.shard_max_bytes),
               "heldout": ShardWriter(out_dir / Path(HELDOUT_FILE).parent, 1, 1, single_file=Path(HELDOUT_FILE).name)}
    file_counts: dict[Path, int] = {}
    truncated: set[Path] = set()
    logged: collections.Counter = collections.Counter()

    def write(ready: list[tuple[str, dict]]) -> None:
        for split, rec in ready:
            writers[split].write(rec)
            stats[index[rec["source"]]].written(split, rec["script"], len(rec["text"]))

    batches = _batched(_stream_items(cfg, files, file_counts, truncated), cfg.batch_documents)
    work = functools.partial(_process_batch, clean_cfg=cfg.clean, dedup_cfg=cfg.dedup, settings=settings)
    bar = tqdm(unit="doc", desc="corpus", disable=not cfg.progress, file=sys.stderr, mininterval=0.5)
    for results in ordered_map(work, batches, num_workers, _warm_worker, (cfg.dedup, settings)):
        for r in results:
            st = stats[r.source_index]
            src = cfg.sources[r.source_index]
            st.documents_read += 1
            st.characters_read += r.input_chars
            reason, detail = r.reason, r.detail
            if reason is None:
                assert r.text is not None
                reason = dedup.check(f"{src.name}/{r.doc_id}", r.text, r.signature, r.digest)
                detail = f"duplicate of {dedup.match}" if reason else ""
            if reason is not None:
                st.reject(reason, r.input_chars, f"{r.doc_id}: {detail}" if detail else r.doc_id)
                if r.detail and logged[(src.name, reason)] < _LOGGED_PER_REASON:  # read-level problems
                    logged[(src.name, reason)] += 1
                    tqdm.write(f"warning: {src.name}: {r.doc_id}: {reason} ({r.detail})", file=sys.stderr)
                continue
            assert r.text is not None and r.digest is not None
            st.keep(r.input_chars, len(r.text), r.detected)
            record = {"id": f"{src.name}/{r.doc_id}", "source": src.name, "domain": src.domain,
                      "script": r.script, "text": r.text}
            write(splitter.add((src.domain, r.script), r.digest, record))
        bar.update(len(results))
    write(splitter.finish())
    bar.close()
    for w in writers.values():
        w.close()
    elapsed_s = time.perf_counter() - t0

    warnings = [f"{rel_path(f, data_dir)}: empty file (no documents)" for fs in files for f in fs
                if file_counts.get(f, 0) == 0]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    total = SourceStats()
    sources_out = {}
    for src, fs, st in zip(cfg.sources, files, stats, strict=True):
        total.add(st)
        counts = st.to_dict()
        check_accounting(counts, f"source {src.name}")
        sources_out[src.name] = {
            "format": src.format, "domain": src.domain, "script": src.script, "convert": src.convert,
            "files": [
                {"path": rel_path(f, data_dir), "bytes": f.stat().st_size, "documents_read": file_counts.get(f, 0),
                 **({"truncated_at_chars": -(-cfg.max_chars_per_source // len(fs))} if f in truncated else {}),
                 **({"sha256": sha256_file(f)} if cfg.hash_inputs else {})}
                for f in fs
            ],
            **counts,
            "rejected_examples": st.examples,
        }
    totals = total.to_dict()
    check_accounting(totals, "total")
    train, heldout = writers["train"], writers["heldout"]
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "accounting": "documents/characters: read == written + sum(rejected); characters are input "
                      "characters (before cleaning); characters.output = characters in the shards",
        "sources": sources_out,
        "domains": _group_stats(cfg, stats, lambda s: s.domain),
        "total": totals,
        "splits": {
            "train": {"documents": train.documents, "characters": train.characters, "bytes": train.bytes,
                      "files": [rel_path(p, out_dir) for p in train.paths]},
            "heldout": {"documents": heldout.documents, "characters": heldout.characters, "bytes": heldout.bytes,
                        "files": [HELDOUT_FILE]},
        },
        "warnings": warnings,
        # Only the settings that shape the output (not paths, workers or progress), so the manifest
        # of the same inputs + settings is byte-identical across runs and machines.
        "config": {k: v for k, v in to_dict(cfg).items() if k not in ("data_dir", "out_dir", "num_workers", "progress")},
        "inputs_sha256": {f["path"]: f["sha256"] for s in sources_out.values() for f in s["files"] if "sha256" in f},
    }
    atomic_write_json(out_dir / "manifest.json", manifest)
    atomic_write_text(out_dir / "report.md", manifest_markdown(manifest))
    manifest["_run"] = {"elapsed_s": elapsed_s, "input_bytes": input_bytes, "num_workers": num_workers}
    return manifest


def run(cfg: BuildConfig) -> int:
    """CLI entry: build into ``cfg.out_dir`` atomically, write meta.json, print the summary line."""
    out_dir = Path(cfg.out_dir)
    if not Path(cfg.data_dir).is_dir():
        raise UserError(f"data_dir not found or not a directory: {cfg.data_dir}")
    with atomic_dir(out_dir) as tmp:
        manifest = build_corpus(cfg, tmp)
        write_meta(tmp, config=cfg, inputs=manifest["inputs_sha256"], run=manifest["_run"])
    print(summary_line(manifest, out_dir))
    return 0
