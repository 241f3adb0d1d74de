"""Train the Chinese SentencePiece BPE that is later merged into Llama-2's tokenizer.

Data flow: corpus shards (``train/*.jsonl``) -> :func:`sample_sentences` (streaming reservoir sample,
bounded memory) -> :func:`train_bpe` (pure: sentences in, serialized ``ModelProto`` bytes out) ->
``zh_bpe.model`` + ``zh_bpe.vocab`` + ``summary.json`` + ``meta.json``.

The SentencePiece settings default to Llama-2's own (BPE, byte fallback, split digits, identity
normalisation, dummy prefix, whitespace kept, whitespace-only pieces allowed), so the pieces mean
the same thing on both sides of the merge. Optional jieba help (measured in docs/vocab-experiments.md):
word-boundary-aware training and jieba's word-frequency dictionary as weighted extra input.

Example::

    cfg = TrainConfig(vocab_size=2000, character_coverage=0.995)
    model_bytes = train_bpe(sample_sentences(texts, cfg), cfg)
"""
from __future__ import annotations

import random
import re
import resource
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from corpora.shards import (  # the one JSONL reader; merge, report use it here
    iter_jsonl_records,
)
from vocab.domains import cross_script_copies
from vocab.jieba_tools import DEFAULT_DELIMITER, dict_training_lines, mark_word_boundaries
from vocab.wordlists import load_words, with_variants
from zhllama.artifacts import atomic_dir, atomic_write_bytes, atomic_write_json, sha256_file, write_meta
from zhllama.cli import UserError


@dataclass
class TrainConfig:
    """Settings of ``python -m vocab train`` (YAML: configs/vocab/train.yaml)."""

    corpus_dir: Path = Path("artifacts/corpus")
    """Corpus stage output; documents are read from ``corpus_dir/train/*.jsonl`` (field ``text``)."""
    out_dir: Path = Path("artifacts/vocab")
    """Output directory (replaced atomically): ``<model_name>.model``, ``.vocab``, summary.json, meta.json."""
    model_name: str = "zh_bpe"
    """File stem of the model and vocab files."""
    vocab_size: int = 20000
    """Pieces in the Chinese model, including its 3 control pieces and 256 byte pieces."""
    character_coverage: float = 0.9995
    """Share of training characters that must be single pieces; the rarest rest fall back to bytes."""
    max_sentences: int = 2_000_000
    """Reservoir size: at most this many sentences are kept in memory, whatever the corpus size."""
    min_sentence_chars: int = 2
    """Lines shorter than this (after splitting) are skipped."""
    max_sentence_chars: int = 1000
    """Longer lines are cut at sentence punctuation (then hard) into chunks of at most this many chars."""
    seed: int = 0
    """Seed of the reservoir sample; the same corpus + config gives the same model bytes."""
    dev_fraction: float = 0.05
    """Share of train documents kept out of vocabulary training as the *dev* set on which
    ``vocab merge`` chooses its size (membership: :func:`vocab.dev_split.is_dev`, by text hash).
    Held-out text stays a pure test set."""
    jieba_word_boundaries: bool = False
    """Pre-segment training sentences with jieba so no BPE piece crosses a jieba word boundary."""
    jieba_hmm: bool = False
    """Let jieba's HMM guess out-of-dictionary words while pre-segmenting."""
    word_list: str = "wordfreq"
    """Word-frequency list added as weighted extra input (:mod:`vocab.wordlists`): ``wordfreq``
    (subtitles, web, news, social, books, Wikipedia), ``jieba``, a ``word freq`` file, or ``none``."""
    word_list_words: int = 50000
    """The N most frequent Han words (2+ characters) of the list (0 = off)."""
    word_list_weight: float = 0.1
    """Character mass of the word-list input relative to the sampled corpus characters."""
    word_list_variants: list[str] = field(default_factory=lambda: ["s2twp", "s2hk"])
    """OpenCC conversions whose forms of each word are added too (the lists are Simplified)."""
    word_list_variant_weight: float = 0.5
    """Frequency of a Traditional form relative to its Simplified word."""
    cross_script_share: float = 0.5
    """Share of the Simplified and of the Traditional training records also fed converted to the
    other script (OpenCC ``tw2sp`` / ``s2twp``; :func:`vocab.domains.cross_script_copies`)."""
    domain_weights: dict[str, float] = field(default_factory=dict)
    """Multiplier on each corpus domain's natural share of the training text (a record's ``domain``,
    else its ``source``); a missing domain keeps 1.0, 0 drops it. Applied as repeat counts."""
    min_chars_per_piece: float = 20.0
    """Refuse to train when the sample has fewer characters than this times ``vocab_size``: a BPE on
    too little text memorises whole sentences instead of learning reusable pieces."""
    model_type: str = "bpe"
    """SentencePiece algorithm: ``bpe`` (Llama-2's; the merge requires it) or ``unigram`` (experiments only)."""
    byte_fallback: bool = True
    """Unknown characters become ``<0xNN>`` byte pieces (Llama-2: true)."""
    split_digits: bool = True
    """Every digit is its own piece (Llama-2: true)."""
    normalization_rule_name: str = "identity"
    """No Unicode normalisation (Llama-2: identity)."""
    add_dummy_prefix: bool = True
    """Prepend ``▁`` to the text (Llama-2: true)."""
    remove_extra_whitespaces: bool = False
    """Keep runs of whitespace (Llama-2: false)."""
    allow_whitespace_only_pieces: bool = True
    """Allow pieces made of ``▁`` only (Llama-2: true)."""
    max_piece_chars: int = 16
    """Longest piece in characters (SentencePiece ``max_sentencepiece_length``; Llama-2: 16)."""
    num_threads: int = 2
    """SentencePiece trainer threads."""

    def __post_init__(self) -> None:
        if self.vocab_size < 300:
            raise ValueError(f"vocab_size must be >= 300 (259 control/byte pieces + some text), got {self.vocab_size}")
        if not 0.98 <= self.character_coverage <= 1.0:
            raise ValueError(f"character_coverage must be in [0.98, 1.0], got {self.character_coverage}")
        if self.max_sentences < 1 or self.min_sentence_chars < 1 or self.max_sentence_chars < self.min_sentence_chars:
            raise ValueError("need max_sentences >= 1 and 1 <= min_sentence_chars <= max_sentence_chars")
        if self.model_type not in ("bpe", "unigram"):
            raise ValueError(f"model_type must be 'bpe' or 'unigram', got {self.model_type!r}")
        if self.word_list_words < 0 or self.word_list_weight < 0 or self.word_list_variant_weight < 0:
            raise ValueError("word_list_words, word_list_weight and word_list_variant_weight must be >= 0")
        if not 0.0 <= self.cross_script_share <= 1.0:
            raise ValueError(f"cross_script_share must be in [0, 1], got {self.cross_script_share}")
        from corpora.domains import check_weights

        check_weights(self.domain_weights, where="domain_weights")
        from vocab.wordlists import check_variants

        try:
            check_variants(self.word_list_variants)
        except UserError as e:
            raise ValueError(str(e)) from None


