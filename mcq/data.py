"""Read multiple-choice benchmarks: C-Eval / CMMLU CSV directories and AGIEval-style JSONL files.

Layouts (:func:`detect_layout`)::

    CMMLU   DIR/dev/<subject>.csv        + DIR/test/<subject>.csv          (scored: test)
    C-Eval  DIR/dev/<subject>_dev.csv    + DIR/val/<subject>_val.csv       (scored: val; C-Eval's test has no answers)
    JSONL   FILE.jsonl, one record per line:
            {"subject", "split": "dev"|"test", "passage"?, "question", "choices": [4 strings], "answer": "A".."D"}

A CSV has a header row with the columns ``question, A, B, C, D, answer`` (any case; an ``id`` or an
unnamed index column and extra columns such as C-Eval's ``explanation`` are ignored). ``dev``
questions are the few-shot pool; the scored split's questions are scored.

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

import csv
import io
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from zhllama.cli import UserError

LETTERS = ("A", "B", "C", "D")
REQUIRED_COLUMNS = ("question", "a", "b", "c", "d", "answer")
#: At most this many ``file:line: reason`` examples are kept per file in the report.
MAX_EXAMPLES = 5

Layout = Literal["cmmlu", "ceval", "jsonl"]


@dataclass(frozen=True)
class Question:
    """One four-option question.

    >>> Question("law", 0, "问题", ("甲", "乙", "丙", "丁"), "C").choices[2]
    '丙'
    """

    subject: str
    """Subject key: the file stem (``_dev``/``_val``/``_test`` suffix removed) or the JSONL ``subject``."""
    index: int
    """0-based row of the file it was read from (CSV: data row after the header; JSONL: line - 1)."""
    question: str
    choices: tuple[str, str, str, str]
    """Texts of options A, B, C, D."""
    answer: str
    """The correct letter, "A".."D"."""
    passage: str = ""
    """Reading material shown before the question (AGIEval); empty when none."""


@dataclass
class FileStats:
    """What happened to the rows of one file: read = scored + dev + skipped + rejected.

    >>> s = FileStats("x.csv", read=3, scored=2, rejected=Counter(bad_answer=1)); s.check(); s.n_rejected
    1
    """

    file: str
    read: int = 0
    scored: int = 0
    dev: int = 0
    skipped: Counter = field(default_factory=Counter)
    rejected: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    """The first few rejected rows as ``file:line: reason (detail)``."""

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def reject(self, where: str, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {reason}" + (f" ({detail})" if detail else ""))

    def check(self) -> None:
        total = self.scored + self.dev + sum(self.skipped.values()) + self.n_rejected
        assert self.read == total, f"{self.file}: read {self.read} != accounted {total}"

    def to_dict(self) -> dict:
        return {"file": self.file, "read": self.read, "scored": self.scored, "dev": self.dev,
                "skipped": dict(self.skipped), "rejected": dict(self.rejected), "examples": self.examples}


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
# Row validation shared by both formats


def _clean_answer(value: object) -> str | None:
    """"A".."D" (whitespace and case forgiven), else None.

    >>> _clean_answer(" c"), _clean_answer("E"), _clean_answer(None)
    ('C', None, None)
    """
    if not isinstance(value, str):
        return None
    v = value.strip().upper()
    return v if v in LETTERS else None


# ---------------------------------------------------------------------------------------------
# CSV (C-Eval / CMMLU)


def parse_csv(text: str, source: str, subject: str, stats: FileStats) -> list[Question]:
    """Questions of one CSV file's text; bad rows are counted in ``stats``, a missing column is fatal.

    >>> st = FileStats("law.csv")
    >>> qs = parse_csv(",Question,A,B,C,D,Answer\\n0,问?,甲,乙,丙,丁,B\\n1,问?,甲,乙,丙,丁,E\\n", "law.csv", "law", st)
    >>> [(q.index, q.answer) for q in qs], dict(st.rejected)
    ([(0, 'B')], {'bad_answer': 1})
    """
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise UserError(f"{source}: empty CSV file (expected a header row with {', '.join(REQUIRED_COLUMNS)})") from None
    names = [h.strip().lower() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise UserError(f"{source}:1: missing column(s) {missing}; header is {header} "
                        f"(expected {', '.join(REQUIRED_COLUMNS)}, any case)")
    col = {c: names.index(c) for c in REQUIRED_COLUMNS}
    out = []
    for index, row in enumerate(reader):
        where = f"{source}:{reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue  # a blank line holds no row (and is not a data row index)
        stats.read += 1
        if len(row) != len(header):
            stats.reject(where, "wrong_field_count", f"{len(row)} fields, header has {len(header)}")
            continue
        answer = _clean_answer(row[col["answer"]])
        if answer is None:
            stats.reject(where, "bad_answer", f"answer {row[col['answer']]!r} is not one of A-D")
            continue
        if not row[col["question"]].strip():
            stats.reject(where, "empty_question")
            continue
        choices = tuple(row[col[c]] for c in ("a", "b", "c", "d"))
        out.append(Question(subject, index, row[col["question"]], choices, answer))  # type: ignore[arg-type]
    return out


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheet exports often start with a BOM
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 (byte offset {e.start})") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


def _subject_key(stem: str, split: str) -> str:
    """``computer_network_val`` -> ``computer_network`` (C-Eval); ``agronomy`` stays (CMMLU)."""
    return stem[: -len(split) - 1] if stem.endswith(f"_{split}") else stem


def _csv_files(directory: Path, split: str) -> dict[str, Path]:
    return {_subject_key(p.stem, split): p for p in sorted((directory / split).glob("*.csv"))}


# ---------------------------------------------------------------------------------------------
# JSONL (AGIEval-gaokao layout)


def parse_jsonl_records(records: Iterable[tuple[str, dict | None, object]], stats: FileStats) -> list[tuple[str, Question]]:
    """``(split, Question)`` per valid record; ``records`` are ``(file:line, obj, rejection)`` triples
    as the corpora JSONL line reader yields them (a line it rejects is counted here as rejected).

    >>> st = FileStats("b.jsonl")
    >>> rec = {"subject": "history", "split": "dev", "question": "问", "choices": ["a", "b", "c", "d"], "answer": "A"}
    >>> [(s, q.index) for s, q in parse_jsonl_records([("b.jsonl:3", rec, None)], st)]
    [('dev', 2)]
    """
    out = []
    for where, obj, rejection in records:
        stats.read += 1
        if rejection is not None or obj is None:
            stats.reject(where, getattr(rejection, "reason", "bad_line"), getattr(rejection, "detail", ""))
            continue
        index = int(where.rsplit(":", 1)[1]) - 1
        subject, question, choices = obj.get("subject"), obj.get("question"), obj.get("choices")
        passage = obj.get("passage") or ""
        if not isinstance(subject, str) or not subject.strip():
            stats.reject(where, "empty_subject", f"subject {subject!r}")
        elif not isinstance(question, str) or not question.strip():
            stats.reject(where, "empty_question")
        elif not (isinstance(choices, list) and len(choices) == 4 and all(isinstance(c, str) for c in choices)):
            stats.reject(where, "bad_choices", "expected a list of 4 strings")
        elif _clean_answer(obj.get("answer")) is None:
            stats.reject(where, "bad_answer", f"answer {obj.get('answer')!r} is not one of A-D")
        elif not isinstance(passage, str):
            stats.reject(where, "bad_passage", f"passage is {type(passage).__name__}")
        else:
            split = str(obj.get("split") or "test").strip()
            out.append((split, Question(subject.strip(), index, question, tuple(choices),  # type: ignore[arg-type]
                                        _clean_answer(obj["answer"]) or "", passage)))
    return out


def _read_jsonl(path: Path) -> tuple[list[tuple[str, Question]], FileStats]:
    # The project's one JSONL line reader (corpora); it names file:line and rejects bad lines.
    from corpora.readers import DEFAULT_MAX_LINE_BYTES, _json_lines

    stats = FileStats(str(path))
    items = parse_jsonl_records(_json_lines(path, DEFAULT_MAX_LINE_BYTES, "benchmark JSON lines"), stats)
    return items, stats


# ---------------------------------------------------------------------------------------------
# Putting a benchmark together


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
        questions = parse_csv(_read_text(scored_files[key]), str(scored_files[key]), key, stats)
        stats.scored = len(questions)
        questions = _limit(questions, stats, max_questions)
        bench.files.append(stats)
        dev: list[Question] = []
        dev_source = str(path / "dev" / f"{key}{'_dev' if layout == 'ceval' else ''}.csv")
        if key in dev_files and shots > 0:
            dev_stats = FileStats(str(dev_files[key]))
            dev = parse_csv(_read_text(dev_files[key]), str(dev_files[key]), key, dev_stats)
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
    items, stats = _read_jsonl(path)
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
