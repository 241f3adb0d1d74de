"""Readers (mcq/data.py): the three layouts read the same questions; every row is accounted for; bad input is clear.

Invariants: for each file, read = scored + dev + skipped + rejected; ``index`` is the 0-based data row
of the scored file; a missing column, an unknown subject, too few dev examples stop with one line
naming the file; a bad answer, an empty subject or a bad JSON line is counted with file:line.
"""
from __future__ import annotations

import csv
import json

import pytest

from mcq.data import read_benchmark
from tests.mcq.conftest import LETTERS, make_spec, write_cmmlu, write_jsonl
from zhllama.cli import UserError


def _as_tuples(bench):
    return [(q.subject, q.index, q.question, q.choices, q.answer) for s in bench.subjects for q in s.questions]


def test_the_three_layouts_read_the_same_questions_and_shots(spec, cmmlu_dir, ceval_dir, bench_jsonl):
    cm = read_benchmark(cmmlu_dir)
    ce = read_benchmark(ceval_dir)
    js = read_benchmark(bench_jsonl)
    assert (cm.layout, ce.layout, js.layout) == ("cmmlu", "ceval", "jsonl")
    assert ce.split == "val" and cm.split == "test"  # C-Eval's test split has no answers
    expected = [(s, i, r["question"], tuple(r[L] for L in LETTERS), r["answer"])
                for s in sorted(spec) for i, r in enumerate(spec[s]["test"])]
    assert sorted(_as_tuples(cm)) == sorted(_as_tuples(ce)) == expected
    # JSONL indices are the file's 0-based lines (dev lines come first per subject)
    assert sorted((q.subject, q.question, q.answer) for s in js.subjects for q in s.questions) == \
        sorted((e[0], e[2], e[4]) for e in expected)
    for bench in (cm, ce, js):
        assert [[d.question for d in s.dev] for s in sorted(bench.subjects, key=lambda s: s.key)] == \
            [[r["question"] for r in spec[k]["dev"]] for k in sorted(spec)]


def test_jsonl_index_is_the_files_line_and_passages_are_kept(bench_jsonl):
    lines = bench_jsonl.read_text(encoding="utf-8").splitlines()
    bench = read_benchmark(bench_jsonl)
    for s in bench.subjects:
        for q in s.questions:
            rec = json.loads(lines[q.index])
            assert (rec["subject"], rec["question"], rec["answer"], rec["passage"]) == \
                (q.subject, q.question, q.answer, q.passage)
    assert any(q.passage for s in bench.subjects for q in s.questions)


def test_every_row_is_accounted_for(cmmlu_dir, bench_jsonl, spec):
    for bench in (read_benchmark(cmmlu_dir, max_questions_per_subject=4), read_benchmark(bench_jsonl, subjects=["art"])):
        m = bench.manifest()
        for f in m["files"]:
            assert f["read"] == f["scored"] + f["dev"] + sum(f["skipped"].values()) + sum(f["rejected"].values())
        assert m["questions"] == sum(len(s.questions) for s in bench.subjects)
    limited = read_benchmark(cmmlu_dir, max_questions_per_subject=4)
    assert all(len(s.questions) == 4 for s in limited.subjects)
    js = read_benchmark(bench_jsonl, subjects=["art"]).manifest()["files"][0]
    n_other = sum(len(spec[s]["dev"]) + len(spec[s]["test"]) for s in spec if s != "art")
    assert js["skipped"] == {"subject_not_selected": n_other}


def test_bad_rows_are_counted_with_file_and_line(tmp_path):
    spec = make_spec(subjects=("law",))
    root = write_cmmlu(tmp_path / "cm", spec)
    path = root / "test" / "law.csv"
    with open(path, "a", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow([98, "坏答案的题", "a", "b", "c", "d", "E"])
        w.writerow([99, "少一列", "a", "b", "c", "d"])
    n_lines = len(path.read_text(encoding="utf-8").splitlines())
    bench = read_benchmark(root)
    stats = next(f for f in bench.files if f.file == str(path))
    assert dict(stats.rejected) == {"bad_answer": 1, "wrong_field_count": 1}
    assert stats.examples[0].startswith(f"{path}:{n_lines - 1}: bad_answer")
    assert stats.scored == len(spec["law"]["test"])


def test_jsonl_empty_subject_bad_answer_and_bad_line_are_counted(tmp_path, spec):
    path = write_jsonl(tmp_path / "b.jsonl", spec)
    good = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({**good, "subject": " "}, ensure_ascii=False) + "\n")
        f.write(json.dumps({**good, "answer": "F"}, ensure_ascii=False) + "\n")
        f.write('{"subject": "law", truncated\n')
    stats = read_benchmark(path).files[0]
    assert dict(stats.rejected) == {"empty_subject": 1, "bad_answer": 1, "bad_json": 1}
    assert stats.read == sum(len(d["dev"]) + len(d["test"]) for d in spec.values()) + 3


@pytest.mark.parametrize("header", [["", "Question", "A", "B", "C", "Answer"], ["id", "question", "A", "B", "C", "D"]])
def test_a_missing_column_is_an_error_naming_the_file(tmp_path, header):
    root = write_cmmlu(tmp_path / "cm", make_spec(subjects=("law",)))
    with open(root / "test" / "law.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, ["0"] * len(header)])
    with pytest.raises(UserError, match=r"law\.csv:1: missing column\(s\)"):
        read_benchmark(root)


def test_too_few_dev_examples_is_an_error_or_counted(tmp_path):
    root = write_cmmlu(tmp_path / "cm", make_spec(subjects=("law", "art"), n_dev=3))
    with pytest.raises(UserError, match=r"dev/art\.csv: subject .art. has 3 dev example\(s\), fewer than shots=5"):
        read_benchmark(root, shots=5)
    bench = read_benchmark(root, shots=5, fewer_shots="use_available")
    assert bench.fewer_shots == {"law": 3, "art": 3}
    assert read_benchmark(root, shots=3).fewer_shots == {}


def test_an_empty_subject_is_reported_and_scoring_continues(tmp_path):
    root = write_cmmlu(tmp_path / "cm", make_spec(subjects=("law", "art")))
    with open(root / "test" / "art.csv", "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerow(["", "Question", "A", "B", "C", "D", "Answer"])
    bench = read_benchmark(root)
    assert [s.key for s in bench.subjects] == ["law"] and bench.empty_subjects == ["art"]


def test_ceval_test_split_without_answers_is_a_clear_error(ceval_dir):
    with pytest.raises(UserError, match=r"no question to score in split 'test'.*bad_answer"):
        read_benchmark(ceval_dir, split="test")


def test_unknown_subject_and_unknown_layout_are_clear_errors(cmmlu_dir, tmp_path):
    with pytest.raises(UserError, match=r"no subject\(s\) \['physics'\]; available: art, history, law"):
        read_benchmark(cmmlu_dir, subjects=["physics"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"not a benchmark directory"):
        read_benchmark(tmp_path / "empty")
    with pytest.raises(UserError, match=r"benchmark not found"):
        read_benchmark(tmp_path / "nope")
