"""Resize a Llama's ``embed_tokens`` and ``lm_head`` to a merged tokenizer and initialise the new rows.

The pure core, then one CLI function::

    sources = new_row_sources(["▁中国", "研究"], base_sp)   # base ids that spelled each new piece
    rows = init_rows(old_weight, sources, "mean_of_pieces")  # one new row per source list
    report = resize_and_init(model, sources, n_tokenizer=32002, method="mean_of_pieces")

Invariants (tested): old rows stay bit-identical (input and output, tied or untied); new row ``i``
is the mean of the base rows of the base-tokenizer pieces of new piece ``i``'s text; the matrix
has ``ceil(n_tokenizer / pad_to_multiple_of) * pad_to_multiple_of`` rows; padding rows (ids no
tokenizer produces) are the mean of all old rows, so they neither carry noise into the model nor
take more than an average token's share of probability.

Why "mean of pieces": a new piece ``▁中国`` replaces the base pieces ``▁ 中 国``; averaging their
rows puts the new input row where the model already "understands" that text and the new output
row where it already predicts it (Chinese-LLaMA's follow-ups, Hewitt 2021, FOCUS). ``bench/init.py``
measures bits per character right after the resize for every method. On the stand-in it found
the *output* side decides: mean-of-pieces output rows give every new token a large logit (their
pieces are frequent byte/Han pieces), so ~9k new tokens flood the softmax; near-zero random output
rows avoid that. Hence the default ``pieces_in_random_out``: input rows by mean of pieces, output
rows random (``mean_of_pieces`` for both stays selectable).
"""
from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

InitMethod = Literal["mean_of_pieces", "pieces_in_random_out", "mean_all", "random", "hf_default"]
#: Every selectable initialisation of new rows.
INIT_METHODS: tuple[str, ...] = ("mean_of_pieces", "pieces_in_random_out", "mean_all", "random", "hf_default")
SPIECE_UNDERLINE = "\u2581"
#: Files of a Hugging Face tokenizer directory that ``init`` copies beside the resized model.
TOKENIZER_DIR_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                       "added_tokens.json", "chat_template.jinja")


# ---------------------------------------------------------------- pure core: which base rows


