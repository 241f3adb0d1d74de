"""``python -m corpora build``: sources -> clean, deduplicated JSONL shards + manifest.json.

The flow, top to bottom (:func:`build_corpus`)::

    for each source, each file (config order, files sorted):    readers.py  (streaming, main process)
        batches of documents -> worker pool:                     clean.py    (wikitext, NFC, OpenCC, filters)
                                                                  dedup.py    (digest + MinHash signature)
        results in input order -> Deduplicator (main process) -> held-out split by text hash
        -> train/shard-NNNNN.jsonl | heldout/heldout.jsonl

Accounting invariant, checked at the end of every build, per source and in total::

    documents.read  == documents.written  + sum(documents.rejected.values())
    characters.read == characters.written + sum(characters.rejected.values())

where characters are *input* characters (as read, before cleaning) so the identity is exact;
``characters.output`` is what the written documents hold after cleaning.

Example::

    python -m corpora build --config configs/corpora/build.yaml --data_dir ../shared/data --out_dir artifacts/corpus
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from corpora import readers
from corpora.clean import CleanConfig, clean_text, filter_reason, opencc_converter, wikitext_to_text
from corpora.dedup import DedupConfig, Deduplicator, minhash_signature, text_digest
from corpora.readers import Item, Rejection
from corpora.shards import HELDOUT_FILE, ShardWriter
from zhllama.artifacts import atomic_dir, atomic_write_json, atomic_write_text, sha256_file, write_meta
from zhllama.cli import UserError
from zhllama.config import to_dict

Format = Literal["wikiextractor", "wiki_xml", "squad", "baike", "jsonl", "text"]

#: What a directory given as a source path is expected to contain, per format.
FORMAT_PATTERNS: dict[str, tuple[str, ...]] = {
    "wikiextractor": ("*.jsonl", "*.json", "wiki_*"),
    "wiki_xml": ("*.xml.bz2", "*.xml"),
    "squad": ("*.json",),
    "baike": ("*.jsonl", "*.json"),
    "jsonl": ("*.jsonl",),
    "text": ("*.txt",),
}
MANIFEST_VERSION = 1
_LOGGED_PER_REASON = 3  # read-level rejections printed per source and reason; all are counted


@dataclass
class SourceConfig:
    """One input source: a name (the ``source`` field of every record), a format and its files.

    Example (YAML)::

        - {name: zhwiki, format: wikiextractor, paths: ["zhwiki/*.jsonl"]}
        - {name: news, format: jsonl, paths: [/data/news], text_field: content}
    """

    name: str
    """Source name: recorded in each output record and keyed in the manifest."""
    format: Format
    """``wikiextractor`` | ``wiki_xml`` (pages-articles .xml.bz2) | ``squad`` | ``baike`` | ``jsonl`` | ``text``."""
    paths: list[str]
    """Files, directories or globs; relative ones are resolved against ``data_dir``."""
    text_field: str = "text"
    """``jsonl`` only: the key holding the text."""
    id_field: str = "id"
    """``jsonl``/``wikiextractor``: the key holding a document id (else the line number is used)."""
    text_unit: Literal["paragraph", "line"] = "paragraph"
    """``text`` only: a document per blank-line-separated paragraph, or per line."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"source name must be non-empty without '/', got {self.name!r}")
        if not self.paths:
            raise ValueError(f"source {self.name!r}: paths is empty")


def default_sources() -> list[SourceConfig]:
    """All of ``shared/data``: zhwiki WikiExtractor JSON lines, CMRC2018 and DRCD SQuAD JSON."""
    return [
        SourceConfig("zhwiki", "wikiextractor", ["zhwiki/*.jsonl"]),
        SourceConfig("cmrc2018", "squad", ["cmrc2018/*.json"]),
        SourceConfig("drcd", "squad", ["drcd/*.json"]),
    ]


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
        if self.shard_max_documents < 1 or self.shard_max_bytes < 1 or self.batch_documents < 1:
            raise ValueError("shard_max_documents, shard_max_bytes and batch_documents must be >= 1")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (0 = all cores), got {self.num_workers}")
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        if not self.sources:
            raise ValueError("sources is empty")


