"""SentencePiece BPE model -> Hugging Face tokenizer directory, id-for-id identical to SentencePiece.

Why not ``LlamaTokenizer.from_pretrained`` (transformers' converter)? It differs from SentencePiece
on runs of spaces and on ``<s>`` written as text. This module builds the ``tokenizers`` pipeline
from the proto itself, mirroring what SentencePiece's BPE encoder does:

- normaliser: prepend ``▁`` (``add_dummy_prefix``) and replace every ``" "`` by ``▁``; no
  pre-tokenizer, because SentencePiece segments the whole normalised string as one word;
- model: BPE with byte fallback; the merge list holds every split ``(a, b)`` of every piece
  ``a + b`` where ``a`` and ``b`` are pieces, ranked by the score of ``a + b`` (SentencePiece
  merges the adjacent pair whose merged piece has the highest score);
- equal scores: SentencePiece takes the leftmost candidate, ``tokenizers`` the lowest rank. The
  only tie group that matters in Llama-2 is the whitespace runs ``▁▁ .. ▁×16`` (all scored
  -1e9); SentencePiece then grows the leftmost run one ``▁`` at a time, which ranks
  ``(▁×k, ▁)`` by descending ``k`` reproduce exactly (see :func:`bpe_merges`);
- special tokens (``<unk> <s> </s>``) are registered (so ``skip_special_tokens`` works) but never
  matched inside text (``split_special_tokens=True``), as in SentencePiece;
- decoder: ``▁`` -> space, bytes fused, one leading space stripped.

Example::

    tok = build_hf_tokenizer(Path("tokenizer.model").read_bytes())
    tok(" hello  world").input_ids == [sp.bos_id()] + sp.encode(" hello  world")
"""
from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass
from pathlib import Path

from vocab.proto import NORMAL, SPIECE_UNDERLINE, USER_DEFINED, ModelProto, mergeable_pieces, parse_model
from zhllama.artifacts import atomic_write_bytes


@dataclass
class MergeTable:
    """The ranked merge list of a SentencePiece BPE model, plus what could not be mirrored."""

    merges: list[tuple[str, str]]
    """``(left, right)`` pairs, best (highest SentencePiece score) first."""
    ambiguous_tie_pieces: list[str]
    """Pieces sharing a score with another piece, other than a complete run group (``▁▁ .. ▁×K``
    with no length missing): for these SentencePiece's leftmost-first tie break cannot be expressed
    as ranks, and the export may differ (empty for Llama-2 and for :func:`vocab.merge.merge`'s
    output; the classic score-0 merge has thousands)."""


def _is_char_run(piece: str) -> bool:
    return len(piece) >= 2 and len(set(piece)) == 1


def _is_complete_run_group(group: list[str]) -> bool:
    """True for ``[cc, ccc, ..., c×K]`` with every length 2..K present (Llama-2's whitespace runs)."""
    if len(group) < 2 or not all(_is_char_run(p) for p in group) or len({p[0] for p in group}) != 1:
        return False
    return sorted(map(len, group)) == list(range(2, len(group) + 2))


def bpe_merges(m: ModelProto) -> MergeTable:
    """Rank every ``(a, b)`` with ``a``, ``b`` and ``a + b`` mergeable pieces as SentencePiece does.

    >>> # pieces a, b, ab(score -1), abb(score -2) -> [("a","b"), ("ab","b")]
    """
    vocab = mergeable_pieces(m)
    by_score: dict[float, list[str]] = collections.defaultdict(list)
    for piece, i in vocab.items():
        if len(piece) >= 2:
            by_score[m.pieces[i].score].append(piece)
    merges: list[tuple[str, str]] = []
    ambiguous: list[str] = []
    for score in sorted(by_score, reverse=True):
        group = sorted(by_score[score], key=lambda p: vocab[p])
        if _is_complete_run_group(group):
            # Runs of one character with one score (Llama-2's ▁▁..▁×16): SentencePiece pops the
            # leftmost candidate, so the leftmost run absorbs one more char at a time until the
            # longest run piece; with no length missing, no other split can ever be adjacent.
            # Ranking (c×k, c) by descending k makes tokenizers grow the run it just merged first.
            merges.extend((p[:-1], p[-1]) for p in sorted(group, key=len, reverse=True))
            continue
        if len(group) > 1:
            ambiguous.extend(group)
        for p in group:
            merges.extend((p[:k], p[k:]) for k in range(1, len(p)) if p[:k] in vocab and p[k:] in vocab)
    return MergeTable(merges=merges, ambiguous_tie_pieces=ambiguous)


def check_supported(m: ModelProto) -> None:
    """Raise ``ValueError`` if ``m`` uses a SentencePiece feature this exporter does not mirror."""
    spec = m.normalizer_spec
    if spec.name not in ("identity", "") or spec.precompiled_charsmap:
        raise ValueError(f"normalizer {spec.name!r} is not supported (only identity, like Llama-2)")
    if spec.remove_extra_whitespaces:
        raise ValueError("remove_extra_whitespaces=True is not supported (Llama-2 keeps every space)")
    if m.trainer_spec.treat_whitespace_as_suffix:
        raise ValueError("treat_whitespace_as_suffix=True is not supported")
    if any(p.type == USER_DEFINED for p in m.pieces):
        raise ValueError("user-defined pieces are not supported (SentencePiece matches them before BPE)")


