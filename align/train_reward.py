"""``python -m align reward``: train a reward model on preference pairs, as a Task of the engine.

:class:`RewardTask` replaces the engine's causal LM by ``LlamaForSequenceClassification`` (the
SFT model's transformer + a scalar ``score`` head; full or LoRA, ZeRO-2/3), reads the reward at
each sequence's last real token and trains on ``-log sigmoid(r_chosen - r_rejected)`` summed over
the pairs. After training, :func:`export_reward` (the engine's exporter hook) consolidates the checkpoint into ``final/`` (loads
with ``AutoModelForSequenceClassification``; LoRA merged) and :func:`held_out_report` writes the
held-out accuracy next to the length baseline (``final/report.json`` and ``report.md``)::

    python -m align reward --config configs/align/reward.yaml --model_dir artifacts/sft/demo/final
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.common import PairStageConfig, step_items
from pretrain.engine import CausalLMTask

TASK = "align.train_reward:RewardTask"
REPORT_NAME = "report.json"


@dataclass
class RewardConfig(PairStageConfig):
    """``python -m align reward``: the engine's settings + the preference data."""

    run_dir: Path = Path("artifacts/align/reward")
    """Where ``data/``, ``checkpoints/``, ``final/`` and ``logs/`` go."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode == "embeddings":
            raise ValueError("mode embeddings trains no score head; use full or lora for a reward model")


def apply_reward_lora(model: Any, settings: Any) -> Any:
    """LoRA adapters on the transformer; the ``score`` head (and the embeddings) trained in full."""
    from peft import LoraConfig, get_peft_model

    keep = ["score", *(m for m in settings.modules_to_save if m not in ("lm_head", "score"))]
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), modules_to_save=keep, task_type="SEQ_CLS")
    return get_peft_model(model, config)


def reward_model_for(cfg: RewardConfig, ds_config: dict | None, pad_id: int) -> Any:
    """The reward model of ``cfg.mode`` (ZeRO-3 full: loaded sharded, as the engine loads a causal LM)."""
    import torch

    from align.reward import build_reward_model
    from pretrain.deepspeed_config import zero_stage

    keep_alive = None
    if ds_config is not None and zero_stage(ds_config) == 3 and cfg.mode != "lora":
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # must outlive from_pretrained
    dtype = torch.bfloat16 if (ds_config or {}).get("bf16", {}).get("enabled") else torch.float32
    torch.manual_seed(cfg.seed)  # the score head (and LoRA's A matrices) are random
    model = build_reward_model(cfg.model_dir, pad_token_id=pad_id, attn_implementation=cfg.attn_implementation,
                               dtype=dtype)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.mode == "lora":
            model.enable_input_require_grads()
    if cfg.mode == "lora":
        model = apply_reward_lora(model, cfg.lora)
    model._zhllama_keep_alive = keep_alive
    return model


class RewardTask(CausalLMTask):
    """Pairwise reward-model training (see the module docstring)."""

    config_class = RewardConfig

    def build_model(self, cfg: RewardConfig, ds_config: dict) -> Any:
        return reward_model_for(cfg, ds_config, int(self.task_spec["pad_id"]))

    def setup(self, engine: Any, rank: int, world_size: int) -> None:
        from align.data import load_encoded

        super().setup(engine, rank, world_size)
        self.pad_id = int(self.task_spec["pad_id"])
        self.pairs = load_encoded(self.task_spec["train_pairs"])
        self.eval_pairs = load_encoded(self.task_spec["eval_pairs"]) if self.task_spec.get("eval_pairs") else []

    def micro_batches(self, step: int) -> list[dict]:
        from align.train_dpo import pair_tensors

        return [pair_tensors(self.pairs, None, idx, self.pad_id)
                for idx in step_items(step, len(self.pairs), self.cfg, self.rank, self.world_size)]

    def units(self, batch: dict) -> int:
        return int(batch["chosen_tokens"].shape[0])

    def loss(self, engine: Any, batch: dict) -> tuple[Any, Any, dict]:
        from align.dpo import split_pair_batch
        from align.reward import pairwise_loss, reward_scores

        rc, rr = split_pair_batch(reward_scores(engine.ds, batch))
        margin = (rc - rr).detach()
        return pairwise_loss(rc, rr).sum(), len(rc), {"accuracy": (margin > 0).sum(), "reward_margin": margin.sum()}

    def evaluate(self, engine: Any) -> dict:
        """Held-out pairwise loss and accuracy, and the length baseline of the same pairs."""
        from align.dpo import split_pair_batch
        from align.reward import pairwise_loss, reward_scores
        from align.train_dpo import pair_tensors
        from sft.evaluate import eval_chunks

        if not self.eval_pairs:
            return {}
        sums = [0.0] * 4
        for idx, counted in eval_chunks(len(self.eval_pairs), self.cfg.micro_batch_size, self.rank, self.world_size):
            batch = {k: v.to(engine.device) for k, v in pair_tensors(self.eval_pairs, None, idx, self.pad_id).items()}
            rc, rr = split_pair_batch(reward_scores(engine.ds, batch))
            if counted:
                m, longer = rc - rr, batch["chosen_chars"] - batch["rejected_chars"]
                half = lambda x: ((x > 0).double() + 0.5 * (x == 0).double()).sum()  # noqa: E731
                sums = [a + float(b) for a, b in zip(sums, (pairwise_loss(rc, rr).sum(), half(m), half(longer), len(m)),
                                                     strict=True)]
        loss, acc, length, n = engine.all_reduce_sum(sums)
        return {"loss": loss / n, "accuracy": acc / n, "length_baseline_accuracy": length / n}


def export_reward(ckpt_dir: Path, tag: str | None, out_dir: Path, cfg: RewardConfig) -> Path:
    """The engine's exporter for the reward model: checkpoint ``tag`` (default ``latest``) of
    ``ckpt_dir`` -> ``out_dir``, a merged ``LlamaForSequenceClassification`` + the chat tokenizer of
    the SFT model + ``meta.json``, written atomically."""
    from align.chat import add_chat_files, chat_setup
    from pretrain.export import consolidated_state_dict, load_into
    from zhllama.artifacts import atomic_dir, write_meta

    pad_id = int(chat_setup(cfg.model_dir, cfg.tokenizer_dir)[0].pad_token_id)
    model = reward_model_for(cfg, None, pad_id)
    load_into(model, consolidated_state_dict(ckpt_dir, tag), str(ckpt_dir))
    if cfg.mode == "lora":
        model = model.merge_and_unload()
    model.config.pad_token_id = pad_id
    model.eval()
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        add_chat_files(cfg.model_dir, cfg.tokenizer_dir, tmp)
        write_meta(tmp, config=cfg, mode=cfg.mode, note="reward model: LlamaForSequenceClassification, num_labels=1; "
                   "the reward is the score at the last real token (the reply's EOS)")
    return Path(out_dir)


def held_out_report(model: Any, pairs: list, pad_id: int, batch_pairs: int = 8) -> dict:
    """Pairwise accuracy of ``model`` on ``pairs`` next to the length baseline (:func:`~align.reward.pairwise_report`)."""
    import torch

    from align.dpo import split_pair_batch
    from align.pairs import pair_batch
    from align.reward import pairwise_report, reward_scores

    device = next(model.parameters()).device
    rc, rr = [], []
    with torch.no_grad():
        for s in range(0, len(pairs), batch_pairs):
            batch = {k: v.to(device) for k, v in pair_batch(pairs[s:s + batch_pairs], pad_id).items()}
            c, r = split_pair_batch(reward_scores(model, batch))
            rc += c.tolist()
            rr += r.tolist()
    return pairwise_report(rc, rr, [p.chosen_chars for p in pairs], [p.rejected_chars for p in pairs])


def report_markdown(report: dict, title: str) -> str:
    """The report as a small Markdown table (accuracy next to the length baseline)."""
    rows = [("pairs", report.get("n_pairs")), ("pairwise accuracy", report.get("accuracy")),
            ("length baseline (prefer the longer reply)", report.get("length_baseline_accuracy")),
            ("pairs whose chosen reply is the shorter", report.get("n_chosen_shorter")),
            ("accuracy on those pairs", report.get("accuracy_chosen_shorter")),
            ("mean margin r_chosen - r_rejected", report.get("mean_margin"))]
    return f"# {title}\n\n| figure | value |\n|---|---|\n" + "".join(f"| {k} | {v} |\n" for k, v in rows)


def run(cfg: RewardConfig) -> int:
    """CLI: check, encode the pairs, launch the workers, export ``final/`` and the held-out report."""
    from align.common import plot_curves, prepare_pair_inputs
    from align.data import load_encoded
    from align.pairs import pairs_sha256
    from align.reward import build_reward_model
    from pretrain.engine import launch, preflight, run_lock
    from pretrain.logging_utils import read_metrics
    from zhllama.artifacts import atomic_write_json, atomic_write_text

    with run_lock(cfg.run_dir, cfg.launch.node_rank):
        ds_config, resume = preflight(cfg)
        spec, train, held_out = prepare_pair_inputs(cfg)
        pad_id = spec["pad_id"]
        launch(cfg, ds_config, resume, task=TASK, task_spec=spec, exporter="align.train_reward:export_reward",
               identity={"pairs": pairs_sha256(train.pairs)}, meta={"inputs": {"pairs_train": pairs_sha256(train.pairs)}})
        if cfg.launch.node_rank != 0:
            return 0
        logs = Path(cfg.run_dir) / "logs"
        plot_curves(read_metrics(logs / "metrics.jsonl"), ["loss", "accuracy", "reward_margin", "eval_loss",
                                                          "eval_accuracy", "eval_length_baseline_accuracy"],
                    logs / "reward.png", f"reward model ({cfg.mode})")
        if not cfg.export:
            return 0
        final = Path(cfg.run_dir) / "final"
        if held_out is not None:
            model = build_reward_model(final, pad_token_id=pad_id).eval()
            report = held_out_report(model, load_encoded(spec["eval_pairs"]), pad_id)
            atomic_write_json(final / REPORT_NAME, report)
            atomic_write_text(final / "report.md", report_markdown(report, f"reward model {final} on held-out pairs"))
            print(f"held-out pairwise accuracy {report['accuracy']:.3f} (length baseline "
                  f"{report['length_baseline_accuracy']:.3f}; {report['n_chosen_shorter']} pairs with the shorter reply "
                  f"chosen: {report['accuracy_chosen_shorter']}) -> {final}")
    return 0