# ---------------------------------------------------------------------------------------------
# Inputs


def resolve_source_files(src: SourceConfig, data_dir: Path) -> list[Path]:
    """The files of a source, sorted; fatal ``UserError`` if a path is missing or matches nothing.

    A directory is expanded recursively with the format's patterns (``*.json`` for ``squad``,
    ``wiki_*`` and ``*.jsonl`` for ``wikiextractor``...).

    >>> resolve_source_files(SourceConfig("drcd", "squad", ["drcd"]), Path("../shared/data"))  # doctest: +SKIP
    [PosixPath('../shared/data/drcd/DRCD_dev.json'), PosixPath('../shared/data/drcd/DRCD_test.json')]
    """
    files: list[Path] = []
    for pattern in src.paths:
        p = Path(pattern).expanduser()
        p = p if p.is_absolute() else data_dir / p
        if glob.has_magic(str(p)):
            matched = sorted(Path(m) for m in glob.glob(str(p)) if Path(m).is_file())
            if not matched:
                raise UserError(f"source {src.name!r}: no files match {p}")
            files.extend(matched)
        elif p.is_dir():
            # Recursive: WikiExtractor writes extracted/AA/wiki_00, extracted/AB/wiki_00, ...
            matched = sorted({f for pat in FORMAT_PATTERNS[src.format] for f in p.rglob(pat) if f.is_file()})
            if not matched:
                want = " or ".join(FORMAT_PATTERNS[src.format])
                raise UserError(f"source {src.name!r}: directory {p} has no {want} files (format {src.format})")
            files.extend(matched)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"source {src.name!r}: path not found: {p}")
    return list(dict.fromkeys(files))


def read_file(src: SourceConfig, path: Path, max_line_bytes: int) -> Iterator[Item]:
    """Dispatch one file to the reader of its source's format."""
    if src.format == "wikiextractor":
        return readers.read_jsonl(path, "text", src.id_field or None, max_line_bytes)
    if src.format == "jsonl":
        return readers.read_jsonl(path, src.text_field, src.id_field or None, max_line_bytes)
    if src.format == "baike":
        return readers.read_baike(path, max_line_bytes)
    if src.format == "squad":
        return readers.read_squad(path)
    if src.format == "text":
        return readers.read_plain_text(path, src.text_unit, max_line_bytes)
    if src.format == "wiki_xml":
        return readers.read_wiki_xml(path)
    raise UserError(f"source {src.name!r}: unknown format {src.format!r}")


# ---------------------------------------------------------------------------------------------
# Worker side: pure, picklable


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


def process_item(source_index: int, item: Item, clean_cfg: CleanConfig, dedup_cfg: DedupConfig) -> Processed:
    """Clean + filter one reader item and compute its dedup keys (pure; runs in a worker).

    >>> p = process_item(0, readers.RawDoc("a:1", "數學是研究數量、結構以及空間等概念的一門學科。"), CleanConfig(min_chars=5), DedupConfig())
    >>> p.text, p.reason
    ('数学是研究数量、结构以及空间等概念的一门学科。', None)
    """
    if isinstance(item, Rejection):
        return Processed(source_index, item.doc_id, item.chars, reason=item.reason, detail=item.detail)
    text = item.text
    if item.markup == "wikitext":
        try:
            text = wikitext_to_text(text, item.title)
        except Exception as e:  # wikiextractor on hostile markup: count it, don't die
            return Processed(source_index, item.doc_id, len(item.text), reason="wikitext_error", detail=repr(e)[:200])
    text = clean_text(text, clean_cfg)
    reason = filter_reason(text, clean_cfg)
    if reason is not None:
        return Processed(source_index, item.doc_id, len(item.text), reason=reason)
    signature = minhash_signature(text, dedup_cfg) if dedup_cfg.near else None
    return Processed(source_index, item.doc_id, len(item.text), text=text, digest=text_digest(text), signature=signature)


