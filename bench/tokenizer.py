"""Benchmark the vocabulary stage: training cost vs corpus size, HF encoding speed, merge vs classic merge.

(a) Chinese BPE training (``vocab.train``'s sampling + ``train_bpe``, configs/vocab/train.yaml) on
    1x, 4x, 16x the default corpus (the training shards streamed 1, 4, 16 times), each in a fresh
    subprocess that reports its own peak RSS. The reservoir holds as many sentences as 1x has, so
    memory must stay flat while only the streaming time grows. Baseline: the 1x run.
(b) Encoding throughput (characters per CPU second, one thread) of the merged HF tokenizer vs the base Llama-2
    HF tokenizer (same exporter) and transformers' own conversion of the base, same texts, same
    run. Target: merged >= 0.9x base.
(c) The classic score-0 merge (Chinese-LLaMA's) of the same Chinese model side by side with ours:
    non-Chinese lines whose ids change, dead pieces, held-out tokens/char, HF-exportable or not.

    .venv/bin/python bench/tokenizer.py [--corpus_dir artifacts/corpus] [--multiples 1 4 16]

Data: ``artifacts/corpus`` (train/ + heldout/) if present, else the shared data (every 20th
document held out). Writes artifacts/bench/tokenizer.json.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from zhllama import default_data_dir  # noqa: E402
from zhllama.artifacts import atomic_write_json, versions  # noqa: E402

NON_CHINESE_EXTRA = [
    "In 2023, the year after 1999, 12345678 people paid $3.50 for 2 items.",
    "def merge(base, zh):\n    return {k: v for k, v in zip(base, zh)}  # O(n)\n",
    "for (int i = 0; i < 1024; ++i) { total += values[i] * 0.5f; }",
    "    indented\twith\ttabs  and   runs of    spaces   ",
    "3.14159 2.71828 1e-9 0x1F 0b1010 2023-11-23T09:11:00Z +86 10 1234 5678",
    "Ünïcödé façade — naïve café, Straße, Ελληνικά, русский",
]


# ---------------------------------------------------------------------------------------------------
# Data


def _shared_docs() -> list[str]:
    from vocab.loaders import load_texts

    d = default_data_dir()
    files = sorted(d.glob("zhwiki/*.jsonl")) + sorted(d.glob("cmrc2018/*.json")) + sorted(d.glob("drcd/*.json"))
    return [doc for f in files for doc in load_texts(f)]


def train_docs(corpus_dir: Path):
    """A fresh iterator over the training documents (streamed, never all in memory)."""
    from corpora.shards import iter_jsonl_texts
    from vocab.train import corpus_files

    if (corpus_dir / "train").is_dir():
        return iter_jsonl_texts(corpus_files(corpus_dir))
    return (doc for i, doc in enumerate(_shared_docs()) if i % 20)


def heldout_docs(corpus_dir: Path) -> list[str]:
    from corpora.shards import iter_jsonl_texts

    path = corpus_dir / "heldout" / "heldout.jsonl"
    if path.is_file():
        return list(iter_jsonl_texts([path]))
    return [doc for i, doc in enumerate(_shared_docs()) if i % 20 == 0]


def heldout_by_script(docs: list[str]) -> dict[str, list[str]]:
    """Held-out documents split by script (:func:`corpora.scripts.detect_script`): the throughput
    target holds for each script."""
    from corpora.scripts import detect_script

    out: dict[str, list[str]] = {"held-out Simplified": [], "held-out Traditional": []}
    for d in docs:
        script = detect_script(d)
        if script in ("simplified", "traditional"):
            out[f"held-out {script.capitalize()}"].append(d)
    return out


# ---------------------------------------------------------------------------------------------------
# (a) training cost, one subprocess per corpus multiple


def _train_worker(args) -> None:
    """Child: stream the corpus ``multiple`` times through the reservoir, train, report JSON."""
    from vocab.train import TrainConfig, sample_sentences, train_bpe
    from zhllama.config import load_config

    cfg = load_config(TrainConfig, REPO / "configs/vocab/train.yaml",
                      {"max_sentences": args.max_sentences, "vocab_size": args.vocab_size})
    t0, c0 = time.perf_counter(), time.process_time()
    docs = itertools.chain.from_iterable(train_docs(Path(args.corpus_dir)) for _ in range(args.worker))
    stats: dict = {}
    sentences = sample_sentences(docs, cfg, stats)
    sample_s = time.perf_counter() - t0
    model = train_bpe(sentences, cfg)
    Path(args.model_out).write_bytes(model)
    print(json.dumps({
        "multiple": args.worker, "seconds": time.perf_counter() - t0, "sample_seconds": sample_s,
        "cpu_seconds": time.process_time() - c0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **stats,
    }))


def count_sentences(corpus_dir: Path) -> int:
    from vocab.train import TrainConfig, split_sentences

    cfg = TrainConfig()
    return sum(1 for doc in train_docs(corpus_dir)
               for _ in split_sentences(doc, cfg.min_sentence_chars, cfg.max_sentence_chars))


def bench_training(corpus_dir: Path, multiples: list[int], vocab_size: int, tmp: Path) -> tuple[list[dict], Path]:
    cap = count_sentences(corpus_dir)
    rows = []
    for k in multiples:
        out = tmp / f"zh_{k}x.model"
        cmd = [sys.executable, __file__, "--worker", str(k), "--max_sentences", str(cap),
               "--vocab_size", str(vocab_size), "--corpus_dir", str(corpus_dir), "--model_out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"training worker {k}x failed:\n{proc.stderr[-2000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"(a) {k:>2}x corpus: {row['chars_seen'] / 1e6:6.1f} M chars streamed, {row['sentences_kept']:,} "
              f"sentences kept, {row['seconds']:6.1f} s wall ({row['sample_seconds']:.1f} s sampling), "
              f"{row['cpu_seconds']:.1f} CPU s, peak RSS {row['peak_rss_mb']:.0f} MB")
    base = rows[0]
    for r in rows:
        r["seconds_vs_1x"] = r["seconds"] / base["seconds"]
        r["cpu_seconds_vs_1x"] = r["cpu_seconds"] / base["cpu_seconds"]
        r["peak_rss_vs_1x"] = r["peak_rss_mb"] / base["peak_rss_mb"]
        print(f"    {r['multiple']:>2}x vs 1x: CPU time {r['cpu_seconds_vs_1x']:.2f}x (wall {r['seconds_vs_1x']:.2f}x), "
              f"peak memory {r['peak_rss_vs_1x']:.2f}x")
    return rows, tmp / f"zh_{multiples[0]}x.model"


# ---------------------------------------------------------------------------------------------------
# (b) HF encoding throughput


def _chars_per_s(tokenizers: dict, texts: list[str], repeats: int) -> dict[str, float]:
    """Characters per CPU second of each tokenizer on ``texts``: the best of ``repeats`` runs,
    interleaved (order alternating each round) so that drift on a shared machine hits all alike.
    CPU time, not wall time: other processes stretch wall time, not this process's CPU time."""
    chars = sum(map(len, texts))
    best = dict.fromkeys(tokenizers, float("inf"))
    for tok in tokenizers.values():
        tok(texts[:100])  # warm-up
    names = list(tokenizers)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            t0 = time.process_time()
            tokenizers[name](texts)
            best[name] = min(best[name], time.process_time() - t0)
    return {name: chars / s for name, s in best.items()}


