"""``python -m mcq score`` and ``python -m mcq compare``: the only part of the package that touches disk.

Examples::

    python -m mcq score --model artifacts/pretrain/demo/final --benchmark ../shared/data/sft/bench_agieval_gaokao_zh.jsonl
    python -m mcq score --config configs/mcq/score_ceval.yaml --model M --benchmark ~/data/ceval-exam --shots 5
    python -m mcq compare --models artifacts/standin --models artifacts/pretrain/demo/final --benchmark B

Both write ``out_dir/report.{json,md,png}`` and ``meta.json``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mcq.data import Benchmark, read_benchmark
from mcq.evaluate import METHODS, Settings, evaluate_model
from mcq.prompt import CMMLU_HEADER
from mcq.report import accuracy_table, render_markdown, render_png
from zhllama.cli import UserError


@dataclass
class _Common:
    """Settings shared by ``score`` and ``compare`` (see configs/mcq/score.yaml for each key)."""

    benchmark: Path | None = None
    """A CMMLU dir (dev/ + test/), a C-Eval dir (dev/ + val/) or a JSONL file (subject, split, passage, question, choices, answer)."""
    out_dir: Path = Path("artifacts/benchmark")
    """Where report.json, report.md, report.png and meta.json go."""
    shots: int = 5
    """Few-shot examples per question: the first k dev questions of its subject (0 allowed)."""
    subjects: list[str] = field(default_factory=list)
    """Subject keys to score (file stems without _val/_dev, or JSONL subject values); empty = all."""
    split: Literal["auto", "test", "val"] = "auto"
    """Scored split; auto = val for C-Eval (its test split has no answers), test otherwise."""
    header: str = CMMLU_HEADER
    """Prompt header; {subject} is replaced by the subject's display name."""
    subject_names: dict[str, str] = field(default_factory=dict)
    """Display name per subject key (e.g. agronomy: 农学); a key not listed shows as itself."""
    method: Literal["continuation", "letter", "both"] = "continuation"
    """continuation: argmax log p(' A'..' D' | prompt) (lm-eval); letter: next-token letter logits; both: report both."""
    chat_template: Literal["never", "always", "auto"] = "never"
    """Wrap the prompt as a user turn of the tokenizer's chat template: auto = for models whose tokenizer has one."""
    fewer_shots: Literal["error", "use_available"] = "error"
    """A subject with fewer dev examples than shots: stop with an error, or use what there is (counted)."""
    max_questions_per_subject: int | None = None
    """Score only the first N questions of each subject (quick looks, the demo); null = all."""
    window_tokens: int | None = None
    """Model window for prompt + answer; null = the model's max_position_embeddings. Longer prompts lose few-shot examples."""
    batch_tokens: int = 8192
    """Padded tokens per forward pass (several questions share one)."""
    device: str = "auto"
    """"auto" (cuda if available, else cpu) or a torch device string."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """"auto" = bfloat16 on a GPU that has it, float32 otherwise."""
    progress: bool = True
    """Show a tqdm progress bar while scoring."""

    def __post_init__(self) -> None:
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0, got {self.shots}")
        if self.batch_tokens < 1:
            raise ValueError(f"batch_tokens must be >= 1, got {self.batch_tokens}")
        if self.window_tokens is not None and self.window_tokens < 2:
            raise ValueError(f"window_tokens must be >= 2 or null, got {self.window_tokens}")
        if self.max_questions_per_subject is not None and self.max_questions_per_subject < 1:
            raise ValueError(f"max_questions_per_subject must be >= 1 or null, got {self.max_questions_per_subject}")
        if "{subject}" not in self.header:
            raise ValueError(f"header must contain {{subject}}, got {self.header!r}")


@dataclass
class ScoreConfig(_Common):
    """Config of ``python -m mcq score`` (``configs/mcq/score.yaml``).

    >>> ScoreConfig(model=Path("final"), benchmark=Path("b.jsonl")).shots
    5
    """

    model: Path | None = None
    """MODEL: a Hugging Face dir, a LoRA adapter dir or a DeepSpeed checkpoint dir (pretrain.loading)."""
    tokenizer: Path | None = None
    """Tokenizer dir when not the one stored with the model."""
    label: str | None = None
    """Name of the model in the report; null = the model dir's name."""


@dataclass
class CompareConfig(_Common):
    """Config of ``python -m mcq compare``: several models on the same questions, side by side.

    >>> CompareConfig(models=[Path("a"), Path("b")]).labels
    []
    """

    models: list[Path] = field(default_factory=list)
    """Two or more model dirs (base, continued, chat ...), scored in this order."""
    labels: list[str] = field(default_factory=list)
    """A name per model; empty = derived from the paths."""


def _labels(paths: list[Path], given: list[str]) -> list[str]:
    """Given labels, else the dir names (with their parent when two share a name).

    >>> _labels([Path("a/final"), Path("b/final"), Path("standin")], [])
    ['a/final', 'b/final', 'standin']
    """
    if given:
        if len(given) != len(paths) or len(set(given)) != len(given):
            raise UserError(f"labels {given} must be distinct, one per model ({len(paths)})")
        return given
    names = [p.name for p in paths]
    counts = Counter(names)
    labels = [f"{p.parent.name}/{p.name}" if counts[p.name] > 1 else p.name for p in paths]
    return labels if len(set(labels)) == len(labels) else [str(p) for p in paths]