def base_sp_without_dummy_prefix(model_bytes: bytes):
    """A SentencePiece processor for ``model_bytes`` that adds no dummy ``▁`` and keeps every space.

    Encoding a piece's text with it gives exactly the base pieces that spelled that piece: a
    leading ``▁`` in the merged piece is a real space in the text, not SentencePiece's prefix.

    >>> sp = base_sp_without_dummy_prefix(open("llama2_tokenizer.model", "rb").read())  # doctest: +SKIP
    >>> sp.encode(" 中国", out_type=str), sp.encode("中国", out_type=str)             # doctest: +SKIP
    (['▁', '中', '国'], ['中', '国'])
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(model_bytes)
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    return spm.SentencePieceProcessor(model_proto=proto.SerializeToString())


def piece_text(piece: str) -> str:
    """The text a SentencePiece piece stands for: ``▁`` is a space.

    >>> piece_text("▁中国"), piece_text("研究")
    (' 中国', '研究')
    """
    return piece.replace(SPIECE_UNDERLINE, " ")


def new_row_sources(new_pieces: Sequence[str], base_sp, special: Collection[str] = ()) -> list[list[int]]:
    """For each new piece, the base-tokenizer ids that would have represented its text.

    ``base_sp`` must come from :func:`base_sp_without_dummy_prefix` (else every piece would gain a
    spurious ``▁``). Byte-fallback pieces (``<0xE4>``...) count like any other. Special pieces
    (``<pad>``...) and pieces whose text is empty get ``[]``: no text to borrow from.

    >>> new_row_sources(["▁中国", "<pad>"], sp, special={"<pad>"})   # doctest: +SKIP
    [[29871, 30275, 30356], []]
    """
    out: list[list[int]] = []
    for piece in new_pieces:
        if piece in special:
            out.append([])
            continue
        byte_id = base_sp.piece_to_id(piece) if piece.startswith("<0x") else -1
        if byte_id > 0 and base_sp.id_to_piece(byte_id) == piece:
            out.append([byte_id])  # a byte piece spells one byte, not the text "<0xE4>"
            continue
        text = piece_text(piece)
        out.append(list(base_sp.encode(text)) if text else [])
    return out


# ---------------------------------------------------------------- pure core: the new rows


def padded_vocab_size(n_tokens: int, pad_to_multiple_of: int) -> int:
    """Rows the embedding matrix gets: ``n_tokens`` rounded up to a multiple (``<= 1`` means no padding).

    >>> padded_vocab_size(55296, 64), padded_vocab_size(32300, 64), padded_vocab_size(32300, 0)
    (55296, 32320, 32300)
    """
    if pad_to_multiple_of <= 1:
        return n_tokens
    return math.ceil(n_tokens / pad_to_multiple_of) * pad_to_multiple_of


def init_rows(old_weight, sources: Sequence[Sequence[int]], method: str, *, std: float = 0.02, seed: int = 0):
    """New embedding rows (one per entry of ``sources``) computed from the old rows ``old_weight``.

    ``mean_of_pieces``: mean of the old rows listed in ``sources[i]`` (the mean of all old rows
    when the list is empty); ``mean_all``: the mean of all old rows; ``random``: normal(0, ``std``)
    from a generator seeded with ``seed``. Computed in fp32, returned in ``old_weight``'s dtype.

    >>> w = torch.tensor([[0.0, 2.0], [4.0, 6.0]])                   # doctest: +SKIP
    >>> init_rows(w, [[0, 1], [1], []], "mean_of_pieces").tolist()   # doctest: +SKIP
    [[2.0, 4.0], [4.0, 6.0], [2.0, 4.0]]
    """
    import torch

    n_new, dim = len(sources), old_weight.shape[1]
    w32 = old_weight.detach().to(torch.float32)
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(n_new, dim, generator=gen) * std).to(old_weight.dtype)
    mean_all = w32.mean(dim=0)
    if method == "mean_all":
        return mean_all.expand(n_new, dim).clone().to(old_weight.dtype)
    if method != "mean_of_pieces":
        raise ValueError(f"init_rows: unknown method {method!r}; choose from {INIT_METHODS}")
    rows = torch.empty(n_new, dim, dtype=torch.float32)
    for i, ids in enumerate(sources):
        rows[i] = w32[list(ids)].mean(dim=0) if ids else mean_all
    return rows.to(old_weight.dtype)


# ---------------------------------------------------------------- the model surgery


@dataclass(frozen=True)
class ResizeReport:
    """What :func:`resize_and_init` did (counts in rows = token ids)."""

    n_old_rows: int
    """Rows before the resize (kept bit-identical)."""
    n_tokenizer: int
    """Tokens of the new tokenizer: rows ``n_old_rows .. n_tokenizer-1`` are new tokens."""
    n_rows: int
    """Rows after the resize (``n_tokenizer`` padded); rows ``n_tokenizer ..`` are padding."""
    method: str
    """Initialisation of the new token rows."""
    tied: bool
    """Whether ``lm_head`` shares its weight with ``embed_tokens``."""


def _is_zero3() -> bool:
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled
    except ImportError:  # pragma: no cover - transformers always has it
        return False
    return bool(is_deepspeed_zero3_enabled())


def resize_and_init(model, sources: Sequence[Sequence[int]], n_tokenizer: int, method: str = "mean_of_pieces",
                    pad_to_multiple_of: int = 64, seed: int = 0) -> ResizeReport:
    """Grow ``model``'s input and output embeddings to ``n_tokenizer`` (padded) rows and initialise them.

    ``sources[i]`` are the old ids behind new id ``n_old_rows + i`` (see :func:`new_row_sources`);
    ``len(sources) == n_tokenizer - n_old_rows``. ``hf_default`` keeps exactly what
    ``resize_token_embeddings(mean_resizing=True)`` draws (padding rows included); every other
    method sets padding rows to the mean of the old rows. ``pieces_in_random_out``: input rows by
    ``mean_of_pieces``, untied output rows by ``random`` (see ``bench/init.py`` for which wins). Works on a plain model and on one built
    under ZeRO-3 (each weight is gathered with ``modifier_rank=0`` and re-partitioned after)::

        report = resize_and_init(model, sources, n_tokenizer=len(tokenizer))
        assert model.config.vocab_size == report.n_rows
    """
    import contextlib

    import torch

    if method not in INIT_METHODS:
        raise ValueError(f"unknown init method {method!r}; choose from {INIT_METHODS}")
    emb = model.get_input_embeddings()
    n_old = int(emb.num_embeddings)  # valid under ZeRO-3 too, where weight.shape is (0,)
    if n_tokenizer < n_old:
        raise ValueError(f"tokenizer has {n_tokenizer} tokens, fewer than the model's {n_old} rows")
    if len(sources) != n_tokenizer - n_old:
        raise ValueError(f"need one source list per new token: {n_tokenizer - n_old}, got {len(sources)}")
    model.resize_token_embeddings(n_tokenizer, pad_to_multiple_of=pad_to_multiple_of if pad_to_multiple_of > 1 else None,
                                  mean_resizing=(method == "hf_default"))
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    weights = [emb.weight] + ([head.weight] if head is not None and not tied else [])
    n_rows = int(emb.num_embeddings)
    std = float(getattr(model.config, "initializer_range", 0.02))
    if _is_zero3():
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(weights, modifier_rank=0)
    else:
        gathered = contextlib.nullcontext()
    with gathered, torch.no_grad():
        for k, w in enumerate(weights):
            if method != "hf_default":
                # pieces_in_random_out: input rows from the pieces, output rows (k == 1; a tied head is
                # the input) near zero, so no new token starts with a large share of probability.
                row_method = method if method != "pieces_in_random_out" else ("mean_of_pieces" if k == 0 else "random")
                # input and output get different random draws: seed + k
                w.data[n_old:n_tokenizer] = init_rows(w.data[:n_old], sources, row_method, std=std, seed=seed + k)
                if n_rows > n_tokenizer:
                    w.data[n_tokenizer:] = init_rows(w.data[:n_old], [[]] * (n_rows - n_tokenizer), "mean_all")
    return ResizeReport(n_old_rows=n_old, n_tokenizer=n_tokenizer, n_rows=n_rows, method=method, tied=tied)


def special_pieces(tokenizer_dir: str | Path) -> set[str]:
    """Pieces of a tokenizer directory that stand for no text (control, unknown, added-special)."""
    import json

    d = Path(tokenizer_dir)
    out: set[str] = set()
    if (d / "tokenizer.model").is_file():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
        out |= {sp.id_to_piece(i) for i in range(sp.get_piece_size())
                if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i)}
    if (d / "tokenizer.json").is_file():
        data = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))
        out |= {t["content"] for t in data.get("added_tokens", []) if t.get("special")}
    return out


# ---------------------------------------------------------------- CLI: python -m pretrain init


@dataclass
class InitConfig:
    """``python -m pretrain init``: base model dir + merged tokenizer dir -> resized, initialised model dir."""

    model_dir: Path = Path("artifacts/standin")
    """Base Llama checkpoint (HF directory with its own tokenizer beside the weights)."""
    tokenizer_dir: Path = Path("artifacts/tokenizer")
    """Merged tokenizer (HF directory); must extend the model's tokenizer id for id."""
    out_dir: Path = Path("artifacts/pretrain/demo/init")
    """Where the resized model + the merged tokenizer files + meta.json + init_report.{json,md} go."""
    init_method: InitMethod = "pieces_in_random_out"
    """How new token rows start: mean_of_pieces | pieces_in_random_out | mean_all | random | hf_default (bench/init.py)."""
    pad_to_multiple_of: int = 64
    """Round the embedding rows up to a multiple of this (tensor-core friendly); 0 or 1: no padding."""
    base_tokenizer_model: Path | None = None
    """SentencePiece model that spells new pieces in base ids; default ``model_dir/tokenizer.model``."""
    seed: int = 0
    """Seed for the ``random`` / ``hf_default`` draws."""

    def __post_init__(self) -> None:
        if self.pad_to_multiple_of < 0:
            raise ValueError(f"pad_to_multiple_of must be >= 0, got {self.pad_to_multiple_of}")


