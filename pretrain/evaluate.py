"""``python -m pretrain eval``: token perplexity, bits per character and bits per byte, comparable across tokenizers.

A vocabulary change makes token perplexity incomparable between the base and the extended model
(the extended one has fewer, longer tokens per text), so next to it we report figures normalised by
the text itself, which no tokenizer changes::

    token_perplexity = exp(total NLL / total tokens)
    bits_per_char    = total NLL / ln 2 / total Unicode characters
    bits_per_byte    = total NLL / ln 2 / total UTF-8 bytes

NLL is the rolling-window log-likelihood of :mod:`pretrain.scoring` (lm-evaluation-harness's
definition: each document on its own, after BOS, sliding windows for long documents). Documents:
each non-empty line of a ``.txt`` file; each record's ``text_field`` of a ``.jsonl`` file.

Pure parts: :func:`parse_txt`, :func:`parse_jsonl`, :func:`summarize`, :func:`evaluate_model`,
:func:`pretrain.eval_report.render_markdown`; only :func:`run` reads and writes files. Example::

    python -m pretrain eval --model artifacts/pretrain/demo/final --baseline artifacts/standin \\
        --files artifacts/corpus/heldout/heldout.jsonl --files tests/data/english.txt --out_dir artifacts/eval
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from corpora.shards import iter_jsonl_texts, parse_jsonl_record
from pretrain.eval_report import compare_table, fmt, render_markdown, render_png
from pretrain.scoring import LN2, DocScore, score_documents
from zhllama.cli import UserError

_TEXT_FIELD_HINT = "set --text_field"

@dataclass
class EvalConfig:
    """Config of ``python -m pretrain eval`` (``configs/pretrain/eval.yaml``).

    >>> EvalConfig(model=Path("final"), files=[Path("a.txt")]).text_field
    'text'
    """

    model: Path | None = None
    """MODEL: a Hugging Face dir, a LoRA adapter dir (base from its adapter_config.json) or a DeepSpeed checkpoint dir."""
    files: list[Path] = field(default_factory=list)
    """Evaluation files: ``.txt`` (one document per non-empty line) or ``.jsonl`` (one per record)."""
    baseline: Path | None = None
    """Optional second model scored on the same texts, for the side-by-side table and PNG."""
    out_dir: Path = Path("artifacts/eval")
    """Where report.json, report.md, report.png and meta.json go."""
    tokenizer: Path | None = None
    """Tokenizer dir for MODEL when not the one stored with it."""
    baseline_tokenizer: Path | None = None
    """Tokenizer dir for the baseline when not the one stored with it."""
    text_field: str = "text"
    """Field of a ``.jsonl`` record holding the document text."""
    max_documents_per_file: int | None = None
    """Score N documents of each file, evenly spaced through it (quick looks; files are often sorted
    by source, so the first N would be one domain); null = all."""
    window_tokens: int | None = None
    """Model input tokens per window; null = the smallest max_position_embeddings of the models scored."""
    stride_tokens: int | None = None
    """New tokens scored per later window (1..window_tokens); null = window_tokens // 2."""
    batch_tokens: int = 8192
    """Padded input tokens per forward pass (windows of similar length are batched together)."""
    device: str = "auto"
    """"auto" (cuda if available, else cpu), or a torch device string."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights/activations dtype; "auto" = bfloat16 on a GPU that has it, float32 otherwise. NLL sums are float64."""
    progress: bool = True
    """Show a tqdm progress bar while scoring."""
    allow_training_text: bool = False
    """Score a file even when its content is a training source recorded with MODEL (else refused)."""

    def __post_init__(self) -> None:
        if self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {self.batch_tokens}")
        if self.window_tokens is not None and self.window_tokens < 1:
            raise ValueError(f"window_tokens must be >= 1, got {self.window_tokens}")
        if self.stride_tokens is not None and self.stride_tokens < 1:
            raise ValueError(f"stride_tokens must be >= 1, got {self.stride_tokens}")
        if self.window_tokens is not None and self.stride_tokens is not None and self.stride_tokens > self.window_tokens:
            raise ValueError(f"stride_tokens ({self.stride_tokens}) must be <= window_tokens ({self.window_tokens})")
        if self.max_documents_per_file is not None and self.max_documents_per_file < 1:
            raise ValueError(f"max_documents_per_file must be >= 1 or null, got {self.max_documents_per_file}")


