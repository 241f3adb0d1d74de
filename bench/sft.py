"""SFT throughput: supervised tokens/s with packing vs padding to the longest in the batch.

Same data (the shared SFT set, tier A, Llama-2 chat format), same model weights, same loss: both
layouts run forward + backward over exactly the same conversations, and the summed NLL of the two
runs must agree (checked). Packed: best-fit-decreasing rows of ``--max_seq_len`` tokens, several
conversations per row with restarting position ids (block-diagonal causal attention on SDPA,
variable-length kernels with ``--attn flash_attention_2``); padded: shuffled conversations,
``--padded_batch`` (8) per micro-batch padded to the longest, and as many packed rows per
micro-batch as carry the same real tokens on average. Both layouts are timed in one process with
their micro-batches interleaved (a shared machine's load hits both alike); peak memory is measured
per layout in a fresh process on its largest micro-batch. Prints the ratio, writes ``artifacts/bench/sft.json``::

    python bench/sft.py                                 # CPU: stand-in-sized model, 96 conversations
    python bench/sft.py --preset 1b --max_examples 0    # GPU: a ~1B Llama, the whole set
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PRESETS = {  # model shapes: (hidden, intermediate, layers, heads, kv heads)
    "standin": (128, 384, 2, 4, 4),        # the demo's stand-in (8.6M parameters with the 32k vocabulary)
    "1b": (2048, 8192, 16, 32, 8),         # Llama-3.2-1B shape
}


def load_examples(tokenizer_dir: Path | None, max_seq_len: int, max_examples: int) -> tuple[list, dict]:
    """Tokenized tier-A conversations of the shared SFT set (and a description of the tokenizer)."""
    from transformers import AutoTokenizer

    from sft.data import SftDataConfig, load_sft_data
    from vocab.export import export_hf
    from zhllama import default_data_dir

    data_dir = default_data_dir()
    if tokenizer_dir is None:
        tokenizer_dir = Path(tempfile.mkdtemp(prefix="bench_sft_tok_"))
        export_hf((data_dir / "llama2_tokenizer.model").read_bytes(), tokenizer_dir)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = SftDataConfig(train_files=[data_dir / "sft" / "sft_train.jsonl"], max_seq_len=max_seq_len)
    data = load_sft_data(cfg.train_files, cfg, tok)
    examples = data.examples
    if max_examples:
        examples = random.Random(0).sample(examples, min(max_examples, len(examples)))
    plain = [(list(e.input_ids), list(e.labels)) for e in examples]
    return plain, {"tokenizer_dir": str(tokenizer_dir), "vocab": len(tok), "pad_id": tok.pad_token_id or 0,
                   "manifest": data.manifest.summary()}


class _Ex:
    def __init__(self, ids, labels):
        from sft.chat_format import IGNORE_INDEX

        self.input_ids, self.labels, self.n_label_chars = ids, labels, 0
        self.n_labels = sum(1 for x in labels[1:] if x != IGNORE_INDEX)


def build_model(args: dict):
    """The benchmark model (random weights, seed 0: identical in every process)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args["threads"])
    hidden, inter, layers, heads, kv = PRESETS[args["preset"]]
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=args["vocab"], hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv, max_position_embeddings=4096,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    dtype = torch.bfloat16 if args["device"] == "cuda" else torch.float32
    model = LlamaForCausalLM(cfg).to(device=args["device"], dtype=dtype)
    model.config._attn_implementation = args["attn"]
    return model.train()


def fwd_bwd(model, exs: list, rows: list, layout: str, args: dict) -> tuple[float, int, float, int]:
    """One micro-batch: ``(summed NLL, supervised tokens, seconds, computed tokens)``."""
    import torch

    from sft.loss import nll_sum
    from sft.packing import collate, to_torch

    batch = to_torch(collate(exs, rows, args["pad_id"], packed=layout == "packed"), args["device"])
    if args["device"] == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    loss_sum, n = nll_sum(model, batch)
    (loss_sum / max(int(n), 1)).backward()
    model.zero_grad(set_to_none=True)
    if args["device"] == "cuda":
        torch.cuda.synchronize()
    return float(loss_sum.detach()), int(n), time.perf_counter() - t, int(batch["input_ids"].numel())


def time_layouts(examples: list, batches: dict, args: dict, out: mp.Queue) -> None:
    """Both layouts in one process, micro-batches interleaved (padded k, packed k, ... with the order
    swapped every k), so a shared machine's changing load weighs on both alike."""
    model = build_model(args)
    exs = [_Ex(i, lab) for i, lab in examples]
    res = {name: {"nll_sum": 0.0, "supervised_tokens": 0, "seconds_timed": 0.0, "supervised_timed": 0,
                  "real_tokens_timed": 0, "computed_tokens_timed": 0, "micro_batches": len(b)}
           for name, b in batches.items()}
    names = list(batches)
    for k in range(max(len(b) for b in batches.values())):
        for name in (names if k % 2 == 0 else names[::-1]):
            if k >= len(batches[name]):
                continue
            rows = batches[name][k]
            nll, n, dt, computed = fwd_bwd(model, exs, rows, name, args)
            r = res[name]
            r["nll_sum"] += nll
            r["supervised_tokens"] += n
            if k >= args["warmup_batches"]:  # the first batches pay for allocation and kernel selection
                r["seconds_timed"] += dt
                r["supervised_timed"] += n
                r["real_tokens_timed"] += sum(len(exs[i].input_ids) for row in rows for i in row)
                r["computed_tokens_timed"] += computed
    for r in res.values():
        r["supervised_tokens_per_second"] = r["supervised_timed"] / r["seconds_timed"]
    res["n_params"] = sum(p.numel() for p in model.parameters())
    out.put(res)


