"""Read multiple-choice benchmarks: C-Eval / CMMLU CSV directories and AGIEval-style JSONL files.

Layouts (:func:`detect_layout`)::

    CMMLU   DIR/dev/<subject>.csv        + DIR/test/<subject>.csv          (scored: test)
    C-Eval  DIR/dev/<subject>_dev.csv    + DIR/val/<subject>_val.csv       (scored: val; C-Eval's test has no answers)
    JSONL   FILE.jsonl, one record per line:
            {"subject", "split": "dev"|"test", "passage"?, "question", "choices": [4 strings], "answer": "A".."D"}

Rows are read and validated by :mod:`mcq.readers`. ``dev`` questions are the few-shot pool; the
scored split's questions are scored.

Accounting (nothing silently lost): every data row / JSONL record read ends up in exactly one of
``scored``, ``dev``, ``skipped[reason]`` (by choice: another split, over ``max_questions_per_subject``)
or ``rejected[reason]`` (bad input: an answer outside A-D, an empty question or subject, a row with
the wrong number of fields, bad JSON); :meth:`FileStats.check` asserts read = the sum.

Fatal, one line naming the file (:class:`~zhllama.cli.UserError`): a missing path, an unknown
layout, a CSV missing a required column, a subject asked for that does not exist, no scorable
question at all, a dev split with fewer than ``shots`` examples (unless ``fewer_shots="use_available"``).

Example::

    >>> bench = read_benchmark(Path("ceval-exam"), shots=5)          # doctest: +SKIP
    >>> bench.layout, [s.key for s in bench.subjects][:2]            # doctest: +SKIP
    ('ceval', ['accountant', 'advanced_mathematics'])
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mcq.readers import FileStats, Question, parse_csv, read_jsonl_file, read_text
from zhllama.cli import UserError

Layout = Literal["cmmlu", "ceval", "jsonl"]


@dataclass
class Subject:
    """The questions of one subject: the scored ones and the few-shot pool (dev, in file order)."""

    key: str
    questions: list[Question]
    dev: list[Question]
    source: str
    """The file the scored questions come from."""


@dataclass
class Benchmark:
    """Everything read from one benchmark path."""

    path: str
    layout: Layout
    split: str
    """The scored split ("test" or "val")."""
    subjects: list[Subject]
    files: list[FileStats]
    available_subjects: list[str]
    empty_subjects: list[str] = field(default_factory=list)
    """Selected subjects left with no scorable question (all rows rejected): reported, not scored."""
    fewer_shots: dict[str, int] = field(default_factory=dict)
    """Subjects whose dev pool is smaller than ``shots`` (only with ``fewer_shots="use_available"``)."""

    @property
    def n_questions(self) -> int:
        return sum(len(s.questions) for s in self.subjects)

    def manifest(self) -> dict:
        """The ``data`` section of report.json: layout, subjects, answer letters and per-file accounting."""
        answers = Counter(q.answer for s in self.subjects for q in s.questions)
        return {
            "path": self.path, "layout": self.layout, "scored_split": self.split,
            "subjects": [s.key for s in self.subjects], "available_subjects": self.available_subjects,
            "empty_subjects": self.empty_subjects, "subjects_with_fewer_shots": self.fewer_shots,
            "questions": self.n_questions, "answer_counts": dict(sorted(answers.items())),
            "majority_letter_accuracy": max(answers.values()) / self.n_questions if self.n_questions else None,
            "files": [f.to_dict() for f in self.files],
        }


# ---------------------------------------------------------------------------------------------
# Putting a benchmark together


def _subject_key(stem: str, split: str) -> str:
    """``computer_network_val`` -> ``computer_network`` (C-Eval); ``agronomy`` stays (CMMLU)."""
    return stem[: -len(split) - 1] if stem.endswith(f"_{split}") else stem


def _csv_files(directory: Path, split: str) -> dict[str, Path]:
    return {_subject_key(p.stem, split): p for p in sorted((directory / split).glob("*.csv"))}



def detect_layout(path: Path) -> Layout:
    """"jsonl" for a ``.jsonl`` file, "ceval" for a dir with ``val/*_val.csv``, "cmmlu" for ``test/*.csv``.

    >>> detect_layout(Path("bench_agieval_gaokao_zh.jsonl"))  # doctest: +SKIP
    'jsonl'
    """
    if path.is_file():
        if path.suffix.lower() == ".jsonl":
            return "jsonl"
        raise UserError(f"{path}: a benchmark file must be .jsonl (for CSV give the directory holding dev/ and test/ or val/)")
    if not path.is_dir():
        raise UserError(f"benchmark not found: {path}")
    if any((path / "val").glob("*_val.csv")):
        return "ceval"
    if any((path / "test").glob("*.csv")):
        return "cmmlu"
    raise UserError(f"{path}: not a benchmark directory: expected CMMLU's dev/*.csv + test/*.csv, "
                    "C-Eval's dev/*_dev.csv + val/*_val.csv, or a .jsonl file")


def select_subjects(available: Sequence[str], wanted: Sequence[str], where: str) -> list[str]:
    """``wanted`` (in the given order) or all of ``available``; an unknown name is a clear error.

    >>> select_subjects(["law", "art"], [], "x"), select_subjects(["law", "art"], ["art"], "x")
    (['law', 'art'], ['art'])
    """
    if not wanted:
        return list(available)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise UserError(f"{where}: no subject(s) {unknown}; available: {', '.join(available)}")
    return list(dict.fromkeys(wanted))


def _check_shots(subject: Subject, shots: int, fewer_shots: str, dev_source: str, fewer: dict[str, int]) -> None:
    if len(subject.dev) >= shots:
        return
    if fewer_shots == "error":
        raise UserError(f"{dev_source}: subject {subject.key!r} has {len(subject.dev)} dev example(s), fewer than "
                        f"shots={shots}; pass --shots {len(subject.dev)} or --fewer_shots use_available")
    fewer[subject.key] = len(subject.dev)


def _limit(questions: list[Question], stats: FileStats, max_questions: int | None) -> list[Question]:
    if max_questions is None or len(questions) <= max_questions:
        return questions
    stats.skipped["over_max_questions_per_subject"] += len(questions) - max_questions
    stats.scored -= len(questions) - max_questions
    return questions[:max_questions]


def _read_csv_dir(path: Path, layout: Layout, split: str, subjects: Sequence[str], shots: int,
                  fewer_shots: str, max_questions: int | None) -> Benchmark:
    scored_files = _csv_files(path, split)
    if not scored_files:
        raise UserError(f"{path}: no {split}/*.csv files to score")
    dev_files = _csv_files(path, "dev")
    chosen = select_subjects(list(scored_files), subjects, str(path))
    bench = Benchmark(str(path), layout, split, [], [], list(scored_files))
    for key in chosen:
        stats = FileStats(str(scored_files[key]))
        questions = parse_csv(read_text(scored_files[key]), str(scored_files[key]), key, stats)
        stats.scored = len(questions)
        questions = _limit(questions, stats, max_questions)
        bench.files.append(stats)
        dev: list[Question] = []
        dev_source = str(path / "dev" / f"{key}{'_dev' if layout == 'ceval' else ''}.csv")
        if key in dev_files and shots > 0:
            dev_stats = FileStats(str(dev_files[key]))
            dev = parse_csv(read_text(dev_files[key]), str(dev_files[key]), key, dev_stats)
            dev_stats.dev = len(dev)
            bench.files.append(dev_stats)
        if not questions:
            bench.empty_subjects.append(key)
            continue
        subject = Subject(key, questions, dev, str(scored_files[key]))
        _check_shots(subject, shots, fewer_shots, dev_source, bench.fewer_shots)
        bench.subjects.append(subject)
    return bench


def _read_jsonl_file(path: Path, split: str, subjects: Sequence[str], shots: int, fewer_shots: str,
                     max_questions: int | None) -> Benchmark:
    items, stats = read_jsonl_file(path)
    available = list(dict.fromkeys(q.subject for _, q in items))
    chosen = select_subjects(available, subjects, str(path))
    bench = Benchmark(str(path), "jsonl", split, [], [stats], available)
    by_subject: dict[str, Subject] = {k: Subject(k, [], [], str(path)) for k in chosen}
    for item_split, q in items:
        if q.subject not in by_subject:
            stats.skipped["subject_not_selected"] += 1
        elif item_split == "dev":
            by_subject[q.subject].dev.append(q)
            stats.dev += 1
        elif item_split == split:
            by_subject[q.subject].questions.append(q)
            stats.scored += 1
        else:
            stats.skipped[f"split_{item_split}_not_scored"] += 1
    for key in chosen:
        subject = by_subject[key]
        subject.questions = _limit(subject.questions, stats, max_questions)
        if not subject.questions:
            bench.empty_subjects.append(key)
            continue
        _check_shots(subject, shots, fewer_shots, f"{path} (split dev)", bench.fewer_shots)
        bench.subjects.append(subject)
    return bench


def read_benchmark(path: Path, *, split: str = "auto", subjects: Sequence[str] = (), shots: int = 5,
                   fewer_shots: Literal["error", "use_available"] = "error",
                   max_questions_per_subject: int | None = None) -> Benchmark:
    """Read a benchmark in any supported layout (see the module docstring) and check it can be scored.

    ``split="auto"`` scores ``val`` for C-Eval and ``test`` otherwise. The few-shot examples of a
    question are the first ``shots`` dev questions of its subject (lm-eval's ``first_n`` sampler).
    """
    layout = detect_layout(Path(path))
    if split == "auto":
        split = "val" if layout == "ceval" else "test"
    if layout == "jsonl":
        bench = _read_jsonl_file(Path(path), split, subjects, shots, fewer_shots, max_questions_per_subject)
    else:
        bench = _read_csv_dir(Path(path), layout, split, subjects, shots, fewer_shots, max_questions_per_subject)
    for stats in bench.files:
        stats.check()
    if not bench.subjects:
        rejected = sum(f.n_rejected for f in bench.files)
        raise UserError(f"{path}: no question to score in split {split!r} ({rejected} row(s) rejected; "
                        f"first: {next((e for f in bench.files for e in f.examples), 'none')})")
    return bench