# ---------------------------------------------------------------------------------------------
# Reading documents


def parse_txt(text: str) -> list[str]:
    """Documents of a ``.txt`` file: its non-blank lines, without the line ending.

    >>> parse_txt("a b\\n\\n  \\nc\\r\\n")
    ['a b', 'c']
    """
    return [line for line in text.splitlines() if line.strip()]


def parse_jsonl(lines: Sequence[str], source: str, text_field: str = "text") -> list[str]:
    """Documents of a ``.jsonl`` file: each record's ``text_field`` (blank lines skipped).

    An empty text stays a document (it is counted, and scores no token). Errors name ``source:line``.

    >>> parse_jsonl(['{"text": "你好"}', '', '{"text": ""}'], "x.jsonl")
    ['你好', '']
    """
    records = (parse_jsonl_record(line, f"{source}:{i}", text_field, _TEXT_FIELD_HINT) for i, line in enumerate(lines, 1))
    return [r[text_field] for r in records if r is not None]


def read_documents(path: Path, text_field: str = "text") -> list[str]:
    """Read one evaluation file (``.txt`` or ``.jsonl``); unreadable or malformed files are a :class:`UserError`."""
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise UserError(f"{path}: unsupported evaluation file type {suffix or '(none)'!r}; expected .txt or .jsonl")
    if suffix == ".jsonl" and path.is_file():  # the project's one JSONL reader (corpora.shards)
        return list(iter_jsonl_texts([path], text_field, hint=_TEXT_FIELD_HINT))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"evaluation file not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read evaluation file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not valid UTF-8 (byte offset {e.start})") from None
    return parse_txt(text)


# ---------------------------------------------------------------------------------------------
# Figures


