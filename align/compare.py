"""``python -m align compare``: aligned policies against the SFT model on held-out prompts.

For the SFT model and each policy: greedy replies to the held-out prompts (``sft.generate``), their
reward-model score, the **win rate against the SFT model's reply to the same prompt** judged by the
reward model (ties count half), reply length (tokens, characters, share stopped at EOS), and the
held-out preference accuracy of the policy's **implicit DPO reward** ``log pi - log pi_sft`` on the
held-out pairs (0.5 for the SFT model itself: every margin is 0). The reward model's own held-out
pairwise accuracy is reported once, next to the length baseline::

    python -m align compare --policies artifacts/align/dpo/final --policies artifacts/align/rl/final

Writes ``out_dir/report.{json,md}``, ``compare.png`` and ``generations.jsonl`` (every reply, scored).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.common import ALIGN_DEFAULT_MODEL
from sft.generate import GenerationSettings
from zhllama import default_data_dir
from zhllama.artifacts import save_figure
from zhllama.cli import UserError


@dataclass
class CompareConfig:
    """``python -m align compare``: which models, which held-out data, how to decode."""

    policies: list[Path] = field(default_factory=lambda: [Path("artifacts/align/dpo/final"),
                                                           Path("artifacts/align/rl/final")])
    """Aligned chat model directories to compare (each against ``sft_model``)."""
    sft_model: Path = ALIGN_DEFAULT_MODEL
    """The SFT model: the baseline of the win rate and the reference of the implicit DPO reward."""
    reward_model: Path = Path("artifacts/align/reward/final")
    """The judge (``python -m align reward`` output)."""
    pairs: list[Path] = field(default_factory=lambda: [default_data_dir() / "sft" / "pref_heldout.jsonl"])
    """Held-out preference files: their prompts are answered, their pairs score the implicit reward."""
    tiers: list[str] | None = field(default_factory=lambda: ["A"])
    """Keep records of these tiers (null: all)."""
    max_seq_len: int = 512
    """Pairs are fitted to this many tokens (as in training)."""
    max_prompts: int | None = 32
    """Answer only the first N distinct held-out prompts (null: all)."""
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=128))
    """Decoding (greedy by default, so the comparison is deterministic)."""
    batch_size: int = 8
    """Prompts per generate call, pairs per forward pass."""
    out_dir: Path = Path("artifacts/align/compare")
    """Where the report goes."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``."""


def win_rate(scores: list[float], baseline: list[float]) -> float:
    """Share of prompts whose reply out-scores the baseline's reply (ties count half).

    >>> win_rate([1.0, 0.0, 2.0], [0.0, 0.0, 3.0])
    0.5
    """
    if not scores:
        return float("nan")
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(scores, baseline, strict=True)) / len(scores)


def score_replies(reward_model: Any, prompt_ids: list[list[int]], reply_ids: list[list[int]], pad_id: int,
                  batch_size: int) -> list[float]:
    """Reward-model scores of ``prompt + reply`` sequences (read at the last token)."""
    import torch

    from align.logprobs import collate_replies
    from align.reward import reward_scores

    device = next(reward_model.parameters()).device
    out: list[float] = []
    with torch.no_grad():
        for s in range(0, len(prompt_ids), batch_size):
            batch = collate_replies(list(zip(prompt_ids[s:s + batch_size], reply_ids[s:s + batch_size], strict=True)), pad_id)
            out += reward_scores(reward_model, {k: v.to(device) for k, v in batch.items()}).tolist()
    return out


def evaluate_policy(name: str, model: Any, tokenizer: Any, prompts: list[list[dict]], prompt_ids: list[list[int]],
                    reward_model: Any, pairs: list, sft_ref: Any, cfg: CompareConfig) -> tuple[dict, list[dict], list[float]]:
    """``(figures, generation records, scores)`` of one model (win rate filled in by the caller)."""
    from align.dpo import implicit_reward_accuracy
    from align.refcache import compute_ref_logps
    from sft.generate import generate_ids

    pad_id, eos_id = int(tokenizer.pad_token_id), int(tokenizer.eos_token_id)
    outs = generate_ids(model, prompt_ids, pad_id, eos_id, cfg.generation, cfg.batch_size)
    replies = [g.ids + ([eos_id] if g.stopped_at_eos else []) for g in outs]
    scores = score_replies(reward_model, prompt_ids, replies, pad_id, cfg.batch_size)
    texts = [tokenizer.decode(g.ids, skip_special_tokens=True).strip() for g in outs]
    device = next(model.parameters()).device
    mine = compute_ref_logps(model, pairs, pad_id, cfg.batch_size, device)
    accuracy = implicit_reward_accuracy(*(_t(x) for x in (mine.chosen, mine.rejected, sft_ref.chosen, sft_ref.rejected)))
    n = len(outs)
    figures = {"model": name, "reward_mean": sum(scores) / n, "reply_tokens": sum(len(g.ids) for g in outs) / n,
               "reply_chars": sum(len(t) for t in texts) / n, "stopped_at_eos": sum(g.stopped_at_eos for g in outs) / n,
               "implicit_pref_accuracy": accuracy}
    records = [{"model": name, "messages": p, "reply": t, "reward": s, "new_tokens": len(g.ids),
                "stopped_at_eos": g.stopped_at_eos} for p, t, s, g in zip(prompts, texts, scores, outs, strict=True)]
    return figures, records, scores


def _t(values: Any) -> Any:
    import torch

    return torch.as_tensor(values, dtype=torch.float64)