def plan_sources(model_dir: str | Path, tokenizer_dir: str | Path, base_tokenizer_model: str | Path | None = None):
    """Validate a (model, merged tokenizer) pair and compute the new rows' base ids.

    Returns ``(check, new_pieces, sources)``; raises :class:`~zhllama.cli.UserError` when the
    tokenizer does not extend the model's, or when the model already has more rows than it
    (pointing ``init`` at an already-resized model is an error, never a silent resize).
    """
    from pretrain.model import check_tokenizer_extends, tokenizer_pieces
    from zhllama.cli import UserError, existing_file

    model_dir, tokenizer_dir = Path(model_dir), Path(tokenizer_dir)
    check = check_tokenizer_extends(model_dir, tokenizer_dir, require_fit=False)
    if check.model_vocab_size != check.n_model_tokenizer:
        raise UserError(f"{model_dir}: has {check.model_vocab_size} embedding rows but its tokenizer "
                        f"{check.n_model_tokenizer} pieces (already resized/padded?); init expects the base model")
    if check.n_tokenizer < check.model_vocab_size:
        raise UserError(f"{tokenizer_dir}: has {check.n_tokenizer} tokens, fewer than the model's "
                        f"{check.model_vocab_size} rows")
    sp_path = existing_file(base_tokenizer_model or (model_dir / "tokenizer.model"), "base SentencePiece model")
    try:
        base_sp = base_sp_without_dummy_prefix(sp_path.read_bytes())
    except Exception as e:  # protobuf DecodeError / sentencepiece RuntimeError
        raise UserError(f"{sp_path}: not a SentencePiece model: {e}") from None
    if base_sp.get_piece_size() != check.n_model_tokenizer:
        raise UserError(f"{sp_path}: has {base_sp.get_piece_size()} pieces, the model's tokenizer "
                        f"{check.n_model_tokenizer}")
    new_pieces = tokenizer_pieces(tokenizer_dir)[check.n_model_tokenizer:]
    sources = new_row_sources(new_pieces, base_sp, special=special_pieces(tokenizer_dir))
    return check, new_pieces, sources


