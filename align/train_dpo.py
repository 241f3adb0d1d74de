"""``python -m align dpo``: direct preference optimisation of the SFT model, as a Task of the engine.

The launcher (:func:`run`) reads and encodes the pairs once (``run_dir/data/``), computes the
reference model's log-probabilities once and caches them (``cache_dir/ref-<key>/``; skipped with
``reference: adapter_disabled`` in LoRA mode, where the reference is the policy with its adapter
switched off), then launches :class:`DpoTask` on the shared engine:

- ``micro_batches(step)``: the step's pairs (every pair once per epoch, a pure function of
  ``(seed, step, rank)``), padded as ``[chosen rows; rejected rows]`` with their reference log-probs;
- ``loss``: the DPO loss summed over the batch's pairs (the engine divides by the step's pairs),
  plus sums of the implicit rewards, margins and accuracy (logged per pair);
- ``evaluate``: loss, implicit-reward accuracy and margin on the held-out pairs, next to the
  length baseline of the same pairs.

``final/`` is the policy (merged for LoRA) with the chat tokenizer: ``python -m sft chat --model``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from align.common import PairStageConfig, step_items
from align.dpo import DpoLossType
from pretrain.engine import CausalLMTask

TASK = "align.train_dpo:DpoTask"


@dataclass
class DpoConfig(PairStageConfig):
    """``python -m align dpo``: the engine's settings + the preference data and the DPO loss."""

    run_dir: Path = Path("artifacts/align/dpo")
    """Where ``data/``, ``checkpoints/``, ``final/`` and ``logs/`` go."""
    beta: float = 0.1
    """Strength of the implicit KL constraint: larger keeps the policy closer to the reference."""
    loss_type: DpoLossType = "sigmoid"
    """``sigmoid`` (DPO), ``ipo`` or ``sigmoid_norm`` (length-normalised: log-probs averaged per reply token)."""
    label_smoothing: float = 0.0
    """cDPO: the share of preference labels assumed flipped (sigmoid losses only)."""
    reference: Literal["cached", "adapter_disabled"] = "cached"
    """``cached``: reference log-probs computed once before training; ``adapter_disabled`` (LoRA only):
    the policy with its adapter switched off, recomputed at every step."""
    cache_dir: Path = Path("artifacts/cache")
    """Root of the reference log-prob cache (keyed by reference model hash + encoded pairs hash)."""
    ref_batch_pairs: int = 8
    """Pairs per forward pass when computing the reference cache."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.reference == "adapter_disabled" and self.mode != "lora":
            raise ValueError("reference: adapter_disabled needs mode: lora (the reference is the base under the adapter)")


def pair_tensors(pairs: list, ref: Any, index: Any, pad_id: int) -> dict[str, Any]:
    """A micro-batch: :func:`~align.pairs.pair_batch` + reply lengths (+ reference log-probs when cached)."""
    import torch

    from align.pairs import pair_batch

    chosen = [pairs[int(i)] for i in index]
    batch = pair_batch(chosen, pad_id)
    batch["chosen_tokens"] = torch.tensor([len(p.chosen_ids) for p in chosen], dtype=torch.float32)
    batch["rejected_tokens"] = torch.tensor([len(p.rejected_ids) for p in chosen], dtype=torch.float32)
    batch["chosen_chars"] = torch.tensor([p.chosen_chars for p in chosen], dtype=torch.float32)
    batch["rejected_chars"] = torch.tensor([p.rejected_chars for p in chosen], dtype=torch.float32)
    if ref is not None:
        rc, rr = ref.take(index)
        batch["ref_chosen"] = torch.from_numpy(rc).float()
        batch["ref_rejected"] = torch.from_numpy(rr).float()
    return batch


class DpoTask(CausalLMTask):
    """The DPO Task (see the module docstring); the policy model is the engine's causal LM."""

    config_class = DpoConfig

    def setup(self, engine: Any, rank: int, world_size: int) -> None:
        import numpy as np

        from align.data import load_encoded
        from align.refcache import RefLogps

        super().setup(engine, rank, world_size)
        spec = self.task_spec
        self.pad_id = int(spec["pad_id"])
        self.pairs = load_encoded(spec["train_pairs"])
        self.eval_pairs = load_encoded(spec["eval_pairs"]) if spec.get("eval_pairs") else []

        def ref(path: str | None) -> RefLogps | None:
            if not path:
                return None
            d = np.load(path)
            return RefLogps(d["chosen"], d["rejected"])

        self.ref, self.eval_ref = ref(spec.get("train_ref")), ref(spec.get("eval_ref"))

    def micro_batches(self, step: int) -> list[dict]:
        return [pair_tensors(self.pairs, self.ref, idx, self.pad_id)
                for idx in step_items(step, len(self.pairs), self.cfg, self.rank, self.world_size)]

    def units(self, batch: dict) -> int:
        return int(batch["chosen_tokens"].shape[0])

    def _dpo(self, engine: Any, batch: dict) -> Any:
        from align.dpo import dpo_loss
        from align.refcache import live_ref_logps, pair_logps

        pc, pr = pair_logps(engine.ds, batch)
        if "ref_chosen" in batch:
            rc, rr = batch["ref_chosen"], batch["ref_rejected"]
        else:
            rc, rr = live_ref_logps(engine.ds, batch)
        return dpo_loss(pc, pr, rc, rr, self.cfg.beta, self.cfg.loss_type, batch["chosen_tokens"],
                        batch["rejected_tokens"], self.cfg.label_smoothing)

    def loss(self, engine: Any, batch: dict) -> tuple[Any, Any, dict]:
        out = self._dpo(engine, batch)
        margins = out.margins
        return out.losses.sum(), len(margins), {
            "reward_accuracy": (margins > 0).sum(), "reward_margin": margins.sum(),
            "chosen_reward": out.chosen_rewards.sum(), "rejected_reward": out.rejected_rewards.sum()}

    def evaluate(self, engine: Any) -> dict:
        """Held-out: DPO loss, implicit-reward accuracy and margin, and the length baseline (per pair)."""
        from align.dpo import preference_hits
        from sft.evaluate import eval_chunks

        if not self.eval_pairs:
            return {}
        sums = [0.0] * 5
        for idx, counted in eval_chunks(len(self.eval_pairs), self.cfg.micro_batch_size, self.rank, self.world_size):
            batch = {k: v.to(engine.device) for k, v in pair_tensors(self.eval_pairs, self.eval_ref, idx, self.pad_id).items()}
            out = self._dpo(engine, batch)
            if counted:
                m = out.margins
                longer = batch["chosen_chars"] - batch["rejected_chars"]
                sums = [a + float(b) for a, b in zip(sums, (
                    out.losses.sum(), preference_hits(m / self.cfg.beta).sum(), m.sum(),
                    ((longer > 0).double() + 0.5 * (longer == 0).double()).sum(), len(m)), strict=True)]
        loss, acc, margin, length, n = engine.all_reduce_sum(sums)
        return {"loss": loss / n, "pref_accuracy": acc / n, "reward_margin": margin / n,
                "length_baseline_accuracy": length / n}