@dataclass
class Totals:
    """Counts and total NLL of a set of documents; :meth:`metrics` derives the ratios.

    >>> t = Totals(documents=1, characters=4, utf8_bytes=12, tokens=2, nll_nats=2 * math.log(2))
    >>> t.metrics()["bits_per_char"], t.metrics()["token_perplexity"]
    (0.5, 2.0)
    """

    documents: int = 0
    """Documents read (including empty ones)."""
    unscored_documents: int = 0
    """Documents that yield no token after BOS (empty text): counted, contribute nothing."""
    characters: int = 0
    """Unicode code points of the raw texts."""
    utf8_bytes: int = 0
    """UTF-8 bytes of the raw texts."""
    tokens: int = 0
    """Scored tokens (document tokens, BOS excluded)."""
    nll_nats: float = 0.0
    """Total negative log-likelihood, natural log."""

    def __add__(self, other: Totals) -> Totals:
        return Totals(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def metrics(self) -> dict[str, Any]:
        """The counts plus token_perplexity, bits_per_char, bits_per_byte, tokens_per_char (None when undefined)."""
        out: dict[str, Any] = asdict(self)
        out["token_perplexity"] = math.exp(self.nll_nats / self.tokens) if self.tokens else None
        out["bits_per_char"] = self.nll_nats / LN2 / self.characters if self.characters else None
        out["bits_per_byte"] = self.nll_nats / LN2 / self.utf8_bytes if self.utf8_bytes else None
        out["tokens_per_char"] = self.tokens / self.characters if self.characters else None
        return out


def summarize(texts: Sequence[str], scores: Sequence[DocScore]) -> Totals:
    """Totals of documents and their scores (same order).

    >>> summarize(["ab", ""], [DocScore(1, 0.5), DocScore(0, 0.0)]).unscored_documents
    1
    """
    return Totals(
        documents=len(texts),
        unscored_documents=sum(1 for s in scores if s.n_tokens == 0),
        characters=sum(len(t) for t in texts),
        utf8_bytes=sum(len(t.encode("utf-8")) for t in texts),
        tokens=sum(s.n_tokens for s in scores),
        nll_nats=math.fsum(s.nll_nats for s in scores),
    )


def tokenize_documents(tokenizer: Any, texts: Sequence[str], bos_id: int) -> list[list[int]]:
    """``[BOS] + tokens`` per document (the tokenizer's own special tokens are not added)."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    return [[bos_id, *ids] for ids in encoded]


def bos_token_id(model: Any, tokenizer: Any) -> int:
    """The BOS id (tokenizer first, then model config); every document is scored after it."""
    bos = tokenizer.bos_token_id
    if bos is None:
        bos = getattr(model.config, "bos_token_id", None)
    if bos is None:
        raise UserError("the tokenizer and the model config define no BOS token; rolling scoring starts after BOS")
    return int(bos)


def evaluate_model(
    model: Any,
    tokenizer: Any,
    docs_by_file: dict[str, list[str]],
    *,
    window_tokens: int,
    stride_tokens: int,
    batch_tokens: int = 8192,
    progress: bool = False,
    desc: str = "scoring",
) -> dict[str, Any]:
    """Score every file's documents with one model; returns ``{"files": {name: metrics}, "total": metrics, ...}``.

    All files are scored in one batched pass (windows of similar length batch across files).
    """
    names = list(docs_by_file)
    texts = [t for n in names for t in docs_by_file[n]]
    bos = bos_token_id(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos  # masked anyway
    docs_ids = tokenize_documents(tokenizer, texts, bos)
    t0 = time.perf_counter()
    scores = score_documents(model, docs_ids, window_tokens=window_tokens, stride_tokens=stride_tokens,
                             batch_tokens=batch_tokens, pad_id=pad, progress=progress, desc=desc)
    seconds = time.perf_counter() - t0
    per_file: dict[str, Totals] = {}
    i = 0
    for n in names:
        k = len(docs_by_file[n])
        per_file[n] = summarize(texts[i : i + k], scores[i : i + k])
        i += k
    total = sum(per_file.values(), Totals())
    return {
        "files": {n: t.metrics() for n, t in per_file.items()},
        "total": total.metrics(),
        "seconds": seconds,
        "tokens_per_second": total.tokens / seconds if seconds > 0 else None,
    }


# ---------------------------------------------------------------------------------------------
# CLI


def resolve_device(device: str, dtype: str) -> tuple[str, str]:
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        on_gpu = device.startswith("cuda") and torch.cuda.is_available()
        dtype = "bfloat16" if on_gpu and torch.cuda.is_bf16_supported() else "float32"
    return device, dtype


def resolve_window(cfg: EvalConfig, max_positions: Sequence[int | None]) -> tuple[int, int]:
    """(window_tokens, stride_tokens): the configured ones, checked against every model's positions.

    >>> resolve_window(EvalConfig(), [256, 512])
    (256, 128)
    """
    known = [m for m in max_positions if m]
    window = cfg.window_tokens or (min(known) if known else 2048)
    for m in known:
        if window > m:
            raise UserError(f"window_tokens {window} exceeds a model's max_position_embeddings {m}; "
                            f"set --window_tokens {m} or less")
    stride = cfg.stride_tokens or max(1, window // 2)
    if stride > window:
        raise UserError(f"stride_tokens {stride} must be <= window_tokens {window}")
    return window, stride


def evenly_spaced(items: list, n: int) -> list:
    """``n`` items spread evenly through ``items`` (all of them when there are no more than ``n``),
    first and order kept: a quick evaluation of a file sorted by source still sees every source.

    >>> evenly_spaced(list(range(10)), 3)
    [0, 3, 6]
    >>> evenly_spaced([1, 2], 5)
    [1, 2]
    """
    if len(items) <= n:
        return list(items)
    return [items[k * len(items) // n] for k in range(n)]

def run(cfg: EvalConfig) -> int:
    """Load the model(s), read the files, score, write report.json/.md/.png + meta.json into ``out_dir``."""
    from pretrain.loading import load_model_and_tokenizer
    from zhllama import artifacts

    if cfg.model is None:
        raise UserError("--model DIR is required (a Hugging Face dir, a LoRA adapter dir or a DeepSpeed checkpoint)")
    if not cfg.files:
        raise UserError("no evaluation files: pass --files a.txt --files b.jsonl")
    docs_by_file = {}
    for path in cfg.files:
        docs = read_documents(Path(path), cfg.text_field)
        docs_by_file[str(path)] = evenly_spaced(docs, cfg.max_documents_per_file) if cfg.max_documents_per_file else docs
    if not any(t.strip() for docs in docs_by_file.values() for t in docs):
        raise UserError(f"empty evaluation set: no non-empty document in {', '.join(map(str, cfg.files))}")
    from pretrain.provenance import recorded_sources, refuse_training_text

    hashes = {str(p): artifacts.sha256_file(p) for p in cfg.files}
    seen_in_training = {}
    for path in [m for m in (cfg.model, cfg.baseline) if m is not None]:
        seen_in_training.update(refuse_training_text(hashes, recorded_sources(path), str(path), cfg.allow_training_text))

    device, dtype = resolve_device(cfg.device, cfg.dtype)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would bury our own progress and error lines
    roles = {"model": (cfg.model, cfg.tokenizer)}
    if cfg.baseline is not None:
        roles["baseline"] = (cfg.baseline, cfg.baseline_tokenizer)
    loaded = {role: load_model_and_tokenizer(p, tokenizer_path=t, device=device, dtype=dtype)
              for role, (p, t) in roles.items()}
    window, stride = resolve_window(
        cfg, [getattr(lm.model.config, "max_position_embeddings", None) for lm in loaded.values()])

    n_docs = sum(len(d) for d in docs_by_file.values())
    report: dict[str, Any] = {
        "definitions": {
            "tokens": "document tokens after BOS, each predicted once (BOS itself never scored)",
            "token_perplexity": "exp(total NLL / total tokens)",
            "bits_per_char": "total NLL / ln 2 / total Unicode characters",
            "bits_per_byte": "total NLL / ln 2 / total UTF-8 bytes",
        },
        "seen_in_training": seen_in_training,
        "settings": {"window_tokens": window, "stride_tokens": stride, "batch_tokens": cfg.batch_tokens,
                     "device": device, "dtype": dtype, "text_field": cfg.text_field, "documents": n_docs},
        "models": {},
    }
    for role, lm in loaded.items():
        result = evaluate_model(lm.model, lm.tokenizer, docs_by_file, window_tokens=window, stride_tokens=stride,
                                batch_tokens=cfg.batch_tokens, progress=cfg.progress, desc=role)
        report["models"][role] = {
            "path": str(lm.path), "kind": lm.kind, "base_path": str(lm.base_path) if lm.base_path else None,
            "tokenizer_path": str(lm.tokenizer_path), "tokenizer_size": len(lm.tokenizer),
            "embedding_rows": int(lm.model.get_input_embeddings().weight.shape[0]), **result,
        }
        total = result["total"]
        print(f"{role}: {total['tokens']:,} tokens over {total['documents']:,} documents: "
              f"token PPL {fmt(total['token_perplexity'], '{:.2f}')}, "
              f"bits/char {fmt(total['bits_per_char'], '{:.4f}')}, bits/byte {fmt(total['bits_per_byte'], '{:.4f}')} "
              f"({result['seconds']:.1f} s, {fmt(result['tokens_per_second'], '{:,.0f}')} tokens/s)")

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.atomic_write_json(out / "report.json", report)
    artifacts.atomic_write_text(out / "report.md", render_markdown(report))
    artifacts.atomic_write_bytes(out / "report.png", render_png(report))
    artifacts.write_meta(out, config=cfg, inputs=hashes)
    if "baseline" in report["models"]:
        print(compare_table(report))
    print(f"eval: {len(cfg.files)} file(s), {n_docs:,} documents -> {out}/report.md")
    return 0
