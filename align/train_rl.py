"""``python -m align rl``: online RL (RLOO) of the SFT model against a reward, as a Task of the engine.

Each optimizer step, in :meth:`RlTask.micro_batches`: take the step's prompts (every prompt once per
epoch, a pure function of ``(seed, step, rank)``), sample ``samples_per_prompt`` replies each with
the *current* policy (seeded by ``(seed, step, rank, micro-step)``, so a resumed run samples what
the uninterrupted one did), score them (a reward model from ``python -m align reward``, or a rule),
penalise the KL to the reference, and compute leave-one-out advantages (:mod:`align.rl`). The
loss is then ``-A * log pi(reply)`` summed over the samples. The reference is the frozen SFT
model (full mode) or the policy with its LoRA adapter switched off (LoRA mode: no second copy).

Logged per step (``logs/metrics.jsonl``, TensorBoard, ``logs/rl.png``): ``reward``, ``kl``,
``reply_tokens``, ``stopped`` (share of replies that ended with EOS), ``entropy`` (nats/token).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.common import DATA_DIR_NAME, AlignConfig, step_items
from pretrain.engine import CausalLMTask
from sft.dialog import OnDelimiter
from zhllama import default_data_dir
from zhllama.cli import UserError

TASK = "align.train_rl:RlTask"
RL_CURVES = ("reward", "kl", "reply_tokens", "entropy", "stopped", "loss")


@dataclass
class PromptDataConfig:
    """Where the RL prompts come from: the ``prompt`` of preference pairs (``--prompts.KEY value``)."""

    files: list[Path] = field(default_factory=lambda: [default_data_dir() / "sft" / "pref_train.jsonl"])
    """Preference JSONL files; each valid pair's prompt is used once (duplicates counted)."""
    tiers: list[str] | None = field(default_factory=lambda: ["A"])
    """Keep records whose ``tier`` is listed; ``null`` keeps all."""
    on_delimiter: OnDelimiter = "reject"
    """A prompt with a chat-format delimiter or control-token text: ``reject`` or ``escape``."""
    max_prompt_tokens: int = 256
    """Older turns are dropped to fit (the system message stays); a longer last turn is rejected."""
    limit: int | None = None
    """Use only the first N prompts (after validation)."""


