"""Benchmark the corpora stage on the default data: documents/s, MB/s and peak memory.

Runs the default build (configs/corpora/build.yaml) twice in this process's children: with one
worker (the baseline: cleaning in the main process) and with all cores, and prints the speed-up.
Peak memory is the largest summed RSS of the build process tree, sampled every 20 ms.

    .venv/bin/python bench/corpus.py [--data_dir ../shared/data] [--repeats 1]
    .venv/bin/python bench/corpus.py --conversions   # what t2s/tw2s/tw2sp/hk2s/hk2sp do to the Traditional sources

Writes artifacts/bench/corpus.json (or corpus_conversions.json).
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
    """Sample the summed RSS of this process and its children in a thread; ``peak_bytes`` after."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
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


def _one_build(data_dir: str, num_workers: int, conn) -> None:
    # A fresh child per measurement: imports, OpenCC dictionaries and caches all count, and one
    # run's memory does not inflate the next run's peak.
    cfg = load_config(BuildConfig, REPO / "configs" / "corpora" / "build.yaml",
                      {"data_dir": data_dir, "num_workers": num_workers, "progress": False})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = build_corpus(cfg, Path(tmp))
        elapsed_s = time.perf_counter() - t0
    conn.send({"elapsed_s": elapsed_s, "input_bytes": manifest["_run"]["input_bytes"],
               "documents_read": manifest["total"]["documents"]["read"],
               "documents_written": manifest["total"]["documents"]["written"],
               "characters_read": manifest["total"]["characters"]["read"]})


def measure(data_dir: str, num_workers: int) -> dict:
    """Build once in a child process; return timings, throughput and peak RSS of the tree."""
    recv, send = multiprocessing.Pipe(duplex=False)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with PeakRss() as mem:
        proc = multiprocessing.Process(target=_one_build, args=(data_dir, num_workers, send))
        proc.start()
        result = recv.recv()
        proc.join()
    if proc.exitcode != 0:
        raise SystemExit(f"build with num_workers={num_workers} failed (exit {proc.exitcode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the build child and its pool workers
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    s = result["elapsed_s"]
    return {
        "num_workers": num_workers, **result,
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data_dir", default=str(default_data_dir()))
    ap.add_argument("--repeats", type=int, default=1, help="runs per setting; the fastest is kept")
    ap.add_argument("--out", default=str(REPO / "artifacts" / "bench" / "corpus.json"))
    ap.add_argument("--conversions", action="store_true", help="measure OpenCC conversions instead of speed")
    args = ap.parse_args()
    if args.conversions:
        return conversions(args.data_dir, str(Path(args.out).with_name("corpus_conversions.json")))
    cores = os.cpu_count() or 1
    settings = list(dict.fromkeys([1, cores]))
    runs: dict[int, list[dict]] = {w: [] for w in settings}
    for _ in range(args.repeats):  # interleaved, so a burst of load elsewhere hits both settings
        for workers in settings:
            runs[workers].append(measure(args.data_dir, workers))
    rows = {w: min(rs, key=lambda r: r["elapsed_s"]) for w, rs in runs.items()}
    for workers, r in rows.items():
        print(f"num_workers={workers}: {r['elapsed_s']:.2f} s, {r['documents_per_s']:,.0f} docs/s, "
              f"{r['mb_per_s']:.2f} MB/s, {r['chars_per_s'] / 1e6:.2f} M chars/s, peak RSS {r['peak_rss_mb']:.0f} MB, "
              f"CPU {r['cpu_s']:.1f} s ({r['cpu_s_per_mb']:.2f} CPU s/MB)")
    base, best = rows[1], rows[cores]
    speedup = base["elapsed_s"] / best["elapsed_s"]
    print(f"speed-up of {cores} workers vs 1 worker: {speedup:.2f}x wall "
          f"(CPU {best['cpu_s'] / base['cpu_s']:.2f}x, peak memory {best['peak_rss_mb'] / base['peak_rss_mb']:.2f}x); "
          f"load average {os.getloadavg()[0]:.1f} on {cores} cores (wall ratios are only meaningful when it is low)")
    atomic_write_json(args.out, {
        "benchmark": "corpus", "data_dir": args.data_dir, "cpu_count": cores,
        "load_average_1min": os.getloadavg()[0], "baseline": base, "all_cores": best,
        "speedup_all_cores_vs_1": speedup, "versions": versions(),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
