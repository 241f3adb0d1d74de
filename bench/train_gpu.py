"""GPU throughput of continued pretraining: tokens/s and model FLOPs utilisation (MFU).

A ~1.2B-parameter Llama (Llama-3.2-1B shape by default: hidden 2048, 16 layers, 32 heads, 8 KV
heads, MLP 8192) with a 55,296-piece extended vocabulary, sequence 2048, bf16, DeepSpeed ZeRO-2,
micro-batch 12 x 2 accumulation steps, random token blocks (throughput does not depend on the
data). Needs a CUDA GPU; run on one GPU with::

    python bench/train_gpu.py

or several with ``deepspeed --num_gpus N bench/train_gpu.py``. MFU uses the PaLM accounting:
FLOPs per token = 6 * N_params(non-embedding + lm_head) + 12 * layers * hidden * seq (attention),
against the GPU's dense bf16 peak (``--peak_tflops``, default 989 for an H100/H200 SXM).
``--variants eager,compile`` compares, in the same run, the model with and without ``torch.compile``.
Prints a table and writes JSON to ``--out`` (default artifacts/bench/train_gpu.json).

``--mode engine`` runs the project's own path instead, ``python -m pretrain train`` (what ``make
pretrain`` runs: the launcher, ``pretrain.worker``, the shared engine, token-weighted steps, the
project's ``configs/deepspeed/zero2.json`` / ``zero3.json``), on the same shape: it saves a random
Llama of that shape (bf16 safetensors, the Llama-2 tokenizer beside it) and a corpus from the shared
data, trains ``--warmup + --steps`` steps per ZeRO stage with all visible GPUs, and reads tokens/s
from ``logs/metrics.jsonl``. Compare it with the direct DeepSpeed loop of the same run::

    python bench/train_gpu.py --mode both --zero_stages 2,3        # direct ZeRO-2, then engine ZeRO-2 and ZeRO-3
    python bench/train_gpu.py --mode engine --allow_cpu --hidden 64 --intermediate 128 --layers 2 \
        --heads 4 --kv_heads 4 --seq 128 --micro_batch 2 --grad_accum 1 --steps 2 --warmup 1 --vocab_size 32000 \
        --variants eager
        # (a CPU smoke test of the code path; its figures mean nothing)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


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


def make_engine_inputs(root: Path, args) -> dict:
    """A random Llama of the benchmark's shape saved as a model dir (bf16, Llama-2 tokenizer beside it),
    the tokenizer dir, and a Chinese Wikipedia corpus (``train/shard-00000.jsonl``)."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(REPO))
    from vocab.export import export_hf
    from zhllama import default_data_dir

    data = default_data_dir()
    tok_dir = export_hf((data / "llama2_tokenizer.model").read_bytes(), root / "tokenizer")
    cfg = LlamaConfig(vocab_size=args.vocab_size, hidden_size=args.hidden, intermediate_size=args.intermediate,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                      max_position_embeddings=max(args.seq, 2048), bos_token_id=1, eos_token_id=2,
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16 if device == "cuda" else torch.float32)
    model_dir = root / "init"
    model.save_pretrained(model_dir)
    del model
    for f in tok_dir.iterdir():
        if f.is_file() and f.name != "meta.json":
            shutil.copy(f, model_dir / f.name)
    corpus = root / "corpus" / "train"
    corpus.mkdir(parents=True, exist_ok=True)
    with open(corpus / "shard-00000.jsonl", "w", encoding="utf-8") as out:
        for src in sorted((data / "zhwiki").glob("*.jsonl")):
            for i, line in enumerate(src.read_text(encoding="utf-8").splitlines()):
                text = json.loads(line)["text"]
                out.write(json.dumps({"id": f"{src.stem}-{i}", "source": "zhwiki", "text": text}, ensure_ascii=False) + "\n")
    return {"config": cfg, "model_dir": model_dir, "tokenizer_dir": tok_dir, "corpus_dir": root / "corpus",
            "cache_dir": root / "cache"}


