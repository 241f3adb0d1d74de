"""Rows of multiple-choice files: C-Eval / CMMLU CSV and AGIEval-style JSONL, each row validated and counted.

A CSV has a header row with the columns ``question, A, B, C, D, answer`` (any case; an ``id`` or an
unnamed index column and extra columns such as C-Eval's ``explanation`` are ignored). A JSONL record
is ``{"subject", "split", "passage"?, "question", "choices": [4 strings], "answer": "A".."D"}``.

A bad row (an answer outside A-D, an empty question or subject, the wrong number of fields, bad
JSON) is counted in :class:`FileStats` with ``file:line``; a CSV without a required column is a
:class:`~zhllama.cli.UserError` naming the file. :mod:`mcq.data` assembles files into a benchmark.

    >>> st = FileStats("law.csv")
    >>> [q.answer for q in parse_csv("id,question,A,B,C,D,answer\\n0,问?,甲,乙,丙,丁,c\\n", "law.csv", "law", st)]
    ['C']
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from zhllama.cli import UserError

LETTERS = ("A", "B", "C", "D")
REQUIRED_COLUMNS = ("question", "a", "b", "c", "d", "answer")
#: At most this many ``file:line: reason`` examples are kept per file in the report.
MAX_EXAMPLES = 5


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


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # utf-8-sig: spreadsheet exports often start with a BOM
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not valid UTF-8 (byte offset {e.start})") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None


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


def read_jsonl_file(path: Path) -> tuple[list[tuple[str, Question]], FileStats]:
    """``(split, Question)`` per valid record of a JSONL file, with the file's accounting."""
    # The project's one JSONL line reader (corpora); it names file:line and rejects bad lines.
    from corpora.readers import DEFAULT_MAX_LINE_BYTES, json_lines

    stats = FileStats(str(path))
    items = parse_jsonl_records(json_lines(path, DEFAULT_MAX_LINE_BYTES, "benchmark JSON lines"), stats)
    return items, stats
