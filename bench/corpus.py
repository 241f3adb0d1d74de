"""Benchmark the corpora stage: speed and memory of both engines, dedup state per document, conversions.

Default: the default build (configs/corpora/build.yaml, all of ../shared/data) in child processes,
with the local engine at 1, 2 and all workers (1 = the baseline: cleaning in the main process) and
the datatrove engine at 1 and 2 workers; docs/s, MB/s, peak RSS of the process tree (sampled every
20 ms), CPU seconds. ``--dedup``: memory of the dedup state per kept document at 1x/4x/16x (local
engine: in-memory LSH; datatrove engine: peak RSS of the build, bytes on disk).

    .venv/bin/python bench/corpus.py [--data_dir ../shared/data] [--repeats 1]
    .venv/bin/python bench/corpus.py --dedup
    .venv/bin/python bench/corpus.py --conversions   # what t2s/tw2s/tw2sp/hk2s/hk2sp do to the Traditional sources

Writes artifacts/bench/corpus.json (corpus_dedup.json, corpus_conversions.json).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from corpora.build import BuildConfig, build_corpus  # noqa: E402
from zhllama import default_data_dir  # noqa: E402
from zhllama.artifacts import atomic_write_json, versions  # noqa: E402
from zhllama.config import load_config  # noqa: E402


class PeakRss:
    """Sample the summed RSS of this process's children (the build tree) in a thread; ``peak_bytes`` after."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in me.children(recursive=True):  # the build runs in a child: its tree only
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _one_build(data_dir: str, overrides: dict, conn) -> None:
    # A fresh child per measurement: imports, OpenCC dictionaries and caches all count, and one
    # run's memory does not inflate the next run's peak.
    with tempfile.TemporaryDirectory() as tmp:
        workers = overrides.pop("datatrove_workers", 0)
        cfg = load_config(BuildConfig, REPO / "configs" / "corpora" / "build.yaml",
                          {"data_dir": data_dir, "progress": False, "hash_inputs": False,
                           "datatrove": {"work_dir": str(Path(tmp) / "work"), "workers": workers}, **overrides})
        t0 = time.perf_counter()
        manifest = build_corpus(cfg, Path(tmp) / "out")
        elapsed_s = time.perf_counter() - t0
        work = Path(tmp) / "work" / "minhash"
        disk = sum(f.stat().st_size for f in work.rglob("*") if f.is_file()) if work.is_dir() else 0
    conn.send({"elapsed_s": elapsed_s, "input_bytes": manifest["_run"]["input_bytes"],
               "documents_read": manifest["total"]["documents"]["read"],
               "documents_written": manifest["total"]["documents"]["written"],
               "characters_read": manifest["total"]["characters"]["read"], "minhash_disk_bytes": disk})


def measure(data_dir: str, num_workers: int, **overrides) -> dict:
    """Build once in a child process; return timings, throughput and peak RSS of the tree."""
    recv, send = multiprocessing.Pipe(duplex=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    overrides = {"num_workers": num_workers, **overrides}
    if overrides.get("engine") == "datatrove":
        overrides["datatrove_workers"] = num_workers
    with PeakRss() as mem:
        proc = multiprocessing.Process(target=_one_build, args=(data_dir, overrides, send))
        proc.start()
        result = recv.recv()
        proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"build with num_workers={num_workers} failed (exit {proc.exitcode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the build child and its pool workers
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    s = result["elapsed_s"]
    return {
        "num_workers": num_workers, "engine": overrides.get("engine", "local"), **result,
        "documents_per_s": result["documents_read"] / s,
        "mb_per_s": result["input_bytes"] / 1e6 / s,
        "chars_per_s": result["characters_read"] / s,
        "peak_rss_mb": mem.peak_bytes / 1e6,
        # CPU seconds of the whole tree (imports included): unlike wall time, barely moved by
        # other processes sharing the cores.
        "cpu_s": cpu_s,
        "cpu_s_per_mb": cpu_s / (result["input_bytes"] / 1e6),
    }


def conversions(data_dir: str, out: str) -> int:
    """Apply each Simplified-target OpenCC conversion to every Traditional source of build.yaml."""
    from corpora.build import read_file, resolve_source_files
    from corpora.readers import RawDoc
    from corpora.scripts import TO_SIMPLIFIED, conversion_stats

    cfg = load_config(BuildConfig, REPO / "configs" / "corpora" / "build.yaml", {"data_dir": data_dir})
    result = {}
    for src in cfg.sources:
        if src.script != "traditional":
            continue
        texts = [item.text for f in resolve_source_files(src, Path(data_dir))
                 for item in read_file(src, f, cfg.max_line_bytes) if isinstance(item, RawDoc)]
        stats = conversion_stats(texts, TO_SIMPLIFIED)
        result[src.name] = {"domain": src.domain, **stats}
        print(f"{src.name} ({src.domain}, {stats['none']['chars']:,} chars): " + "; ".join(
            f"{c} {v['changed_share']:.1%} changed, 著 {v['zhuo_particle']}, TW terms {v['taiwan_terms']}, "
            f"Trad-only left {v['traditional_only_chars']}" for c, v in stats.items()))
    atomic_write_json(out, {"benchmark": "corpus_conversions", "data_dir": data_dir, "sources": result,
                            "versions": versions()})
    print(f"wrote {out}")
    return 0


def synthetic_data(root: Path, n_docs: int, seed: int = 0) -> Path:
    """``n_docs`` distinct ~300-character documents drawn from the real corpus's characters (no two
    near-duplicates: the dedup state grows with every one), as one JSONL source."""
    import json
    import random

    news = default_data_dir() / "domains" / "news" / "cofacts_tw.jsonl"
    chars = "".join(json.loads(line)["text"] for line in open(news, encoding="utf-8") if line.strip())
    chars = [c for c in chars if "\u4e00" <= c <= "\u9fff"]
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "synthetic.jsonl", "w", encoding="utf-8") as f:
        for _ in range(n_docs):
            f.write(json.dumps({"text": "".join(rng.choices(chars, k=300))}, ensure_ascii=False) + "\n")
    return root