# ---------------------------------------------------------------------------------------------------
# Sentences: split, then reservoir-sample (pure, streaming)

_SENTENCE_END = re.compile(r"[^。！？!?；;]*[。！？!?；;]+[”’」』）)]*|[^。！？!?；;]+")


def split_sentences(text: str, min_chars: int = 2, max_chars: int = 1000) -> Iterator[str]:
    """Yield the training sentences of one document: its lines, long lines cut into chunks.

    A chunk is as many whole sentences (ending in 。！？!?；;) as fit in ``max_chars``; a single longer
    sentence is cut hard. Whitespace inside lines is kept (Llama keeps it). Example::

        >>> list(split_sentences("甲。乙。\\n\\n丙", min_chars=1, max_chars=2))
        ['甲。', '乙。', '丙']
    """
    for raw in text.split("\n"):
        line = raw.rstrip("\r")
        if len(line) < min_chars:
            continue
        if len(line) <= max_chars:
            yield line
            continue
        chunk = ""
        for m in _SENTENCE_END.finditer(line):
            part = m.group(0)
            if len(chunk) + len(part) <= max_chars:
                chunk += part
                continue
            if len(chunk) >= min_chars:
                yield chunk
            while len(part) > max_chars:
                yield part[:max_chars]
                part = part[max_chars:]
            chunk = part
        if len(chunk) >= min_chars:
            yield chunk


def sample_sentences(texts: Iterable[str], cfg: TrainConfig, stats: dict | None = None) -> list[str]:
    """A uniform random sample of at most ``cfg.max_sentences`` sentences from a stream of documents.

    Reservoir sampling (Algorithm R, seeded by ``cfg.seed``): memory holds only the reservoir, so a
    20 GB corpus streams through. If ``stats`` is given it receives ``documents_seen``,
    ``sentences_seen``, ``chars_seen``, ``sentences_kept``, ``chars_kept``. Example::

        >>> sample_sentences(["一二三\\n四五六"], TrainConfig(max_sentences=1))  # doctest: +SKIP
        ['四五六']
    """
    rng = random.Random(cfg.seed)
    reservoir: list[str] = []
    docs = seen = chars = 0
    for text in texts:
        docs += 1
        for sentence in split_sentences(text, cfg.min_sentence_chars, cfg.max_sentence_chars):
            seen += 1
            chars += len(sentence)
            if len(reservoir) < cfg.max_sentences:
                reservoir.append(sentence)
            else:
                j = rng.randrange(seen)
                if j < cfg.max_sentences:
                    reservoir[j] = sentence
    if stats is not None:
        stats.update(
            documents_seen=docs, sentences_seen=seen, chars_seen=chars,
            sentences_kept=len(reservoir), chars_kept=sum(map(len, reservoir)),
        )
    return reservoir