def build_backend(m: ModelProto):
    """The ``tokenizers.Tokenizer`` mirroring SentencePiece model ``m`` (BPE, byte fallback)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    check_supported(m)
    spec = m.normalizer_spec
    vocab = {p.piece: i for i, p in enumerate(m.pieces)}
    if len(vocab) != len(m.pieces):
        raise ValueError("duplicate pieces in the model")
    unk = m.pieces[m.trainer_spec.unk_id].piece
    table = bpe_merges(m)
    if table.ambiguous_tie_pieces:
        warnings.warn(
            f"{len(table.ambiguous_tie_pieces)} pieces share a score with another piece (e.g. "
            f"{table.ambiguous_tie_pieces[:3]}); SentencePiece breaks such ties leftmost-first, which BPE "
            "ranks cannot express: the HF tokenizer may differ from SentencePiece where they compete",
            stacklevel=3,
        )
    bpe = models.BPE(
        vocab=vocab, merges=table.merges, unk_token=unk, fuse_unk=True,
        byte_fallback=m.trainer_spec.byte_fallback,
    )
    tok = Tokenizer(bpe)
    steps = [normalizers.Replace(" ", SPIECE_UNDERLINE)]
    if spec.add_dummy_prefix:
        steps.insert(0, normalizers.Prepend(SPIECE_UNDERLINE))
    tok.normalizer = normalizers.Sequence(steps)
    tok.pre_tokenizer = None
    decode_steps = [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_dummy_prefix:
        decode_steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(decode_steps)
    specials = [p.piece for p in m.pieces if p.type not in (NORMAL, USER_DEFINED, ModelProto.SentencePiece.BYTE)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    ts = m.trainer_spec
    if ts.bos_id >= 0:
        bos = m.pieces[ts.bos_id].piece
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, ts.bos_id)],
        )
    return tok


def build_hf_tokenizer(model_bytes: bytes):
    """A transformers tokenizer equivalent to the SentencePiece model ``model_bytes``.

    ``tok(text).input_ids == [bos] + sp.encode(text)`` for every string, and
    ``tok.decode(ids, skip_special_tokens=True) == sp.decode(ids)``.
    """
    from transformers import PreTrainedTokenizerFast

    m = parse_model(model_bytes, "tokenizer model")
    ts = m.trainer_spec

    def piece(i: int) -> str | None:
        return m.pieces[i].piece if i >= 0 else None

    return PreTrainedTokenizerFast(
        tokenizer_object=build_backend(m),
        bos_token=piece(ts.bos_id), eos_token=piece(ts.eos_id), unk_token=piece(ts.unk_id),
        pad_token=piece(ts.pad_id),
        add_bos_token=ts.bos_id >= 0, add_eos_token=False, clean_up_tokenization_spaces=False,
        split_special_tokens=True,  # SentencePiece never reads "<s>" in text as the control token
    )


def export_hf(model_bytes: bytes, out_dir: str | Path) -> Path:
    """Write ``tokenizer.model`` + HF files (``tokenizer.json``, ``tokenizer_config.json``) into ``out_dir``.

    The directory loads with ``AutoTokenizer.from_pretrained(out_dir)`` (no remote code).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_hf_tokenizer(model_bytes)
    tok.save_pretrained(out)
    atomic_write_bytes(out / "tokenizer.model", model_bytes)
    return out


EDGE_STRINGS: tuple[str, ...] = (
    "", " ", "  ", "\t", "\n", " hello", "hello ", " hello  world", "hello   world   ", "a" + " " * 40 + "b",
    " " * 33, "\t\tindented\ttabs\t", "\n\nlines\n\n\n", "\r\n", "<s>", "</s>", "<unk>", " <s> text </s> ",
    "<s>你好</s>", "2023", "2023年10月", "你好，世界！", "　全角空格　", "ＡＢＣ１２３", "😀👍🏽", "e\u0301\u0308",
    "\x00\x01\x1f\x7f", "\u200b\u200d\ufeff", "▁", "▁▁ ▁", "𠮷野家", "def f(x):\n    return x  # 注释\n",
)
"""Strings where tokenizer ports usually differ: leading/trailing/repeated spaces, tabs, newlines,
special tokens written as text, digits, full-width forms, emoji, combining marks, control chars."""


def parity_mismatches(tok, model, texts: list[str]) -> list[str]:
    """The texts on which the HF tokenizer ``tok`` and SentencePiece ``model`` (model bytes or a
    loaded ``SentencePieceProcessor``) disagree, on ids (``tok`` adds BOS; SentencePiece gets it
    prepended) or on decoding those ids.

    >>> parity_mismatches(build_hf_tokenizer(b), b, list(EDGE_STRINGS))  # doctest: +SKIP
    []
    """
    import sentencepiece as spm

    sp = model if isinstance(model, spm.SentencePieceProcessor) else spm.SentencePieceProcessor(model_proto=model)
    bos = [sp.bos_id()] if sp.bos_id() >= 0 else []
    texts = list(texts)
    hf_ids = tok(texts, add_special_tokens=True)["input_ids"]
    sp_ids = sp.encode(texts)
    hf_text = tok.batch_decode(hf_ids, skip_special_tokens=True)
    sp_text = sp.decode(sp_ids)
    return [t for t, a, b, x, y in zip(texts, hf_ids, sp_ids, hf_text, sp_text, strict=True) if a != bos + b or x != y]
