"""The local engine (``engine: local``): every core of one machine on every step, bounded memory.

Three passes; the main process only plans, merges counts and copies lines the workers serialised::

    plan   (main)  corpora.units: every file, or parts of it (bz2 streams of a multistream dump,
                   ranges of lines); the plan depends on the inputs and unit_bytes only
    1 read (pool)  per unit: read, parse (XML, JSON), clean, convert, MinHash -> kept documents as
                   ready JSON lines (NNNNNN.pkl) and their dedup keys (corpora.dedup_sharded);
                   counts and rejections go back to the main process, merged in unit order
    2 dedup (pool) corpora.dedup_sharded.find_duplicates: partitioned by bucket key, then one
                   Deduplicator per group of linked documents: the decisions of the in-memory one
    3 write (main) units in order: drop the duplicates, held-out split, shards, manifest

Everything is numbered in input order and merged in that order, so the corpus (shards and manifest)
is byte-identical whatever ``num_workers``. Intermediate files live in ``out_dir/.work`` (about the
size of the output plus ~0.7 KB per document) and are removed at the end.

    >>> manifest = build_local(load_config(BuildConfig, "configs/corpora/build.yaml"), Path(tmp))   # doctest: +SKIP
"""
from __future__ import annotations

import bisect
import collections
import contextlib
import functools
import multiprocessing
import os
import pickle
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from corpora.build import (
    BuildConfig,
    SourceSettings,
    check_conversions,
    iter_file_items,
    ordered_map,
    process_item,
    warm_worker,
)
from corpora.dedup_sharded import REASONS, Decisions, UnitKeys, find_duplicates
from corpora.manifest import SourceStats
from corpora.output import CorpusOutput, output_record
from corpora.shards import record_line
from corpora.sources import resolve_source_files
from corpora.units import Unit, plan_units
from zhllama.artifacts import sha256_file

_LOGGED_PER_REASON = 3  # read-level rejections printed per source and reason; all are counted
_SPILL_BATCH = 256


@dataclass
class UnitResult:
    """What a read worker sends back for one unit (its documents went to disk)."""

    stats: SourceStats
    """Documents and characters read, rejections by reason (with the first examples)."""
    documents_read: int = 0
    """Input units read from the file part (for the per-file counts)."""
    truncated: bool = False
    """Whether the file's character budget cut it."""
    kept: int = 0
    """Documents that passed cleaning (spilled, to be deduplicated)."""
    logged: list[tuple[str, str, str]] = field(default_factory=list)
    """``(reason, doc_id, detail)`` of the first read-level problems per reason (printed by the main process)."""


def read_unit(task: tuple[int, Unit], cfg: BuildConfig, settings: tuple[SourceSettings, ...],
              work_dir: Path) -> UnitResult:
    """Pass 1 for one unit (in a worker): read, clean and sign its documents, spill the kept ones."""
    index, unit = task
    si = unit.source_index
    src = cfg.sources[si]
    result = UnitResult(SourceStats())
    stats, counts = result.stats, {}
    keys = UnitKeys(work_dir / f"{index:06d}", cfg.dedup)
    batch: list[tuple] = []
    with open(work_dir / f"{index:06d}.pkl", "wb") as spill:
        for item in iter_file_items(src, unit.path, unit.name, unit.budget, cfg.max_line_bytes, counts, unit.part):
            p = process_item(si, item, cfg.clean, cfg.dedup, settings[si])
            stats.documents_read += 1
            stats.characters_read += p.input_chars
            if p.reason is not None:
                stats.reject(p.reason, p.input_chars, f"{p.doc_id}: {p.detail}" if p.detail else p.doc_id)
                if p.detail and sum(r == p.reason for r, _, _ in result.logged) < _LOGGED_PER_REASON:
                    result.logged.append((p.reason, p.doc_id, p.detail))
                continue
            assert p.text is not None and p.digest is not None
            keys.add(p.digest, p.signature)
            line = record_line(output_record(src, p.doc_id, p.text, p.script))
            batch.append((p.doc_id, line, len(p.text), p.input_chars, p.script, p.detected, p.digest))
            if len(batch) >= _SPILL_BATCH:
                pickle.dump(batch, spill, protocol=pickle.HIGHEST_PROTOCOL)
                batch = []
        pickle.dump(batch, spill, protocol=pickle.HIGHEST_PROTOCOL)
    result.kept = keys.close()
    result.documents_read, result.truncated = counts["documents_read"], counts["truncated"]
    return result


def _task(task, **kw):
    # A pass-1 task: hash an input file (a Path) or read a unit ((index, Unit)).
    return sha256_file(task) if isinstance(task, Path) else read_unit(task, **kw)


def _spilled(path: Path) -> Iterator[tuple]:
    with open(path, "rb") as f:
        while True:
            try:
                yield from pickle.load(f)
            except EOFError:
                return


@contextlib.contextmanager
def worker_pool(num_workers: int, initializer, initargs: tuple):
    """A process pool for every pass (None: run in this process, after calling ``initializer``)."""
    initializer(*initargs)  # here first: forked workers inherit the imports and tables (~1 s each)
    if num_workers <= 1:
        yield None
        return
    with multiprocessing.get_context().Pool(num_workers, initializer=initializer, initargs=initargs) as pool:
        yield pool


