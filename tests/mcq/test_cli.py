"""``python -m mcq score|compare`` end to end on tiny real Llamas and synthetic sets; errors are one line.

Invariants: report.json holds one record per scored question whose ``index`` points at the row it
came from, accuracies that follow from those records, the prompt of each subject's first question,
and the data accounting; report.md / report.png / meta.json are written; compare scores every model
on the same questions and wraps only the chat model's prompt when ``chat_template: auto``.
"""
from __future__ import annotations

import csv
import json
import shutil

import pytest

from mcq.__main__ import COMMANDS
from tests.conftest import save_tiny_llama
from zhllama.cli import main as cli_main


def _run(args: list[str]) -> int:
    return cli_main("mcq", COMMANDS, [args[0], "--config", "configs/mcq/score.yaml", *args[1:], "--progress", "false"])


def test_score_writes_a_consistent_report(tiny_llama_dir, ceval_dir, tmp_path, spec):
    out = tmp_path / "bench"
    rc = _run(["score", "--model", str(tiny_llama_dir), "--benchmark", str(ceval_dir), "--out_dir", str(out),
               "--shots", "2", "--subjects", "law", "--subjects", "history", "--method", "both",
               "--window_tokens", "200"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    model = report["models"][tiny_llama_dir.name]
    records = model["questions"]
    assert [r["subject"] for r in records] == ["law"] * 6 + ["history"] * 6
    with open(ceval_dir / "val" / "law_val.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in records[:6]:
        assert rows[r["index"]]["answer"] == r["answer"] == spec["law"]["test"][r["index"]]["answer"]
        assert set(r["loglik"]) == {"A", "B", "C", "D"} and r["predicted"] == max(r["loglik"], key=r["loglik"].get)
        assert r["letter"]["predicted"] in "ABCD"
    acc = model["accuracy"]["continuation"]
    law = [r for r in records if r["subject"] == "law"]
    assert acc["subjects"]["law"]["accuracy"] == sum(r["predicted"] == r["answer"] for r in law) / 6
    assert acc["micro"] == sum(r["predicted"] == r["answer"] for r in records) / 12
    assert acc["macro"] == (acc["subjects"]["law"]["accuracy"] + acc["subjects"]["history"]["accuracy"]) / 2
    assert model["prompts"]["law"].startswith("以下是关于law的单项选择题") and model["prompts"]["law"].endswith("答案：")
    assert model["truncation"]["window_tokens"] == 200 and model["truncation"]["questions_with_dropped_shots"] > 0
    assert report["data"]["layout"] == "ceval" and report["data"]["questions"] == 12
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| law | 6 |" in md and "macro average" in md
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["config"]["shots"] == 2 and str(ceval_dir / "val" / "law_val.csv") in meta["inputs_sha256"]


@pytest.fixture(scope="module")
def chat_llama_dir(tmp_path_factory, base_tokenizer_dir):
    """A second tiny Llama whose tokenizer carries a Llama-2-style chat template."""
    from transformers import AutoTokenizer

    d = save_tiny_llama(tmp_path_factory.mktemp("chat") / "final", base_tokenizer_dir, vocab_size=32000, seed=1)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    tok.save_pretrained(d)
    return d


def test_compare_scores_base_and_chat_models_on_the_same_questions(tiny_llama_dir, chat_llama_dir, bench_jsonl,
                                                                   tmp_path):
    out = tmp_path / "cmp"
    rc = _run(["compare", "--models", str(tiny_llama_dir), "--models", str(chat_llama_dir), "--labels", "base",
               "--labels", "chat", "--benchmark", str(bench_jsonl), "--out_dir", str(out), "--shots", "1",
               "--chat_template", "auto", "--max_questions_per_subject", "3"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    base, chat = report["models"]["base"], report["models"]["chat"]
    assert (base["chat"], chat["chat"]) == (False, True)
    assert chat["prompts"]["law"].startswith("[INST] 以下是关于law") and "[INST]" not in base["prompts"]["law"]
    key = [(r["subject"], r["index"], r["answer"]) for r in base["questions"]]
    assert key == [(r["subject"], r["index"], r["answer"]) for r in chat["questions"]] and len(key) == 9
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| subject | questions | base | chat |" in md


def test_bad_input_is_one_line_and_exit_2(tiny_llama_dir, cmmlu_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(cmmlu_dir, bad)
    with open(bad / "test" / "law.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["", "Question", "A", "B", "C", "Antwort"], ["0", "q", "a", "b", "c", "A"]])
    cases = [
        (["score", "--model", str(tiny_llama_dir), "--benchmark", str(bad)], r"law\.csv:1: missing column"),
        (["score", "--model", str(tiny_llama_dir), "--benchmark", str(cmmlu_dir), "--shots", "9"], r"fewer than shots=9"),
        (["score", "--model", str(tmp_path), "--benchmark", str(cmmlu_dir)], r"not a model directory"),
        (["score", "--benchmark", str(cmmlu_dir)], r"--model DIR is required"),
        (["compare", "--models", str(tiny_llama_dir), "--benchmark", str(cmmlu_dir)], r"two or more --models"),
        (["score", "--model", str(tiny_llama_dir), "--benchmark", str(cmmlu_dir), "--header", "no subject"],
         r"header must contain \{subject\}"),
        (["score", "--model", str(tiny_llama_dir), "--benchmark", str(cmmlu_dir), "--chat_template", "always",
          "--shots", "0"], r"no chat template"),
    ]
    import re

    for args, pattern in cases:
        assert _run([*args, "--out_dir", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and re.search(pattern, err), (args, err)


def test_suite_presets_load_for_both_commands():
    from mcq.cli import CompareConfig, ScoreConfig
    from zhllama import REPO_ROOT
    from zhllama.config import load_config

    for path in sorted((REPO_ROOT / "configs" / "mcq").glob("*.yaml")):
        for cls in (ScoreConfig, CompareConfig):
            cfg = load_config(cls, path)
            assert "{subject}" in cfg.header
    ceval = load_config(ScoreConfig, REPO_ROOT / "configs/mcq/score_ceval.yaml")
    assert ceval.header.startswith("以下是中国关于") and ceval.subject_names["law"] == "法学"
