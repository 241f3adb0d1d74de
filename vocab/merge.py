"""Merge a Chinese SentencePiece BPE into Llama-2's 32k tokenizer without changing how it reads English.

The invariants (each a test in tests/vocab/test_merge.py):

1. pieces ``0..N_base-1`` are the base's, byte for byte (piece, score, type): no id moves;
2. text without Chinese characters encodes to exactly the base ids: every added piece contains a
   Chinese character and otherwise only base or Chinese characters (:mod:`vocab.candidates`);
3. added pieces score below every base piece (except Llama-2's whitespace runs, scored -1e9), words
   in the Chinese model's merge order, each score unique (:mod:`vocab.assemble`);
4. no dead pieces: every added piece is produced when its own text is encoded alone.

Which pieces, and how many, is measured (:mod:`vocab.select`, :mod:`vocab.curve`): candidates are
ranked by the tokens they save on weighted multi-domain evidence (the training text of every
domain, both scripts, plus a word-frequency list standing in for text we have no corpus of), and
the size is read off the curve of *dev* tokens/char (geometric mean over domains) against pieces
added. Held-out (test) text plays no part; it is only reported (:mod:`vocab.merge_report`).

Example::

    merged, report = merge(parse_model(base_bytes), parse_model(zh_bytes), MergeConfig())
    assert merged.pieces[:32000] == parse_model(base_bytes).pieces[:32000]
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from vocab.assemble import assemble, prune_dead
from vocab.candidates import FULL_WIDTH_FORMS, Candidates, candidate_pieces
from vocab.proto import ModelProto, mergeable_pieces, parse_model
from vocab.select import Evidence, Ranking, rank_candidates, split_ranked
from zhllama.cli import UserError, existing_file


@dataclass
class MergeConfig:
    """Settings of ``python -m vocab merge`` (YAML: configs/vocab/merge.yaml)."""

    base_model: str = "auto"
    """The base SentencePiece BPE (Llama-2, 32,000 pieces); its pieces keep their ids. ``auto`` =
    ``llama2_tokenizer.model`` in the data dir (``$ZHLLAMA_DATA_DIR``, else ``../shared/data`` beside
    the checkout; never relative to the working directory)."""
    zh_model: Path = Path("artifacts/vocab/zh_bpe.model")
    """The Chinese SentencePiece BPE from ``python -m vocab train``."""
    peer_model: str = "auto"
    """Tokenizer to compare with (Chinese-LLaMA-2, 55,296 pieces). ``auto`` =
    ``reference/chinese_llama2_tokenizer.model`` in the data dir (as ``base_model``); ``""`` = none."""
    corpus_dir: Path = Path("artifacts/corpus")
    """Corpus stage output: ``train/*.jsonl`` (evidence, dev) and ``heldout/heldout.jsonl`` (the test report)."""
    english_file: Path | None = None
    """English text for the report and the "English unchanged" check; null = tests/data/english.txt
    of this checkout."""
    extra_texts: list[Path] = field(default_factory=list)
    """More text sets for the report only (``.jsonl``, SQuAD ``.json`` or one document per line)."""
    out_dir: Path = Path("artifacts/tokenizer")
    """Output dir (replaced atomically): tokenizer.model, HF files, report.{json,md,png}, curve.png, meta.json."""
    max_total_pieces: int = 55296
    """Upper bound on the merged vocabulary (base + added), the peer's size by default."""
    min_char_count: int = 2
    """Chinese characters seen at least this often in the training shards are candidates."""
    selection: Literal["gain", "merge_order"] = "gain"
    """``gain``: rank candidates by tokens saved on the weighted evidence (:mod:`vocab.select`);
    ``merge_order``: every corpus character, then words in the Chinese model's merge order."""
    evidence_weights: dict[str, float] = field(default_factory=dict)
    """Weight of each corpus domain in the gain (per character); a missing domain weighs 1.0."""
    cross_script_share: float = 0.5
    """Share of each domain's evidence records also added converted to the other script (as
    ``vocab train``'s option of the same name)."""
    evidence_max_chars: int = 1_500_000
    """Per domain, at most about this many training characters are encoded as evidence (hash sample)."""
    word_list: str = "wordfreq"
    """Word-frequency list standing in for text we have no corpus of (reviews, social media, mainland
    news): ``wordfreq``, ``jieba``, a ``word freq`` file, or ``none`` (:mod:`vocab.wordlists`)."""
    word_list_words: int = 100000
    """Most frequent words of the list used as evidence (single characters included) and as candidate characters."""
    word_list_weight: float = 2.0
    """Weight of the word list in the gain, in domain units (1.0 = as much as one corpus domain)."""
    word_list_variants: list[str] = field(default_factory=lambda: ["s2twp", "s2hk"])
    """OpenCC conversions giving the list's Traditional forms (evidence weight: ``word_list_variant_weight``)."""
    word_list_variant_weight: float = 0.5
    """Weight of the Traditional forms relative to the list itself."""
    always_add_full_width: bool = True
    """Add every full-width form (``Ａ``..``ｚ``, ``０``..``９``, ``！``..``～``, U+3000) the base lacks, ranked
    first: a closed set of 95 characters Chinese text uses (model numbers, ＩＢＭ), 3 byte tokens each
    in Llama-2; the evidence alone leaves the rare ones out."""
    char_weight: float = 1.0
    """Multiplier on the gain of single characters in the ranking (> 1: more characters, fewer words;
    a character's saving carries over to unseen text, a word's less so)."""
    rank_rounds: int = 3
    """Scoring rounds of the gain ranking (each re-encodes the evidence with the surviving candidates)."""
    size_rule: Literal["marginal_gain", "all"] = "marginal_gain"
    """Measured on the *dev* split (never on held-out), geometric mean of per-domain tokens/char.
    ``marginal_gain``: keep adding ranked pieces while each further 1,000 cut it by at least
    ``min_gain_per_1k_pieces``; ``all``: every ranked piece that fits under ``max_total_pieces``."""
    min_gain_per_1k_pieces: float = 0.002
    """``marginal_gain`` threshold: relative dev tokens/char reduction per 1,000 added pieces."""
    dev_fraction: float = 0.05
    """The dev set: train documents with :func:`vocab.dev_split.is_dev` (``vocab train`` excludes
    them; must equal its ``dev_fraction``)."""
    curve_points: int = 12
    """Sizes per grid on the pieces-added vs tokens/char curve (a geometric and a linear grid)."""
    max_heldout_docs: int = 0
    """Use at most this many held-out documents for the report (0 = all)."""
    parity_check: bool = True
    """Before writing, check the exported HF tokenizer gives SentencePiece's ids on every line of
    the dev and held-out text of every domain, the English text and edge strings; a mismatch aborts."""

    def __post_init__(self) -> None:
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}")
        if self.max_total_pieces < 1:
            raise ValueError(f"max_total_pieces must be >= 1, got {self.max_total_pieces}")
        if self.min_char_count < 1:
            raise ValueError(f"min_char_count must be >= 1, got {self.min_char_count}")
        if not 0.0 <= self.cross_script_share <= 1.0:
            raise ValueError(f"cross_script_share must be in [0, 1], got {self.cross_script_share}")
        if self.curve_points < 2:
            raise ValueError(f"curve_points must be >= 2, got {self.curve_points}")
        if self.word_list_weight < 0 or self.word_list_variant_weight < 0 or self.char_weight <= 0:
            raise ValueError("word_list_weight, word_list_variant_weight must be >= 0 and char_weight > 0")
        from vocab.wordlists import check_variants

        try:
            check_variants(self.word_list_variants)
        except UserError as e:
            raise ValueError(str(e)) from None
        bad = {k: w for k, w in self.evidence_weights.items() if not w >= 0}
        if bad:
            k = next(iter(bad))
            raise ValueError(f"evidence_weights.{k}: weight must be a number >= 0, got {bad[k]!r}")


@dataclass
class MergeReport:
    """What :func:`merge` did (JSON-ready via ``dataclasses.asdict``)."""

    base_pieces: int
    zh_pieces: int
    added_chars: int
    """Single characters added."""
    added_words: int
    """Multi-character pieces added."""
    total_pieces: int
    skipped: dict[str, int]
    """Chinese-model pieces not candidates, by reason."""
    dead_removed: list[str]
    """Candidates removed because BPE could not produce them from their own text."""
    score_range: tuple[float, float]
    """(highest, lowest) score of the added pieces; all below the base's non-whitespace pieces."""
    ranking_rounds: list[dict] = field(default_factory=list)
    """The gain ranking's rounds (empty for ``merge_order``)."""


@dataclass
class Plan:
    """Candidates and the order in which they earn their place (any prefix is a valid merge)."""

    cands: Candidates
    order: list[str]
    removed: list[str]
    ranking: Ranking | None = None

    def pieces(self, n: int | None = None) -> tuple[list[str], list[str]]:
        """(characters, words in merge order) of the first ``n`` ordered pieces (None = all)."""
        return split_ranked(self.order, len(self.order) if n is None else n, self.cands.words)


# ---------------------------------------------------------------------------------------------------
# Pure core


def plan(base: ModelProto, zh: ModelProto, cfg: MergeConfig, char_counts: Mapping[str, float] | None = None,
         evidence: Sequence[Evidence] = (), extra_chars: Sequence[str] = FULL_WIDTH_FORMS) -> Plan:
    """Candidates, then their order of worth within ``cfg.max_total_pieces``.

    ``selection: gain`` with evidence ranks by :func:`vocab.select.rank_candidates`; otherwise (or
    with no evidence) every character comes first (most frequent first), then the reachable words
    in merge order.
    """
    cands = candidate_pieces(base, zh, char_counts, cfg.min_char_count, extra_chars)
    room = max(cfg.max_total_pieces - len(base.pieces), 0)
    if cfg.selection == "gain" and evidence:
        forced = [c for c in FULL_WIDTH_FORMS if c in set(cands.chars)][:room] if cfg.always_add_full_width else []
        rest = [c for c in cands.chars if c not in set(forced)]
        ranking = rank_candidates(base, rest, cands.words, evidence, room - len(forced), cfg.rank_rounds,
                                  cfg.char_weight)
        order = forced + ranking.order
        chars, words = split_ranked(order, len(order), cands.words)
        kept, removed = prune_dead(base, chars, words)  # a safety net: ranked prefixes are closed
        drop = set(words) - set(kept)
        return Plan(cands, [p for p in order if p not in drop], removed, ranking)
    chars = cands.chars[:room]
    if len(cands.chars) > room:  # a cap below the character count: keep words whose chars stay pieces
        have = set(chars) | set(mergeable_pieces(base))
        cands.words = [w for w in cands.words if all(c in have for c in w)]
    words, removed = prune_dead(base, chars, cands.words)
    return Plan(cands, chars + words[: room - len(chars)], removed)


def merge(base: ModelProto, zh: ModelProto, cfg: MergeConfig, char_counts: Mapping[str, float] | None = None,
          n_added: int | None = None, planned: Plan | None = None,
          evidence: Sequence[Evidence] = ()) -> tuple[ModelProto, MergeReport]:
    """Merge ``zh`` into ``base`` keeping the invariants in the module docstring.

    ``n_added``: how many ordered pieces to add (None = all that fit). ``planned``: a :func:`plan`
    result to reuse. Inputs are not modified.
    """
    p = planned or plan(base, zh, cfg, char_counts, evidence)
    chars, words = p.pieces(n_added)
    merged = assemble(base, chars, words)
    added = merged.pieces[len(base.pieces):]
    report = MergeReport(
        base_pieces=len(base.pieces), zh_pieces=len(zh.pieces), added_chars=len(chars),
        added_words=len(words), total_pieces=len(merged.pieces), skipped=p.cands.skipped, dead_removed=p.removed,
        score_range=(max((x.score for x in added), default=0.0), min((x.score for x in added), default=0.0)),
        ranking_rounds=p.ranking.rounds if p.ranking else [],
    )
    return merged, report


# ---------------------------------------------------------------------------------------------------
# CLI (the only part that touches the disk)


def resolve_data_file(value: str | Path, default_name: str) -> Path | None:
    """``auto`` -> the data dir's ``default_name`` (``$ZHLLAMA_DATA_DIR`` or ``../shared/data`` beside
    the checkout); ``""`` -> None; anything else -> that path.

    >>> resolve_data_file("", "x.model") is None
    True
    """
    from zhllama import default_data_dir

    if str(value) == "":
        return None
    return default_data_dir() / default_name if str(value) == "auto" else Path(value)


def _read_model(path: Path, what: str) -> tuple[ModelProto, bytes]:
    data = existing_file(path, what).read_bytes()
    return parse_model(data, f"{what} {path}"), data


def run(cfg: MergeConfig) -> dict:
    """CLI: base + Chinese model -> ``out_dir`` with tokenizer.model, HF files, report.*, curve.png, meta.json."""
    from vocab.curve import choose_by_marginal_gain, ranked_curve
    from vocab.export import check_supported
    from vocab.merge_inputs import load_inputs
    from vocab.merge_report import write_outputs

    start = time.perf_counter()
    base_path = resolve_data_file(cfg.base_model, "llama2_tokenizer.model")
    assert base_path is not None
    base, base_bytes = _read_model(base_path, "base model")
    zh, zh_bytes = _read_model(cfg.zh_model, "Chinese model")
    peer_path = resolve_data_file(cfg.peer_model, "reference/chinese_llama2_tokenizer.model")
    peer, peer_bytes = _read_model(peer_path, "peer model") if peer_path else (None, b"")
    try:
        check_supported(base)  # fail early on a base the HF exporter cannot mirror
    except ValueError as e:
        raise UserError(f"base model {base_path}: {e}") from None
    inputs = load_inputs(cfg)

    planned = plan(base, zh, cfg, inputs.char_counts, inputs.evidence, FULL_WIDTH_FORMS)
    # The size is chosen on dev (train documents BPE never saw); held-out is only reported.
    curve = ranked_curve(base, planned, inputs.dev_sets, cfg.curve_points)
    n_added = len(planned.order) if cfg.size_rule == "all" else choose_by_marginal_gain(curve, cfg.min_gain_per_1k_pieces)
    merged, report = merge(base, zh, cfg, n_added=n_added, planned=planned)
    if cfg.size_rule == "all":
        reason = "every ranked candidate that fits under max_total_pieces"
    else:
        reason = (f"on dev, added while each further 1,000 pieces cut the per-domain geometric mean of "
                  f"tokens/char by >= {cfg.min_gain_per_1k_pieces:.2%}"
                  + (" (every ranked candidate did)" if n_added == len(planned.order) else ""))
    summary = write_outputs(cfg, base=base, base_bytes=base_bytes, zh_bytes=zh_bytes, peer=peer, peer_bytes=peer_bytes,
                            merged=merged, report=asdict(report), curve=curve, n_added=n_added, reason=reason,
                            inputs=inputs, base_path=base_path)
    t = summary["target"]
    print(f"vocab merge: {len(base.pieces):,} + {report.added_chars:,} chars + {report.added_words:,} words = "
          f"{len(merged.pieces):,} pieces; held-out per-domain geomean ours/peer {t.get('geomean_ratio', float('nan')):.4f}"
          f" (target {'met' if t.get('met') else 'missed'}); {time.perf_counter() - start:.1f} s -> {cfg.out_dir}")
    return summary