# ---------------------------------------------------------------------------------------------------
# Training (pure: sentences in, model bytes out)


def training_lines(sentences: Iterable[str], cfg: TrainConfig, progress: bool = False) -> list[str]:
    """The TSV lines ``sentence\\tcount`` fed to SentencePiece: the sentences (count 1, optionally
    jieba-marked) followed by the weighted jieba dictionary words, if configured.

    Tabs and the delimiter character are removed from raw sentences first (the TSV format and the
    word-boundary marking both reserve them).
    """
    sentences = list(sentences)
    iterator: Iterable[str] = sentences
    if progress and cfg.jieba_word_boundaries:
        from tqdm import tqdm

        iterator = tqdm(sentences, desc="jieba segmentation", unit="sent", mininterval=1.0)
    lines = []
    corpus_chars = 0
    for s in iterator:
        s = s.replace("\t", " ").replace(DEFAULT_DELIMITER, "")
        corpus_chars += len(s)
        if cfg.jieba_word_boundaries:
            s = mark_word_boundaries(s, DEFAULT_DELIMITER, hmm=cfg.jieba_hmm)
        lines.append(f"{s}\t1")
    if cfg.word_list != "none" and cfg.word_list_words > 0 and cfg.word_list_weight > 0:
        words = load_words(cfg.word_list, cfg.word_list_words)
        if cfg.word_list_variants:
            words = with_variants(words, cfg.word_list_variants, cfg.word_list_variant_weight)
        lines.extend(dict_training_lines(words, corpus_chars, cfg.word_list_weight, DEFAULT_DELIMITER))
    return lines


def check_sample_size(sentences: list[str], cfg: TrainConfig) -> None:
    """Raise :class:`UserError` if the sample is empty or too small for ``cfg.vocab_size``."""
    if not sentences:
        raise UserError("the corpus has no usable sentences (is it empty?)")
    chars = sum(map(len, sentences))
    needed = int(cfg.min_chars_per_piece * cfg.vocab_size)
    if chars < needed:
        raise UserError(
            f"corpus too small for vocab_size={cfg.vocab_size}: {chars:,} characters sampled, need at least "
            f"{needed:,} (min_chars_per_piece={cfg.min_chars_per_piece}); add text or lower vocab_size"
        )


def train_bpe(
    sentences: Iterable[str], cfg: TrainConfig, progress: bool = False, stats: dict | None = None
) -> bytes:
    """Train a SentencePiece model on ``sentences``; return the serialized ``ModelProto``.

    Pure and deterministic: same sentences + config -> same bytes. Control ids follow Llama-2
    (unk 0, bos 1, eos 2, no pad). Raises :class:`UserError` when the text is too small for the
    requested size or SentencePiece refuses the settings. ``stats`` (optional) receives
    ``training_lines``, ``dictionary_lines`` and ``sentencepiece_seconds``. Example::

        model_bytes = train_bpe(["数学是研究数量的学科。"] * 1000, TrainConfig(vocab_size=300, min_chars_per_piece=1))
    """
    import io

    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    sentences = list(sentences)
    check_sample_size(sentences, cfg)
    lines = training_lines(sentences, cfg, progress=progress)
    max_line_bytes = max(len(line.encode("utf-8")) for line in lines)
    out = io.BytesIO()
    start = time.perf_counter()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=out,
            input_format="tsv",
            model_type=cfg.model_type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            byte_fallback=cfg.byte_fallback,
            split_digits=cfg.split_digits,
            normalization_rule_name=cfg.normalization_rule_name,
            add_dummy_prefix=cfg.add_dummy_prefix,
            remove_extra_whitespaces=cfg.remove_extra_whitespaces,
            allow_whitespace_only_pieces=cfg.allow_whitespace_only_pieces,
            max_sentencepiece_length=cfg.max_piece_chars,
            max_sentence_length=max_line_bytes + 1,
            pretokenization_delimiter=DEFAULT_DELIMITER,
            split_by_unicode_script=True,
            split_by_whitespace=True,
            split_by_number=True,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            input_sentence_size=0,
            shuffle_input_sentence=False,
            num_threads=cfg.num_threads,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e).split("]", 1)[-1].strip() or str(e)
        raise UserError(f"SentencePiece could not train vocab_size={cfg.vocab_size}: {msg}") from None
    if stats is not None:
        stats.update(training_lines=len(lines), dictionary_lines=len(lines) - len(sentences),
                     sentencepiece_seconds=round(time.perf_counter() - start, 2))
    model = pb.ModelProto()
    model.ParseFromString(out.getvalue())
    # The delimiter is a training-time device only; clear it so nothing downstream could ever apply
    # it when encoding (encoding must behave exactly like Llama-2's tokenizer).
    model.trainer_spec.ClearField("pretokenization_delimiter")
    return model.SerializeToString()


