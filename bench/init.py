"""Bits per character on held-out Chinese right after the embedding resize, for every init method.

The claim measured: the default of ``python -m pretrain init`` (``pieces_in_random_out``: input rows
= mean of the base rows of the pieces that spelled the new piece, output rows small random) leaves
the model closest to what it knew. Baseline in the same run: the stand-in with its own base tokenizer (no resize);
every method is reported as a ratio to it. Lower bits/char is better; the default must be the best
of the methods (the script exits 1 otherwise).

    .venv/bin/python bench/init.py [--max_chars 60000] [--window_tokens 128]

Inputs (built or substituted when missing, and said so in the output):
- model: ``artifacts/standin`` (trained with ``configs/pretrain/standin.yaml`` if absent);
- tokenizer: ``artifacts/tokenizer`` (the merged one) if present, else the peer Chinese-LLaMA-2
  tokenizer from the shared data (it extends Llama-2's 32k id for id);
- text: ``artifacts/corpus/heldout/heldout.jsonl``, else the last documents of the shared zhwiki file.
Writes ``artifacts/bench/init.json``.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pretrain.embeddings import INIT_METHODS, InitConfig, plan_sources, resize_and_init  # noqa: E402
from zhllama import default_data_dir  # noqa: E402
from zhllama.artifacts import atomic_write_json  # noqa: E402


def ensure_standin(art: Path, tmp: Path) -> tuple[Path, str]:
    """The stand-in model dir, training it with the standin config when missing."""
    standin = art / "standin"
    if (standin / "config.json").is_file():
        return standin, "artifacts/standin (existing)"
    from pretrain.standin import StandinConfig, run
    from zhllama.config import load_config

    corpus = art / "corpus"
    note = "trained now on artifacts/corpus"
    if not list((corpus / "train").glob("*.jsonl")):
        corpus = tmp / "corpus"
        (corpus / "train").mkdir(parents=True)
        for f in sorted((default_data_dir() / "zhwiki").glob("*.jsonl")):
            (corpus / "train" / f.name).symlink_to(f)
        note = "trained now on the shared zhwiki files (artifacts/corpus missing)"
    cfg = load_config(StandinConfig, REPO / "configs/pretrain/standin.yaml",
                      {"corpus_dir": str(corpus), "out_dir": str(standin)})
    run(cfg)
    return standin, note


def ensure_tokenizer(art: Path, tmp: Path) -> tuple[Path, str]:
    """The merged tokenizer dir, or the peer tokenizer exported to a temp dir."""
    merged = art / "tokenizer"
    if (merged / "tokenizer.json").is_file() or (merged / "tokenizer.model").is_file():
        return merged, "artifacts/tokenizer (merged)"
    from vocab.export import export_hf

    peer = default_data_dir() / "reference" / "chinese_llama2_tokenizer.model"
    export_hf(peer.read_bytes(), tmp / "peer_tokenizer")
    return tmp / "peer_tokenizer", "peer Chinese-LLaMA-2 tokenizer (artifacts/tokenizer missing)"


def heldout_texts(art: Path, max_chars: int) -> tuple[list[str], str]:
    """Held-out documents, cut to about ``max_chars`` characters in total."""
    path = art / "corpus" / "heldout" / "heldout.jsonl"
    note = str(path.relative_to(art.parent)) if path.is_file() else ""
    if not path.is_file():
        path = sorted((default_data_dir() / "zhwiki").glob("*.jsonl"))[-1]
        note = f"{path.name} (artifacts/corpus/heldout missing: NOT held out from a zhwiki-trained stand-in)"
    docs = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not path.is_relative_to(art):
        docs = docs[::-1]
    out, total = [], 0
    for d in docs:
        if total >= max_chars:
            break
        d = d[: max_chars - total]
        out.append(d)
        total += len(d)
    return out, note


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", default=str(REPO / "artifacts"))
    ap.add_argument("--max_chars", type=int, default=60_000, help="held-out characters scored")
    ap.add_argument("--window_tokens", type=int, default=128, help="scoring window (the stand-in trains on 128)")
    args = ap.parse_args()

    import torch
    from transformers import AutoTokenizer

    from pretrain.evaluate import evaluate_model
    from pretrain.model import load_llama

    torch.set_num_threads(max(1, torch.get_num_threads()))
    art = Path(args.artifacts)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir, model_note = ensure_standin(art, tmp)
        tok_dir, tok_note = ensure_tokenizer(art, tmp)
        texts, text_note = heldout_texts(art, args.max_chars)
        print(f"model: {model_note}\ntokenizer: {tok_note}\ntext: {text_note}, {len(texts)} docs, "
              f"{sum(map(len, texts)):,} chars")
        base_model = load_llama(model_dir).eval()
        score = dict(window_tokens=args.window_tokens, stride_tokens=args.window_tokens)

        t0 = time.perf_counter()
        base = evaluate_model(base_model, AutoTokenizer.from_pretrained(model_dir), {"heldout": texts}, **score)["total"]
        rows = [{"method": "baseline: base tokenizer, no resize", **_figures(base, base)}]
        check, _, sources = plan_sources(model_dir, tok_dir)
        merged_tok = AutoTokenizer.from_pretrained(tok_dir)
        for method in INIT_METHODS:
            model = copy.deepcopy(base_model)
            resize_and_init(model, sources, check.n_tokenizer, method, pad_to_multiple_of=64, seed=0)
            figures = evaluate_model(model.eval(), merged_tok, {"heldout": texts}, **score)["total"]
            rows.append({"method": method, **_figures(figures, base)})
        seconds = time.perf_counter() - t0

    default = InitConfig().init_method
    methods = [r for r in rows if r["method"] in INIT_METHODS]
    best = min(methods, key=lambda r: r["bits_per_char"])
    print(f"\n{'method':38s} {'bits/char':>9s} {'x baseline':>10s} {'tokens/char':>11s}")
    for r in rows:
        mark = "  <- default" if r["method"] == default else ""
        print(f"{r['method']:38s} {r['bits_per_char']:9.3f} {r['ratio_to_baseline']:10.3f} {r['tokens_per_char']:11.3f}{mark}")
    result = {
        "claim": f"{default} (the init default) gives the lowest held-out bits/char right after the resize",
        "model": model_note, "tokenizer": tok_note, "text": text_note,
        "n_new_tokens": check.n_new_tokens, "characters": sum(map(len, texts)),
        "window_tokens": args.window_tokens, "seconds": round(seconds, 1),
        "default": default, "best": best["method"], "rows": rows,
    }
    out = art / "bench" / "init.json"
    atomic_write_json(out, result)
    ok = best["method"] == default
    print(f"\nbest: {best['method']} ({best['bits_per_char']:.3f} bits/char, {best['ratio_to_baseline']:.2f}x the "
          f"base-tokenizer baseline); default {default}: {'OK' if ok else 'NOT THE BEST'} -> {out}")
    return 0 if ok else 1


def _figures(m: dict, base: dict) -> dict:
    return {"bits_per_char": m["bits_per_char"], "ratio_to_baseline": m["bits_per_char"] / base["bits_per_char"],
            "tokens_per_char": m["tokens_per_char"], "token_perplexity": m["token_perplexity"]}


if __name__ == "__main__":
    sys.exit(main())
