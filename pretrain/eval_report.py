"""The ``python -m pretrain eval`` report: Markdown tables (one per model, side by side in compare
mode) and a PNG of bits/char and bits/byte per file. Pure: report dict in, text or PNG bytes out.

    md = render_markdown(report)      # report = the dict pretrain.evaluate.run writes as report.json
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: Report columns: (key, header, format) for the Markdown tables.
_COLUMNS = (
    ("documents", "docs", "{:,}"),
    ("characters", "chars", "{:,}"),
    ("utf8_bytes", "bytes", "{:,}"),
    ("tokens", "tokens", "{:,}"),
    ("tokens_per_char", "tokens/char", "{:.3f}"),
    ("token_perplexity", "token PPL", "{:.2f}"),
    ("bits_per_char", "bits/char", "{:.4f}"),
    ("bits_per_byte", "bits/byte", "{:.4f}"),
)


def fmt(value: Any, spec: str) -> str:
    """``spec.format(value)``, or ``n/a`` for a figure that could not be computed.

    >>> fmt(3.14159, "{:.2f}"), fmt(None, "{:.2f}")
    ('3.14', 'n/a')
    """
    return "n/a" if value is None else spec.format(value)


def _rows(result: dict[str, Any]) -> list[tuple[str, dict]]:
    return [*result["files"].items(), ("**total**", result["total"])]


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown report: settings, one table per model, and the side-by-side table in compare mode."""
    s = report["settings"]
    lines = [
        "# Evaluation: token perplexity, bits per character, bits per byte",
        "",
        "Token perplexity depends on the tokenizer (a larger vocabulary has fewer, longer tokens): "
        "compare models with different tokenizers by **bits/char** or **bits/byte**, which are normalised "
        "by the text itself. Lower is better.",
        "",
        f"Rolling windows of {s['window_tokens']} tokens, stride {s['stride_tokens']}; each document scored "
        f"on its own after BOS. Device {s['device']}, dtype {s['dtype']}.",
        "",
    ]
    for role, m in report["models"].items():
        lines += [f"## {role}: `{m['path']}` ({m['kind']}, tokenizer of {m['tokenizer_size']:,} tokens)", ""]
        lines.append("| file | " + " | ".join(h for _, h, _ in _COLUMNS) + " |")
        lines.append("|---|" + "---:|" * len(_COLUMNS))
        for name, row in _rows(m):
            lines.append(f"| {name} | " + " | ".join(fmt(row[k], f) for k, _, f in _COLUMNS) + " |")
        tps = m["tokens_per_second"]
        lines += ["", f"Scored in {m['seconds']:.1f} s ({fmt(tps, '{:,.0f}')} tokens/s).", ""]
    if "baseline" in report["models"]:
        lines += ["## Side by side", "", compare_table(report), ""]
    return "\n".join(lines)


def compare_table(report: dict[str, Any]) -> str:
    """Markdown table: per file, model vs baseline tokens/char, token PPL, bits/char, bits/byte."""
    model, base = report["models"]["model"], report["models"]["baseline"]
    head = ("| file | tokens/char model | tokens/char baseline | token PPL model | token PPL baseline "
            "| bits/char model | bits/char baseline | Δ bits/char | bits/byte model | bits/byte baseline |")
    lines = [head, "|---|" + "---:|" * 9]
    for (name, a), (_, b) in zip(_rows(model), _rows(base), strict=True):
        delta = None
        if a["bits_per_char"] is not None and b["bits_per_char"]:
            delta = 100.0 * (a["bits_per_char"] / b["bits_per_char"] - 1.0)
        cells = [
            fmt(a["tokens_per_char"], "{:.3f}"), fmt(b["tokens_per_char"], "{:.3f}"),
            fmt(a["token_perplexity"], "{:.2f}"), fmt(b["token_perplexity"], "{:.2f}"),
            fmt(a["bits_per_char"], "{:.4f}"), fmt(b["bits_per_char"], "{:.4f}"), fmt(delta, "{:+.1f}%"),
            fmt(a["bits_per_byte"], "{:.4f}"), fmt(b["bits_per_byte"], "{:.4f}"),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_png(report: dict[str, Any]) -> bytes:
    """Grouped bars of bits/char and bits/byte per file (and total), one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = list(report["models"])
    names = [n for n, _ in _rows(report["models"][roles[0]])]
    labels = [Path(n).name if n != "**total**" else "total" for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 2.2 * len(names) + 3), 3.6))
    width = 0.8 / len(roles)
    for ax, key, title in zip(axes, ("bits_per_char", "bits_per_byte"), ("bits per character", "bits per byte"), strict=True):
        for j, role in enumerate(roles):
            values = [row[key] or 0.0 for _, row in _rows(report["models"][role])]
            xs = [i + (j - (len(roles) - 1) / 2) * width for i in range(len(names))]
            ax.bar(xs, values, width, label=f"{role}: {Path(report['models'][role]['path']).name}")
        ax.set_xticks(range(len(names)), labels, rotation=15, fontsize=8)
        ax.set_title(f"{title} (lower is better)", fontsize=10)
        ax.legend(fontsize=7)
    from zhllama.artifacts import figure_png

    return figure_png(fig, dpi=110)
