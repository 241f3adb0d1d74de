"""Multi-domain, two-script vocabulary experiments: per-domain dev tokens/char of merged tokenizers vs the peer.

Reads every source of ``../shared/data`` (Wikipedia, CMRC, DRCD and ``domains/*/*.jsonl``) raw, labels
each document with its domain (the folder; Wikipedia sources are ``wiki``) and script
(:func:`corpora.scripts.detect_script`), and splits it by text hash with the project's rules: **test** =
the corpus stage's held-out rule (``corpora.build.heldout_split``), **dev** = ``vocab.dev_split.is_dev``
on the rest, train = everything else. Options are compared on **dev** only (ratio to the peer
measured in the same run).

    .venv/bin/python bench/vocab_domains.py --runs previous        # see RUNS below
    .venv/bin/python bench/vocab_domains.py --write_corpus artifacts/exp_corpus   # then the real CLIs on it

Writes ``artifacts/bench/vocab_domains.json`` (every run's table) and prints one line per run.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from zhllama import REPO_ROOT, default_data_dir  # noqa: E402
from zhllama.artifacts import atomic_write_json  # noqa: E402

WIKI_GLOBS = ("zhwiki/*.jsonl", "cmrc2018/*.json", "drcd/*.json")


def load_split(data_dir: Path, heldout_fraction: float = 0.05, dev_fraction: float = 0.05):
    """{"train"|"dev"|"test": [Doc]} from the raw shared data."""
    from corpora.build import heldout_split
    from corpora.dedup import text_digest
    from corpora.scripts import detect_script as script_of
    from vocab.dev_split import is_dev
    from vocab.domains import Doc
    from vocab.loaders import load_texts

    files = [("wiki", f) for g in WIKI_GLOBS for f in sorted(data_dir.glob(g))]
    files += [(f.parent.name, f) for f in sorted((data_dir / "domains").glob("*/*.jsonl"))]
    out: dict[str, list] = {"train": [], "dev": [], "test": []}
    seen: set[str] = set()
    for domain, f in files:
        for text in load_texts(f):
            text = text.strip()
            if len(text) < 20 or text in seen:
                continue
            seen.add(text)
            split = "test" if heldout_split(text_digest(text), heldout_fraction) == "heldout" else (
                "dev" if is_dev(text, dev_fraction) else "train")
            out[split].append(Doc(domain, script_of(text), text))
    return out


def write_corpus(split, out: Path) -> None:
    """The split as a corpus-stage directory (train = train + dev docs, heldout = test docs), with
    ``domain`` and ``script`` fields, so the real ``vocab train`` / ``vocab merge`` CLIs run on it."""
    for part, docs in (("train/shard-00000.jsonl", split["train"] + split["dev"]), ("heldout/heldout.jsonl", split["test"])):
        path = out / part
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for i, d in enumerate(docs):
                f.write(json.dumps({"id": f"{d.domain}/{i}", "source": d.domain, "domain": d.domain,
                                    "script": d.script, "text": d.text}, ensure_ascii=False) + "\n")
    (out / "manifest.json").write_text("{}", encoding="utf-8")
    print(f"wrote {out}")


def weighted_lines(docs, weights: dict[str, float] | None, seed: int = 0, sample_chars: int = 0):
    """Training sentences with domain weights applied as integer repeat counts (stochastic rounding):
    a domain of weight w gets w x its natural share (weights are relative, 1.0 = unchanged)."""
    from vocab.train import TrainConfig, split_sentences

    cfg = TrainConfig()
    rng = random.Random(seed)
    docs = list(docs)
    total = sum(len(d.text) for d in docs)
    keep = min(1.0, sample_chars / total) if sample_chars else 1.0
    out = []
    for d in docs:
        w = (weights or {}).get(d.domain, 1.0) * keep
        n = int(w) + (rng.random() < w - int(w))
        for s in split_sentences(d.text, cfg.min_sentence_chars, cfg.max_sentence_chars):
            out.extend([s] * n)
    return out


def build(base_bytes: bytes, sentences: list[str], run: dict, char_counts, wordfreq_words):
    """Train the Chinese BPE of ``run`` and merge it (vocab.merge); returns (merged bytes, info)."""
    from vocab.merge import MergeConfig, merge
    from vocab.proto import parse_model
    from vocab.train import TrainConfig, train_bpe

    tcfg = replace(TrainConfig(), **run.get("train", {}), num_threads=2)
    t0 = time.perf_counter()
    zh = train_bpe(sentences, tcfg)
    train_s = time.perf_counter() - t0
    mcfg = replace(MergeConfig(), **run.get("merge", {}))
    merged, report = merge(parse_model(base_bytes), parse_model(zh), mcfg, char_counts)
    return merged.SerializeToString(), {"train_seconds": round(train_s, 1), "added_chars": report.added_chars,
                                        "added_words": report.added_words, "pieces": report.total_pieces}


RUNS: dict[str, dict] = {
    # The previous round's recipe (jieba dict 20k at 0.1, BPE 20k, merge order, no cap) on the new data.
    "previous": {"train": {"vocab_size": 20000, "word_list": "jieba", "word_list_words": 20000,
                           "word_list_weight": 0.1, "word_list_variants": []},
                 "merge": {"selection": "merge_order", "max_total_pieces": 1 << 30}},
    # The same with this round's training options (the merge's gain ranking needs the CLI's evidence).
    "wordfreq": {"train": {"vocab_size": 40000}, "merge": {"selection": "merge_order"}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="*", default=["previous"])
    ap.add_argument("--sample_chars", type=int, default=0, help="train on a sample of this many chars (0 = all)")
    ap.add_argument("--out", default=str(REPO_ROOT / "artifacts/bench/vocab_domains.json"))
    ap.add_argument("--write_corpus", default="", help="write the split as a corpus-stage dir here and exit")
    args = ap.parse_args()
    if args.write_corpus:
        write_corpus(load_split(default_data_dir()), Path(args.write_corpus))
        return

    from vocab.domains import domain_table, group, target_check

    data = default_data_dir()
    t0 = time.perf_counter()
    split = load_split(data)
    for k, v in split.items():
        by = collections.Counter(d.domain for d in v)
        print(f"{k}: {len(v):,} docs, {sum(len(d.text) for d in v):,} chars; {dict(by)}")
    print(f"loaded in {time.perf_counter() - t0:.0f} s", flush=True)
    base_bytes = (data / "llama2_tokenizer.model").read_bytes()
    peer_bytes = (data / "reference/chinese_llama2_tokenizer.model").read_bytes()
    dev_sets = group(split["dev"])
    results = {}
    out = Path(args.out)
    if out.is_file():
        results = json.loads(out.read_text())
    ref = domain_table({"base": base_bytes, "peer": peer_bytes}, dev_sets)
    results["_reference_dev"] = ref
    char_counts = collections.Counter()
    for d in split["train"]:
        char_counts.update(d.text)
    for name in args.runs:
        run = RUNS[name]
        sentences = weighted_lines(split["train"], run.get("weights"), sample_chars=args.sample_chars)
        merged, info = build(base_bytes, sentences, run, char_counts, None)
        table = domain_table({"ours": merged}, dev_sets)
        table["peer"] = ref["peer"]
        check = target_check(table, "ours", "peer")
        results[name] = {"run": run, "info": info, "dev": table["ours"], "check": check}
        ratios = " ".join(f"{s}={r:.3f}" for s, r in check["ratios"].items())
        print(f"{name}: {info} geomean {check['geomean_ratio']:.4f} worst {check['worst']} | {ratios}", flush=True)
        atomic_write_json(out, results)


if __name__ == "__main__":
    main()
