"""The size curve: dev tokens/char for growing prefixes of the ranked candidates, and the size rule.

Example::

    rows = ranked_curve(base, planned, {"legal": dev_legal, "dialogue": dev_dialogue}, points=12)
    n = choose_by_marginal_gain(rows, 0.002)
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from vocab.assemble import assemble, tokens_per_char
from vocab.proto import ModelProto


def ranked_curve(base: ModelProto, planned, dev_sets: Mapping[str, list[str]], points: int = 12,
                 sizes: Iterable[int] | None = None) -> list[dict]:
    """Dev tokens/char for growing prefixes of ``planned.order`` (a :class:`vocab.merge.Plan`):
    ``[{"added_pieces", "total_pieces", "tokens_per_char", "per_domain"}]``. ``tokens_per_char`` is
    the geometric mean over the domains of ``dev_sets`` (sets named ``domain/script`` are reported in
    ``per_domain`` but not averaged), so every domain counts alike whatever its size."""
    from vocab.domains import domains_of, geomean

    rows = []
    for n in sorted(set(sizes if sizes is not None else curve_sizes(len(planned.order), points))):
        chars, words = planned.pieces(n)
        m = assemble(base, chars, words)
        per = {name: round(tokens_per_char(m, texts), 6) for name, texts in dev_sets.items()}
        domains = domains_of(per) or list(per)
        rows.append({"added_pieces": n, "total_pieces": len(m.pieces),
                     "tokens_per_char": round(geomean(per[d] for d in domains), 6), "per_domain": per})
    return rows


def curve_sizes(n_max: int, points: int) -> list[int]:
    """0, ``points - 1`` sizes spaced geometrically up to ``n_max`` (detail where each piece gains
    most) and ``points - 1`` spaced linearly (detail near the top).

    >>> curve_sizes(1000, 4)
    [0, 10, 100, 333, 667, 1000]
    """
    if n_max <= 0:
        return [0]
    lo = min(10, n_max)
    steps = max(points - 1, 1)
    geometric = {round(lo * (n_max / lo) ** (k / max(steps - 1, 1))) for k in range(steps)}
    linear = {round(n_max * k / steps) for k in range(1, steps + 1)}
    return sorted({0} | geometric | linear)


def choose_by_marginal_gain(curve: list[dict], min_gain_per_1k_pieces: float, window_pieces: int = 1000) -> int:
    """Walk the measured curve upward; stop at the first point from which the next ``window_pieces``
    (to the first measured size at least that much further, else the largest) cut the relative
    tokens/char by less than the threshold per 1,000 pieces. Returns the chosen ``added_pieces``.

    Why a window and not point to point: the curve is sampled geometrically near 0, so its first
    segments hold a dozen pieces; a dozen pieces that happen not to occur in a small dev set (the
    demo's) would otherwise end the vocabulary at 10 pieces while the next thousand cut tokens/char
    by 20%. Invariant: the result is a measured size, and every window that starts below it gains at
    least the threshold.

    >>> rows = [{"added_pieces": 0, "tokens_per_char": 1.0}, {"added_pieces": 10, "tokens_per_char": 1.0},
    ...         {"added_pieces": 1000, "tokens_per_char": 0.9}, {"added_pieces": 2000, "tokens_per_char": 0.899}]
    >>> choose_by_marginal_gain(rows, 0.005)
    1000
    """
    rows = sorted(curve, key=lambda r: r["added_pieces"])
    chosen = rows[0]["added_pieces"]
    for i, a in enumerate(rows[:-1]):
        b = next((r for r in rows[i + 1:] if r["added_pieces"] >= a["added_pieces"] + window_pieces), rows[-1])
        gain = (a["tokens_per_char"] - b["tokens_per_char"]) / a["tokens_per_char"]
        per_1k = gain / max(b["added_pieces"] - a["added_pieces"], 1) * 1000
        if per_1k < min_gain_per_1k_pieces:
            break
        chosen = rows[i + 1]["added_pieces"]
    return chosen


def plot_curve(curve: list[dict], chosen: int, target_tokens_per_char: float | None, base_pieces: int,
               base_tokens_per_char: float | None = None):
    """A matplotlib Figure: dev tokens/char vs merged vocabulary size, the peer's and the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([r["total_pieces"] for r in curve], [r["tokens_per_char"] for r in curve], "o-", ms=3,
            label="zhllama merge (ranked prefixes)")
    if base_tokens_per_char is not None:
        ax.plot([base_pieces], [base_tokens_per_char], "s", color="gray", label="Llama-2 base")
    if target_tokens_per_char is not None:
        ax.axhline(target_tokens_per_char, color="tab:red", ls="--", lw=1, label="peer (Chinese-LLaMA-2, 55,296)")
    rows = [r for r in curve if r["added_pieces"] == chosen]
    if rows:
        ax.plot([rows[0]["total_pieces"]], [rows[0]["tokens_per_char"]], "*", ms=14, color="tab:green",
                label=f"chosen: {rows[0]['total_pieces']:,} pieces")
    ax.set_xlabel(f"merged vocabulary size (base {base_pieces:,} + added pieces in order of measured gain)")
    ax.set_ylabel("dev tokens/char, geometric mean over domains")
    ax.set_title("How many Chinese pieces earn their place")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