def vocab_text(model_bytes: bytes) -> str:
    """The ``.vocab`` listing of a model: ``piece<TAB>score`` per line, in id order."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model_bytes)
    return "".join(f"{p.piece}\t{p.score:g}\n" for p in m.pieces)


# ---------------------------------------------------------------------------------------------------
# Corpus reading (streaming)


def corpus_files(corpus_dir: str | Path) -> list[Path]:
    """The training shards ``corpus_dir/train/*.jsonl`` (sorted), or a :class:`UserError`."""
    from corpora.shards import shard_files

    return shard_files(corpus_dir, "train")


def weighted_texts(records: Iterable[dict], weights: dict[str, float], seen: set[str] | None = None) -> Iterator[str]:
    """The texts of :func:`corpora.domains.weighted_sample` (each record ``floor(w)`` times, plus once
    more with probability ``w - floor(w)``, stable per record; ``w`` = its domain's weight, 1.0 if not
    listed). Domains met are added to ``seen``.

    >>> list(weighted_texts([{"id": "1", "domain": "a", "text": "甲"}, {"id": "2", "domain": "b", "text": "乙"}],
    ...                     {"a": 2, "b": 0}))
    ['甲', '甲']
    """
    from corpora.domains import weighted_sample

    def noted(recs: Iterable[dict]) -> Iterator[dict]:
        for rec in recs:
            if seen is not None:
                seen.add(str(rec.get("domain", "")))
            yield rec

    for rec in weighted_sample(noted(records), weights):
        yield rec["text"]


def check_domain_weights(weights: dict[str, float], seen: set[str]) -> None:
    """A :class:`UserError` naming ``domain_weights.<key>`` for a bad weight or a domain the corpus lacks."""
    from corpora.domains import check_weights

    try:
        check_weights(weights, known=seen, where="domain_weights")
    except ValueError as e:
        raise UserError(str(e)) from None


def _peak_rss_mb() -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def run(cfg: TrainConfig) -> dict:
    """CLI: corpus shards -> ``out_dir/<model_name>.model`` (+ .vocab, summary.json, meta.json)."""
    from tqdm import tqdm

    start = time.perf_counter()
    files = corpus_files(cfg.corpus_dir)
    stats: dict = {}
    from vocab.dev_split import is_dev

    # Dev documents are excluded here so that the merge can measure on text BPE never saw.
    records = cross_script_copies((r for r in iter_jsonl_records(files) if not is_dev(r["text"], cfg.dev_fraction)),
                                  cfg.cross_script_share)
    seen_domains: set[str] = set()
    docs = tqdm(weighted_texts(records, cfg.domain_weights, seen_domains),
                desc=f"sampling {len(files)} shard(s)", unit="doc", mininterval=1.0)
    sentences = sample_sentences(docs, cfg, stats)
    docs.close()
    check_domain_weights(cfg.domain_weights, seen_domains)
    model_bytes = train_bpe(sentences, cfg, progress=True, stats=stats)
    del sentences
    seconds = time.perf_counter() - start
    summary = {
        **stats,
        "vocab_size": cfg.vocab_size,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "model_sha256": None,
    }
    out_dir = Path(cfg.out_dir)
    model_name = f"{cfg.model_name}.model"
    with atomic_dir(out_dir) as tmp:
        atomic_write_bytes(tmp / model_name, model_bytes)
        (tmp / f"{cfg.model_name}.vocab").write_text(vocab_text(model_bytes), encoding="utf-8")
        summary["model_sha256"] = sha256_file(tmp / model_name)
        atomic_write_json(tmp / "summary.json", summary)
        inputs = {str(f.relative_to(cfg.corpus_dir)): sha256_file(f) for f in files}
        write_meta(tmp, config=cfg, inputs=inputs, summary=summary)
    print(
        f"vocab train: {cfg.vocab_size} pieces from {stats['sentences_kept']:,} of {stats['sentences_seen']:,} "
        f"sentences ({stats['chars_kept']:,} chars, {stats['documents_seen']:,} docs) in {seconds:.1f} s, "
        f"peak RSS {summary['peak_rss_mb']:.0f} MB -> {out_dir / model_name}"
    )
    return summary
