"""Merge a Chinese SentencePiece BPE into Llama-2's 32k tokenizer without changing how it reads English.

Why not the classic merge (:func:`classic_merge`: append every missing piece with score 0)?
SentencePiece BPE repeatedly merges the adjacent pair whose merged piece has the HIGHEST score.
Llama-2's scores are all negative, so a score-0 piece outranks every base merge: with a Chinese
model that learned ``20``, ``"2023"`` becomes ``20 2 3`` instead of four digits, and English
changes too (``Norgay``: ``▁N org ay`` -> ``▁Nor g ay`` through the Chinese model's ``▁Nor``).

:func:`merge` keeps four invariants instead (each one is a test in tests/vocab/test_merge.py):

1. pieces ``0..N_base-1`` are the base's, byte for byte (piece, score, type): no id moves;
2. text without Chinese characters encodes to exactly the base ids. Every added piece contains a
   Chinese character (:func:`vocab.proto.is_chinese_char`) and consists only of base characters
   and Chinese characters, so no added piece can ever be formed from such text, and the base's
   merges keep their relative order;
3. added pieces score below every base piece (except Llama-2's whitespace runs, scored -1e9,
   which stay last), in the Chinese model's merge order, each score unique: on Chinese text the
   base merges (punctuation, ``▁`` + Latin) run first, then the Chinese merges in the order the
   Chinese model learned them. Unique scores also let the HF exporter mirror the order exactly;
4. no dead pieces: every added multi-character piece is produced when its own text is encoded
   alone; pieces BPE cannot reach are removed (repeatedly, as one removal can strand another).
   Every character of an added piece is itself a piece (Chinese characters seen in the corpus
   are added as single pieces, which also replaces 3 byte-fallback tokens by 1).

How many multi-character pieces to add is measured, not guessed: :func:`size_curve` encodes the
held-out text for growing prefixes of the (merge-ordered) candidates and :func:`choose_size`
picks the smallest size whose tokens/char is no worse than the peer tokenizer's (or all of them,
up to ``max_total_pieces``).

Example::

    merged, report = merge(parse_model(base_bytes), parse_model(zh_bytes), MergeConfig())
    assert merged.pieces[:32000] == parse_model(base_bytes).pieces[:32000]
"""
from __future__ import annotations

import collections
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from vocab.proto import (
    NORMAL,
    SPIECE_UNDERLINE,
    ModelProto,
    copy_model,
    is_chinese_char,
    mergeable_pieces,
    parse_model,
)
from zhllama.cli import UserError, existing_file