def dedup_memory(out: str) -> int:
    """Dedup state per kept document at 1x/4x/16x: local Deduplicator (tracemalloc) and datatrove engine."""
    import tracemalloc

    from corpora.dedup import DedupConfig, Deduplicator, minhash_signature

    base = 2500
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in (1, 4, 16):
            n = base * scale
            data = synthetic_data(Path(tmp) / f"x{scale}", n)
            # The datatrove build first, while this process is small (its RSS is part of the peak).
            source = [{"name": "s", "format": "jsonl", "paths": ["synthetic.jsonl"], "domain": "news", "script": "traditional"}]
            dt = measure(str(data), 2, engine="datatrove", sources=source, heldout_min_documents=0,
                         clean={"min_han_fraction": 0.0})
            texts = [line for line in open(data / "synthetic.jsonl", encoding="utf-8")]
            cfg = DedupConfig()
            sigs = [minhash_signature(t, cfg) for t in texts]
            tracemalloc.start()
            d = Deduplicator(cfg)
            for i, (t, sig) in enumerate(zip(texts, sigs, strict=True)):
                d.check(str(i), t, sig)
            state = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
            del d, sigs, texts
            row = {"scale": scale, "documents": n, "local_state_bytes_per_doc": state / n,
                   "datatrove_peak_rss_mb": dt["peak_rss_mb"], "datatrove_disk_bytes_per_doc": dt["minhash_disk_bytes"] / n,
                   "datatrove_docs_per_s": dt["documents_per_s"]}
            rows.append(row)
            print(f"{scale:>2}x ({n:,} docs): local dedup state {row['local_state_bytes_per_doc']:,.0f} B/doc; "
                  f"datatrove engine peak RSS {row['datatrove_peak_rss_mb']:.0f} MB, "
                  f"{row['datatrove_disk_bytes_per_doc']:,.0f} B/doc on disk, {row['datatrove_docs_per_s']:,.0f} docs/s")
    atomic_write_json(out, {"benchmark": "corpus_dedup", "rows": rows, "versions": versions()})
    print(f"wrote {out}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=str(default_data_dir()))
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting; the fastest is kept")
    ap.add_argument("--out", default=str(REPO / "artifacts" / "bench" / "corpus.json"))
    ap.add_argument("--conversions", action="store_true", help="measure OpenCC conversions instead of speed")
    ap.add_argument("--dedup", action="store_true", help="measure dedup state per document at 1x/4x/16x")
    args = ap.parse_args()
    if args.conversions:
        return conversions(args.data_dir, str(Path(args.out).with_name("corpus_conversions.json")))
    if args.dedup:
        return dedup_memory(str(Path(args.out).with_name("corpus_dedup.json")))
    cores = os.cpu_count() or 1
    settings = [("local", w) for w in dict.fromkeys([1, 2, cores])] + [("datatrove", w) for w in dict.fromkeys([1, 2])]
    runs: dict[tuple, list[dict]] = {k: [] for k in settings}
    for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every setting
        for engine, workers in settings:
            runs[(engine, workers)].append(measure(args.data_dir, workers, engine=engine))
    rows = {k: min(rs, key=lambda r: r["elapsed_s"]) for k, rs in runs.items()}
    for (engine, workers), r in rows.items():
        print(f"{engine} num_workers={workers}: {r['elapsed_s']:.2f} s, {r['documents_per_s']:,.0f} docs/s, "
              f"{r['mb_per_s']:.2f} MB/s, {r['chars_per_s'] / 1e6:.2f} M chars/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"CPU {r['cpu_s']:.1f} s ({r['cpu_s_per_mb']:.2f} CPU s/MB)")
    base, best = rows[("local", 1)], rows[("local", cores)]
    speedup = base["elapsed_s"] / best["elapsed_s"]
    print(f"speed-up of {cores} workers vs 1 worker: {speedup:.2f}x wall "
          f"(CPU {best['cpu_s'] / base['cpu_s']:.2f}x, peak memory {best['peak_rss_mb'] / base['peak_rss_mb']:.2f}x); "
          f"load average {os.getloadavg()[0]:.1f} on {cores} cores (wall ratios are only meaningful when it is low)")
    atomic_write_json(args.out, {
        "benchmark": "corpus", "data_dir": args.data_dir, "cpu_count": cores,
        "load_average_1min": os.getloadavg()[0], "baseline": base, "all_cores": best,
        "runs": [r for r in rows.values()],
        "speedup_all_cores_vs_1": speedup, "versions": versions(),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