def _example_matches(decisions: Decisions, unit_of_gid, units: list[Unit]) -> set[int]:
    """The documents named by the manifest's duplicate examples (the first 5 per source and reason)."""
    seen: collections.Counter = collections.Counter()
    needed = set()
    for gid, code, match in zip(decisions.gids.tolist(), decisions.codes.tolist(), decisions.matches.tolist(), strict=True):
        key = (units[unit_of_gid(gid)].source_index, code)
        if seen[key] < 5:
            seen[key] += 1
            needed.add(match)
    return needed


def build_local(cfg: BuildConfig, out_dir: Path) -> dict:
    """Build the corpus into ``out_dir`` with this machine's cores; returns the manifest."""
    t0 = time.perf_counter()
    files = [resolve_source_files(src, Path(cfg.data_dir)) for src in cfg.sources]
    check_conversions(cfg)
    num_workers = cfg.num_workers or (os.cpu_count() or 1)
    settings = tuple(SourceSettings.of(src) for src in cfg.sources)
    units = plan_units(cfg.sources, files, Path(cfg.data_dir), cfg.unit_bytes, cfg.max_chars_per_source)
    out = CorpusOutput(cfg, out_dir)
    work = out_dir / ".work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    times = {"plan_s": time.perf_counter() - t0}
    try:
        with worker_pool(num_workers, warm_worker, (cfg.dedup, settings)) as pool:
            mapper = functools.partial(ordered_map, num_workers=num_workers, pool=pool)
            kept, hashes, file_counts, truncated = _read_all(cfg, units, files, work, settings, mapper, out)
            times["read_s"] = time.perf_counter() - t0 - sum(times.values())
            prefixes = [work / f"{i:06d}" for i in range(len(units))]
            decisions = find_duplicates(prefixes, kept, cfg.dedup, mapper, n_partitions=num_workers)
            times["dedup_s"] = time.perf_counter() - t0 - sum(times.values())
        _write_all(cfg, units, kept, decisions, work, out)
        manifest = out.finish(files, file_counts, truncated, hashes=hashes)
        times["write_s"] = time.perf_counter() - t0 - sum(times.values())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest["_run"] = {"elapsed_s": time.perf_counter() - t0, "num_workers": num_workers, "units": len(units),
                        "input_bytes": sum(f.stat().st_size for fs in files for f in fs), **times}
    return manifest


def _read_all(cfg, units, files, work, settings, mapper, out: CorpusOutput):
    """Pass 1: every unit (and every input's sha256) in the pool; counts merged in unit order."""
    tasks: list = [f for fs in files for f in fs] if cfg.hash_inputs else []
    tasks += list(enumerate(units))
    hashes: dict[Path, str] = {}
    file_counts: dict[Path, int] = collections.Counter()
    truncated: set[Path] = set()
    kept: list[int] = []
    logged: collections.Counter = collections.Counter()
    work_fn = functools.partial(_task, cfg=cfg, settings=settings, work_dir=work)
    bar = tqdm(unit="doc", desc="corpus", disable=not cfg.progress, file=sys.stderr, mininterval=0.5)
    for task, r in zip(tasks, mapper(work_fn, tasks), strict=True):
        if isinstance(task, Path):
            hashes[task] = r
            continue
        unit = task[1]
        src = cfg.sources[unit.source_index]
        out.add_stats(unit.source_index, r.stats)
        file_counts[unit.path] += r.documents_read
        if r.truncated:
            truncated.add(unit.path)
        kept.append(r.kept)
        for reason, doc_id, detail in r.logged:
            if logged[(src.name, reason)] < _LOGGED_PER_REASON:
                logged[(src.name, reason)] += 1
                tqdm.write(f"warning: {src.name}: {doc_id}: {reason} ({detail})", file=sys.stderr)
        bar.update(r.stats.documents_read)
    bar.close()
    return kept, hashes, file_counts, truncated


def _write_all(cfg, units: list[Unit], kept: list[int], decisions: Decisions, work: Path, out: CorpusOutput) -> None:
    """Pass 3: the spilled documents in input order: duplicates counted, the rest to the shards."""
    bounds = [0]
    for n in kept:
        bounds.append(bounds[-1] + n)

    def unit_of_gid(gid: int) -> int:
        return bisect.bisect_right(bounds, gid) - 1

    needed = _example_matches(decisions, unit_of_gid, units)
    names: dict[int, str] = {}
    rejected = zip(decisions.gids.tolist(), decisions.codes.tolist(), decisions.matches.tolist(), strict=True)
    next_rejected = next(rejected, None)
    gid = 0
    for index, unit in enumerate(units):
        si = unit.source_index
        src = cfg.sources[si]
        for doc_id, line, text_chars, input_chars, script, detected, digest in _spilled(work / f"{index:06d}.pkl"):
            if gid in needed:
                names[gid] = f"{src.name}/{doc_id}"
            if next_rejected is not None and next_rejected[0] == gid:
                _, code, match = next_rejected
                out.reject(si, REASONS[code], input_chars, f"{doc_id}: duplicate of {names.get(match, match)}")
                next_rejected = next(rejected, None)
            else:
                out.keep_line(si, line, text_chars, input_chars, script, detected, digest)
            gid += 1