@dataclass
class MergeConfig:
    """Settings of ``python -m vocab merge`` (YAML: configs/vocab/merge.yaml)."""

    base_model: Path = Path("../shared/data/llama2_tokenizer.model")
    """The base SentencePiece BPE (Llama-2, 32,000 pieces); its pieces keep their ids."""
    zh_model: Path = Path("artifacts/vocab/zh_bpe.model")
    """The Chinese SentencePiece BPE from ``python -m vocab train``."""
    peer_model: Path | None = Path("../shared/data/reference/chinese_llama2_tokenizer.model")
    """Tokenizer to beat (Chinese-LLaMA-2, 55,296 pieces): sets the size target and is in the report.
    null = no peer; then ``size_rule: meet_peer`` falls back to ``all``."""
    corpus_dir: Path = Path("artifacts/corpus")
    """Corpus stage output: ``train/*.jsonl`` (character counts) and ``heldout/heldout.jsonl`` (curve, report)."""
    english_file: Path = Path("tests/data/english.txt")
    """English text for the report and the "English unchanged" check (one document per line)."""
    extra_texts: list[Path] = field(default_factory=list)
    """More text sets for the report only (``.jsonl``, SQuAD ``.json`` or one document per line),
    e.g. out-of-domain Chinese; named by file stem. They play no part in choosing the size."""
    out_dir: Path = Path("artifacts/tokenizer")
    """Output dir (replaced atomically): tokenizer.model, HF files, report.{json,md,png}, meta.json."""
    max_total_pieces: int = 55296
    """Upper bound on the merged vocabulary (base + added), the peer's size by default."""
    min_char_count: int = 2
    """Chinese characters seen at least this often in the training shards become single pieces."""
    size_rule: Literal["marginal_gain", "meet_peer", "all"] = "marginal_gain"
    """Measured on the *dev* set (never on held-out). ``marginal_gain``: keep adding multi-character
    pieces while each further 1,000 still cut dev tokens/char by at least ``min_gain_per_1k_pieces``;
    ``meet_peer``: the fewest pieces whose dev tokens/char is no higher than the peer's;
    ``all``: every candidate that fits under ``max_total_pieces``."""
    min_gain_per_1k_pieces: float = 0.005
    """``marginal_gain`` threshold: relative dev tokens/char reduction per 1,000 added pieces."""
    dev_fraction: float = 0.05
    """The dev set: train documents with :func:`vocab.dev_split.is_dev` (``vocab train`` excludes
    them; must equal its ``dev_fraction``)."""
    curve_points: int = 12
    """Sizes per grid on the pieces-added vs tokens/char curve (a geometric and a linear grid)."""
    max_heldout_docs: int = 0
    """Use at most this many held-out documents for the curve and report (0 = all)."""
    parity_check: bool = True
    """Before writing, check the exported HF tokenizer gives SentencePiece's ids on the held-out
    and English text and on edge strings; a mismatch aborts (nothing is written)."""

    def __post_init__(self) -> None:
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.max_total_pieces < 1:
            raise ValueError(f"max_total_pieces must be >= 1, got {self.max_total_pieces}")
        if self.min_char_count < 1:
            raise ValueError(f"min_char_count must be >= 1, got {self.min_char_count}")
        if self.curve_points < 2:
            raise ValueError(f"curve_points must be >= 2, got {self.curve_points}")


@dataclass
class Candidates:
    """What the Chinese model and corpus offer, filtered, in the order they would be added."""

    chars: list[str]
    """Chinese characters missing from the base, most frequent first (always added)."""
    words: list[str]
    """Multi-character pieces missing from the base, in the Chinese model's merge order."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Chinese-model pieces left out, by reason (``in_base``, ``no_chinese_char``, ...)."""


@dataclass
class MergeReport:
    """What :func:`merge` did (JSON-ready via ``dataclasses.asdict``)."""

    base_pieces: int
    """Pieces in the base model (their ids never move)."""
    zh_pieces: int
    """Pieces in the Chinese model."""
    added_chars: int
    """Single Chinese characters added."""
    added_words: int
    """Multi-character pieces added."""
    total_pieces: int
    """Pieces in the merged model."""
    skipped: dict[str, int]
    """Chinese-model pieces not added, by reason."""
    dead_removed: list[str]
    """Candidates removed because BPE could not produce them from their own text."""
    score_range: tuple[float, float]
    """(highest, lowest) score of the added pieces; all below the base's non-whitespace pieces."""


# ---------------------------------------------------------------------------------------------------
# Pure core


def classic_merge(base: ModelProto, zh: ModelProto) -> ModelProto:
    """The peers' merge (Chinese-LLaMA): append every Chinese-model piece the base lacks, score 0.

    Kept as the counter-example for tests and the benchmark: score 0 outranks every (negative)
    base score, so e.g. ``"2023"`` is split by the Chinese model's ``20`` + ``23``.

    >>> len(classic_merge(base, zh).pieces) > len(base.pieces)  # doctest: +SKIP
    True
    """
    out = copy_model(base)
    have = {p.piece for p in base.pieces}
    for p in zh.pieces:
        if p.piece not in have:
            new = out.pieces.add()
            new.piece, new.score, new.type = p.piece, 0.0, NORMAL
            have.add(p.piece)
    return out


def _whitespace_only(piece: str) -> bool:
    return set(piece) <= {SPIECE_UNDERLINE, " "}