def peak_memory(layout: str, examples: list, rows: list, args: dict, out: mp.Queue) -> None:
    """Peak memory of the layout's largest micro-batch, in a fresh process (GPU: max allocated; CPU:
    growth of the process's max RSS over the model alone)."""
    import torch

    model = build_model(args)
    exs = [_Ex(i, lab) for i, lab in examples]
    if args["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        fwd_bwd(model, exs, rows, layout, args)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args["device"] == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
    out.put(round(peak, 1))


def in_fresh_process(target, *args):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def plan(examples: list, max_seq_len: int, padded_batch: int) -> tuple[list, list, int]:
    """Padded micro-batches of ``padded_batch`` shuffled conversations, and packed micro-batches of as
    many rows as carry the same real tokens on average (at least one)."""
    from sft.packing import pack_rows

    lengths = [len(ids) for ids, _ in examples]
    order = list(range(len(examples)))
    random.Random(2).shuffle(order)
    padded = [[[i] for i in order[k:k + padded_batch]] for k in range(0, len(order), padded_batch)]
    rows = pack_rows(lengths, max_seq_len)
    random.Random(1).shuffle(rows)
    rows_per_batch = max(1, round(len(rows) / len(padded)))
    packed = [rows[k:k + rows_per_batch] for k in range(0, len(rows), rows_per_batch)]
    return packed, padded, rows_per_batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer_dir", type=Path, default=None,
                    help="default: artifacts/tokenizer (the merged one) if present, else the base Llama-2 tokenizer")
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: standin on CPU, 1b on GPU")
    ap.add_argument("--max_seq_len", type=int, default=1024)
    ap.add_argument("--padded_batch", type=int, default=8,
                    help="conversations per padded micro-batch (HF Trainer's default); packed rows follow")
    ap.add_argument("--max_examples", type=int, default=None, help="0 = all; default 96 on CPU, all on GPU")
    ap.add_argument("--warmup_batches", type=int, default=1)
    ap.add_argument("--attn", default=None, help="sdpa | eager | flash_attention_2 (default sdpa)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "artifacts" / "bench" / "sft.json")
    args = ap.parse_args()

    import torch

    from zhllama.artifacts import atomic_write_json, versions

    device = "cuda" if torch.cuda.is_available() else "cpu"
    preset = args.preset or ("1b" if device == "cuda" else "standin")
    max_examples = args.max_examples if args.max_examples is not None else (0 if device == "cuda" else 96)
    tok_dir = args.tokenizer_dir or (REPO / "artifacts" / "tokenizer" if (REPO / "artifacts" / "tokenizer").is_dir()
                                     else None)
    examples, tok_info = load_examples(tok_dir, args.max_seq_len, max_examples)
    packed, padded, rows_per_batch = plan(examples, args.max_seq_len, args.padded_batch)
    common = {"threads": args.threads, "device": device, "preset": preset, "vocab": tok_info["vocab"],
              "pad_id": tok_info["pad_id"], "attn": args.attn or "sdpa", "warmup_batches": args.warmup_batches}
    batches = {"padded": padded, "packed": packed}
    results = in_fresh_process(time_layouts, examples, batches, common)
    n_params = results.pop("n_params")
    for layout, layout_batches in batches.items():
        heaviest = max(layout_batches, key=lambda rows: len(rows) * max(sum(len(examples[i][0]) for i in r) for r in rows))
        r = results[layout]
        r["peak_memory_mb"] = in_fresh_process(peak_memory, layout, examples, heaviest, common)
        r["peak_memory_kind"] = ("cuda max_memory_allocated" if device == "cuda"
                                 else "CPU max RSS growth over the model, largest micro-batch")
        print(f"{layout:6s}: {r['supervised_tokens_per_second']:10,.0f} supervised tokens/s, {r['micro_batches']} "
              f"micro-batches, {r['real_tokens_timed'] / r['computed_tokens_timed']:.1%} of computed tokens real, "
              f"peak {r['peak_memory_mb']:,.0f} MB", flush=True)
    pa, pk = results["padded"], results["packed"]
    same_loss = abs(pa["nll_sum"] - pk["nll_sum"]) <= 1e-3 * abs(pa["nll_sum"]) and \
        pa["supervised_tokens"] == pk["supervised_tokens"]
    ratio = pk["supervised_tokens_per_second"] / pa["supervised_tokens_per_second"]
    result = {"device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
              "cpu_count": os.cpu_count(), "preset": preset, "n_params": n_params, "attn": common["attn"],
              "tokenizer": tok_info, "conversations": len(examples), "max_seq_len": args.max_seq_len,
              "packed_rows_per_micro_batch": rows_per_batch, "padded_conversations_per_micro_batch": args.padded_batch,
              "padded": pa, "packed": pk, "same_loss": same_loss, "ratio_packed_over_padded": round(ratio, 3),
              "load_average_1min_at_end": round(os.getloadavg()[0], 2), "versions": versions()}
    atomic_write_json(args.out, result)
    print(f"{len(examples)} conversations, {pk['supervised_tokens']:,} supervised tokens, model {n_params / 1e6:.1f}M "
          f"params ({preset}, {device}); same loss: {same_loss} (NLL {pa['nll_sum']:.2f} vs {pk['nll_sum']:.2f})")
    print(f"packed / padded: {ratio:.2f}x supervised tokens/s -> {args.out}")
    return 0 if same_loss else 1


if __name__ == "__main__":
    sys.exit(main())
