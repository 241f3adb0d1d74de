"""Synthetic multiple-choice sets in the three layouts (CMMLU, C-Eval, JSONL), built from one spec.

The published suites are CC BY-NC-SA, so no copy is shipped: the questions here are generated.
Every layout written from the same :func:`make_spec` must read back to the same questions.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

LETTERS = "ABCD"
WORDS = ["长江", "黄河", "北京", "唐朝", "光合作用", "牛顿", "酸碱", "细胞", "宪法", "诗经", "赤道", "电流"]


def make_spec(subjects=("law", "art", "history"), n_dev=5, n_test=6, seed=0) -> dict:
    """``{subject: {"dev": [row], "test": [row]}}``, a row = dict(question, A, B, C, D, answer[, passage])."""
    rng = random.Random(seed)
    spec = {}
    for s in subjects:
        spec[s] = {}
        for split, n in (("dev", n_dev), ("test", n_test)):
            rows = []
            for i in range(n):
                row = {"question": f"{s}第{i}题：{rng.choice(WORDS)}与{rng.choice(WORDS)}的关系是什么？",
                       **{L: f"{rng.choice(WORDS)}{rng.randint(1, 99)}" for L in LETTERS},
                       "answer": rng.choice(LETTERS)}
                if i == 1:
                    row["question"] = f' 引号"和,逗号\n换行的{s}问题 '  # CSV quoting, stripping
                rows.append(row)
            spec[s][split] = rows
    return spec


def write_cmmlu(root: Path, spec: dict) -> Path:
    """CMMLU layout: dev/<s>.csv, test/<s>.csv with an unnamed index column and capitalised headers."""
    for split in ("dev", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
        for s, data in spec.items():
            with open(root / split / f"{s}.csv", "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["", "Question", "A", "B", "C", "D", "Answer"])
                for i, r in enumerate(data[split]):
                    w.writerow([i, r["question"], r["A"], r["B"], r["C"], r["D"], r["answer"]])
    return root


def write_ceval(root: Path, spec: dict) -> Path:
    """C-Eval layout: dev/<s>_dev.csv (with explanation), val/<s>_val.csv, and a test split without answers."""
    for split, folder in (("dev", "dev"), ("test", "val")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        for s, data in spec.items():
            with open(root / folder / f"{s}_{folder}.csv", "w", encoding="utf-8", newline="") as f:
                w = csv.writer(f)
                w.writerow(["id", "question", "A", "B", "C", "D", "answer"] + (["explanation"] if split == "dev" else []))
                for i, r in enumerate(data[split]):
                    w.writerow([i, r["question"], r["A"], r["B"], r["C"], r["D"], r["answer"]]
                               + (["解析"] if split == "dev" else []))
    (root / "test").mkdir(exist_ok=True)
    for s, data in spec.items():  # C-Eval's real test split: answers withheld
        with open(root / "test" / f"{s}_test.csv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "question", "A", "B", "C", "D", "answer"])
            for i, r in enumerate(data["test"]):
                w.writerow([i, r["question"], r["A"], r["B"], r["C"], r["D"], ""])
    return root


def write_jsonl(path: Path, spec: dict, passages: bool = False) -> Path:
    """The AGIEval-gaokao layout: one record per line, subjects interleaved, dev records first per subject."""
    with open(path, "w", encoding="utf-8") as f:
        for s, data in spec.items():
            for split in ("dev", "test"):
                for i, r in enumerate(data[split]):
                    rec = {"id": f"{s}/{split}/{i}", "subject": s, "split": split,
                           "passage": f"阅读材料{i}：{s}。" if passages and i % 2 == 0 else "",
                           "question": r["question"], "choices": [r[L] for L in LETTERS], "answer": r["answer"]}
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def spec() -> dict:
    return make_spec()


@pytest.fixture(scope="session")
def cmmlu_dir(tmp_path_factory, spec) -> Path:
    return write_cmmlu(tmp_path_factory.mktemp("cmmlu"), spec)


@pytest.fixture(scope="session")
def ceval_dir(tmp_path_factory, spec) -> Path:
    return write_ceval(tmp_path_factory.mktemp("ceval"), spec)


@pytest.fixture(scope="session")
def bench_jsonl(tmp_path_factory, spec) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("jsonl") / "bench.jsonl", spec, passages=True)


@pytest.fixture(scope="session")
def tiny(tiny_llama_dir):
    """The shared tiny real Llama (32k Llama-2 tokenizer), loaded once for the mcq tests."""
    from pretrain.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(tiny_llama_dir)