def candidate_pieces(
    base: ModelProto, zh: ModelProto, char_counts: Mapping[str, int] | None = None, min_char_count: int = 2
) -> Candidates:
    """Filter the Chinese model's pieces into characters and words that may be added.

    A multi-character piece qualifies if the base lacks it, it has a Chinese character, ``▁``
    occurs only as its first character, and every other character is a base character or a
    Chinese one. Characters come from the qualifying pieces, the Chinese model's single-character
    pieces and ``char_counts`` (count >= ``min_char_count``), Chinese only.

    >>> c = candidate_pieces(base, zh, {"𠮷": 5})  # doctest: +SKIP
    >>> "𠮷" in c.chars, all(len(w) > 1 for w in c.words)
    (True, True)
    """
    base_pieces = {p.piece for p in base.pieces}
    base_chars = {p for p in mergeable_pieces(base) if len(p) == 1}
    skipped: collections.Counter[str] = collections.Counter()
    zh_normal = sorted(
        ((p.score, i, p.piece) for i, p in enumerate(zh.pieces) if p.type == NORMAL), key=lambda t: (-t[0], t[1])
    )
    words: list[str] = []
    zh_rank: dict[str, int] = {}  # Chinese characters the zh model has or needs, in zh order
    for rank, (_, _, piece) in enumerate(zh_normal):
        if len(piece) == 1:
            if is_chinese_char(piece) and piece not in base_pieces:
                zh_rank.setdefault(piece, rank)
            continue
        if piece in base_pieces:
            skipped["in_base"] += 1
        elif _whitespace_only(piece):
            skipped["whitespace_only"] += 1
        elif not any(is_chinese_char(c) for c in piece):
            skipped["no_chinese_char"] += 1
        elif SPIECE_UNDERLINE in piece[1:]:
            skipped["inner_space"] += 1
        elif any(c not in base_chars and not is_chinese_char(c) for c in piece):
            skipped["non_base_non_chinese_char"] += 1
        else:
            words.append(piece)
            for c in piece:
                if c not in base_pieces:
                    zh_rank.setdefault(c, rank)  # must be a piece: BPE starts from characters
    counts = char_counts or {}
    chars = set(zh_rank) | {
        c for c, n in counts.items() if n >= min_char_count and len(c) == 1 and is_chinese_char(c) and c not in base_pieces
    }
    # Most frequent in the corpus first, then the zh model's order: what a size cap cuts is the rarest.
    chars_sorted = sorted(chars, key=lambda c: (-counts.get(c, 0), zh_rank.get(c, len(zh_normal)), c))
    return Candidates(chars=chars_sorted, words=words, skipped=dict(skipped))


def _score_floor(base: ModelProto) -> float:
    """Lowest score of a base NORMAL piece that is not a whitespace run (Llama-2: -31740)."""
    scores = [p.score for p in base.pieces if p.type == NORMAL and not _whitespace_only(p.piece)]
    return min(scores) if scores else 0.0


def assemble(base: ModelProto, chars: Iterable[str], words: Iterable[str]) -> ModelProto:
    """Base pieces unchanged, then ``chars``, then ``words`` (merge order) with unique scores
    descending from just below the base's lowest non-whitespace score. The additions must be new
    and distinct (as :func:`candidate_pieces` returns them); SentencePiece refuses duplicates.

    >>> m = assemble(base, ["𠮷"], ["中国"])  # doctest: +SKIP
    >>> m.pieces[-1].piece, m.pieces[-1].score < m.pieces[-2].score
    ('中国', True)
    """
    out = copy_model(base)
    chars, words = list(chars), list(words)
    top = math.floor(_score_floor(base)) - 1.0
    # Words score in merge order (that order is what BPE uses); characters score below all words:
    # a character is never the result of a merge, so its score only has to be unique.
    for k, piece in enumerate(chars):
        p = out.pieces.add()
        p.piece, p.type, p.score = piece, NORMAL, top - len(words) - k
    for k, piece in enumerate(words):
        p = out.pieces.add()
        p.piece, p.type, p.score = piece, NORMAL, top - k
    # Scores are float32 in the proto: far from 0 consecutive integers collapse into ties, which
    # SentencePiece breaks leftmost-first and the HF export cannot mirror. Read them back to check.
    added = out.pieces[len(base.pieces):]
    if len({p.score for p in added}) != len(added):
        raise ValueError(f"added scores are not unique in float32 below {top} (base scores too low?)")
    return out