def report_markdown(report: dict) -> str:
    """The comparison as Markdown: one row per model, then the reward model's own accuracy."""
    head = ("| model | RM score | win rate vs SFT | reply tokens | reply chars | stopped at EOS | implicit DPO pref. acc. |\n"
            "|---|---|---|---|---|---|---|\n")
    rows = "".join(f"| {r['model']} | {r['reward_mean']:.3f} | {r['win_rate_vs_sft']:.3f} | {r['reply_tokens']:.1f} | "
                   f"{r['reply_chars']:.1f} | {r['stopped_at_eos']:.2f} | {r['implicit_pref_accuracy']:.3f} |\n"
                   for r in report["models"])
    rm = report["reward_model"]
    return (f"# Aligned policies vs the SFT model ({report['n_prompts']} held-out prompts, "
            f"{report['n_pairs']} held-out pairs)\n\n{head}{rows}\n"
            f"Judge: {report['reward_model_dir']}: held-out pairwise accuracy {rm['accuracy']} "
            f"(length baseline {rm['length_baseline_accuracy']}; on the {rm['n_chosen_shorter']} pairs whose chosen "
            f"reply is the shorter: {rm['accuracy_chosen_shorter']}).\n")


def plot_report(report: dict, out_png: Path) -> Path:
    """Bars per model: RM score, win rate, reply tokens, implicit accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = [r["model"] for r in report["models"]]
    keys = ["reward_mean", "win_rate_vs_sft", "reply_tokens", "implicit_pref_accuracy"]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 3.2), dpi=110)
    for ax, key in zip(axes, keys, strict=True):
        ax.bar(range(len(models)), [r[key] for r in report["models"]], color="tab:blue")
        ax.set_xticks(range(len(models)), models, rotation=20, fontsize=7)
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out_png)


def run(cfg: CompareConfig) -> int:
    """CLI: generate, score and compare; write the report."""
    import torch

    from align.chat import chat_setup
    from align.data import PrefDataConfig, load_pref_data
    from align.refcache import compute_ref_logps
    from align.reward import build_reward_model
    from align.train_reward import held_out_report
    from sft.generate import load_chat_model
    from zhllama.artifacts import atomic_write_json, atomic_write_text, sha256_tree, write_meta

    for path, what in [(cfg.sft_model, "SFT model"), (cfg.reward_model, "reward model"),
                       *((p, "policy") for p in cfg.policies)]:
        if not (Path(path) / "config.json").is_file():
            raise UserError(f"{what} not found (no config.json): {path}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    sft_model = load_chat_model(cfg.sft_model, device)[0]
    tokenizer, encoder = chat_setup(cfg.sft_model)  # the SFT model's chat format; pad = <unk>
    pad_id = int(tokenizer.pad_token_id)
    data = load_pref_data(cfg.pairs, PrefDataConfig(train_files=list(cfg.pairs), eval_files=[], tiers=cfg.tiers,
                                                    max_seq_len=cfg.max_seq_len), encoder)
    seen: dict[str, int] = {}
    prompts, prompt_ids = [], []
    for enc in data.pairs:
        pair = data.prompts[enc.pair_id]
        key = json.dumps(pair, ensure_ascii=False, sort_keys=True)
        if key not in seen and (cfg.max_prompts is None or len(prompts) < cfg.max_prompts):
            seen[key] = len(prompts)
            prompts.append(pair)
            prompt_ids.append(list(enc.prompt_ids))
    reward_model = build_reward_model(cfg.reward_model, pad_token_id=pad_id).to(device).eval()
    sft_ref = compute_ref_logps(sft_model, data.pairs, pad_id, cfg.batch_size, device)
    names = ["sft", *(_name(p) for p in cfg.policies)]
    models: list[dict] = []
    records: list[dict] = []
    baseline: list[float] = []
    for name, path in zip(names, [cfg.sft_model, *cfg.policies], strict=True):
        model = sft_model if path == cfg.sft_model else load_chat_model(path, device)[0]
        figures, recs, scores = evaluate_policy(name, model, tokenizer, prompts, prompt_ids, reward_model,
                                                data.pairs, sft_ref, cfg)
        baseline = baseline or scores
        figures["win_rate_vs_sft"] = win_rate(scores, baseline)
        models.append(figures)
        records += recs
        print(f"{name}: RM score {figures['reward_mean']:.3f}, win rate vs SFT {figures['win_rate_vs_sft']:.3f}, "
              f"{figures['reply_tokens']:.1f} tokens, implicit pref. accuracy {figures['implicit_pref_accuracy']:.3f}")
    report = {"n_prompts": len(prompts), "n_pairs": len(data.pairs), "reward_model_dir": str(cfg.reward_model),
              "reward_model": held_out_report(reward_model, data.pairs, pad_id, cfg.batch_size),
              "models": models, "data": data.summary()}
    out = Path(cfg.out_dir)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", report_markdown(report))
    atomic_write_text(out / "generations.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    plot_report(report, out / "compare.png")
    write_meta(out, config=cfg, inputs={str(p): sha256_tree(p) for p in [cfg.reward_model, cfg.sft_model, *cfg.policies]})
    print(f"compared {len(models)} models on {len(prompts)} prompts / {len(data.pairs)} pairs -> {out / 'report.md'}")
    return 0


def _name(path: Path) -> str:
    """``artifacts/align/dpo/final`` -> ``dpo``; a directory not named ``final`` keeps its own name."""
    p = Path(path)
    return p.parent.name if p.name == "final" else p.name