def _process_batch(batch: list[tuple[int, Item]], clean_cfg: CleanConfig, dedup_cfg: DedupConfig) -> list[Processed]:
    return [process_item(i, item, clean_cfg, dedup_cfg) for i, item in batch]


def _warm_worker(clean_cfg: CleanConfig, dedup_cfg: DedupConfig) -> None:
    # Build the OpenCC converter and MinHash permutations once per process, not per batch.
    if clean_cfg.t2s:
        opencc_converter(clean_cfg.opencc_config)
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
# Accounting


@dataclass
class SourceStats:
    """Counts of one source; ``read == written + rejected`` for documents and input characters."""

    documents_read: int = 0
    """Documents (and rejected input units) read."""
    characters_read: int = 0
    """Input characters read."""
    documents_written: dict[str, int] = field(default_factory=lambda: {"train": 0, "heldout": 0})
    """Documents written, per split."""
    characters_written: int = 0
    """Input characters of the written documents."""
    characters_output: int = 0
    """Characters of the written documents after cleaning (what the shards hold)."""
    documents_rejected: collections.Counter = field(default_factory=collections.Counter)
    """Rejected documents by reason."""
    characters_rejected: collections.Counter = field(default_factory=collections.Counter)
    """Input characters of rejected documents by reason."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """A few ``file:line: detail`` examples per rejection reason."""

    def add(self, other: SourceStats) -> None:
        """Accumulate ``other`` into this (for totals)."""
        self.documents_read += other.documents_read
        self.characters_read += other.characters_read
        for k, v in other.documents_written.items():
            self.documents_written[k] = self.documents_written.get(k, 0) + v
        self.characters_written += other.characters_written
        self.characters_output += other.characters_output
        self.documents_rejected.update(other.documents_rejected)
        self.characters_rejected.update(other.characters_rejected)

    def to_dict(self) -> dict:
        """The manifest's view: ``{"documents": {...}, "characters": {...}}``."""
        written = sum(self.documents_written.values())
        return {
            "documents": {
                "read": self.documents_read, "written": written, **self.documents_written,
                "rejected": dict(sorted(self.documents_rejected.items())),
                "rejected_total": sum(self.documents_rejected.values()),
            },
            "characters": {
                "read": self.characters_read, "written": self.characters_written,
                "rejected": dict(sorted(self.characters_rejected.items())),
                "rejected_total": sum(self.characters_rejected.values()),
                "output": self.characters_output,
            },
        }


def check_accounting(counts: dict, where: str) -> None:
    """Raise ``AssertionError`` unless read == written + rejected for documents and characters."""
    for unit in ("documents", "characters"):
        c = counts[unit]
        if c["read"] != c["written"] + sum(c["rejected"].values()):
            raise AssertionError(f"{where}: {unit} read {c['read']} != written {c['written']} + rejected {c['rejected']}")


def heldout_split(digest: bytes, fraction: float) -> str:
    """``"heldout"`` for a stable ``fraction`` of texts (by their BLAKE2b digest), else ``"train"``.

    Same text -> same split, on every run and machine.

    >>> heldout_split(text_digest("数学"), 0.0), heldout_split(text_digest("数学"), 0.999999)
    ('train', 'heldout')
    """
    return "heldout" if int.from_bytes(digest[:8], "big") / 2.0**64 < fraction else "train"


# ---------------------------------------------------------------------------------------------
# The build


def display_names(files: list[Path], data_dir: Path) -> dict[Path, str]:
    """How a source's files are named in document ids: the file name, or the path below
    ``data_dir`` when two files share a name (WikiExtractor's AA/wiki_00 and AB/wiki_00).

    >>> display_names([Path("d/AA/wiki_00"), Path("d/AB/wiki_00")], Path("d"))
    {PosixPath('d/AA/wiki_00'): 'AA/wiki_00', PosixPath('d/AB/wiki_00'): 'AB/wiki_00'}
    """
    names = [f.name for f in files]
    if len(set(names)) == len(names):
        return {f: f.name for f in files}
    return {f: _rel(f, data_dir) for f in files}


