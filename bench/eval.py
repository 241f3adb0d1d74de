"""Benchmark: batched rolling-window scoring vs the straightforward loop, same model, same texts, same run.

The baseline (:func:`pretrain.scoring.score_documents_simple`) scores one window at a time with full
logits, as most perplexity scripts do; :func:`pretrain.scoring.score_documents` sorts windows by
length, batches them under a padded-token budget and runs the LM head only on scored positions.
Both must give the same totals (checked here; a mismatch fails the benchmark). Prints tokens/s and
the ratio; writes ``artifacts/bench/eval.json``. Example::

    OMP_NUM_THREADS=1 .venv/bin/python bench/eval.py            # CPU, a random 2-layer Llama
    .venv/bin/python bench/eval.py --device cuda --dtype bfloat16

Texts: real Chinese Wikipedia articles (``zhwiki``, whole articles like the held-out set, cut at
``--max_chars``) and the English lines of ``tests/data/english.txt``, tokenized with the real Llama-2
tokenizer. The model is a random Llama over its 32k vocabulary (speed does not depend on the
weights' values). On a machine without the data, ``--ids`` reads token ids saved by ``--save_ids``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from timing import timed as timed_call  # noqa: E402

from pretrain.evaluate import resolve_device, tokenize_documents  # noqa: E402
from pretrain.scoring import batch_windows, plan_windows, score_documents, score_documents_simple  # noqa: E402
from zhllama import default_data_dir  # noqa: E402
from zhllama.artifacts import atomic_write_json, versions  # noqa: E402


def load_texts(data_dir: Path, n_articles: int, max_chars: int) -> list[str]:
    """The first ``n_articles`` zhwiki articles (cut at ``max_chars``), then the English lines."""
    zh = []
    for path in sorted((data_dir / "zhwiki").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip() and len(zh) < n_articles:
                zh.append(json.loads(line)["text"][:max_chars])
    en = [line for line in (REPO / "tests/data/english.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    return zh + en


def tokenize(data_dir: Path, texts: list[str]) -> list[list[int]]:
    """``[BOS] + tokens`` per text with the real Llama-2 tokenizer (through the project's HF export)."""
    from vocab.export import build_hf_tokenizer

    tok = build_hf_tokenizer((data_dir / "llama2_tokenizer.model").read_bytes())
    return tokenize_documents(tok, texts, tok.bos_token_id)


def build_model(hidden: int, layers: int, max_positions: int, device: str, dtype: str):
    """A random Llama over the 32k Llama-2 vocabulary (speed does not depend on the weights' values)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    heads = max(1, hidden // 64)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 8 // 3,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(cfg).to(device=device, dtype=getattr(torch, dtype)).eval()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--articles", type=int, default=16, help="zhwiki articles to score (plus the English lines)")
    ap.add_argument("--max_chars", type=int, default=1500, help="cut each article at this many characters")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--window_tokens", type=int, default=256)
    ap.add_argument("--stride_tokens", type=int, default=128)
    ap.add_argument("--batch_tokens", type=int, default=8192)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--ids", type=Path, help="read the documents' token ids from this JSON (a machine without the data)")
    ap.add_argument("--save_ids", type=Path, help="write the documents' token ids to this JSON")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts/bench/eval.json")
    args = ap.parse_args()

    device, dtype = resolve_device(args.device, args.dtype)
    if args.ids:
        docs_ids = json.loads(args.ids.read_text())
        n_chars = None
    else:
        data_dir = default_data_dir()
        texts = load_texts(data_dir, args.articles, args.max_chars)
        docs_ids = tokenize(data_dir, texts)
        n_chars = sum(len(t) for t in texts)
    if args.save_ids:
        atomic_write_json(args.save_ids, docs_ids)
    model = build_model(args.hidden, args.layers, args.window_tokens, device, dtype)
    kw = {"window_tokens": args.window_tokens, "stride_tokens": args.stride_tokens}
    windows = plan_windows(docs_ids, **kw)
    batches = batch_windows(windows, args.batch_tokens)
    padded = sum(len(b) * b[0].n_input_tokens for b in batches)
    real = sum(w.n_input_tokens for w in windows)

    def timed(fn):
        return timed_call(fn, device)

    # Warm-up on a few documents (allocator, kernels), then the measured runs, baseline first.
    score_documents(model, docs_ids[:4], batch_tokens=args.batch_tokens, **kw)
    score_documents_simple(model, docs_ids[:4], **kw)
    simple, simple_s, simple_cpu_s = timed(lambda: score_documents_simple(model, docs_ids, **kw))
    batched, batched_s, batched_cpu_s = timed(
        lambda: score_documents(model, docs_ids, batch_tokens=args.batch_tokens, **kw))

    tokens = sum(s.n_tokens for s in simple)
    nll_simple = math.fsum(s.nll_nats for s in simple)
    nll_batched = math.fsum(s.nll_nats for s in batched)
    rel_diff = abs(nll_batched - nll_simple) / nll_simple
    same_tokens = [s.n_tokens for s in simple] == [s.n_tokens for s in batched]
    # Batched and unbatched kernels round differently: fp32 agrees to ~1e-9, bf16 only to ~1e-3.
    tolerance = 1e-6 if dtype == "float32" else 1e-2
    result = {
        "device": device, "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "dtype": dtype, "threads": torch.get_num_threads(),
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": 32000,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "documents": len(docs_ids), "characters": n_chars, "tokens": tokens,
        "windows": len(windows), "batches": len(batches), "padding_fraction": 1 - real / padded,
        "window_tokens": args.window_tokens, "stride_tokens": args.stride_tokens, "batch_tokens": args.batch_tokens,
        "simple": {"seconds": simple_s, "cpu_seconds": simple_cpu_s, "tokens_per_second": tokens / simple_s,
                   "nll_nats": nll_simple},
        "batched": {"seconds": batched_s, "cpu_seconds": batched_cpu_s, "tokens_per_second": tokens / batched_s,
                    "nll_nats": nll_batched},
        "speedup": simple_s / batched_s, "speedup_cpu_time": simple_cpu_s / batched_cpu_s,
        "nll_relative_difference": rel_diff, "identical_token_counts": same_tokens,
        "versions": versions(),
    }
    atomic_write_json(args.out, result)
    print(f"eval bench ({result['device_name']}, {dtype}, {result['threads']} threads, "
          f"{result['model']['parameters'] / 1e6:.1f}M params): {len(docs_ids)} docs, {tokens:,} tokens, "
          f"{len(windows)} windows in {len(batches)} batches ({100 * result['padding_fraction']:.1f}% padding)")
    print(f"  straightforward loop: {tokens / simple_s:10,.0f} tokens/s  ({simple_s:.1f} s, {simple_cpu_s:.1f} CPU s)")
    print(f"  batched:              {tokens / batched_s:10,.0f} tokens/s  ({batched_s:.1f} s, {batched_cpu_s:.1f} CPU s)")
    print(f"  speedup {result['speedup']:.2f}x wall, {result['speedup_cpu_time']:.2f}x CPU time; "
          f"total NLL {nll_batched:.6f} vs {nll_simple:.6f} "
          f"(relative difference {rel_diff:.1e}) -> {args.out}")
    if not same_tokens or rel_diff > tolerance:
        print(f"FAIL: batched totals differ from the straightforward loop (tolerance {tolerance:g})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