def run_engine(args, inputs: dict, stage: int, n_gpus: int, root: Path) -> dict:
    """One ``python -m pretrain train`` run (ZeRO ``stage``, ``n_gpus`` workers); median tokens/s after warmup."""
    run_dir = root / f"engine_zero{stage}"
    argv = [sys.executable, "-m", "pretrain", "train", "--config", "configs/pretrain/train.yaml",
            "--model_dir", str(inputs["model_dir"]), "--tokenizer_dir", str(inputs["tokenizer_dir"]),
            "--corpus_dir", str(inputs["corpus_dir"]), "--cache_dir", str(inputs["cache_dir"]),
            "--run_dir", str(run_dir), "--overwrite", "--nproc", str(n_gpus),
            "--deepspeed_config", f"configs/deepspeed/zero{stage}.json",
            "--data.block_size_tokens", str(args.seq), "--data.mixture", "[]",
            "--micro_batch_size", str(args.micro_batch), "--grad_accum_steps", str(args.grad_accum),
            "--max_steps", str(args.warmup + args.steps), "--warmup_steps", "1", "--lr", "0.0001",
            "--save_every_steps", "1000000", "--export", "false", "--eval_every_steps", "0",
            "--attn_implementation", args.attn, "--gradient_checkpointing", str(bool(args.grad_ckpt)).lower(),
            "--torch_compile", str("compile" in args.variants).lower(), "--launch.master_port", "29533"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    print("engine run:", " ".join(argv), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"the engine run (ZeRO-{stage}) failed with exit status {proc.returncode}; its output is above")
    records = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if "loss" in r and r["step"] > args.warmup]
    tokens_per_second = statistics.median(r["tokens_per_second"] for r in timed)
    achieved = tokens_per_second * flops_per_token(inputs["config"], args.seq)
    return {"variant": f"engine zero{stage}" + (" +compile" if "compile" in args.variants else ""),
            "tokens_per_second": tokens_per_second, "tokens_per_second_per_gpu": tokens_per_second / n_gpus,
            "mfu": achieved / (args.peak_tflops * 1e12 * n_gpus),
            "step_time_s": statistics.median(args.seq * args.micro_batch * args.grad_accum * n_gpus / r["tokens_per_second"]
                                             for r in timed),
            "peak_memory_gib": float("nan"), "final_loss": timed[-1]["loss"] if timed else float("nan"),
            "wall_s": time.perf_counter() - t0}


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
    ap.add_argument("--mode", choices=("direct", "engine", "both"), default="direct",
                    help="direct: DeepSpeed driven here; engine: `python -m pretrain train` (the make pretrain path)")
    ap.add_argument("--zero_stages", default="2,3", help="engine mode: comma list of ZeRO stages to run")
    ap.add_argument("--attn", default="sdpa", help="engine mode: attn_implementation (sdpa, flash_attention_2)")
    ap.add_argument("--work_dir", default="artifacts/bench/train_gpu_engine", help="engine mode: model, corpus, runs")
    ap.add_argument("--allow_cpu", action="store_true", help="engine mode without a GPU (smoke test of the code path)")
    args = ap.parse_args()
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")

    import torch

    if not torch.cuda.is_available() and not (args.mode == "engine" and args.allow_cpu):
        raise SystemExit("bench/train_gpu.py needs a CUDA GPU (the CPU comparison is bench/train.py)")
    results = []
    if args.mode in ("direct", "both"):
        for k, v in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29533", "RANK": "0", "LOCAL_RANK": "0",
                     "WORLD_SIZE": "1"}.items():
            os.environ.setdefault(k, v)
        torch.backends.cuda.matmul.allow_tf32 = True
        results += [run_variant(args, compile_model=(v == "compile")) for v in args.variants.split(",")]
    if args.mode in ("engine", "both"):
        root = Path(args.work_dir)
        root.mkdir(parents=True, exist_ok=True)
        inputs = make_engine_inputs(root, args)
        n_gpus = max(torch.cuda.device_count(), 1)
        n_params = _n_params(inputs["config"])
        for stage in (int(x) for x in args.zero_stages.split(",")):
            results.append({**run_engine(args, inputs, stage, n_gpus, root), "params": n_params})
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"\n{device}, Llama {results[0]['params'] / 1e9:.2f}B params, seq {args.seq}, micro-batch "
              f"{args.micro_batch} x grad-accum {args.grad_accum}, bf16, {os.environ.get('WORLD_SIZE', '1')} GPU(s)")
        print(f"{'variant':<24}{'tokens/s':>12}{'MFU':>8}{'step s':>9}{'peak GiB':>10}")
        for r in results:
            print(f"{r['variant']:<24}{r['tokens_per_second']:>12.0f}{r['mfu']:>8.1%}{r['step_time_s']:>9.3f}"
                  f"{r['peak_memory_gib']:>10.1f}")
        if len(results) > 1:
            print(f"ratio {results[1]['variant']} / {results[0]['variant']}: "
                  f"{results[1]['tokens_per_second'] / results[0]['tokens_per_second']:.2f}x")
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"device": device, "args": vars(args), "results": results,
                                   "torch": torch.__version__}, indent=2))


def _n_params(cfg) -> int:
    """Parameters of a Llama config, counted on the meta device (nothing allocated)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())


if __name__ == "__main__":
    main()
