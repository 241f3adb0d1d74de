"""Score one model on a benchmark: prompts -> requests -> batched scores -> per-question records and accuracy.

Pure: takes a loaded model, its tokenizer and a :class:`~mcq.data.Benchmark`; returns a JSON-ready
dict (the ``models[label]`` entry of report.json). Example::

    >>> result = evaluate_model(model, tok, bench, settings=Settings(shots=5))   # doctest: +SKIP
    >>> result["accuracy"]["continuation"]["micro"]                            # doctest: +SKIP
    0.27
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mcq.data import Benchmark
from mcq.prompt import CMMLU_HEADER, Fitted, fit_request, letter_token_ids, shot_token_counts
from mcq.readers import LETTERS, Question
from mcq.scoring import Scores, score_requests

METHODS = {"continuation": ("continuation",), "letter": ("letter",), "both": ("continuation", "letter")}


@dataclass
class Settings:
    """How questions are prompted and scored (the model-independent part of the config).

    >>> Settings().methods
    ('continuation',)
    """

    shots: int = 5
    header: str = CMMLU_HEADER
    subject_names: dict[str, str] = field(default_factory=dict)
    method: str = "continuation"
    chat: bool = False
    window_tokens: int = 2048
    batch_tokens: int = 8192

    @property
    def methods(self) -> tuple[str, ...]:
        return METHODS[self.method]


def accuracy(records: Sequence[dict], subjects: Sequence[str], key: str = "predicted") -> dict[str, Any]:
    """Per-subject and overall accuracy of ``records[i][key]`` against ``answer``.

    ``macro`` averages the subjects' accuracies (each subject weighs the same, as C-Eval and CMMLU
    report); ``micro`` is correct / questions over all subjects.

    >>> recs = [{"subject": "a", "answer": "A", "predicted": "A"}, {"subject": "b", "answer": "B", "predicted": "C"},
    ...         {"subject": "b", "answer": "B", "predicted": "B"}]
    >>> acc = accuracy(recs, ["a", "b"]); acc["macro"], round(acc["micro"], 4)
    (0.75, 0.6667)
    """
    per = {s: {"questions": 0, "correct": 0} for s in subjects}
    for r in records:
        per[r["subject"]]["questions"] += 1
        per[r["subject"]]["correct"] += int(r[key] == r["answer"])
    for row in per.values():
        row["accuracy"] = row["correct"] / row["questions"] if row["questions"] else None
    scored = [row for row in per.values() if row["questions"]]
    n = sum(row["questions"] for row in scored)
    return {
        "subjects": per,
        "macro": sum(row["accuracy"] for row in scored) / len(scored) if scored else None,
        "micro": sum(row["correct"] for row in scored) / n if n else None,
        "questions": n,
        "predicted_counts": dict(sorted(Counter(r[key] for r in records).items())),
    }


def question_record(q: Question, scores: Scores, methods: Sequence[str]) -> dict[str, Any]:
    """``{subject, index, answer, predicted, loglik: {A..D}}`` for the first method, the second nested under its name.

    >>> q = Question("law", 3, "q", ("a", "b", "c", "d"), "B")
    >>> question_record(q, Scores([-2.0, -1.0, -3.0, -4.0], [-1.0, -2.0, -3.0, -4.0]), ["continuation", "letter"])["letter"]
    {'predicted': 'A', 'loglik': {'A': -1.0, 'B': -2.0, 'C': -3.0, 'D': -4.0}}
    """
    def one(method: str) -> dict[str, Any]:
        values = scores.loglik if method == "continuation" else scores.letter_loglik
        return {"predicted": scores.predicted(method), "loglik": dict(zip(LETTERS, values, strict=True))}

    record: dict[str, Any] = {"subject": q.subject, "index": q.index, "answer": q.answer, **one(methods[0])}
    for method in methods[1:]:
        record[method] = one(method)
    return record


def fit_all(tokenizer: Any, bos_id: int, bench: Benchmark, settings: Settings) -> list[tuple[Question, Fitted]]:
    """Every scored question with its prompt fitted to the window (few-shot examples: the subject's first ``shots``)."""
    letter_ids = letter_token_ids(tokenizer)
    out = []
    for subject in bench.subjects:
        shots = subject.dev[: settings.shots]
        counts = shot_token_counts(tokenizer, shots)
        name = settings.subject_names.get(subject.key, subject.key)
        for q in subject.questions:
            out.append((q, fit_request(tokenizer, bos_id, letter_ids, header=settings.header, subject_name=name,
                                       shots=shots, question=q, window_tokens=settings.window_tokens,
                                       chat=settings.chat, shot_tokens=counts)))
    return out


def evaluate_model(model: Any, tokenizer: Any, bench: Benchmark, settings: Settings, *, bos_id: int,
                   pad_id: int | None = None, progress: bool = False, desc: str = "questions") -> dict[str, Any]:
    """Score every question of ``bench``; returns accuracy per method, truncation counts, prompts and records."""
    t0 = time.perf_counter()
    fitted = fit_all(tokenizer, bos_id, bench, settings)
    t1 = time.perf_counter()
    scores = score_requests(model, [f.request for _, f in fitted], batch_tokens=settings.batch_tokens,
                            pad_id=bos_id if pad_id is None else pad_id, progress=progress, desc=desc)
    seconds = time.perf_counter() - t1
    methods = settings.methods
    records = [question_record(q, s, methods) for (q, _), s in zip(fitted, scores, strict=True)]
    subjects = [s.key for s in bench.subjects]
    acc = {methods[0]: accuracy(records, subjects)}
    for method in methods[1:]:
        acc[method] = accuracy([{**r, "predicted": r[method]["predicted"]} for r in records], subjects)
    prompts: dict[str, str] = {}
    for q, f in fitted:
        prompts.setdefault(q.subject, f.prompt)
    return {
        "methods": list(methods),
        "accuracy": acc,
        "methods_agree": _agreement(scores) if len(methods) > 1 else None,
        "truncation": {
            "window_tokens": settings.window_tokens,
            "questions_with_dropped_shots": sum(1 for _, f in fitted if f.shots_dropped),
            "shots_dropped": sum(f.shots_dropped for _, f in fitted),
            "questions_cut": sum(1 for _, f in fitted if f.tokens_cut),
            "tokens_cut": sum(f.tokens_cut for _, f in fitted),
        },
        "single_token_letters": sum(1 for _, f in fitted if _single_token_letters(f)) / len(fitted),
        "mean_input_tokens": sum(f.request.n_input_tokens for _, f in fitted) / len(fitted),
        "prompts": prompts,
        "questions": records,
        "prompt_seconds": t1 - t0,
        "seconds": seconds,
        "questions_per_second": len(fitted) / seconds if seconds > 0 else None,
    }


def _single_token_letters(f: Fitted) -> bool:
    """True when each continuation is the single letter token: then both methods give identical log-likelihoods."""
    return f.request.continuations == [[i] for i in f.request.letter_ids]


def _agreement(scores: Sequence[Scores]) -> float:
    """Share of questions where the continuation and letter-logit methods predict the same letter."""
    return sum(s.predicted("continuation") == s.predicted("letter") for s in scores) / len(scores)