@dataclass
class RlConfig(AlignConfig):
    """``python -m align rl``: the engine's settings + prompts, reward, sampling and the KL penalty.

    ``micro_batch_size`` counts *prompts*; each brings ``samples_per_prompt`` sampled replies.
    """

    run_dir: Path = Path("artifacts/align/rl")
    """Where ``data/``, ``checkpoints/``, ``final/`` and ``logs/`` go."""
    prompts: PromptDataConfig = field(default_factory=PromptDataConfig)
    """The prompts to sample replies for."""
    reward: str = "artifacts/align/reward/final"
    """A reward model directory (``python -m align reward``) or ``rule:NAME`` (``rule:han_share``, ``rule:brevity``)."""
    samples_per_prompt: int = 4
    """Replies sampled per prompt (the RLOO group; >= 2)."""
    max_new_tokens: int = 64
    """Longest sampled reply (a reply cut here has no EOS; ``stopped`` reports the share that stopped)."""
    temperature: float = 1.0
    """Sampling temperature; the policy trained is ``softmax(logits / temperature)`` (no top-k/top-p: exact RL)."""
    kl_coef: float = 0.05
    """KL penalty per nat of ``log pi - log ref`` (sequence level); the optimum's KL is at most reward range / kl_coef."""
    reward_batch_size: int = 8
    """Sequences per reward-model forward pass."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be >= 2 (the leave-one-out baseline), got {self.samples_per_prompt}")
        if self.max_new_tokens < 1 or self.temperature <= 0 or self.kl_coef < 0:
            raise ValueError("need max_new_tokens >= 1, temperature > 0, kl_coef >= 0")


def load_prompts(cfg: PromptDataConfig, enc: Any) -> tuple[list[list[dict]], list[list[int]], Any]:
    """``(prompts, their chat ids, manifest)``: validated, deduplicated, fitted to ``max_prompt_tokens``
    (``enc``: an :class:`align.chat.ChatEncoder` in the SFT model's format)."""
    from align.prefs import drop_used, read_pairs
    from sft.chat_format import TooLongError

    pairs, manifest = read_pairs(cfg.files, cfg.tiers, cfg.on_delimiter)
    seen: set[str] = set()
    prompts, ids = [], []
    for pair in pairs:
        key = json.dumps(pair.prompt, ensure_ascii=False, sort_keys=True)
        if key in seen:
            drop_used(manifest, pair.pair_id, "duplicate_prompt")
            continue
        if cfg.limit is not None and len(prompts) >= cfg.limit:
            drop_used(manifest, pair.pair_id, "over_limit")
            continue
        try:
            p_ids, dropped = enc.fit_prompt(list(pair.prompt), cfg.max_prompt_tokens)
        except TooLongError:
            drop_used(manifest, pair.pair_id, "prompt_too_long")
            continue
        seen.add(key)
        manifest.notes["turns_dropped_by_truncation"] += dropped
        prompts.append(list(pair.prompt))
        ids.append(p_ids)
    manifest.check()
    if not prompts:
        raise UserError(f"no usable RL prompt in {[str(f) for f in cfg.files]} ({manifest.summary()})")
    return prompts, ids, manifest


class RlTask(CausalLMTask):
    """RLOO on the engine (see the module docstring)."""

    config_class = RlConfig

    def setup(self, engine: Any, rank: int, world_size: int) -> None:
        import torch

        from align.chat import chat_setup
        from align.rewards import make_scorer

        super().setup(engine, rank, world_size)
        self.engine = engine
        data = json.loads(Path(self.task_spec["prompts"]).read_text(encoding="utf-8"))
        self.prompts, self.prompt_ids = data["prompts"], data["prompt_ids"]
        self.tokenizer, _ = chat_setup(self.cfg.model_dir, self.cfg.tokenizer_dir)
        self.pad_id, self.eos_id = int(self.tokenizer.pad_token_id), int(self.tokenizer.eos_token_id)
        # Under ZeRO-3 every forward gathers parameters collectively: all ranks generate in lockstep.
        self.synced_gpus = engine.ds.zero_optimization_stage() == 3
        self.scorer = make_scorer(self.cfg.reward, self.pad_id, device=engine.device)
        if self.cfg.mode == "lora":
            self.reference = None  # the policy with its adapter disabled
        else:
            from pretrain.model import load_llama

            dtype = next(engine.module.parameters()).dtype
            self.reference = load_llama(self.cfg.model_dir, dtype=dtype).to(engine.device).eval()
            self.reference.requires_grad_(False)
        torch.manual_seed(self.cfg.seed)

    def micro_batches(self, step: int) -> list[dict]:
        import numpy as np

        from align.rl import make_rollouts, reference_scorer

        reference = reference_scorer(self.reference, self.engine.ds)
        out = []
        for micro, idx in enumerate(step_items(step, len(self.prompts), self.cfg, self.rank, self.world_size)):
            seed = int(np.random.SeedSequence([self.cfg.seed, step, self.rank, micro]).generate_state(1)[0])
            rollouts = make_rollouts(
                self.engine.ds, reference, self.scorer, [self.prompts[int(i)] for i in idx],
                [self.prompt_ids[int(i)] for i in idx], self._decode, samples_per_prompt=self.cfg.samples_per_prompt,
                max_new_tokens=self.cfg.max_new_tokens, kl_coef=self.cfg.kl_coef, eos_id=self.eos_id,
                pad_id=self.pad_id, temperature=self.cfg.temperature, seed=seed, synced_gpus=self.synced_gpus)
            out.append(rollouts.batch)
        return out

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def units(self, batch: dict) -> int:
        return int(batch["advantages"].shape[0])

    def loss(self, engine: Any, batch: dict) -> tuple[Any, Any, dict]:
        from align.rl import rollout_loss

        return rollout_loss(engine.ds, batch, self.cfg.temperature)


def run(cfg: RlConfig) -> int:
    """CLI: check, read the prompts, launch the workers, finish ``final/``, draw ``logs/rl.png``."""
    from align.chat import chat_setup
    from align.common import plot_curves
    from pretrain.engine import launch, preflight, run_lock
    from pretrain.logging_utils import read_metrics
    from zhllama.artifacts import atomic_write_json, sha256_bytes

    if not cfg.reward.startswith("rule:") and not (Path(cfg.reward) / "config.json").is_file():
        raise UserError(f"reward {cfg.reward!r}: not a reward model directory (run `make reward` first) "
                        "and not rule:NAME")
    with run_lock(cfg.run_dir, cfg.launch.node_rank):
        ds_config, resume = preflight(cfg)
        _, encoder = chat_setup(cfg.model_dir, cfg.tokenizer_dir)
        prompts, ids, manifest = load_prompts(cfg.prompts, encoder)
        data_dir = Path(cfg.run_dir) / DATA_DIR_NAME
        payload = json.dumps({"prompts": prompts, "prompt_ids": ids}, ensure_ascii=False)
        atomic_write_json(data_dir / "prompts.json", json.loads(payload))
        atomic_write_json(data_dir / "manifest.json", manifest.to_dict())
        print(f"prompts: {manifest.summary()}")
        key = sha256_bytes(payload.encode())
        launch(cfg, ds_config, resume, task=TASK, task_spec={"prompts": str(data_dir / "prompts.json")},
               identity={"prompts": key}, meta={"inputs": {"prompts": key}}, exporter="align.chat:export_chat_policy")
        if cfg.launch.node_rank != 0:
            return 0
        logs = Path(cfg.run_dir) / "logs"
        records = read_metrics(logs / "metrics.jsonl")
        plot_curves(records, RL_CURVES, logs / "rl.png", f"RLOO ({cfg.mode}, kl_coef {cfg.kl_coef}, reward {cfg.reward})")
        steps = [r for r in records if "reward" in r]
        if steps:
            print(f"RL: reward {steps[0]['reward']:.3f} -> {steps[-1]['reward']:.3f}, KL {steps[-1]['kl']:.3f} nats, "
                  f"reply {steps[-1]['reply_tokens']:.1f} tokens; curves in {logs / 'rl.png'}")
    return 0
