"""CPU throughput of one training step: plain PyTorch (1 process) vs DeepSpeed ZeRO-2 (2 processes),
and ZeRO-2 with vs without glibc malloc tuning in the workers.

Same model, same global batch (``--micro_batch`` x 2 blocks of ``--block_size`` tokens), same
cores, same run: the baseline is a bare ``forward / backward / AdamW.step`` loop in this process
with ``torch.set_num_threads(2)``; ZeRO-2 is the real ``python -m pretrain train`` (deepspeed
launcher, 2 workers with one thread each) on a small Chinese Wikipedia corpus, its per-step
tokens/s read from ``logs/metrics.jsonl``. Both report the median over the steps after
``--warmup`` steps.

Malloc: the same ZeRO-2 run with ``--launch.malloc_tuning false`` and ``true`` (glibc's
``MALLOC_MMAP_THRESHOLD_``/``TRIM_THRESHOLD_``/``TOP_PAD_`` in the workers, see
``pretrain.launch.MALLOC_ENV``), alternated ``--repeats`` times so machine load drifts alike on
both; reports the tokens/s ratio, the minor page faults per second of the two workers between the
warmup and the last step (sampled from ``/proc/<pid>/stat``) and checks the losses are identical. Prints the ratios and writes
``artifacts/bench/train.json``::

    python bench/train.py --steps 12 --hidden 128 --layers 4

The GPU throughput (tokens/s, MFU) is ``bench/train_gpu.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_inputs(root: Path, hidden: int, layers: int, n_docs: int) -> dict:
    """Base Llama-2 tokenizer (HF dir), a random Llama over it with the tokenizer beside it, a zh corpus."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from vocab.export import export_hf
    from zhllama import default_data_dir

    data = default_data_dir()
    tok_dir = export_hf((data / "llama2_tokenizer.model").read_bytes(), root / "tokenizer")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=hidden, intermediate_size=hidden * 8 // 3 // 8 * 8,
                      num_hidden_layers=layers, num_attention_heads=max(hidden // 32, 1),
                      num_key_value_heads=max(hidden // 32, 1), max_position_embeddings=2048,
                      bos_token_id=1, eos_token_id=2)
    model_dir = root / "model"
    LlamaForCausalLM(cfg).save_pretrained(model_dir)
    for f in tok_dir.iterdir():
        if f.is_file():
            shutil.copy(f, model_dir / f.name)
    corpus = root / "corpus" / "train"
    corpus.mkdir(parents=True)
    lines = (data / "zhwiki" / "jastfkjg_wiki_00.jsonl").read_text(encoding="utf-8").splitlines()[:n_docs]
    with open(corpus / "shard-00000.jsonl", "w", encoding="utf-8") as f:
        for i, line in enumerate(lines):
            f.write(json.dumps({"id": str(i), "source": "zhwiki", "text": json.loads(line)["text"]}, ensure_ascii=False) + "\n")
    n_params = sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())
    return {"tokenizer_dir": tok_dir, "model_dir": model_dir, "corpus_dir": root / "corpus", "n_params": n_params}


