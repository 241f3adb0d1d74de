"""The scale path: the corpus build as a datatrove pipeline (local, Slurm executors).

Same readers, cleaners, conversions and output as the local engine; what changes is who runs
them and how duplicates are found. Four datatrove stages, then the shared output step::

    1 (tasks T)  ReadClean -> WriteCleaned -> CharMinhashSignature   read + clean + convert a share of
                                                                        the input files, write cleaned docs
                                                                        and MinHash signatures, per task
    2 (tasks B)  MinhashDedupBuckets                                   one task per LSH band: sort + match
    3 (tasks 1)  MinhashDedupCluster                                   union-find over the matches
    4 (tasks T)  ReadCleaned -> MinhashDedupFilter -> WriteKept         drop all but one per cluster
    collect      corpora.output.CorpusOutput                           held-out split, shards, manifest

Every stage's state is on disk (``datatrove.work_dir``), so memory per task is bounded by one
input file and one band's sorted signatures, whatever the corpus size. Accounting: each task of
stage 1 writes what it read and rejected (``accounting/NNNNN.json``); stage 4 writes the removed
duplicates (``removed/``); collect checks read == written + rejected as the local engine does.
Differences from the local engine: duplicates are found across all tasks by LSH band collisions
(no second check of the estimated Jaccard, so a few more near-duplicate removals), exact
duplicates are counted as ``near_duplicate`` (Jaccard 1), and output order is task by task.

    python -m corpora build --engine datatrove --datatrove.workers 2
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from datatrove.data import Document
from datatrove.executor import LocalPipelineExecutor
from datatrove.io import get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.minhash import (
    MinhashConfig,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.writers import JsonlWriter
from datatrove.utils.hashing import HashConfig, create_hash_func

from corpora import units
from corpora.build import (
    BuildConfig,
    SourceSettings,
    check_conversions,
    iter_file_items,
    process_item,
)
from corpora.dedup import DedupConfig, shingle_hashes, text_digest
from corpora.output import CorpusOutput
from corpora.shards import iter_jsonl_records
from corpora.sources import resolve_source_files
from zhllama.artifacts import atomic_write_json


def plan_units(cfg: BuildConfig) -> list[tuple[int, str, str, int]]:
    """Every input file as ``(source index, path, display name, character budget)``, in config order
    (a datatrove task reads whole files: no parts, unlike the local engine)."""
    files = [resolve_source_files(src, Path(cfg.data_dir)) for src in cfg.sources]
    whole = units.plan_units(cfg.sources, files, Path(cfg.data_dir), sys.maxsize, cfg.max_chars_per_source)
    return [(u.source_index, str(u.path), u.name, u.budget) for u in whole]


def minhash_config(cfg: BuildConfig) -> MinhashConfig:
    """Bands x rows for ``dedup.near_threshold`` within ``dedup.num_perm`` hashes (datasketch's optimum)."""
    from datasketch.lsh import _optimal_param

    bands, rows = _optimal_param(cfg.dedup.near_threshold, cfg.dedup.num_perm, 0.5, 0.5)
    if cfg.datatrove.minhash_buckets:
        bands = cfg.datatrove.minhash_buckets
        rows = max(1, cfg.dedup.num_perm // bands)
    return MinhashConfig(n_grams=cfg.dedup.shingle_chars, num_buckets=bands, hashes_per_bucket=rows,
                         seed=cfg.dedup.seed, hash_config=HashConfig(precision=64, hash_fc="xxhash"))


class ReadClean(PipelineStep):
    """Stage 1: this task's share of the input files -> cleaned documents; read/rejected counts to disk."""

    name = "corpora read + clean"
    type = "📖 - READER"

    def __init__(self, cfg: BuildConfig, work_dir: Path) -> None:
        super().__init__()
        self.cfg, self.work_dir = cfg, work_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        cfg = self.cfg
        settings = [SourceSettings.of(s) for s in cfg.sources]
        no_dedup = DedupConfig(exact=False, near=False)  # datatrove's stages dedup across all tasks
        acct: dict = {"sources": {}, "files": {}}
        for si, path, name, budget in plan_units(cfg)[rank::world_size]:
            src = cfg.sources[si]
            a = acct["sources"].setdefault(str(si), {"read": [0, 0], "rejected": {}, "examples": {}})
            counts: dict = {}
            for item in iter_file_items(src, Path(path), name, budget, cfg.max_line_bytes, counts):
                p = process_item(si, item, cfg.clean, no_dedup, settings[si])
                a["read"][0] += 1
                a["read"][1] += p.input_chars
                if p.reason is not None:
                    r = a["rejected"].setdefault(p.reason, [0, 0])
                    r[0] += 1
                    r[1] += p.input_chars
                    ex = a["examples"].setdefault(p.reason, [])
                    if len(ex) < 5:
                        ex.append(f"{p.doc_id}: {p.detail}" if p.detail else p.doc_id)
                    continue
                self.stat_update("kept")
                yield Document(text=p.text, id=f"{src.name}/{p.doc_id}",
                               metadata={"si": si, "doc_id": p.doc_id, "input_chars": p.input_chars,
                                         "script": p.script, "detected": p.detected})
            acct["files"][path] = counts
        atomic_write_json(self.work_dir / "accounting" / f"{rank:05d}.json", acct)


def _write_docs(path: Path, docs):
    """Write documents as JSON lines (atomically) while passing them on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps({"id": doc.id, "text": doc.text, "metadata": doc.metadata}, ensure_ascii=False) + "\n")
            yield doc
    os.replace(tmp, path)


class WriteCleaned(PipelineStep):
    """Stage 1: keep this task's cleaned documents on disk (stage 4 reads them back, same order)."""

    name = "corpora write cleaned"
    type = "💽 - WRITER"

    def __init__(self, work_dir: Path, folder: str) -> None:
        super().__init__()
        self.work_dir, self.folder = work_dir, folder

    def run(self, data, rank: int = 0, world_size: int = 1):
        yield from _write_docs(self.work_dir / self.folder / f"{rank:05d}.jsonl", data)


class ReadCleaned(PipelineStep):
    """Stage 4: this task's cleaned documents, in the order stage 1 signed them."""

    name = "corpora read cleaned"
    type = "📖 - READER"

    def __init__(self, work_dir: Path) -> None:
        super().__init__()
        self.work_dir = work_dir

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for rec in iter_jsonl_records([self.work_dir / "cleaned" / f"{rank:05d}.jsonl"]):
            yield Document(text=rec["text"], id=rec["id"], metadata=rec["metadata"])


class CharMinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash stage 1 on *character* shingles (Chinese has no word spaces; its word
    tokenizer would need spaCy + jieba): the same shingles as the local engine's dedup."""

    def __init__(self, output_folder, config: MinhashConfig, shingle_chars: int) -> None:
        PipelineStep.__init__(self)  # the parent's __init__ loads a word tokenizer we do not use
        self.output_folder = get_datafolder(output_folder)
        self.config = config
        self.num_hashes = config.num_buckets * config.hashes_per_bucket
        self._parameters = None
        self._hash_func = create_hash_func(config.hash_config)
        self.language = "zh"
        self.word_tokenizer = None
        self.skip_existing_sigs = False
        self.shingle_chars = shingle_chars

    def get_shingles(self, text: str) -> np.ndarray:
        """Distinct character-shingle hashes as datatrove expects them: uint64, shape (n, 1)."""
        return shingle_hashes(text, self.shingle_chars).astype(np.uint64).reshape(-1, 1)


def collect(cfg: BuildConfig, work_dir: Path, tasks: int, out_dir: Path, extra: dict) -> dict:
    """The shared output step over the stages' files: counts, kept documents, removed duplicates."""
    out = CorpusOutput(cfg, out_dir)
    files = [resolve_source_files(src, Path(cfg.data_dir)) for src in cfg.sources]
    file_counts: dict[Path, int] = {}
    truncated: set[Path] = set()
    for rank in range(tasks):
        acct = json.loads((work_dir / "accounting" / f"{rank:05d}.json").read_text(encoding="utf-8"))
        for si, a in acct["sources"].items():
            st = out.stats[int(si)]
            st.documents_read += a["read"][0]
            st.characters_read += a["read"][1]
            for reason, (docs, chars) in a["rejected"].items():
                st.documents_rejected[reason] += docs
                st.characters_rejected[reason] += chars
                st.examples.setdefault(reason, []).extend(a["examples"].get(reason, [])[: 5 - len(st.examples.get(reason, []))])
        for path, counts in acct["files"].items():
            file_counts[Path(path)] = counts.get("documents_read", 0)
            if counts.get("truncated"):
                truncated.add(Path(path))
    for rank in range(tasks):
        removed = work_dir / "removed" / f"{rank:05d}.jsonl"
        for rec in iter_jsonl_records([removed]) if removed.is_file() else []:
            md = rec["metadata"]
            out.reject(md["si"], "near_duplicate", md["input_chars"], md["doc_id"])
        for rec in iter_jsonl_records([work_dir / "kept" / f"{rank:05d}.jsonl"]):
            md = rec["metadata"]
            out.keep(md["si"], md["doc_id"], rec["text"], md["input_chars"], md["script"], md["detected"],
                     text_digest(rec["text"]))
    return out.finish(files, file_counts, truncated, extra_config=extra)


def build_with_datatrove(cfg: BuildConfig, out_dir: Path) -> dict:
    """Run the four datatrove stages with the local executor, then collect into ``out_dir``."""
    t0 = time.perf_counter()
    check_conversions(cfg)
    units = plan_units(cfg)
    tasks = cfg.datatrove.tasks or len(units)
    workers = cfg.datatrove.workers or cfg.num_workers or (os.cpu_count() or 1)
    work_dir = Path(cfg.datatrove.work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)  # a fresh run: datatrove skips stages it finds completed
    mh = minhash_config(cfg)
    for executor in stages(cfg, work_dir, tasks, mh, lambda pipeline, n, name: LocalPipelineExecutor(
            pipeline, tasks=n, workers=min(workers, n), logging_dir=str(work_dir / "logs" / name))):
        executor.run()
    extra = {"engine": "datatrove", "datatrove_tasks": tasks,
             "minhash": {"bands": mh.num_buckets, "rows": mh.hashes_per_bucket}}
    manifest = collect(cfg, work_dir, tasks, out_dir, extra)
    manifest["_run"] = {"elapsed_s": time.perf_counter() - t0, "num_workers": workers,
                        "input_bytes": sum(Path(u[1]).stat().st_size for u in units)}
    return manifest


def stages(cfg: BuildConfig, work_dir: Path, tasks: int, mh: MinhashConfig, make) -> list:
    """The four stages as executors built by ``make(pipeline, tasks, name)`` (local or Slurm)."""
    sigs, buckets, clusters = (str(work_dir / "minhash" / d) for d in ("signatures", "buckets", "clusters"))
    return [
        make([ReadClean(cfg, work_dir), WriteCleaned(work_dir, "cleaned"),
              CharMinhashSignature(sigs, mh, cfg.dedup.shingle_chars)], tasks, "1-read-clean-sign"),
        make([MinhashDedupBuckets(sigs, buckets, config=mh)], mh.num_buckets, "2-buckets"),
        make([MinhashDedupCluster(buckets, clusters, config=mh)], 1, "3-cluster"),
        make([ReadCleaned(work_dir),
              MinhashDedupFilter(clusters, exclusion_writer=JsonlWriter(str(work_dir / "removed"),
                                                                        output_filename="${rank}.jsonl",
                                                                        compression=None)),
              WriteCleaned(work_dir, "kept")], tasks, "4-filter"),
    ]


class Collect(PipelineStep):
    """The collect step as a one-task datatrove stage (Slurm: runs after stage 4 in the same chain)."""

    name = "corpora collect"
    type = "💽 - WRITER"

    def __init__(self, cfg: BuildConfig, work_dir: Path, tasks: int, extra: dict) -> None:
        super().__init__()
        self.cfg, self.work_dir, self.tasks, self.extra = cfg, work_dir, tasks, extra

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from zhllama.artifacts import atomic_dir, write_meta

        with atomic_dir(Path(self.cfg.out_dir)) as tmp:
            manifest = collect(self.cfg, self.work_dir, self.tasks, tmp, self.extra)
            write_meta(tmp, config=self.cfg, inputs=manifest["inputs_sha256"])
        yield from ()


def submit_slurm(cfg: BuildConfig) -> str:
    """Submit the four stages + collect as dependent Slurm job arrays; returns the last job's id.

    ``datatrove.slurm`` passes SlurmPipelineExecutor arguments (``partition``, ``time``,
    ``cpus_per_task``, ``mem_per_cpu_gb``, ``sbatch_args``...); ``work_dir``, ``data_dir`` and
    ``out_dir`` must be on a filesystem every node sees. Not exercised by the tests (no Slurm here).
    """
    from datatrove.executor import SlurmPipelineExecutor

    check_conversions(cfg)
    tasks = cfg.datatrove.tasks or len(plan_units(cfg))
    work_dir = Path(cfg.datatrove.work_dir)
    mh = minhash_config(cfg)
    chain: list = []

    def make(pipeline, n, name):
        chain.append(SlurmPipelineExecutor(pipeline=pipeline, tasks=n, job_name=f"corpus-{name}",
                                           logging_dir=str(work_dir / "logs" / name),
                                           depends=chain[-1] if chain else None, **cfg.datatrove.slurm))
        return chain[-1]

    stages(cfg, work_dir, tasks, mh, make)
    extra = {"engine": "datatrove", "datatrove_tasks": tasks,
             "minhash": {"bands": mh.num_buckets, "rows": mh.hashes_per_bucket}}
    make([Collect(cfg, work_dir, tasks, extra)], 1, "5-collect")
    chain[-1].run()  # submits every stage it depends on first
    return str(getattr(chain[-1], "job_id", ""))
