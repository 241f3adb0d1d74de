"""A small stand-in base Llama, trained for a few minutes on the corpus with the base 32k tokenizer.

No Llama-2 weights can be downloaded here, and measuring embedding initialisation or continued
pretraining on random weights says nothing: a random model has no "pieces" to average. So the demo
trains its own small base model, once, cached by the hashes of its config, corpus and tokenizer::

    python -m pretrain standin --tokenizer_model ../shared/data/llama2_tokenizer.model \\
        --corpus_dir artifacts/corpus --out_dir artifacts/standin

A plain PyTorch loop (AdamW, fp32, CPU): random windows of ``seq_len_tokens + 1`` tokens from the
concatenated ``<s> doc </s>`` stream, warmup + cosine on *progress* (the larger of step and time
fraction, so a run cut by ``max_minutes`` still ends at the low learning rate). The output is a
plain HF directory (weights + config + base tokenizer files) plus ``train_log.jsonl`` and
``meta.json``. ``--smoke`` shrinks everything to seconds for tests.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from corpora.shards import iter_jsonl_texts
from zhllama.cli import UserError


@dataclass
class StandinConfig:
    """``python -m pretrain standin``: the model shape, the training budget and the inputs."""

    tokenizer_model: Path | None = None
    """Base SentencePiece model (Llama-2's 32k); default ``<data_dir>/llama2_tokenizer.model``."""
    corpus_dir: Path = Path("artifacts/corpus")
    """Corpus directory: trains on ``train/*.jsonl`` (``text`` field); ``heldout/`` is left alone."""
    out_dir: Path = Path("artifacts/standin")
    """Where the HF model directory goes (replaced atomically)."""
    hidden_size: int = 128
    """Model width."""
    intermediate_size: int = 384
    """MLP width."""
    num_hidden_layers: int = 2
    """Transformer blocks."""
    num_attention_heads: int = 4
    """Heads (``hidden_size`` must divide by it)."""
    max_position_embeddings: int = 2048
    """RoPE limit written to the config (later stages may use longer blocks than training did)."""
    tie_word_embeddings: bool = False
    """Llama-2 unties ``lm_head``; keep it so the stand-in exercises the same code paths."""
    seq_len_tokens: int = 128
    """Training window length."""
    batch_size: int = 8
    """Windows per step."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate."""
    min_learning_rate: float = 3e-4
    """Learning rate at the end of the cosine."""
    warmup_steps: int = 30
    """Linear warmup steps."""
    weight_decay: float = 0.01
    """AdamW weight decay (matrices only)."""
    max_steps: int = 600
    """Stop after this many steps ..."""
    max_minutes: float = 3.0
    """... or after this much wall time, whichever comes first."""
    max_corpus_chars: int = 0
    """Read at most this many characters of corpus (0: all)."""
    log_every_steps: int = 10
    """Write a loss line to ``train_log.jsonl`` this often."""
    num_threads: int = 0
    """torch threads (0: every core; the Makefile's OMP_NUM_THREADS=1 is meant for DeepSpeed workers)."""
    seed: int = 0
    """Seed for init and window sampling."""
    smoke: bool = False
    """Shrink to a seconds-long run (tests): see :data:`SMOKE_OVERRIDES`."""
    force: bool = False
    """Retrain even when ``out_dir`` already holds a stand-in made from the same inputs."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} not divisible by num_attention_heads {self.num_attention_heads}")
        for name in ("seq_len_tokens", "batch_size", "max_steps", "hidden_size", "num_hidden_layers", "log_every_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


#: What ``--smoke`` changes: a 1-layer width-32 model, 20 short steps (seconds).
SMOKE_OVERRIDES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                       seq_len_tokens=32, batch_size=4, max_steps=20, warmup_steps=3, max_corpus_chars=100_000,
                       learning_rate=1e-2, min_learning_rate=1e-3, log_every_steps=5)


def resolve(cfg: StandinConfig) -> StandinConfig:
    """Apply ``smoke`` and the default tokenizer path: the config that is hashed, used and recorded."""
    from zhllama import default_data_dir

    if cfg.smoke:
        cfg = replace(cfg, **SMOKE_OVERRIDES)
    if cfg.tokenizer_model is None:
        cfg = replace(cfg, tokenizer_model=default_data_dir() / "llama2_tokenizer.model")
    return cfg


# ---------------------------------------------------------------- data


def corpus_files(corpus_dir: Path) -> list[Path]:
    """The training shards ``corpus_dir/train/*.jsonl`` (sorted); :class:`UserError` if none."""
    from corpora.shards import shard_files

    return shard_files(corpus_dir, "train")


def token_stream(texts: Iterable[str], sp) -> list[int]:
    """``<s> doc </s>`` for every doc, concatenated (SentencePiece ids).

    >>> token_stream(["a"], sp)[:1] == [sp.bos_id()]   # doctest: +SKIP
    True
    """
    out: list[int] = []
    for ids in sp.encode(list(texts)):
        out.append(sp.bos_id())
        out.extend(ids)
        out.append(sp.eos_id())
    return out


def lr_at(progress: float, cfg: StandinConfig, step: int) -> float:
    """Learning rate: linear warmup, then cosine from peak to min over ``progress`` in [0, 1].

    Warmup ends after ``warmup_steps`` steps or at progress ``warmup_steps / max_steps``,
    whichever comes first: a run cut short by ``max_minutes`` on a busy machine (few, slow steps)
    must still leave warmup and decay instead of training at a fraction of the peak throughout.

    >>> cfg = StandinConfig(warmup_steps=10, max_steps=100, learning_rate=1.0, min_learning_rate=0.0)
    >>> lr_at(0.0, cfg, 4), lr_at(0.05, cfg, 4), lr_at(1.0, cfg, 500)
    (0.5, 0.5, 0.0)
    >>> round(lr_at(0.09, cfg, 2), 6)  # time says 90% of warmup is over, though only 3 steps ran
    0.9
    """
    warmup_progress = cfg.warmup_steps / cfg.max_steps
    if step < cfg.warmup_steps and progress < warmup_progress:
        return cfg.learning_rate * max((step + 1) / cfg.warmup_steps, progress / warmup_progress)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.min_learning_rate + (cfg.learning_rate - cfg.min_learning_rate) * cos


# ---------------------------------------------------------------- model + loop


def build_model(cfg: StandinConfig, vocab_size: int, bos_id: int, eos_id: int):
    """A randomly initialised ``LlamaForCausalLM`` of the configured shape."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads, max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=bos_id, eos_token_id=eos_id, tie_word_embeddings=cfg.tie_word_embeddings,
    )
    return LlamaForCausalLM(config)


def train(model, tokens, cfg: StandinConfig, log=None) -> dict:
    """Train ``model`` in place on random windows of the 1-D LongTensor ``tokens``; returns the summary.

    ``log(record)`` receives ``{"step", "loss", "lr", "elapsed_s"}`` every ``log_every_steps``.
    Summary: ``first_loss`` (mean of the first logged window), ``last_loss`` (mean of the last
    ``log_every_steps`` steps), ``steps``, ``tokens_seen``, ``tokens_per_second``, ``elapsed_s``.
    """
    import torch
    from tqdm import tqdm

    n_windows = tokens.numel() - cfg.seq_len_tokens - 1
    if n_windows < 1:
        raise UserError(f"corpus too small: {tokens.numel()} tokens for windows of {cfg.seq_len_tokens + 1}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    offsets = torch.arange(cfg.seq_len_tokens + 1)
    model.train()
    t0 = time.monotonic()
    max_s = cfg.max_minutes * 60.0
    losses: list[float] = []
    first_loss = None
    step = 0
    bar = tqdm(total=cfg.max_steps, desc="standin", unit="step")
    while step < cfg.max_steps:
        elapsed = time.monotonic() - t0
        if elapsed >= max_s:
            break
        lr = lr_at(max(step / cfg.max_steps, elapsed / max_s), cfg, step)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, n_windows, (cfg.batch_size,), generator=gen)
        batch = tokens[starts[:, None] + offsets]
        loss = _causal_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        step += 1
        bar.update(1)
        if step % cfg.log_every_steps == 0 or step == cfg.max_steps:
            window = losses[-cfg.log_every_steps:]
            record = {"step": step, "loss": round(sum(window) / len(window), 4), "lr": lr,
                      "elapsed_s": round(time.monotonic() - t0, 2)}
            if first_loss is None:
                first_loss = record["loss"]
            bar.set_postfix(loss=record["loss"])
            if log:
                log(record)
    bar.close()
    elapsed = time.monotonic() - t0
    tail = losses[-cfg.log_every_steps:] or [float("nan")]
    return {"steps": step, "first_loss": first_loss if first_loss is not None else (losses[0] if losses else None),
            "initial_loss": losses[0] if losses else None, "last_loss": round(sum(tail) / len(tail), 4),
            "tokens_seen": step * cfg.batch_size * cfg.seq_len_tokens,
            "tokens_per_second": round(step * cfg.batch_size * cfg.seq_len_tokens / max(elapsed, 1e-9), 1),
            "elapsed_s": round(elapsed, 2)}


def _causal_loss(model, batch):
    """Mean next-token cross-entropy of a ``(B, T+1)`` batch: inputs ``[:, :-1]``, targets ``[:, 1:]``."""
    import torch.nn.functional as F

    logits = model(input_ids=batch[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch[:, 1:].reshape(-1))


# ---------------------------------------------------------------- CLI


def cache_key(cfg: StandinConfig, tokenizer_sha: str, corpus_sha: str) -> dict:
    """What must match for an existing stand-in to be reused: config minus paths/flags, input hashes."""
    from zhllama.config import to_dict

    conf = {k: v for k, v in to_dict(cfg).items() if k not in ("out_dir", "corpus_dir", "tokenizer_model", "force")}
    return {"config": conf, "tokenizer_model": tokenizer_sha, "corpus_train": corpus_sha}


def run(cfg: StandinConfig) -> int:
    """CLI: train the stand-in (or reuse a cached one), save HF dir + tokenizer + train_log.jsonl + meta.json."""
    import hashlib
    import os

    import sentencepiece as spm
    import torch

    from vocab.export import export_hf
    from zhllama.artifacts import atomic_dir, atomic_write_text, read_meta, sha256_file, write_meta
    from zhllama.cli import existing_file

    cfg = resolve(cfg)
    tok_path = existing_file(cfg.tokenizer_model, "base tokenizer model")
    files = corpus_files(cfg.corpus_dir)
    corpus_h = hashlib.sha256()
    for f in files:
        corpus_h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    key = cache_key(cfg, sha256_file(tok_path), corpus_h.hexdigest())
    old = read_meta(cfg.out_dir) if Path(cfg.out_dir).is_dir() else None
    if old and old.get("standin_key") == key and not cfg.force:
        print(f"standin: {cfg.out_dir} already holds a stand-in from the same config, corpus and tokenizer; "
              "skipping (--force to retrain)")
        return 0

    torch.set_num_threads(cfg.num_threads or os.cpu_count() or 1)
    try:
        sp = spm.SentencePieceProcessor(model_file=str(tok_path))
    except (OSError, RuntimeError) as e:
        raise UserError(f"{tok_path}: not a SentencePiece model: {e}") from None
    t0 = time.monotonic()
    tokens = torch.tensor(token_stream(iter_jsonl_texts(files, max_chars=cfg.max_corpus_chars), sp), dtype=torch.long)
    print(f"standin: {tokens.numel():,} tokens from {len(files)} shard(s) in {time.monotonic() - t0:.1f} s")
    model = build_model(cfg, sp.get_piece_size(), sp.bos_id(), sp.eos_id())
    n_params = sum(p.numel() for p in model.parameters())
    log_lines: list[str] = []
    summary = train(model, tokens, cfg, log=lambda r: log_lines.append(json.dumps(r)))
    summary["n_params"] = n_params
    summary["corpus_tokens"] = tokens.numel()
    with atomic_dir(cfg.out_dir) as tmp:
        model.save_pretrained(tmp)
        export_hf(tok_path.read_bytes(), tmp)
        atomic_write_text(tmp / "train_log.jsonl", "\n".join(log_lines) + "\n")
        write_meta(tmp, config=cfg, inputs={"tokenizer_model": key["tokenizer_model"], "corpus_train": key["corpus_train"]},
                   standin_key=key, train=summary)
    print(f"standin: {n_params / 1e6:.1f}M params, {summary['steps']} steps, loss {summary['initial_loss']:.3f} -> "
          f"{summary['last_loss']:.3f}, {summary['tokens_per_second']:.0f} tokens/s, {summary['elapsed_s']:.0f} s "
          f"-> {cfg.out_dir}")
    return 0
