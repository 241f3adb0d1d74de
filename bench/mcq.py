"""Benchmark: multiple-choice scoring, one batched tree pass per group of questions vs one continuation at a time.

The baseline (:func:`mcq.scoring.score_requests_simple`) runs one forward pass per question and
answer letter over ``context + continuation`` with full logits, as a plain loop would; the scorer
used by ``python -m mcq`` (:func:`mcq.scoring.score_requests`) reads each context once, the four
continuations as branches of a tree mask, several questions per batch, and runs the LM head only on
the ~5 positions per question that predict an answer. Both must give the same log-likelihoods
(checked here; a mismatch fails the benchmark). Prints questions/s and the ratio; writes
``artifacts/bench/mcq.json``. Example::

    OMP_NUM_THREADS=1 .venv/bin/python bench/mcq.py                 # CPU, a random 2-layer Llama
    .venv/bin/python bench/mcq.py --device cuda --dtype bfloat16 --hidden 2048 --layers 16

Questions: the real AGIEval-gaokao file (``sft/bench_agieval_gaokao_zh.jsonl``, the first
``--per_subject`` test questions of each subject, ``--shots``-shot prompts as lm-eval's CMMLU task
builds them), tokenized with the real Llama-2 tokenizer; the model is a random Llama over its 32k
vocabulary (speed does not depend on the weights' values).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "bench"))

import torch  # noqa: E402
from eval import build_model  # noqa: E402  (bench/eval.py: a random Llama over the 32k vocabulary)
from timing import timed as timed_call  # noqa: E402

from mcq.data import read_benchmark  # noqa: E402
from mcq.evaluate import Settings, fit_all  # noqa: E402
from mcq.scoring import score_requests, score_requests_simple  # noqa: E402
from pretrain.evaluate import resolve_device  # noqa: E402
from zhllama import default_data_dir  # noqa: E402
from zhllama.artifacts import atomic_write_json, versions  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per_subject", type=int, default=4, help="test questions per subject (7 subjects)")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--window_tokens", type=int, default=1024)
    ap.add_argument("--batch_tokens", type=int, default=8192)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--out", type=Path, default=REPO / "artifacts/bench/mcq.json")
    args = ap.parse_args()

    from vocab.export import build_hf_tokenizer

    device, dtype = resolve_device(args.device, args.dtype)
    data_dir = default_data_dir()
    tok = build_hf_tokenizer((data_dir / "llama2_tokenizer.model").read_bytes())
    bench = read_benchmark(data_dir / "sft" / "bench_agieval_gaokao_zh.jsonl", shots=args.shots,
                           max_questions_per_subject=args.per_subject)
    settings = Settings(shots=args.shots, window_tokens=args.window_tokens, batch_tokens=args.batch_tokens)
    requests = [f.request for _, f in fit_all(tok, tok.bos_token_id, bench, settings)]
    model = build_model(args.hidden, args.layers, args.window_tokens, device, dtype)

    def timed(fn):
        return timed_call(fn, device)

    score_requests(model, requests[:2], batch_tokens=args.batch_tokens)  # warm-up, both paths
    score_requests_simple(model, requests[:2])
    simple, simple_s, simple_cpu = timed(lambda: score_requests_simple(model, requests))
    tree, tree_s, tree_cpu = timed(lambda: score_requests(model, requests, batch_tokens=args.batch_tokens))

    n = len(requests)
    max_diff = max(abs(a - b) for s, t in zip(simple, tree, strict=True)
                   for a, b in zip(s.loglik + s.letter_loglik, t.loglik + t.letter_loglik, strict=True))
    same_predictions = all(s.predicted() == t.predicted() for s, t in zip(simple, tree, strict=True))
    total_simple = sum(sum(s.loglik) for s in simple)
    total_tree = sum(sum(t.loglik) for t in tree)
    tolerance = 1e-3 if dtype == "float32" else 0.25  # bf16 batched vs unbatched kernels round differently
    result = {
        "device": device, "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "dtype": dtype, "threads": torch.get_num_threads(),
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": 32000,
                  "parameters": sum(p.numel() for p in model.parameters())},
        "questions": n, "shots": args.shots, "window_tokens": args.window_tokens, "batch_tokens": args.batch_tokens,
        "mean_input_tokens": sum(r.n_input_tokens for r in requests) / n,
        "simple": {"seconds": simple_s, "cpu_seconds": simple_cpu, "questions_per_second": n / simple_s,
                   "total_loglik": total_simple},
        "tree_batched": {"seconds": tree_s, "cpu_seconds": tree_cpu, "questions_per_second": n / tree_s,
                         "total_loglik": total_tree},
        "speedup": simple_s / tree_s, "speedup_cpu_time": simple_cpu / tree_cpu,
        "max_abs_loglik_difference": max_diff, "same_predictions": same_predictions, "versions": versions(),
    }
    atomic_write_json(args.out, result)
    print(f"mcq bench ({result['device_name']}, {dtype}, {result['threads']} threads, "
          f"{result['model']['parameters'] / 1e6:.1f}M params): {n} AGIEval-gaokao questions, {args.shots}-shot, "
          f"{result['mean_input_tokens']:.0f} input tokens per question on average")
    print(f"  one continuation at a time: {n / simple_s:8.2f} questions/s  ({simple_s:.1f} s, {simple_cpu:.1f} CPU s)")
    print(f"  batched tree:               {n / tree_s:8.2f} questions/s  ({tree_s:.1f} s, {tree_cpu:.1f} CPU s)")
    print(f"  speedup {result['speedup']:.2f}x wall, {result['speedup_cpu_time']:.2f}x CPU time; total log-likelihood "
          f"{total_tree:.4f} vs {total_simple:.4f}, max difference {max_diff:.1e}, "
          f"same predictions: {same_predictions} -> {args.out}")
    if max_diff > tolerance:
        print(f"FAIL: tree scores differ from the one-at-a-time loop (tolerance {tolerance:g})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
