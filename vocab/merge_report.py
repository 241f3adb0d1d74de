"""What ``vocab merge`` writes: the tokenizer dir, its invariant checks and the per-domain report.

Report (``report.json``, ``report.md``, ``report.png``; ``curve.png``): per domain and script of the
held-out (test) split, tokens per character, byte-fallback share and pieces used for the base, the
peer and ours; the target check (:func:`vocab.domains.target_check`); the dev size curve; the
general comparison of :func:`vocab.report.compare` on English and any extra texts.
"""
from __future__ import annotations

from pathlib import Path

from vocab.assemble import dead_pieces, non_chinese_changes
from vocab.proto import ModelProto

NAMES = ("llama2 (base)", "chinese-llama2 (peer)", "zhllama (ours)")


def invariant_checks(base: ModelProto, merged: ModelProto, english: list[str]) -> dict:
    """Re-check the merge invariants on the real output; a violation is a bug and raises."""
    from vocab.export import EDGE_STRINGS

    n = len(base.pieces)
    checks = {
        "base_pieces_identical": all((a.piece, a.score, a.type) == (b.piece, b.score, b.type)
                                     for a, b in zip(base.pieces, merged.pieces[:n], strict=True)),
        "no_duplicate_pieces": len({p.piece for p in merged.pieces}) == len(merged.pieces),
        "no_score_ties_among_added": len({p.score for p in merged.pieces[n:]}) == len(merged.pieces) - n,
        "dead_added_pieces": len(dead_pieces(merged, range(n, len(merged.pieces)))),
        "english_lines_changed": len(non_chinese_changes(base, merged, english + list(EDGE_STRINGS))),
    }
    if not (checks["base_pieces_identical"] and checks["no_duplicate_pieces"] and checks["no_score_ties_among_added"]) \
            or checks["dead_added_pieces"] or checks["english_lines_changed"]:
        raise RuntimeError(f"merge invariants violated (a bug): {checks}")
    return checks


def lines_of(sets: dict[str, list[str]]) -> list[str]:
    """Every distinct non-empty line of the plain domain sets (the ``domain/script`` ones repeat them)."""
    seen: dict[str, None] = {}
    for name, texts in sets.items():
        if "/" in name:
            continue
        for t in texts:
            for ln in t.split("\n"):
                if ln:
                    seen.setdefault(ln, None)
    return list(seen)


def domain_markdown(table: dict, check: dict | None, title: str) -> str:
    """The per-domain table: rows = evaluation sets, columns = tokenizers (tokens/char, bytes, pieces used)."""
    from vocab.domains import table_markdown

    lines = [f"## {title}", "", "Tokens per character (lower is better); in brackets the byte-fallback share "
             "of tokens and the distinct pieces used.", "", table_markdown(table)]
    if check is not None:
        ratios = ", ".join(f"{s} {r:.3f}" for s, r in check["ratios"].items())
        lines += [f"Ours / peer: {ratios}; geometric mean over domains **{check['geomean_ratio']:.4f}** "
                  f"(target <= 0.95, every domain and script <= 1): **{'MET' if check['met'] else 'MISSED'}** "
                  f"(worst: {check['worst']}).", ""]
    return "\n".join(lines)