def _read(cfg: _Common) -> Benchmark:
    if cfg.benchmark is None:
        raise UserError("--benchmark PATH is required (a C-Eval/CMMLU directory or a .jsonl file)")
    return read_benchmark(Path(cfg.benchmark), split=cfg.split, subjects=cfg.subjects, shots=cfg.shots,
                          fewer_shots=cfg.fewer_shots, max_questions_per_subject=cfg.max_questions_per_subject)


def _score_model(cfg: _Common, bench: Benchmark, path: Path, tokenizer: Path | None, label: str,
                 device: str, dtype: str) -> dict[str, Any]:
    from pretrain.evaluate import bos_token_id
    from pretrain.loading import load_model_and_tokenizer

    lm = load_model_and_tokenizer(path, tokenizer_path=tokenizer, device=device, dtype=dtype)
    max_positions = getattr(lm.model.config, "max_position_embeddings", None)
    window = cfg.window_tokens or max_positions or 2048
    if max_positions and window > max_positions:
        raise UserError(f"window_tokens {window} exceeds {path}'s max_position_embeddings {max_positions}")
    has_template = bool(getattr(lm.tokenizer, "chat_template", None))
    chat = cfg.chat_template == "always" or (cfg.chat_template == "auto" and has_template)
    settings = Settings(shots=cfg.shots, header=cfg.header, subject_names=cfg.subject_names, method=cfg.method,
                        chat=chat, window_tokens=window, batch_tokens=cfg.batch_tokens)
    bos = bos_token_id(lm.model, lm.tokenizer)
    result = evaluate_model(lm.model, lm.tokenizer, bench, settings, bos_id=bos, pad_id=lm.tokenizer.pad_token_id,
                            progress=cfg.progress, desc=label)
    acc = result["accuracy"]
    summary = ", ".join(f"{m} {100 * acc[m]['micro']:.1f}% micro / {100 * acc[m]['macro']:.1f}% macro"
                        for m in result["methods"])
    t = result["truncation"]
    print(f"{label}: {acc[result['methods'][0]]['questions']:,} questions: {summary}; "
          f"{t['questions_with_dropped_shots']} with dropped shots, {t['questions_cut']} cut; "
          f"{result['questions_per_second']:.1f} questions/s")
    return {"path": str(path), "kind": lm.kind, "base_path": str(lm.base_path) if lm.base_path else None,
            "tokenizer_path": str(lm.tokenizer_path), "tokenizer_size": len(lm.tokenizer), "chat": chat, **result}


def _run(cfg: _Common, models: list[tuple[Path, Path | None, str]]) -> int:
    from pretrain.evaluate import resolve_device
    from zhllama import artifacts

    bench = _read(cfg)
    device, dtype = resolve_device(cfg.device, cfg.dtype)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # weight-loading bars would bury our progress and error lines
    settings = {k: getattr(cfg, k) for k in _Common.__dataclass_fields__ if k not in ("benchmark", "out_dir", "progress")}
    report: dict[str, Any] = {
        "settings": {**settings, "methods": list(METHODS[cfg.method]), "device": device, "dtype": dtype},
        "data": bench.manifest(),
        "models": {},
    }
    for path, tokenizer, label in models:
        report["models"][label] = _score_model(cfg, bench, path, tokenizer, label, device, dtype)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    artifacts.atomic_write_json(out / "report.json", report)
    artifacts.atomic_write_text(out / "report.md", render_markdown(report))
    artifacts.atomic_write_bytes(out / "report.png", render_png(report))
    inputs = {f["file"]: artifacts.sha256_file(f["file"]) for f in report["data"]["files"]}
    artifacts.write_meta(out, config=cfg, inputs=inputs)
    if len(models) > 1:
        print(accuracy_table(report))
    print(f"benchmark: {bench.n_questions:,} questions, {len(bench.subjects)} subject(s), {len(models)} model(s) "
          f"-> {out}/report.md")
    return 0


def run_score(cfg: ScoreConfig) -> int:
    """Score one model; write the report."""
    if cfg.model is None:
        raise UserError("--model DIR is required (a Hugging Face dir, a LoRA adapter dir or a DeepSpeed checkpoint)")
    return _run(cfg, [(Path(cfg.model), cfg.tokenizer, cfg.label or _labels([Path(cfg.model)], [])[0])])


def run_compare(cfg: CompareConfig) -> int:
    """Score two or more models on the same questions; write one report with them side by side."""
    if len(cfg.models) < 2:
        raise UserError(f"compare needs two or more --models, got {len(cfg.models)} (use `score` for one)")
    labels = _labels([Path(m) for m in cfg.models], cfg.labels)
    return _run(cfg, [(Path(m), None, lab) for m, lab in zip(cfg.models, labels, strict=True)])
