"""Which training options make the best Chinese vocabulary? Held-out tokens/char per option.

Trains the Chinese BPE (``vocab.train.train_bpe``) with each option on the same sentence sample,
merges it into Llama-2's 32k tokenizer with the project's merge (``vocab.merge.merge``, no size
cap), and measures tokens per character on held-out text with
``vocab.report.compare``. Prints each option's tokens/char and its ratio to the baseline option of
the same run; writes ``artifacts/bench/vocab_options.json``. Results: docs/vocab-experiments.md.

    .venv/bin/python bench/vocab_options.py                    # option sweep at --vocab_size
    .venv/bin/python bench/vocab_options.py --sizes 8000 16000 24000 32000   # size sweep, default options

Data: ``artifacts/corpus`` (train/ for training, heldout/ for measuring) if it exists, else the
shared wiki data directly (training: zhwiki + CMRC dev + DRCD dev; held-out: CMRC trial + DRCD test).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zhllama import REPO_ROOT, default_data_dir  # noqa: E402
from zhllama.artifacts import atomic_write_json  # noqa: E402

OPTIONS = {
    "baseline (plain BPE)": {},
    "jieba word boundaries": {"jieba_word_boundaries": True},
    "jieba word boundaries + HMM": {"jieba_word_boundaries": True, "jieba_hmm": True},
    "jieba dict 20k words, weight 0.1": {"word_list": "jieba", "word_list_words": 20000, "word_list_weight": 0.1},
    "jieba dict 50k words, weight 0.3": {"word_list": "jieba", "word_list_words": 50000, "word_list_weight": 0.3},
    "jieba dict 20k + Traditional forms, weight 0.1": {"word_list": "jieba", "word_list_words": 20000,
                                                       "word_list_weight": 0.1, "word_list_variants": ["s2t"],
                                                       "word_list_variant_weight": 1.0},
    "wordfreq 50k + Traditional forms, weight 0.1": {"word_list": "wordfreq", "word_list_words": 50000,
                                                     "word_list_weight": 0.1, "word_list_variants": ["s2twp", "s2hk"],
                                                     "word_list_variant_weight": 0.5},
    "boundaries + dict 20k, weight 0.1": {"jieba_word_boundaries": True, "word_list": "jieba",
                                          "word_list_words": 20000, "word_list_weight": 0.1},
}


def merged_with(base_bytes: bytes, zh_bytes: bytes, char_counts: Counter) -> bytes:
    """The project's merge (``vocab.merge.merge``, every candidate that survives, no size cap), so the
    numbers are those of the tokenizer the pipeline would build from this Chinese model."""
    from vocab.merge import MergeConfig, merge
    from vocab.proto import parse_model

    merged, _ = merge(parse_model(base_bytes), parse_model(zh_bytes),
                      MergeConfig(max_total_pieces=1 << 30, selection="merge_order"), char_counts=char_counts)
    return merged.SerializeToString()


def _squad(path: Path, field: str) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, None] = {}
    for art in data["data"]:
        for para in art["paragraphs"]:
            if field == "context":
                out.setdefault(para["context"], None)
            else:
                for qa in para["qas"]:
                    out.setdefault(qa["question"], None)
    return list(out)


def load_data(corpus_dir: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(training documents, {held-out set name: documents})."""
    from corpora.shards import iter_jsonl_texts
    from vocab.train import corpus_files

    d = default_data_dir()
    extra = {
        "questions (CMRC trial + DRCD test)": _squad(d / "cmrc2018/cmrc2018_trial.json", "question")
        + _squad(d / "drcd/DRCD_test.json", "question"),
        # Raw zh-TW text: the corpus stage converts Traditional to Simplified, so this measures how the
        # tokenizer copes with Traditional input (its content is in the training corpus, its script is not).
        "Traditional (DRCD test, raw)": _squad(d / "drcd/DRCD_test.json", "context"),
        "news-like (authored)": _lines(REPO_ROOT / "tests/data/zh_news_authored.txt"),
        "dialogue (authored)": _lines(REPO_ROOT / "tests/data/zh_dialogue_authored.txt"),
        "english": _lines(REPO_ROOT / "tests/data/english.txt"),
    }
    heldout_file = corpus_dir / "heldout" / "heldout.jsonl"
    if heldout_file.is_file():
        train = list(iter_jsonl_texts(corpus_files(corpus_dir)))
        return train, {"corpus heldout": list(iter_jsonl_texts([heldout_file])), **extra}
    wiki = [json.loads(line)["text"] for f in sorted((d / "zhwiki").glob("*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = wiki + _squad(d / "cmrc2018/cmrc2018_dev.json", "context") + _squad(d / "drcd/DRCD_dev.json", "context")
    heldout = {"wiki simplified (CMRC trial)": _squad(d / "cmrc2018/cmrc2018_trial.json", "context")}
    return train, {**heldout, **extra}


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO_ROOT / "configs/vocab/train.yaml"))
    ap.add_argument("--corpus_dir", default=str(REPO_ROOT / "artifacts/corpus"))
    ap.add_argument("--vocab_size", type=int, default=None, help="size for the option sweep (default: config)")
    ap.add_argument("--sizes", type=int, nargs="*", default=None, help="run a size sweep instead")
    ap.add_argument("--options", nargs="*", default=None, help="subset of option names (default: all)")
    ap.add_argument("--out", default=str(REPO_ROOT / "artifacts/bench/vocab_options.json"))
    args = ap.parse_args()

    from vocab.report import compare
    from vocab.train import TrainConfig, sample_sentences, train_bpe
    from zhllama.config import load_config

    cfg = load_config(TrainConfig, args.config)
    train_docs, heldout = load_data(Path(args.corpus_dir))
    sentences = sample_sentences(train_docs, cfg)
    base_bytes = (default_data_dir() / "llama2_tokenizer.model").read_bytes()
    print(f"{len(train_docs)} training docs, {len(sentences):,} sentences, "
          f"{sum(map(len, sentences)):,} chars; held-out sets: {', '.join(heldout)}")

    if args.sizes:
        runs = {f"vocab_size={n}": replace(cfg, vocab_size=n) for n in args.sizes}
    else:
        size = args.vocab_size or cfg.vocab_size
        names = args.options or list(OPTIONS)
        # Every option starts from plain BPE, whatever the config enables.
        plain = {"jieba_word_boundaries": False, "jieba_hmm": False, "word_list_words": 0,
                 "word_list_variants": []}
        runs = {name: replace(cfg, vocab_size=size, **{**plain, **OPTIONS[name]}) for name in names}
    char_counts = Counter(ch for doc in train_docs for ch in doc)
    tokenizers = {"llama2": base_bytes}
    seconds = {}
    for name, run_cfg in runs.items():
        t0 = time.perf_counter()
        zh = train_bpe(sentences, run_cfg)
        seconds[name] = time.perf_counter() - t0
        tokenizers[f"zh-only {name}"] = zh
        tokenizers[f"merged {name}"] = merged_with(base_bytes, zh, char_counts)
        print(f"  trained {name!r} in {seconds[name]:.1f} s", flush=True)
    peer = default_data_dir() / "reference/chinese_llama2_tokenizer.model"
    tokenizers["chinese-llama2 (peer)"] = peer.read_bytes()
    result = compare(tokenizers, heldout, base="llama2")

    first = next(iter(runs))
    sets = list(heldout)
    rows = []
    for name in runs:
        row = {"option": name, "train_seconds": round(seconds[name], 2), "merged_vocab":
               result["tokenizers"][f"merged {name}"]["vocab_size"]}
        for kind in ("merged", "zh-only"):
            for s in sets:
                tpc = result["metrics"][f"{kind} {name}"][s]["tokens_per_char"]
                ref = result["metrics"][f"{kind} {first}"][s]["tokens_per_char"]
                row[f"{kind} | {s}"] = {"tokens_per_char": tpc, "ratio_vs_first": tpc / ref}
        row["jieba_words_single_piece_share (merged)"] = \
            result["tokenizers"][f"merged {name}"]["jieba_words_single_piece_share"]
        rows.append(row)
    peer_row = {s: result["metrics"]["chinese-llama2 (peer)"][s]["tokens_per_char"] for s in sets}
    base_row = {s: result["metrics"]["llama2"][s]["tokens_per_char"] for s in sets}

    print(f"\nmerged tokenizer, held-out tokens/char (ratio vs {first!r} in this run):")
    print("option".ljust(40) + "".join(s[:26].rjust(28) for s in sets))
    for row in rows:
        print(row["option"][:39].ljust(40) + "".join(
            f"{row[f'merged | {s}']['tokens_per_char']:.4f} ({row[f'merged | {s}']['ratio_vs_first']:.3f}x)".rjust(28)
            for s in sets))
    print("llama2 (base)".ljust(40) + "".join(f"{base_row[s]:.4f}".rjust(28) for s in sets))
    print("chinese-llama2 (peer, 55,296)".ljust(40) + "".join(f"{peer_row[s]:.4f}".rjust(28) for s in sets))
    atomic_write_json(args.out, {"config": args.config, "rows": rows, "base": base_row, "peer": peer_row,
                                 "train_sentences": len(sentences), "train_chars": sum(map(len, sentences))})
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