def _stream_items(cfg: BuildConfig, files: list[list[Path]], file_counts: dict[Path, int]) -> Iterator[tuple[int, Item]]:
    for si, src in enumerate(cfg.sources):
        names = display_names(files[si], Path(cfg.data_dir))
        for path in files[si]:
            n = 0
            rename = names[path] != path.name  # readers prefix ids with path.name; keep ids unique
            for item in read_file(src, path, cfg.max_line_bytes):
                n += 1
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


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def build_corpus(cfg: BuildConfig, out_dir: Path) -> dict:
    """Read every source, clean, deduplicate, split and write shards into ``out_dir`` (an empty dir).

    Returns the manifest dict (also written as ``out_dir/manifest.json``). Raises ``UserError``
    for fatal input problems (see :mod:`corpora.readers`).
    """
    t0 = time.perf_counter()
    data_dir = Path(cfg.data_dir)
    files = [resolve_source_files(src, data_dir) for src in cfg.sources]
    if cfg.clean.t2s:  # fail here with one line, not in every pool worker with a traceback
        try:
            opencc_converter(cfg.clean.opencc_config)
        except Exception as e:
            raise UserError(f"clean.opencc_config: cannot load OpenCC config {cfg.clean.opencc_config!r} ({e})") from None
    input_bytes = sum(f.stat().st_size for fs in files for f in fs)
    num_workers = cfg.num_workers or (os.cpu_count() or 1)
    stats = [SourceStats() for _ in cfg.sources]
    dedup = Deduplicator(cfg.dedup)
    train = ShardWriter(out_dir / "train", cfg.shard_max_documents, cfg.shard_max_bytes)
    heldout = ShardWriter(out_dir / Path(HELDOUT_FILE).parent, 1, 1, single_file=Path(HELDOUT_FILE).name)
    file_counts: dict[Path, int] = {}
    logged: collections.Counter = collections.Counter()

    batches = _batched(_stream_items(cfg, files, file_counts), cfg.batch_documents)
    work = functools.partial(_process_batch, clean_cfg=cfg.clean, dedup_cfg=cfg.dedup)
    bar = tqdm(unit="doc", desc="corpus", disable=not cfg.progress, file=sys.stderr, mininterval=0.5)
    for results in ordered_map(work, batches, num_workers, _warm_worker, (cfg.clean, cfg.dedup)):
        for r in results:
            st = stats[r.source_index]
            name = cfg.sources[r.source_index].name
            st.documents_read += 1
            st.characters_read += r.input_chars
            reason, detail = r.reason, r.detail
            if reason is None:
                assert r.text is not None
                reason = dedup.check(f"{name}/{r.doc_id}", r.text, r.signature, r.digest)
                detail = f"duplicate of {dedup.match}" if reason else ""
            if reason is not None:
                st.documents_rejected[reason] += 1
                st.characters_rejected[reason] += r.input_chars
                examples = st.examples.setdefault(reason, [])
                if len(examples) < 5:
                    examples.append(f"{r.doc_id}: {detail}" if detail else r.doc_id)
                if r.detail and logged[(name, reason)] < _LOGGED_PER_REASON:  # read-level problems
                    logged[(name, reason)] += 1
                    tqdm.write(f"warning: {name}: {r.doc_id}: {reason} ({r.detail})", file=sys.stderr)
                continue
            assert r.text is not None and r.digest is not None
            split = heldout_split(r.digest, cfg.heldout_fraction)
            (heldout if split == "heldout" else train).write({"id": f"{name}/{r.doc_id}", "source": name, "text": r.text})
            st.documents_written[split] += 1
            st.characters_written += r.input_chars
            st.characters_output += len(r.text)
        bar.update(len(results))
    bar.close()
    train.close()
    heldout.close()
    elapsed_s = time.perf_counter() - t0

    warnings = [f"{_rel(f, data_dir)}: empty file (no documents)" for fs in files for f in fs if file_counts.get(f, 0) == 0]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    total = SourceStats()
    sources_out = {}
    for src, fs, st in zip(cfg.sources, files, stats, strict=True):
        total.add(st)
        counts = st.to_dict()
        check_accounting(counts, f"source {src.name}")
        sources_out[src.name] = {
            "format": src.format,
            "files": [
                {"path": _rel(f, data_dir), "bytes": f.stat().st_size, "documents_read": file_counts.get(f, 0),
                 **({"sha256": sha256_file(f)} if cfg.hash_inputs else {})}
                for f in fs
            ],
            **counts,
            "rejected_examples": st.examples,
        }
    totals = total.to_dict()
    check_accounting(totals, "total")
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "accounting": "documents/characters: read == written + sum(rejected); characters are input "
                      "characters (before cleaning); characters.output = characters in the shards",
        "sources": sources_out,
        "total": totals,
        "splits": {
            "train": {"documents": train.documents, "characters": train.characters, "bytes": train.bytes,
                      "files": [_rel(p, out_dir) for p in train.paths]},
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


def manifest_markdown(manifest: dict) -> str:
    """The manifest as a Markdown report: one row per source (+ total), rejections by reason.

    >>> md = manifest_markdown({"sources": {}, "total": SourceStats().to_dict(), "warnings": [],
    ...                         "splits": {"train": {"documents": 0, "characters": 0, "files": []},
    ...                                    "heldout": {"documents": 0, "characters": 0, "files": []}}})
    >>> md.splitlines()[0]
    '# Corpus report'
    """
    def row(name: str, c: dict) -> str:
        d, ch = c["documents"], c["characters"]
        rej = ", ".join(f"{k} {v:,}" for k, v in sorted(d["rejected"].items(), key=lambda kv: -kv[1])) or "-"
        return (f"| {name} | {d['read']:,} | {d['written']:,} | {d['train']:,} | {d['heldout']:,} | {rej} | "
                f"{ch['read']:,} | {ch['output']:,} |")

    lines = [
        "# Corpus report", "",
        "Documents and characters per source. Identity (checked by the build): read = written + rejected, for",
        "documents and for input characters; *chars out* is what the shards hold after cleaning.", "",
        "| source | docs read | docs written | train | heldout | rejected (by reason) | chars read | chars out |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
        *(row(name, src) for name, src in manifest["sources"].items()),
        row("**total**", manifest["total"]), "",
        "| split | documents | characters | files |", "|---|---:|---:|---|",
        *(f"| {k} | {v['documents']:,} | {v['characters']:,} | {', '.join(v['files'])} |"
          for k, v in manifest["splits"].items()),
    ]
    examples = [(name, reason, ex) for name, src in manifest["sources"].items()
                for reason, exs in src.get("rejected_examples", {}).items() for ex in exs[:2]]
    if examples:
        lines += ["", "## Rejection examples", "", *(f"- {name} / {reason}: `{ex}`" for name, reason, ex in examples)]
    if manifest["warnings"]:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in manifest["warnings"])]
    return "\n".join(lines) + "\n"


def summary_line(manifest: dict, out_dir: Path) -> str:
    """One line: documents read / written (train, heldout) / rejected by reason, chars, speed."""
    d, c, run = manifest["total"]["documents"], manifest["total"]["characters"], manifest["_run"]
    rej = ", ".join(f"{k} {v:,}" for k, v in sorted(d["rejected"].items(), key=lambda kv: -kv[1])) or "none"
    mb_s = run["input_bytes"] / 1e6 / max(run["elapsed_s"], 1e-9)
    return (
        f"corpus: read {d['read']:,} docs ({c['read']:,} chars), wrote {d['written']:,} "
        f"(train {d['train']:,} / heldout {d['heldout']:,}, {c['output']:,} chars), rejected {d['rejected_total']:,} "
        f"({rej}) in {run['elapsed_s']:.1f} s ({d['read'] / max(run['elapsed_s'], 1e-9):,.0f} docs/s, {mb_s:.2f} MB/s, "
        f"{run['num_workers']} workers) -> {out_dir}"
    )


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