def report_markdown(report: dict) -> str:
    """The Markdown twin of ``init_report.json``."""
    lines = ["# Embedding resize + initialisation", "",
             "| what | value |", "|---|---|"]
    for key, value in report.items():
        if not isinstance(value, (dict, list)):
            lines.append(f"| {key} | {value} |")
    lines += ["", "Examples (new piece -> base pieces averaged):", ""]
    lines += [f"- `{ex['piece']}` -> {' '.join(f'`{p}`' for p in ex['base_pieces']) or '(mean of all rows)'}"
              for ex in report.get("examples", [])]
    return "\n".join(lines) + "\n"


def run(cfg: InitConfig) -> int:
    """CLI: load the base model, resize + initialise, save HF dir + tokenizer files + reports + meta.json."""
    import shutil
    import statistics
    import time

    from pretrain.model import load_llama
    from zhllama.artifacts import atomic_dir, atomic_write_json, atomic_write_text, sha256_tree, write_meta

    t0 = time.monotonic()
    check, new_pieces, sources = plan_sources(cfg.model_dir, cfg.tokenizer_dir, cfg.base_tokenizer_model)
    model = load_llama(cfg.model_dir)
    result = resize_and_init(model, sources, check.n_tokenizer, cfg.init_method, cfg.pad_to_multiple_of, cfg.seed)
    import sentencepiece as spm  # only to name the base pieces in the report

    base = spm.SentencePieceProcessor(model_file=str(cfg.base_tokenizer_model or cfg.model_dir / "tokenizer.model"))
    lengths = [len(s) for s in sources]
    report = {
        "model_dir": str(cfg.model_dir), "tokenizer_dir": str(cfg.tokenizer_dir), "init_method": cfg.init_method,
        "n_old_rows": result.n_old_rows, "n_tokenizer": result.n_tokenizer, "n_rows": result.n_rows,
        "n_new_tokens": result.n_tokenizer - result.n_old_rows, "n_padding_rows": result.n_rows - result.n_tokenizer,
        "tied_embeddings": result.tied,
        "n_new_without_text": sum(1 for n in lengths if n == 0),
        "mean_base_pieces_per_new_token": round(statistics.fmean(lengths), 3) if lengths else 0.0,
        "examples": [{"id": result.n_old_rows + i, "piece": new_pieces[i], "base_pieces": [base.id_to_piece(j) for j in s]}
                     for i, s in list(enumerate(sources))[:: max(1, len(sources) // 12)][:12]],
    }
    with atomic_dir(cfg.out_dir) as tmp:
        model.save_pretrained(tmp)
        for f in Path(cfg.tokenizer_dir).iterdir():
            if f.is_file() and f.name in TOKENIZER_DIR_FILES:  # not its report/meta: this dir's are ours
                shutil.copy(f, tmp / f.name)
        atomic_write_json(tmp / "init_report.json", report)
        atomic_write_text(tmp / "init_report.md", report_markdown(report))
        write_meta(tmp, config=cfg, inputs={"model_dir": sha256_tree(cfg.model_dir),
                                            "tokenizer_dir": sha256_tree(cfg.tokenizer_dir)}, init=report)
    print(f"init: {result.n_old_rows} -> {result.n_rows} rows ({report['n_new_tokens']} new tokens by "
          f"{cfg.init_method}, {report['n_padding_rows']} padding) -> {cfg.out_dir} in {time.monotonic() - t0:.1f} s")
    return 0