def plot_domains(table: dict, sets: list[str], title: str):
    """A matplotlib Figure: grouped bars of tokens/char per evaluation set, one bar per tokenizer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(table)
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(sets) + 2), 4.4))
    width = 0.8 / len(names)
    x = np.arange(len(sets))
    for i, name in enumerate(names):
        vals = [table[name][s]["tokens_per_char"] for s in sets]
        bars = ax.bar(x + i * width - 0.4 + width / 2, vals, width, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=6)
    ax.set_xticks(x, sets, rotation=20, ha="right")
    ax.set_ylabel("tokens per character (lower is better)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _summary_markdown(summary: dict) -> str:
    r = summary["merge"]
    lines = [
        "# Merged tokenizer", "",
        f"- base {r['base_pieces']:,} pieces + {r['added_chars']:,} characters + {r['added_words']:,} "
        f"multi-character pieces = **{r['total_pieces']:,} pieces** (Chinese model: {r['zh_pieces']:,}).",
        f"- selection `{summary['selection']}`; size rule `{summary['size_rule']}`: {summary['size_reason']}",
        f"- Chinese-model pieces not candidates: {r['skipped']}; unreachable candidates removed: "
        f"{len(r['dead_removed'])} {r['dead_removed'][:10]}",
        f"- added scores {r['score_range'][0]:.0f} .. {r['score_range'][1]:.0f} (below every base piece "
        "except the whitespace runs), unique, words in the Chinese model's merge order.",
        f"- evidence weights (per character, normalised): {summary['evidence']}",
        "", "## Invariant checks at build time", "",
    ]
    lines += [f"- {k}: {v}" for k, v in summary["checks"].items()]
    return "\n".join(lines) + "\n"


def _estimates_markdown(estimates: dict) -> str:
    if not estimates:
        return ""
    names = list(next(iter(estimates.values())))
    lines = ["## Estimate for text with no corpus here (reviews, social media, mainland news)", "",
             "Tokens per character of the word list's held-out 10% of words, weighted by frequency, each word "
             "encoded as inside running text (an estimate, not measured text).", "",
             "| word list | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for set_name, row in estimates.items():
        lines.append(f"| {set_name} | " + " | ".join(f"{row[n]:.4f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


def _curve_markdown(curve: list[dict], dev_docs: int) -> str:
    lines = [f"## Size curve (dev: {dev_docs:,} train documents BPE never saw; held-out plays no part)", "",
             "![curve](curve.png)", "", "| added pieces | total pieces | dev tokens/char (geomean over domains) |",
             "|---|---|---|"]
    lines += [f"| {c['added_pieces']:,} | {c['total_pieces']:,} | {c['tokens_per_char']:.4f} |" for c in curve]
    return "\n".join(lines) + "\n"


def write_outputs(cfg, *, base, base_bytes, zh_bytes, peer, peer_bytes, merged, report, curve, n_added, reason,
                  inputs, base_path) -> dict:
    """Export, check, measure and write everything into ``cfg.out_dir`` atomically; returns the summary."""
    from vocab.curve import plot_curve
    from vocab.domains import domain_table, domains_of, geomean, target_check, weighted_tokens_per_char
    from vocab.export import EDGE_STRINGS, export_hf, parity_mismatches
    from vocab.report import compare, to_markdown
    from zhllama.artifacts import atomic_dir, atomic_write_json, atomic_write_text, sha256_bytes, write_meta

    merged_bytes = merged.SerializeToString()
    checks = invariant_checks(base, merged, inputs.english)
    tokenizers = {NAMES[0]: base_bytes}
    if peer is not None:
        tokenizers[NAMES[1]] = peer_bytes
    tokenizers[NAMES[2]] = merged_bytes
    test = domain_table(tokenizers, inputs.test_sets)
    dev = domain_table(tokenizers, inputs.dev_sets)
    estimates = {e.name: {n: weighted_tokens_per_char(b, list(e.texts), list(e.text_weights or []), e.dummy_prefix)
                          for n, b in tokenizers.items()} for e in inputs.estimates}
    check = target_check(test, NAMES[2], NAMES[1]) if peer is not None else None
    dev_check = target_check(dev, NAMES[2], NAMES[1]) if peer is not None else None
    total_w = sum(e.weight for e in inputs.evidence) or 1.0
    summary = {
        "merge": report, "selection": cfg.selection, "size_rule": cfg.size_rule, "size_reason": reason,
        "added_pieces": n_added, "max_total_pieces": cfg.max_total_pieces,
        "evidence": {e.name: round(e.weight / total_w, 4) for e in inputs.evidence},
        "curve_measured_on": "dev", "dev_documents": sum(len(v) for k, v in inputs.dev_sets.items() if "/" not in k),
        "target": {"measured_on": "held-out (test)", **(check or {}), "pieces": len(merged.pieces),
                   "peer_pieces": len(peer.pieces) if peer is not None else None,
                   "met": (check["met"] and len(merged.pieces) <= len(peer.pieces)) if check else None},
        "dev_target": dev_check, "test": test, "dev": dev, "word_list_estimates": estimates,
        "checks": checks, "curve": curve,
    }
    out_dir = Path(cfg.out_dir)
    with atomic_dir(out_dir) as tmp:
        export_hf(merged_bytes, tmp)
        if cfg.parity_check:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(tmp)
            texts = list(EDGE_STRINGS) + inputs.english + lines_of(inputs.dev_sets) + lines_of(inputs.test_sets)
            bad = parity_mismatches(hf, merged_bytes, texts)
            checks["hf_sentencepiece_lines_checked"] = len(texts)
            checks["hf_sentencepiece_mismatches"] = len(bad)
            checks["hf_len_equals_pieces"] = len(hf) == len(merged.pieces)
            if bad or not checks["hf_len_equals_pieces"]:
                raise RuntimeError(f"HF export differs from SentencePiece on {len(bad)} text(s), e.g. {bad[:2]!r}")
        comparison = compare(tokenizers, {"english": inputs.english, **inputs.extra}, base=NAMES[0])
        summary["comparison"] = comparison
        atomic_write_json(tmp / "report.json", summary)
        md = (_summary_markdown(summary) + "\n" + domain_markdown(test, check, "Held-out (test) split by domain and script")
              + "\n" + _estimates_markdown(estimates) + "\n"
              + domain_markdown(dev, dev_check, "Dev split by domain and script") + "\n"
              + _curve_markdown(curve, summary["dev_documents"]) + "\n" + to_markdown(comparison))
        atomic_write_text(tmp / "report.md", md)
        sets = domains_of(test[NAMES[0]]) + [s for s in ("all/simplified", "all/traditional") if s in test[NAMES[0]]]
        fig = plot_domains(test, sets, "Held-out tokens per character by domain and script")
        fig.savefig(tmp / "report.png", dpi=120)
        dev_geomean = {n: geomean(dev[n][d]["tokens_per_char"] for d in domains_of(dev[n])) for n in dev}
        plot_curve(curve, n_added, dev_geomean.get(NAMES[1]), len(base.pieces),
                   dev_geomean[NAMES[0]]).savefig(tmp / "curve.png", dpi=120)
        hashes = {"base_model": sha256_bytes(base_bytes), "zh_model": sha256_bytes(zh_bytes), **inputs.input_hashes}
        if peer is not None:
            hashes["peer_model"] = sha256_bytes(peer_bytes)
        write_meta(tmp, config=cfg, inputs=hashes, pieces=len(merged.pieces), base_model_path=str(base_path))
    import matplotlib.pyplot as plt

    plt.close("all")
    return summary
