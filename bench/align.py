"""Benchmark: DPO steps with cached reference log-probs vs recomputing the reference at every step.

Same model, same pairs, same optimizer, same run. The baseline runs the frozen reference model
forward on every batch (what a DPO loop without a cache does); ours looks the reference's
log-probs up in the cache built once before training (:mod:`align.refcache`). Reported: seconds
per optimizer step (median of the timed steps, wall and process CPU), the speed-up
``baseline / cached``, the one-off cost of building the cache and the number of steps after which
it has paid for itself (the cache is computed once per reference model and data; every epoch and
every later run with another ``beta`` or loss reuses it). The losses of the two runs are checked
to be equal (the cache changes speed, not results).

Model: ``--model`` (default: the demo's SFT model ``artifacts/sft/demo/final`` if it exists, else
a random Llama of the stand-in's shape: hidden 128, 2 layers, 32k vocabulary, with the Llama-2
tokenizer from ``../shared/data``). Data: the first ``--pairs`` tier-A pairs of ``pref_train.jsonl``.

    .venv/bin/python bench/align.py [--model DIR] [--pairs 48] [--batch_pairs 4] [--steps 6] [--max_seq_len 256]

Prints the ratio; writes ``artifacts/bench/align.json``.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def cpu_seconds() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stand_in_model(out: Path, data_dir: Path) -> Path:
    """A random Llama of the stand-in's shape with the Llama-2 tokenizer (when no trained model exists)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vocab.export import export_hf

    export_hf((data_dir / "llama2_tokenizer.model").read_bytes(), out)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=128, intermediate_size=344, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def dpo_steps(policy, reference, ref_cache, pairs, batch_pairs: int, steps: int, pad_id: int) -> dict:
    """``steps`` DPO optimizer steps; the reference comes from ``ref_cache`` or a forward of ``reference``."""
    import torch

    from align.dpo import dpo_loss
    from align.pairs import pair_batch
    from align.refcache import pair_logps

    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    policy.train()
    walls, cpus, losses = [], [], []
    for step in range(steps):
        lo = (step * batch_pairs) % len(pairs)
        idx = [(lo + i) % len(pairs) for i in range(batch_pairs)]
        batch = pair_batch([pairs[i] for i in idx], pad_id)
        t0, c0 = time.perf_counter(), cpu_seconds()
        if ref_cache is not None:
            rc, rr = (torch.from_numpy(x).float() for x in ref_cache.take(idx))
        else:
            with torch.no_grad():
                rc, rr = pair_logps(reference, batch)
        pc, pr = pair_logps(policy, batch)
        loss = dpo_loss(pc, pr, rc, rr, beta=0.1).losses.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
        losses.append(float(loss.detach()))
    timed = slice(1, None) if steps > 2 else slice(None)  # the first step warms allocators up
    return {"seconds_per_step": statistics.median(walls[timed]), "cpu_seconds_per_step": statistics.median(cpus[timed]),
            "losses": losses}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=REPO / "artifacts" / "sft" / "demo" / "final")
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--batch_pairs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--max_seq_len", type=int, default=256)
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench" / "align.json")
    args = ap.parse_args()

    import torch

    from align.chat import chat_setup
    from align.pairs import encode_pairs
    from align.prefs import read_pairs
    from align.refcache import compute_ref_logps
    from pretrain.model import load_llama
    from zhllama import default_data_dir
    from zhllama.artifacts import atomic_write_json, versions

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1") or 1))
    scratch = tempfile.TemporaryDirectory()
    model_dir = args.model if (args.model / "config.json").is_file() else stand_in_model(Path(scratch.name), default_data_dir())
    tokenizer, encoder = chat_setup(model_dir)
    pairs, _ = read_pairs(default_data_dir() / "sft" / "pref_train.jsonl", tiers=("A",))
    encoded, _ = encode_pairs(pairs[: args.pairs], encoder, args.max_seq_len)
    pad_id = int(tokenizer.pad_token_id)
    reference = load_llama(model_dir).eval()
    policy_a, policy_b = load_llama(model_dir), load_llama(model_dir)
    tokens = sum(len(p.prompt_ids) * 2 + len(p.chosen_ids) + len(p.rejected_ids) for p in encoded)

    t0, c0 = time.perf_counter(), cpu_seconds()
    cache = compute_ref_logps(copy.deepcopy(reference), encoded, pad_id, args.batch_pairs)
    build_s, build_cpu = time.perf_counter() - t0, cpu_seconds() - c0

    cached = dpo_steps(policy_a, None, cache, encoded, args.batch_pairs, args.steps, pad_id)
    recompute = dpo_steps(policy_b, reference, None, encoded, args.batch_pairs, args.steps, pad_id)
    max_diff = max(abs(a - b) for a, b in zip(cached["losses"], recompute["losses"], strict=True))
    saved = recompute["seconds_per_step"] - cached["seconds_per_step"]
    result = {
        "model": str(model_dir if model_dir == args.model else "random stand-in shape (hidden 128, 2 layers, 32k vocab)"),
        "n_parameters": sum(p.numel() for p in reference.parameters()),
        "pairs": len(encoded), "batch_pairs": args.batch_pairs, "steps": args.steps, "max_seq_len": args.max_seq_len,
        "tokens_per_epoch": tokens,
        "cached": {k: v for k, v in cached.items() if k != "losses"},
        "recompute": {k: v for k, v in recompute.items() if k != "losses"},
        "speedup": recompute["seconds_per_step"] / cached["seconds_per_step"],
        "cpu_speedup": recompute["cpu_seconds_per_step"] / cached["cpu_seconds_per_step"],
        "cache_build_seconds": build_s, "cache_build_cpu_seconds": build_cpu,
        "break_even_steps": build_s / saved if saved > 0 else None,
        "max_loss_difference": max_diff,
        "threads": torch.get_num_threads(), "versions": versions(),
    }
    atomic_write_json(args.out, result)
    print(f"DPO step, {args.batch_pairs} pairs, {result['n_parameters'] / 1e6:.1f}M params: recompute reference "
          f"{recompute['seconds_per_step']:.3f} s/step, cached {cached['seconds_per_step']:.3f} s/step -> "
          f"{result['speedup']:.2f}x (CPU time {result['cpu_speedup']:.2f}x); cache built once in {build_s:.1f} s "
          f"({len(encoded)} pairs), paid back after {result['break_even_steps'] or float('nan'):.1f} steps; "
          f"loss difference {max_diff:.1e} -> {args.out}")
    if max_diff > 1e-4:
        print("error: cached and recomputed reference give different losses", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