def bench_throughput(base_bytes: bytes, merged_bytes: bytes, texts: dict[str, list[str]], tmp: Path,
                     repeats: int) -> dict:
    from transformers import AutoTokenizer, LlamaTokenizer

    from vocab.export import export_hf

    stock_dir = tmp / "stock"
    stock_dir.mkdir()
    (stock_dir / "tokenizer.model").write_bytes(base_bytes)
    tokenizers = {
        "base (zhllama export)": AutoTokenizer.from_pretrained(export_hf(base_bytes, tmp / "base_hf")),
        "base (transformers conversion)": LlamaTokenizer.from_pretrained(stock_dir, add_bos_token=True),
        "merged (zhllama export)": AutoTokenizer.from_pretrained(export_hf(merged_bytes, tmp / "merged_hf")),
    }
    out: dict = {}
    for set_name, docs in texts.items():
        row = _chars_per_s(tokenizers, docs, repeats)
        ratio = row["merged (zhllama export)"] / row["base (zhllama export)"]
        out[set_name] = {"chars_per_s": row, "merged_vs_base": ratio,
                         "merged_vs_transformers_conversion": row["merged (zhllama export)"]
                         / row["base (transformers conversion)"]}
        print(f"(b) {set_name}: " + ", ".join(f"{k} {v / 1e6:.2f} M chars/s" for k, v in row.items())
              + f"; merged/base {ratio:.2f}x (target >= 0.9x)")
    return out


# ---------------------------------------------------------------------------------------------------
# (c) classic merge vs ours