def _sp(m: ModelProto, dummy_prefix: bool | None = None):
    import sentencepiece as spm

    if dummy_prefix is not None and m.normalizer_spec.add_dummy_prefix != dummy_prefix:
        m = copy_model(m)
        m.normalizer_spec.add_dummy_prefix = dummy_prefix
    return spm.SentencePieceProcessor(model_proto=m.SerializeToString())


def dead_pieces(m: ModelProto, ids: Iterable[int]) -> list[int]:
    """The ids among ``ids`` that BPE does not produce when their own text is encoded alone.

    Encoded without the dummy prefix, so ``中国`` is checked as ``中国`` and ``▁中国`` as ``" 中国"``.
    """
    ids = list(ids)
    sp = _sp(m, dummy_prefix=False)
    texts = [m.pieces[i].piece.replace(SPIECE_UNDERLINE, " ") for i in ids]
    encoded = sp.encode(texts)
    return [i for i, got in zip(ids, encoded, strict=True) if got != [i]]


def prune_dead(base: ModelProto, chars: list[str], words: list[str]) -> tuple[list[str], list[str]]:
    """Remove unreachable words until none is left; returns (kept words, removed words)."""
    removed: list[str] = []
    while True:
        m = assemble(base, chars, words)
        first = len(base.pieces) + len(chars)
        dead = set(dead_pieces(m, range(first, len(m.pieces))))
        if not dead:
            return words, removed
        removed.extend(m.pieces[i].piece for i in sorted(dead))
        words = [w for k, w in enumerate(words) if first + k not in dead]


def plan(
    base: ModelProto, zh: ModelProto, cfg: MergeConfig, char_counts: Mapping[str, int] | None = None
) -> tuple[Candidates, list[str], list[str]]:
    """Candidates, then reachable words that fit in ``cfg.max_total_pieces``, then removed dead words."""
    cands = candidate_pieces(base, zh, char_counts, cfg.min_char_count)
    room = max(cfg.max_total_pieces - len(base.pieces), 0)
    if len(cands.chars) > room:  # a cap below the character count: keep words whose chars stay pieces
        cands.chars = cands.chars[:room]
        have = set(cands.chars) | set(mergeable_pieces(base))
        cands.words = [w for w in cands.words if all(c in have for c in w)]
    words, removed = prune_dead(base, cands.chars, cands.words)
    return cands, words[: room - len(cands.chars)], removed


def merge(
    base: ModelProto,
    zh: ModelProto,
    cfg: MergeConfig,
    char_counts: Mapping[str, int] | None = None,
    n_words: int | None = None,
    planned: tuple[Candidates, list[str], list[str]] | None = None,
) -> tuple[ModelProto, MergeReport]:
    """Merge ``zh`` into ``base`` keeping the invariants in the module docstring.

    ``n_words``: how many multi-character candidates (in merge order) to add; None = as many as
    fit in ``cfg.max_total_pieces``. ``char_counts``: corpus character counts (see
    :func:`candidate_pieces`). ``planned``: a :func:`plan` result to reuse. Inputs are not modified.
    """
    cands, words, removed = planned or plan(base, zh, cfg, char_counts)
    words = words if n_words is None else words[:n_words]
    merged = assemble(base, cands.chars, words)
    added = merged.pieces[len(base.pieces):]
    report = MergeReport(
        base_pieces=len(base.pieces), zh_pieces=len(zh.pieces), added_chars=len(cands.chars),
        added_words=len(words), total_pieces=len(merged.pieces), skipped=cands.skipped, dead_removed=removed,
        score_range=(max((p.score for p in added), default=0.0), min((p.score for p in added), default=0.0)),
    )
    return merged, report


