"""Leave sources out: how do vocabulary options do on text from sources the tokenizer never saw?

Dev and test splits come from the same sources as the training text, so they flatter choices that
fit those sources. Here whole sources (one or more per domain, both scripts) are removed from the
corpus (``artifacts/corpus`` from ``make corpus``); the real ``vocab train`` and ``vocab merge`` CLIs
run on the rest, and the removed sources are measured as report-only ``extra_texts``. Printed per
option: ours/peer tokens/char on each unseen source and their geometric mean, next to the dev and
test geomeans of the same run (the peer is measured in the same run).

    .venv/bin/python bench/vocab_loso.py                       # the options in OPTIONS
    .venv/bin/python bench/vocab_loso.py --options gain cross_script_0.5

Writes ``artifacts/bench/vocab_loso.json``. Results: docs/vocab-experiments.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from zhllama import default_data_dir  # noqa: E402
from zhllama.artifacts import atomic_write_json  # noqa: E402

HELD_SOURCES = ("kdconv", "hkcancor", "twlaw", "react_docs", "hongloumeng", "cmrc2018")
"""One source per domain where the domain has several: Simplified and Cantonese dialogue, Taiwan law,
Simplified technical, a novel, Simplified encyclopedia."""

_NO_X = ["--cross_script_share", "0"]
OPTIONS: dict[str, tuple[list[str], list[str]]] = {
    # name: (vocab train args, vocab merge args); everything else as in configs/vocab/*.yaml
    "gain": (_NO_X, _NO_X),
    "merge_order": (_NO_X, [*_NO_X, "--selection", "merge_order"]),
    "char_weight_3": (_NO_X, [*_NO_X, "--char_weight", "3.0"]),
    "cross_script_bpe_only": (["--cross_script_share", "0.5"], _NO_X),
    "cross_script_0.5": (["--cross_script_share", "0.5"], ["--cross_script_share", "0.5"]),
    "cross_script_1.0": (["--cross_script_share", "1.0"], ["--cross_script_share", "1.0"]),
    "cross_script_0.5_dialogue_2": (["--cross_script_share", "0.5"],
                                    ["--cross_script_share", "0.5", "--evidence_weights", '{"dialogue": 2.0}']),
    "cross_script_0.5_word_list_4": (["--cross_script_share", "0.5"],
                                     ["--cross_script_share", "0.5", "--word_list_weight", "4.0"]),
}


def split_corpus(corpus: Path, out: Path, held: tuple[str, ...]) -> dict[str, Path]:
    """Write ``out`` (a corpus dir without the held sources) and one JSONL per held source."""
    from corpora.shards import iter_jsonl_records

    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "heldout").mkdir(exist_ok=True)
    extra = {s: out / "unseen" / f"{s}.jsonl" for s in held}
    (out / "unseen").mkdir(exist_ok=True)
    handles = {s: open(p, "w", encoding="utf-8") for s, p in extra.items()}
    try:
        for split, files in (("train", sorted((corpus / "train").glob("*.jsonl"))),
                             ("heldout", [corpus / "heldout" / "heldout.jsonl"])):
            target = out / split / ("shard-00000.jsonl" if split == "train" else "heldout.jsonl")
            with open(target, "w", encoding="utf-8") as f:
                for rec in iter_jsonl_records(files):
                    line = json.dumps(rec, ensure_ascii=False) + "\n"
                    (handles[rec["source"]] if rec.get("source") in handles else f).write(line)
    finally:
        for h in handles.values():
            h.close()
    (out / "manifest.json").write_text("{}", encoding="utf-8")
    return extra


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus_dir", default=str(REPO / "artifacts" / "corpus"))
    ap.add_argument("--work_dir", default=str(REPO / "artifacts" / "bench" / "vocab_loso"))
    ap.add_argument("--options", nargs="*", default=list(OPTIONS))
    ap.add_argument("--out", default=str(REPO / "artifacts" / "bench" / "vocab_loso.json"))
    args = ap.parse_args()
    work = Path(args.work_dir)
    extra = split_corpus(Path(args.corpus_dir), work / "corpus", HELD_SOURCES)
    env = {**os.environ, "PYTHONPATH": str(REPO), "ZHLLAMA_DATA_DIR": str(default_data_dir().resolve())}
    rows = {}
    for name in args.options:
        train_args, merge_args = OPTIONS[name]
        vocab_dir, tok_dir = work / f"vocab_{'_'.join(train_args) or 'default'}", work / f"tok_{name}"
        if not (vocab_dir / "zh_bpe.model").is_file():  # options sharing the BPE settings share the model
            subprocess.run([sys.executable, "-m", "vocab", "train", "--corpus_dir", str(work / "corpus"),
                            "--out_dir", str(vocab_dir), *train_args], check=True, env=env, cwd=REPO)
        extra_args = [a for s, p in extra.items() for a in ("--extra_texts", str(p))]
        subprocess.run([sys.executable, "-m", "vocab", "merge", "--zh_model", str(vocab_dir / "zh_bpe.model"),
                        "--corpus_dir", str(work / "corpus"), "--out_dir", str(tok_dir), "--parity_check", "false",
                        *extra_args, *merge_args], check=True, env=env, cwd=REPO)
        r = json.loads((tok_dir / "report.json").read_text(encoding="utf-8"))
        m = r["comparison"]["metrics"]
        ratios = {s: m["zhllama (ours)"][s]["tokens_per_char"] / m["chinese-llama2 (peer)"][s]["tokens_per_char"]
                  for s in HELD_SOURCES}
        est = {k: v["zhllama (ours)"] / v["chinese-llama2 (peer)"] for k, v in r["word_list_estimates"].items()}
        rows[name] = {"unseen_sources": ratios,
                      "unseen_geomean": math.exp(sum(map(math.log, ratios.values())) / len(ratios)),
                      "dev_geomean": r["dev_target"]["geomean_ratio"], "test_geomean": r["target"]["geomean_ratio"],
                      "word_list_estimates": est}
        print(f"{name}: unseen sources ours/peer geomean {rows[name]['unseen_geomean']:.4f} ("
              + ", ".join(f"{s} {v:.3f}" for s, v in ratios.items()) + f"); dev {rows[name]['dev_geomean']:.4f}, "
              f"test {rows[name]['test_geomean']:.4f}; word-list estimate "
              + ", ".join(f"{v:.3f}" for v in est.values()), flush=True)
    atomic_write_json(args.out, {"held_sources": HELD_SOURCES, "rows": rows})
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