def plain_torch(inputs: dict, steps: int, warmup: int, global_batch: int, block_size: int, threads: int) -> float:
    """Median tokens/s of a bare single-process loop on random blocks (throughput ignores the data)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(inputs["model_dir"], dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    rates = []
    for step in range(steps):
        ids = torch.randint(3, 32000, (global_batch, block_size))
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= warmup:
            rates.append(global_batch * block_size / (time.perf_counter() - t))
    return statistics.median(rates)


def zero2_two_procs(inputs: dict, root: Path, steps: int, warmup: int, micro_batch: int, block_size: int,
                    malloc_tuning: bool = False, name: str = "run") -> dict:
    """The real CLI (deepspeed launcher, ZeRO-2, 2 processes): median tokens/s, losses, page faults/s."""
    import socket
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = root / name
    argv = [sys.executable, "-m", "pretrain", "train", "--config", "configs/pretrain/train.yaml",
            "--model_dir", str(inputs["model_dir"]), "--tokenizer_dir", str(inputs["tokenizer_dir"]),
            "--corpus_dir", str(inputs["corpus_dir"]), "--cache_dir", str(root / "cache"), "--run_dir", str(run_dir),
            "--nproc", "2", "--max_steps", str(steps), "--save_every_steps", str(10**6), "--export", "false",
            "--micro_batch_size", str(micro_batch), "--data.block_size_tokens", str(block_size),
            "--data.mixture", "[]", "--deepspeed_config", "configs/deepspeed/zero2.json", "--eval_every_steps", "0",
            "--launch.malloc_tuning", str(malloc_tuning).lower(), "--launch.master_port", str(port)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    log, samples = run_dir / "logs" / "metrics.jsonl", []
    while proc.poll() is None:  # sample the workers' minor page faults while they train
        n_records = len(log.read_text().splitlines()) if log.is_file() else 0
        faults = worker_minor_faults(proc.pid)
        if faults is not None:
            samples.append((time.perf_counter(), n_records, faults))
        time.sleep(0.25)
    reader.join()
    if proc.returncode != 0:
        sys.exit(f"ZeRO-2 run failed:\n{''.join(output)[-4000:]}")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    timed = [r for r in records if r["step"] > warmup and "loss" in r]
    window = [s for s in samples if warmup <= s[1] < steps]  # between the warmup and the last step
    faults_per_second = ((window[-1][2] - window[0][2]) / (window[-1][0] - window[0][0])
                         if len(window) > 1 and window[-1][0] > window[0][0] else float("nan"))
    return {"tokens_per_second": [r["tokens_per_second"] for r in timed],
            "losses": [r["loss"] for r in records if "loss" in r], "minor_faults_per_second": faults_per_second}


def worker_minor_faults(launcher_pid: int) -> int | None:
    """Sum of the minor page faults of the ``pretrain.worker`` processes under ``launcher_pid`` (None: none yet)."""
    import psutil

    total, found = 0, False
    try:
        children = psutil.Process(launcher_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for p in children:
        try:
            cmd = p.cmdline()
            if not any(a == "-m" and b == "pretrain.worker" for a, b in zip(cmd, cmd[1:], strict=False)):
                continue
            stat = Path(f"/proc/{p.pid}/stat").read_text()
            total += int(stat[stat.rindex(")") + 2:].split()[7])  # field 10: minflt
            found = True
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            continue
    return total if found else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--block_size", type=int, default=128)
    ap.add_argument("--micro_batch", type=int, default=2, help="per process; the plain baseline runs 2x this")
    ap.add_argument("--repeats", type=int, default=2, help="alternations of malloc off/on")
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench" / "train.json")
    args = ap.parse_args()

    from zhllama.artifacts import atomic_write_json, versions

    global_batch = 2 * args.micro_batch
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        root = Path(tmp)
        inputs = make_inputs(root, args.hidden, args.layers, n_docs=40)
        plain = plain_torch(inputs, args.steps, args.warmup, global_batch, args.block_size, threads=2)
        plain1 = plain_torch(inputs, args.steps, args.warmup, global_batch, args.block_size, threads=1)
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for i in range(args.repeats):
            for tuning in (False, True):
                runs[tuning].append(zero2_two_procs(inputs, root, args.steps, args.warmup, args.micro_batch,
                                                    args.block_size, malloc_tuning=tuning, name=f"run{i}{tuning}"))
    rate = {t: statistics.median(x for r in rs for x in r["tokens_per_second"]) for t, rs in runs.items()}
    faults = {t: statistics.median(r["minor_faults_per_second"] for r in rs) for t, rs in runs.items()}
    per_run = {("on" if t else "off"): [round(statistics.median(r["tokens_per_second"]), 1) for r in rs]
               for t, rs in runs.items()}
    all_losses = [r["losses"] for rs in runs.values() for r in rs]
    max_loss_diff = max(abs(a - b) for losses in all_losses for a, b in zip(losses, all_losses[0], strict=True))
    zero2 = rate[False]
    result = {
        "device": "cpu", "cpu_count": os.cpu_count(),
        "model": {"hidden": args.hidden, "layers": args.layers, "vocab": 32000, "n_params": inputs["n_params"]},
        "block_size_tokens": args.block_size, "global_batch_blocks": global_batch, "steps": args.steps,
        "warmup_steps_excluded": args.warmup,
        "plain_torch_1proc_2threads_tokens_per_second": round(plain, 1),
        "plain_torch_1proc_1thread_tokens_per_second": round(plain1, 1),
        "zero2_2procs_1thread_tokens_per_second": round(zero2, 1),
        "ratio_zero2_over_plain": round(zero2 / plain, 3),
        "zero2_malloc_tuning_tokens_per_second": round(rate[True], 1),
        "ratio_malloc_tuning_on_over_off": round(rate[True] / rate[False], 3),
        "minor_page_faults_per_second": {"malloc_tuning_off": round(faults[False]), "malloc_tuning_on": round(faults[True])},
        "max_abs_loss_difference_across_runs": max_loss_diff,
        "repeats": args.repeats,
        "zero2_median_tokens_per_second_per_run": per_run,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "versions": versions(),
    }
    atomic_write_json(args.out, result)
    print(f"model {inputs['n_params'] / 1e6:.1f}M params, global batch {global_batch} x {args.block_size} tokens")
    print(f"plain PyTorch, 1 process x 2 threads : {plain:10,.0f} tokens/s")
    print(f"plain PyTorch, 1 process x 1 thread  : {plain1:10,.0f} tokens/s  (one core, for context)")
    print(f"DeepSpeed ZeRO-2, 2 processes        : {zero2:10,.0f} tokens/s")
    print(f"ratio ZeRO-2 / plain                 : {zero2 / plain:10.2f}x")
    print(f"ZeRO-2 + malloc tuning, 2 processes  : {rate[True]:10,.0f} tokens/s  ({rate[True] / rate[False]:.2f}x of "
          f"without; minor page faults/s {faults[False]:,.0f} -> {faults[True]:,.0f}; "
          f"max loss difference {max_loss_diff:.1e})   -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