def bench_merges(base_bytes: bytes, zh_bytes: bytes, heldout: list[str], english: list[str],
                 char_counts: collections.Counter, peer_bytes: bytes | None) -> dict:
    from vocab.assemble import classic_merge, dead_pieces, non_chinese_changes, tokens_per_char
    from vocab.export import bpe_merges
    from vocab.merge import MergeConfig, merge
    from vocab.proto import parse_model

    base, zh = parse_model(base_bytes, "base"), parse_model(zh_bytes, "zh")
    models = {
        "classic (score 0)": classic_merge(base, zh),
        "zhllama (all candidates)": merge(base, zh, MergeConfig(), char_counts)[0],
    }
    non_chinese = english + NON_CHINESE_EXTRA
    rows: dict = {"base": {"pieces": len(base.pieces), "heldout_tokens_per_char": tokens_per_char(base, heldout)}}
    if peer_bytes:
        peer = parse_model(peer_bytes, "peer")
        rows["peer (Chinese-LLaMA-2)"] = {"pieces": len(peer.pieces),
                                          "heldout_tokens_per_char": tokens_per_char(peer, heldout)}
    for name, m in models.items():
        added = range(len(base.pieces), len(m.pieces))
        rows[name] = {
            "pieces": len(m.pieces),
            "non_chinese_lines_changed": len(non_chinese_changes(base, m, non_chinese)),
            "non_chinese_lines": len(non_chinese),
            "dead_added_pieces": len(dead_pieces(m, added)),
            "added_pieces": len(added),
            "heldout_tokens_per_char": tokens_per_char(m, heldout),
            "hf_ambiguous_tie_pieces": len(bpe_merges(m).ambiguous_tie_pieces),
        }
    base_tpc = rows["base"]["heldout_tokens_per_char"]
    for name, r in rows.items():
        r["tokens_vs_base"] = r["heldout_tokens_per_char"] / base_tpc
        extra = ""
        if "dead_added_pieces" in r:
            extra = (f", non-Chinese lines changed {r['non_chinese_lines_changed']}/{r['non_chinese_lines']}, "
                     f"dead pieces {r['dead_added_pieces']:,}/{r['added_pieces']:,}, "
                     f"HF-ambiguous ties {r['hf_ambiguous_tie_pieces']:,}")
        print(f"(c) {name}: {r['pieces']:,} pieces, held-out tokens/char {r['heldout_tokens_per_char']:.4f} "
              f"({r['tokens_vs_base']:.3f}x base){extra}")
    return rows


# ---------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus_dir", default=str(REPO / "artifacts" / "corpus"))
    ap.add_argument("--multiples", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--vocab_size", type=int, default=40000)
    ap.add_argument("--tokenizer_dir", default=str(REPO / "artifacts" / "tokenizer"),
                    help="merged tokenizer for the throughput part (default: the pipeline's; else merge the 1x model)")
    ap.add_argument("--repeats", type=int, default=8, help="throughput runs per tokenizer; the fastest is kept")
    ap.add_argument("--out", default=str(REPO / "artifacts" / "bench" / "tokenizer.json"))
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--max_sentences", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--model_out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _train_worker(args)
        return 0

    corpus_dir = Path(args.corpus_dir)
    data = default_data_dir()
    base_bytes = (data / "llama2_tokenizer.model").read_bytes()
    peer_path = data / "reference" / "chinese_llama2_tokenizer.model"
    peer_bytes = peer_path.read_bytes() if peer_path.is_file() else None
    heldout = heldout_docs(corpus_dir)
    english = [ln for ln in (REPO / "tests/data/english.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    source = str(corpus_dir) if (corpus_dir / "train").is_dir() else f"{data} (every 20th document held out)"
    print(f"data: {source}; held-out {len(heldout):,} docs, {sum(map(len, heldout)):,} chars; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall ratios need a quiet machine)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        training, zh_path = bench_training(corpus_dir, args.multiples, args.vocab_size, tmp)
        zh_bytes = zh_path.read_bytes()
        char_counts: collections.Counter = collections.Counter()
        for doc in train_docs(corpus_dir):
            char_counts.update(doc)
        from vocab.merge import MergeConfig, merge
        from vocab.proto import parse_model

        merged_path = Path(args.tokenizer_dir) / "tokenizer.model"
        merged_bytes = merged_path.read_bytes() if merged_path.is_file() else \
            merge(parse_model(base_bytes), parse_model(zh_bytes), MergeConfig(), char_counts)[0].SerializeToString()
        print(f"(b) merged tokenizer: {merged_path if merged_path.is_file() else 'the 1x model, every candidate'}")
        throughput = bench_throughput(base_bytes, merged_bytes,
                                      {**heldout_by_script(heldout),
                                       # distinct lines: a repeated line would hit the BPE word cache
                                       "english": [f"{ln} ({i})" for i in range(300) for ln in english]},
                                      tmp, args.repeats)
        merges = bench_merges(base_bytes, zh_bytes, heldout, english, char_counts, peer_bytes)
    atomic_write_json(args.out, {
        "benchmark": "tokenizer", "data": source, "vocab_size": args.vocab_size,
        "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(),
        "training": training, "throughput": throughput, "merges": merges, "versions": versions(),
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
