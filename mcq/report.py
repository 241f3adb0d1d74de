"""report.md and report.png of a benchmark run (one model or several side by side).

The report dict (report.json) is ``{"settings", "data", "models": {label: result}}`` where ``result``
is :func:`mcq.evaluate.evaluate_model`'s output plus where the model came from.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

CHANCE = 0.25


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _columns(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(model label, method) per accuracy column, in report order."""
    return [(label, method) for label, m in report["models"].items() for method in m["methods"]]


def accuracy_table(report: dict[str, Any]) -> str:
    """Markdown: one row per subject (+ macro, micro), one column per model x method, accuracy in %.

    >>> rep = {"models": {"m": {"methods": ["continuation"], "accuracy": {"continuation": {
    ...     "subjects": {"law": {"questions": 2, "correct": 1, "accuracy": 0.5}}, "macro": 0.5, "micro": 0.5}}}}}
    >>> print(accuracy_table(rep).splitlines()[2])
    | law | 2 | 50.0 |
    """
    cols = _columns(report)
    first = report["models"][cols[0][0]]["accuracy"][cols[0][1]]
    names = [f"{label} ({method})" if len(report["models"][label]["methods"]) > 1 else label for label, method in cols]
    lines = ["| subject | questions | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(cols)]
    for subject, row in first["subjects"].items():
        cells = [_pct(report["models"][lab]["accuracy"][meth]["subjects"][subject]["accuracy"]) for lab, meth in cols]
        lines.append(f"| {subject} | {row['questions']} | " + " | ".join(cells) + " |")
    n = sum(row["questions"] for row in first["subjects"].values())
    for key in ("macro", "micro"):
        cells = [_pct(report["models"][lab]["accuracy"][meth][key]) for lab, meth in cols]
        lines.append(f"| **{key} average** | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _letters(counts: dict[str, int]) -> str:
    """``A/B/C/D`` counts, e.g. ``3/0/9/1``.

    >>> _letters({"A": 3, "C": 9, "D": 1})
    '3/0/9/1'
    """
    return "/".join(str(counts.get(letter, 0)) for letter in "ABCD")


def render_markdown(report: dict[str, Any]) -> str:
    """Settings, data accounting, the accuracy table, truncation and speed per model, one example prompt."""
    s, d = report["settings"], report["data"]
    rejected = sum(sum(f["rejected"].values()) for f in d["files"])
    lines = [
        "# Multiple-choice benchmark",
        "",
        f"`{d['path']}` ({d['layout']} layout), split `{d['scored_split']}`: {d['questions']:,} questions in "
        f"{len(d['subjects'])} subject(s), {s['shots']}-shot, methods: {s['method']}, "
        f"chat template: {s['chat_template']}. Accuracy in %, chance is {100 * CHANCE:.0f}%; "
        f"always answering the most common letter scores {_pct(d.get('majority_letter_accuracy'))}% "
        f"(answers A/B/C/D: {_letters(d['answer_counts'])}).",
        "",
        "Prompt and scoring follow lm-evaluation-harness's CMMLU task: the predicted letter is the argmax of "
        "log p(' A'..' D' | prompt) (*continuation*); *letter* compares the next-token log-probabilities "
        "of the letter tokens.",
        "",
        accuracy_table(report),
        "",
    ]
    if rejected or d["empty_subjects"] or d["subjects_with_fewer_shots"]:
        lines += [f"Input: {rejected} row(s) rejected, empty subjects {d['empty_subjects'] or 'none'}, "
                  f"subjects with fewer dev examples than shots {d['subjects_with_fewer_shots'] or 'none'} "
                  "(details in report.json `data.files`).", ""]
    lines += ["| model | path | window | questions with dropped shots | questions cut | predicted A/B/C/D | "
              "methods agree | questions/s |", "|---|---|---:|---:|---:|---|---:|---:|"]
    for label, m in report["models"].items():
        t = m["truncation"]
        agree = _pct(m["methods_agree"]) + "%" if m["methods_agree"] is not None else "-"
        qps = f"{m['questions_per_second']:.1f}" if m["questions_per_second"] else "n/a"
        lines.append(f"| {label} | `{m['path']}` ({m['kind']}{', chat' if m['chat'] else ''}) | {t['window_tokens']} | "
                     f"{t['questions_with_dropped_shots']} ({t['shots_dropped']} shots) | {t['questions_cut']} | "
                     f"{_letters(m['accuracy'][m['methods'][0]]['predicted_counts'])} | {agree} | {qps} |")
    first_label = next(iter(report["models"]))
    subject, prompt = next(iter(report["models"][first_label]["prompts"].items()))
    lines += ["", f"Prompt of the first question of `{subject}` ({first_label}; every subject's is in report.json):",
              "", "```text", prompt, "```", ""]
    return "\n".join(lines)


def render_png(report: dict[str, Any]) -> bytes:
    """Grouped bars of accuracy per subject (+ macro, micro), one bar per model x method, chance line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = _columns(report)
    first = report["models"][cols[0][0]]["accuracy"][cols[0][1]]
    subjects = list(first["subjects"])
    names = [f"{s} ({first['subjects'][s]['questions']})" for s in subjects] + ["macro avg", "micro avg"]
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * len(names) * max(1, len(cols)) ** 0.5 + 3), 3.8))
    width = 0.8 / len(cols)
    for j, (label, method) in enumerate(cols):
        acc = report["models"][label]["accuracy"][method]
        values = [acc["subjects"][s]["accuracy"] or 0.0 for s in subjects] + [acc["macro"] or 0.0, acc["micro"] or 0.0]
        xs = [i + (j - (len(cols) - 1) / 2) * width for i in range(len(names))]
        ax.bar(xs, [100 * v for v in values], width, label=f"{label} ({method})")
    ax.axhline(100 * CHANCE, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    source = Path(report["data"]["path"]).name
    ax.set_title(f"{source}, {report['settings']['shots']}-shot: accuracy per subject (questions)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    from zhllama.artifacts import figure_png

    return figure_png(fig, dpi=110)