def run(cfg: DpoConfig) -> int:
    """CLI: check, encode the pairs, cache the reference log-probs, launch the workers, finish ``final/``."""
    from align.common import plot_curves, prepare_pair_inputs
    from align.pairs import pairs_sha256
    from align.refcache import load_or_compute
    from pretrain.engine import launch, preflight, run_lock
    from pretrain.logging_utils import read_metrics

    with run_lock(cfg.run_dir, cfg.launch.node_rank):
        ds_config, resume = preflight(cfg)
        spec, train, held_out = prepare_pair_inputs(cfg)
        pad_id = spec["pad_id"]
        if cfg.reference == "cached":
            for name, data in (("train", train), ("eval", held_out)):
                if data is None:
                    continue
                _, entry, hit = load_or_compute(cfg.cache_dir, cfg.model_dir, data.pairs, pad_id, cfg.ref_batch_pairs)
                spec[f"{name}_ref"] = str(entry / "ref_logps.npz")
                print(f"reference log-probs ({name}): {'cached' if hit else 'computed'} in {entry}")
        launch(cfg, ds_config, resume, task=TASK, task_spec=spec, identity={"pairs": pairs_sha256(train.pairs)},
               meta={"inputs": {"pairs_train": pairs_sha256(train.pairs)}}, exporter="align.chat:export_chat_policy")
        logs = Path(cfg.run_dir) / "logs"
        plot_curves(read_metrics(logs / "metrics.jsonl"),
                    ["loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward",
                     "eval_loss", "eval_pref_accuracy"], logs / "dpo.png", f"DPO ({cfg.loss_type}, beta {cfg.beta})")
    return 0
