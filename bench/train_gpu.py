"""GPU throughput of continued pretraining: tokens/s and model FLOPs utilisation (MFU).

A ~1.2B-parameter Llama (Llama-3.2-1B shape by default: hidden 2048, 16 layers, 32 heads, 8 KV
heads, MLP 8192) with a 55,296-piece extended vocabulary, sequence 2048, bf16, DeepSpeed ZeRO-2,
micro-batch 12 x 2 accumulation steps, random token blocks (throughput does not depend on the
data). Needs a CUDA GPU; run on one GPU with::

    python bench/train_gpu.py

or several with ``deepspeed --num_gpus N bench/train_gpu.py``. MFU uses the PaLM accounting:
FLOPs per token = 6 * N_params(non-embedding + lm_head) + 12 * layers * hidden * seq (attention),
against the GPU's dense bf16 peak (``--peak_tflops``, default 989 for an H100 SXM).
``--variants eager,compile`` compares, in the same run, the model with and without ``torch.compile``.
Prints a table and writes JSON to ``--out`` (default artifacts/bench/train_gpu.json).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def flops_per_token(cfg, seq_len: int) -> float:
    """PaLM-style training FLOPs per token (forward + backward), excluding the input embedding lookup."""
    h, L, inter, vocab = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size, cfg.vocab_size
    kv = cfg.num_key_value_heads * (h // cfg.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * inter  # q,o + k,v + gate,up,down
    n_matmul_params = L * per_layer + h * vocab  # + lm_head
    return 6.0 * n_matmul_params + 12.0 * L * h * seq_len


def run_variant(args, compile_model: bool) -> dict:
    import deepspeed
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.seq, attn_implementation="sdpa", torch_dtype=torch.bfloat16,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    if args.grad_ckpt:
        model.gradient_checkpointing_enable()
    n_params = sum(p.numel() for p in model.parameters())
    ds_config = {
        "train_micro_batch_size_per_gpu": args.micro_batch,
        "gradient_accumulation_steps": args.grad_accum,
        "bf16": {"enabled": True},
        "zero_optimization": {"stage": 2, "overlap_comm": args.overlap_comm, "contiguous_gradients": True,
                              "reduce_bucket_size": args.bucket_elems, "allgather_bucket_size": args.bucket_elems},
        "gradient_clipping": 1.0,
        "zero_allow_untested_optimizer": True,
        "wall_clock_breakdown": False,
        "steps_per_print": 10**9,
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=ds_config)
    fwd = torch.compile(engine.module) if compile_model else engine.module
    world = int(os.environ.get("WORLD_SIZE", "1"))
    g = torch.Generator(device="cuda").manual_seed(1)

    def step() -> float:
        ids = torch.randint(3, args.vocab_size, (args.micro_batch, args.seq), device="cuda", generator=g)
        out = fwd(input_ids=ids, labels=ids)
        engine.backward(out.loss)
        engine.step()
        return out.loss

    # One optimizer step = grad_accum micro-steps (DeepSpeed steps the optimizer at the boundary).
    for _ in range(args.warmup * args.grad_accum):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps * args.grad_accum):
        loss = step()
    torch.cuda.synchronize()
    elapsed_s = time.perf_counter() - t0
    tokens = args.steps * args.grad_accum * args.micro_batch * args.seq * world
    tokens_per_second = tokens / elapsed_s
    achieved = tokens_per_second * flops_per_token(cfg, args.seq)
    result = {
        "variant": "sdpa+compile" if compile_model else "sdpa",
        "params": n_params,
        "tokens_per_second": tokens_per_second,
        "tokens_per_second_per_gpu": tokens_per_second / world,
        "mfu": achieved / (args.peak_tflops * 1e12 * world),
        "step_time_s": elapsed_s / args.steps,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "final_loss": float(loss.detach()),
    }
    # The engine, model and optimizer are freed when this function returns (nothing else holds them).
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab_size", type=int, default=55296)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv_heads", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--micro_batch", type=int, default=12)
    ap.add_argument("--grad_accum", type=int, default=2, help="micro-batches per optimizer step")
    ap.add_argument("--steps", type=int, default=8, help="timed optimizer steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--grad_ckpt", action="store_true")
    ap.add_argument("--overlap_comm", type=int, default=1, help="ZeRO overlap_comm (1/0)")
    ap.add_argument("--bucket_elems", type=float, default=5e8, help="ZeRO reduce/allgather bucket size (elements)")
    ap.add_argument("--peak_tflops", type=float, default=989.0, help="dense bf16 peak per GPU (H100 SXM: 989)")
    ap.add_argument("--variants", default="compile", help="comma list of eager,compile (eager needs --micro_batch 8 to fit 80 GB)")
    ap.add_argument("--out", default="artifacts/bench/train_gpu.json")
    ap.add_argument("--local_rank", type=int, default=0)
    args = ap.parse_args()
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/train_gpu.py needs a CUDA GPU (the CPU comparison is bench/train.py)")
    for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1"}.items():
        os.environ.setdefault(k, v)
    torch.backends.cuda.matmul.allow_tf32 = True
    results = [run_variant(args, compile_model=(v == "compile")) for v in args.variants.split(",")]
    device = torch.cuda.get_device_name()
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"\n{device}, Llama {results[0]['params'] / 1e9:.2f}B params, seq {args.seq}, micro-batch "
              f"{args.micro_batch} x grad-accum {args.grad_accum}, bf16, ZeRO-2, {os.environ.get('WORLD_SIZE', '1')} GPU(s)")
        print(f"{'variant':<14}{'tokens/s':>12}{'MFU':>8}{'step s':>9}{'peak GiB':>10}")
        for r in results:
            print(f"{r['variant']:<14}{r['tokens_per_second']:>12.0f}{r['mfu']:>8.1%}{r['step_time_s']:>9.3f}{r['peak_memory_gib']:>10.1f}")
        if len(results) > 1:
            print(f"ratio {results[1]['variant']} / {results[0]['variant']}: "
                  f"{results[1]['tokens_per_second'] / results[0]['tokens_per_second']:.2f}x")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"device": device, "args": vars(args), "results": results,
                                   "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