def tokens_per_char(m: ModelProto, texts: list[str]) -> float:
    """Tokens per character of ``texts`` under ``m`` (lower = more text per context window).

    >>> tokens_per_char(base, ["你好"])  # doctest: +SKIP  ('▁', '你', '好' -> 3 tokens / 2 chars)
    1.5
    """
    chars = sum(map(len, texts))
    if not chars:
        return float("nan")
    return sum(map(len, _sp(m).encode(texts))) / chars


def size_curve(
    base: ModelProto, chars: list[str], words: list[str], texts: list[str], sizes: Iterable[int]
) -> list[dict]:
    """``[{"added_words", "added_pieces", "total_pieces", "tokens_per_char"}]`` for each size."""
    rows = []
    for n in sorted(set(sizes)):
        m = assemble(base, chars, words[:n])
        rows.append({
            "added_words": n, "added_pieces": len(chars) + n, "total_pieces": len(m.pieces),
            "tokens_per_char": round(tokens_per_char(m, texts), 6),
        })
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


def choose_size(
    base: ModelProto, chars: list[str], words: list[str], texts: list[str], target_tokens_per_char: float | None,
    points: int = 12,
) -> tuple[int, list[dict]]:
    """Fewest words meeting ``target_tokens_per_char`` on ``texts`` (:func:`curve_sizes` grid, then
    bisection between the last size that misses and the first that meets it);
    all words if the target is None or never met. Returns (n_words, measured curve rows)."""
    curve = size_curve(base, chars, words, texts, curve_sizes(len(words), points))
    if target_tokens_per_char is None:
        return len(words), curve
    meeting = [r for r in curve if r["tokens_per_char"] <= target_tokens_per_char]
    if not meeting:
        return len(words), curve
    hi = meeting[0]["added_words"]
    below = [r["added_words"] for r in curve if r["added_words"] < hi]
    lo = max(below) if below else 0
    while hi - lo > max(1, hi // 200):  # 0.5% resolution is plenty; each probe re-encodes the text
        mid = (lo + hi) // 2
        row = size_curve(base, chars, words, texts, [mid])[0]
        curve.append(row)
        if row["tokens_per_char"] <= target_tokens_per_char:
            hi = mid
        else:
            lo = mid
    curve.sort(key=lambda r: r["added_words"])
    return hi, curve


def choose_by_marginal_gain(curve: list[dict], min_gain_per_1k_pieces: float) -> int:
    """Walk the measured curve upward; stop before the first segment whose relative tokens/char
    gain per 1,000 added pieces falls below the threshold. Returns the chosen ``added_words``.

    >>> rows = [{"added_words": 0, "tokens_per_char": 1.0}, {"added_words": 1000, "tokens_per_char": 0.9},
    ...         {"added_words": 2000, "tokens_per_char": 0.899}]
    >>> choose_by_marginal_gain(rows, 0.005)
    1000
    """
    rows = sorted(curve, key=lambda r: r["added_words"])
    chosen = rows[0]["added_words"]
    for a, b in zip(rows, rows[1:], strict=False):
        gain = (a["tokens_per_char"] - b["tokens_per_char"]) / a["tokens_per_char"]
        per_1k = gain / max(b["added_words"] - a["added_words"], 1) * 1000
        if per_1k < min_gain_per_1k_pieces:
            break
        chosen = b["added_words"]
    return chosen


def non_chinese_changes(base: ModelProto, merged: ModelProto, texts: Iterable[str]) -> list[str]:
    """The texts without Chinese characters whose ids differ between ``base`` and ``merged``."""
    texts = [t for t in texts if not any(is_chinese_char(c) for c in t)]
    a, b = _sp(base).encode(texts), _sp(merged).encode(texts)
    return [t for t, x, y in zip(texts, a, b, strict=True) if x != y]


def plot_curve(curve: list[dict], chosen_words: int, target_tokens_per_char: float | None, base_pieces: int,
               base_tokens_per_char: float | None = None):
    """A matplotlib Figure: dev tokens/char vs merged vocabulary size, the peer's and the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot([r["total_pieces"] for r in curve], [r["tokens_per_char"] for r in curve], "o-", ms=3,
            label="zhllama merge (first point: characters only)")
    if base_tokens_per_char is not None:
        ax.plot([base_pieces], [base_tokens_per_char], "s", color="gray", label="Llama-2 base")
    if target_tokens_per_char is not None:
        ax.axhline(target_tokens_per_char, color="tab:red", ls="--", lw=1, label="peer (Chinese-LLaMA-2, 55,296)")
    chosen = [r for r in curve if r["added_words"] == chosen_words]
    if chosen:
        ax.plot([chosen[0]["total_pieces"]], [chosen[0]["tokens_per_char"]], "*", ms=14, color="tab:green",
                label=f"chosen: {chosen[0]['total_pieces']:,} pieces")
    ax.set_xlabel(f"merged vocabulary size (base {base_pieces:,} + Chinese characters + words)")
    ax.set_ylabel("dev tokens per character (lower is better)")
    ax.set_title("How many Chinese pieces earn their place")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# CLI (the only part that touches the disk)


def _read_model(path: Path | None, what: str) -> tuple[ModelProto, bytes]:
    data = existing_file(path, what).read_bytes()
    return parse_model(data, f"{what} {path}"), data


def _char_counts(files: list[Path]) -> collections.Counter[str]:
    from tqdm import tqdm

    from vocab.train import iter_jsonl_texts

    counts: collections.Counter[str] = collections.Counter()
    for text in tqdm(iter_jsonl_texts(files), desc="counting characters", unit="doc", mininterval=1.0):
        counts.update(text)
    return counts


def _merge_markdown(summary: dict) -> str:
    r, t = summary["merge"], summary["target"]
    lines = [
        "# Merged tokenizer", "",
        f"- base {r['base_pieces']:,} pieces + {r['added_chars']:,} Chinese characters + {r['added_words']:,} "
        f"multi-character pieces = **{r['total_pieces']:,} pieces** (Chinese model: {r['zh_pieces']:,}).",
        f"- size rule `{summary['size_rule']}`: {summary['size_reason']}",
        f"- Chinese-model pieces not added: {r['skipped']}; unreachable candidates removed: "
        f"{len(r['dead_removed'])} {r['dead_removed'][:10]}",
        f"- added scores {r['score_range'][0]:.0f} .. {r['score_range'][1]:.0f} (below every base piece "
        "except the whitespace runs), unique, in the Chinese model's merge order.",
        "",
        "## Quality target (held-out tokens per character, lower is better)", "",
        "| tokenizer | pieces | held-out tokens/char |", "|---|---|---|",
        f"| Llama-2 base | {r['base_pieces']:,} | {t['base_tokens_per_char']:.4f} |",
    ]
    if t["peer_tokens_per_char"] is not None:
        lines.append(f"| peer (Chinese-LLaMA-2) | {t['peer_pieces']:,} | {t['peer_tokens_per_char']:.4f} |")
    lines.append(f"| **zhllama (ours)** | {r['total_pieces']:,} | {t['ours_tokens_per_char']:.4f} |")
    lines.append(f"| all candidates (≤ {summary['max_total_pieces']:,} pieces) | {t['all_pieces']:,} "
                 f"| {t['all_tokens_per_char']:.4f} |")
    if t["met"] is not None:
        lines += ["", f"Target {'MET' if t['met'] else 'MISSED'}: ours/peer tokens per char = "
                  f"{t['ours_vs_peer']:.4f} ({100 * (t['ours_vs_peer'] - 1):+.2f}%), "
                  f"with {r['total_pieces']:,} pieces vs the peer's {t['peer_pieces']:,} "
                  f"({r['total_pieces'] - t['peer_pieces']:+,})."]
    lines += ["", "## Invariant checks at build time", ""]
    lines += [f"- {k}: {v}" for k, v in summary["checks"].items()]
    lines += ["", f"## Size curve (measured on dev: {summary['dev_documents']:,} train documents BPE never saw; "
              "held-out plays no part in choosing)", "", "![curve](curve.png)", "",
              "| added words | added pieces | total pieces | tokens/char |", "|---|---|---|---|"]
    lines += [f"| {c['added_words']:,} | {c['added_pieces']:,} | {c['total_pieces']:,} | {c['tokens_per_char']:.4f} |"
              for c in summary["curve"]]
    return "\n".join(lines) + "\n"


def run(cfg: MergeConfig) -> dict:
    """CLI: base + Chinese model -> ``out_dir`` with tokenizer.model, HF files, report.*, curve.png, meta.json."""
    from vocab.export import EDGE_STRINGS, check_supported, export_hf, parity_mismatches
    from vocab.report import compare, load_texts, plot, to_markdown
    from vocab.train import corpus_files
    from zhllama.artifacts import atomic_dir, atomic_write_json, atomic_write_text, sha256_bytes, write_meta

    start = time.perf_counter()
    base, base_bytes = _read_model(cfg.base_model, "base model")
    zh, zh_bytes = _read_model(cfg.zh_model, "Chinese model")
    peer, peer_bytes = _read_model(cfg.peer_model, "peer model") if cfg.peer_model else (None, b"")
    heldout_path = existing_file(Path(cfg.corpus_dir) / "heldout" / "heldout.jsonl", "held-out corpus")
    english_path = existing_file(cfg.english_file, "English text")
    try:
        check_supported(base)  # fail early on a base the HF exporter cannot mirror
    except ValueError as e:
        raise UserError(f"base model {cfg.base_model}: {e}") from None
    train_files = corpus_files(cfg.corpus_dir)
    heldout = load_texts(heldout_path, cfg.max_heldout_docs)
    english = load_texts(english_path)
    extra = {Path(p).stem: load_texts(existing_file(p, "extra text")) for p in cfg.extra_texts}
    counts = _char_counts(train_files)

    planned = plan(base, zh, cfg, counts)
    cands, words, _ = planned
    # The size is chosen on dev (train documents BPE never saw); held-out is only reported.
    from vocab.dev_split import is_dev
    from vocab.train import iter_jsonl_texts

    dev = [t for t in iter_jsonl_texts(train_files) if is_dev(t, cfg.dev_fraction)]
    if not dev:
        raise UserError(f"{cfg.corpus_dir}: no dev documents (dev_fraction={cfg.dev_fraction}); raise dev_fraction")
    peer_dev_tpc = tokens_per_char(peer, dev) if peer is not None else None
    peer_tpc = tokens_per_char(peer, heldout) if peer is not None else None
    target = peer_dev_tpc if cfg.size_rule == "meet_peer" else None
    n_words, curve = choose_size(base, cands.chars, words, dev, target, cfg.curve_points)
    if cfg.size_rule == "marginal_gain":
        n_words = choose_by_marginal_gain(curve, cfg.min_gain_per_1k_pieces)
    merged, report = merge(base, zh, cfg, counts, n_words=n_words, planned=planned)
    merged_bytes = merged.SerializeToString()

    ours_tpc = tokens_per_char(merged, heldout)
    all_row = max(curve, key=lambda r: r["added_words"])
    if all_row["added_words"] != n_words:  # the all-candidates figure in the report is a held-out one
        all_row = size_curve(base, cands.chars, words, heldout, [all_row["added_words"]])[0]
    else:
        all_row = {**all_row, "tokens_per_char": ours_tpc}
    if cfg.size_rule == "marginal_gain":
        reason = (f"on dev, added while each further 1,000 pieces cut tokens/char by >= "
                  f"{cfg.min_gain_per_1k_pieces:.2%}" + (" (every candidate did)" if n_words == len(words) else ""))
    elif target is None:
        reason = "every candidate that fits" + ("" if cfg.size_rule == "all" else " (no peer given)")
    else:
        reason = f"fewest multi-character pieces with dev tokens/char <= the peer's on dev ({target:.4f})"
    # Invariants re-checked on the real output (tests check them independently on fixtures).
    checks = {
        "base_pieces_identical": all(
            (a.piece, a.score, a.type) == (b.piece, b.score, b.type) for a, b in zip(base.pieces, merged.pieces[: len(base.pieces)], strict=True)
        ),
        "no_duplicate_pieces": len({p.piece for p in merged.pieces}) == len(merged.pieces),
        "dead_added_pieces": len(dead_pieces(merged, range(len(base.pieces), len(merged.pieces)))),
        "english_lines_changed": len(non_chinese_changes(base, merged, english + list(EDGE_STRINGS))),
    }
    if not checks["base_pieces_identical"] or not checks["no_duplicate_pieces"] or checks["dead_added_pieces"] \
            or checks["english_lines_changed"]:
        raise RuntimeError(f"merge invariants violated (a bug): {checks}")

    out_dir = Path(cfg.out_dir)
    with atomic_dir(out_dir) as tmp:
        export_hf(merged_bytes, tmp)
        if cfg.parity_check:
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(tmp)
            bad = parity_mismatches(hf, merged_bytes, list(EDGE_STRINGS) + heldout + english)
            checks["hf_sentencepiece_mismatches"] = len(bad)
            checks["hf_len_equals_pieces"] = len(hf) == len(merged.pieces)
            if bad or not checks["hf_len_equals_pieces"]:
                raise RuntimeError(f"HF export differs from SentencePiece on {len(bad)} text(s), e.g. {bad[:2]!r}")
        tokenizers = {"llama2": base_bytes}
        if peer is not None:
            tokenizers["chinese-llama2 (peer)"] = peer_bytes
        tokenizers["zhllama (ours)"] = merged_bytes
        comparison = compare(tokenizers, {"heldout": heldout, "dev": dev, "english": english, **extra}, base="llama2")
        summary = {
            "merge": asdict(report),
            "size_rule": cfg.size_rule, "size_reason": reason, "curve_measured_on": "dev",
            "dev_documents": len(dev), "max_total_pieces": cfg.max_total_pieces,
            "target": {
                "base_tokens_per_char": tokens_per_char(base, heldout),
                "peer_tokens_per_char": peer_tpc, "peer_pieces": len(peer.pieces) if peer is not None else None,
                "ours_tokens_per_char": ours_tpc,
                "all_tokens_per_char": all_row["tokens_per_char"], "all_pieces": all_row["total_pieces"],
                "met": (ours_tpc <= peer_tpc and len(merged.pieces) <= len(peer.pieces)) if peer is not None else None,
                "ours_vs_peer": ours_tpc / peer_tpc if peer_tpc else None,
            },
            "checks": checks, "curve": curve, "comparison": comparison,
        }
        atomic_write_json(tmp / "report.json", summary)
        atomic_write_text(tmp / "report.md", _merge_markdown(summary) + "\n" + to_markdown(comparison))
        plot(comparison).savefig(tmp / "report.png", dpi=120)
        plot_curve(curve, n_words, peer_dev_tpc, len(base.pieces), tokens_per_char(base, dev)).savefig(tmp / "curve.png", dpi=120)
        inputs = {"base_model": sha256_bytes(base_bytes), "zh_model": sha256_bytes(zh_bytes),
                  "heldout": sha256_bytes(heldout_path.read_bytes()), "english": sha256_bytes(english_path.read_bytes())}
        if peer is not None:
            inputs["peer_model"] = sha256_bytes(peer_bytes)
        write_meta(tmp, config=cfg, inputs=inputs, pieces=len(merged.pieces))
    seconds = time.perf_counter() - start
    t = summary["target"]
    peer_note = f" vs peer {t['peer_tokens_per_char']:.4f} ({t['peer_pieces']:,})" if peer is not None else ""
    print(f"vocab merge: {len(base.pieces):,} + {report.added_chars:,} chars + {report.added_words:,} words = "
          f"{len(merged.pieces):,} pieces; held-out tokens/char {ours_tpc:.4f}{peer_note}; "
          f"base {t['base_tokens_per_char']:.4f}; {seconds:.1f} s -> {out_dir}")
    return summary
