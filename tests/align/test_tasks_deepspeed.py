"""Reward, DPO and RL as Tasks of the shared engine: real 2-process DeepSpeed on CPU, tiny Llama, few steps.

Six launches share the work: reward model (full, ZeRO-3), DPO with the cached reference (full,
ZeRO-2) and with the adapter-disabled reference (LoRA, ZeRO-3), RL with a rule reward (full,
ZeRO-2) and its resume from a middle checkpoint, RL with the trained reward model (LoRA, ZeRO-3),
then ``compare`` on what they exported.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from pretrain.logging_utils import read_metrics
from tests.pretrain.test_engine import free_port
from zhllama.config import load_config

pytestmark = [pytest.mark.deepspeed, pytest.mark.slow]

MAX_SEQ = 64


@pytest.fixture(scope="module")
def pref_files(tmp_path_factory, data_dir) -> dict[str, Path]:
    """12 tier-A single-turn training pairs (short prompts) + one with identical replies; 4 held-out pairs."""
    root = tmp_path_factory.mktemp("pref")
    rows = [json.loads(x) for x in (data_dir / "sft" / "pref_train.jsonl").read_text(encoding="utf-8").splitlines()]
    short = [r for r in rows if r["tier"] == "A" and len(r["prompt"]) == 1 and len(r["prompt"][0]["content"]) < 30]
    train = short[:12]
    bad = {**train[0], "id": "bad", "rejected": train[0]["chosen"]}
    held = [json.loads(x) for x in (data_dir / "sft" / "pref_heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    files = {"train": root / "train.jsonl", "eval": root / "eval.jsonl"}
    files["train"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in [*train, bad]), encoding="utf-8")
    held = [h for h in held if h["tier"] == "A"][:4]
    files["eval"].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in held), encoding="utf-8")
    return files


def run_stage(command: str, model_dir: Path, run_dir: Path, **overrides):
    """``python -m align COMMAND`` in-process (the workers are real DeepSpeed processes); returns the records."""
    from align.__main__ import COMMANDS
    from zhllama.cli import import_object

    config_spec, run_spec, _ = COMMANDS[command]
    cls, run = import_object(config_spec), import_object(run_spec)
    base = {"model_dir": str(model_dir), "tokenizer_dir": str(model_dir), "run_dir": str(run_dir), "nproc": 2,
            "warmup_steps": 0, "save_every_steps": 100, "launch": {"master_port": free_port()}}
    cfg = load_config(cls, None, _merge(base, overrides))
    assert run(cfg) == 0
    return read_metrics(run_dir / "logs" / "metrics.jsonl")


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def pref_data(files: dict, eval_files: bool = True) -> dict:
    return {"data": {"train_files": [str(files["train"])], "eval_files": [str(files["eval"])] if eval_files else [],
                     "max_seq_len": MAX_SEQ}}


def train_steps(records: list[dict]) -> list[dict]:
    return [r for r in records if "loss" in r]


@pytest.fixture(scope="module")
def reward_run(tmp_path_factory, tiny_llama_dir, pref_files) -> Path:
    run_dir = tmp_path_factory.mktemp("reward") / "run"
    run_stage("reward", tiny_llama_dir, run_dir, mode="full", deepspeed_config="configs/deepspeed/zero3.json",
              max_steps=2, lr=1e-3, eval_every_steps=2, **pref_data(pref_files))
    return run_dir


def test_reward_model_full_zero3_exports_an_auto_loadable_model_and_a_report(reward_run, tiny_llama_dir):
    from transformers import AutoModelForSequenceClassification

    steps = train_steps(read_metrics(reward_run / "logs" / "metrics.jsonl"))
    assert [r["step"] for r in steps] == [1, 2] and all(r["units"] == 4 for r in steps)  # 2 ranks x 2 pairs
    assert all(0.0 <= r["accuracy"] <= 1.0 and math.isfinite(r["loss"]) for r in steps)
    assert list((reward_run / "checkpoints").glob("global_step*"))  # DeepSpeed really ran
    manifest = json.loads((reward_run / "data" / "manifest.json").read_text())["train"]
    assert manifest["read"] == 13 and manifest["rejected"] == {"identical_replies": 1}
    final = reward_run / "final"
    model = AutoModelForSequenceClassification.from_pretrained(final)
    assert type(model).__name__ == "LlamaForSequenceClassification" and model.config.num_labels == 1
    # The transformer moved from the SFT weights; the score head is new (loaded sharded under ZeRO-3).
    from transformers import AutoModelForCausalLM

    start = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).model.layers[0].mlp.up_proj.weight
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, start)
    assert model.score.weight.shape == (1, 64) and model.score.weight.abs().sum() > 0
    report = json.loads((final / "report.json").read_text())
    assert report["n_pairs"] == 4 and {"accuracy", "length_baseline_accuracy", "accuracy_chosen_shorter"} <= set(report)
    assert (final / "chat_template.jinja").is_file() and (reward_run / "logs" / "reward.png").is_file()


def _chat_ready(final: Path):
    """The export serves chat: its template gives Meta's prompt ids, and it loads as a causal LM."""
    from transformers import AutoModelForCausalLM

    from align.chat import ChatEncoder
    from sft.chat_tokenizer import load_chat_tokenizer

    tok = load_chat_tokenizer(final)
    messages = [{"role": "system", "content": "简短回答。"}, {"role": "user", "content": "你好，请介绍一下自己。"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert list(ids) == ChatEncoder(tok).prompt_ids(messages)
    model = AutoModelForCausalLM.from_pretrained(final)
    assert model.generation_config.eos_token_id == tok.eos_token_id
    return model


def test_dpo_full_zero2_cached_reference_starts_at_ln2(tmp_path, tiny_llama_dir, pref_files):
    cache = tmp_path / "cache"
    records = run_stage("dpo", tiny_llama_dir, tmp_path / "dpo", max_steps=3, lr=1e-3, cache_dir=str(cache),
                        eval_every_steps=3, **pref_data(pref_files))
    steps = train_steps(records)
    # The policy starts as the reference: the first step's loss is exactly ln 2, margins 0.
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5) and abs(steps[0]["reward_margin"]) < 1e-5
    assert steps[-1]["loss"] < steps[0]["loss"]  # it learns the training pairs
    evals = [r for r in records if "eval_pref_accuracy" in r]
    # Held-out at step 0: policy == reference, every margin 0 up to float noise of the padding.
    assert evals[0]["eval_loss"] == pytest.approx(math.log(2), abs=1e-5) and abs(evals[0]["eval_reward_margin"]) < 1e-4
    assert len(list(cache.glob("ref-*"))) == 2  # train and held-out pairs, computed once each
    _chat_ready(tmp_path / "dpo" / "final")


def test_dpo_lora_zero3_adapter_disabled_reference_starts_at_ln2(tmp_path, tiny_llama_dir, pref_files):
    records = run_stage("dpo", tiny_llama_dir, tmp_path / "dpo", mode="lora", reference="adapter_disabled",
                        deepspeed_config="configs/deepspeed/zero3.json", max_steps=2, lr=1e-3,
                        cache_dir=str(tmp_path / "cache"), **pref_data(pref_files, eval_files=False))
    steps = train_steps(records)
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert not (tmp_path / "cache").exists()  # no reference cache needed
    model = _chat_ready(tmp_path / "dpo" / "final")
    assert not any("lora" in k for k in model.state_dict()) and (tmp_path / "dpo" / "final" / "adapter").is_dir()


@pytest.fixture(scope="module")
def rl_run(tmp_path_factory, stopping_llama_dir, pref_files) -> dict:
    """RL with a known reward (``rule:brevity``), 3 steps, checkpoints at 2 and 3; then resumed from 2."""
    run_dir = tmp_path_factory.mktemp("rl") / "run"
    settings = dict(reward="rule:brevity", max_steps=3, save_every_steps=2, lr=5e-4, kl_coef=0.1,
                    samples_per_prompt=4, max_new_tokens=12, micro_batch_size=1,
                    prompts={"files": [str(pref_files["train"])], "max_prompt_tokens": 48})
    first = run_stage("rl", stopping_llama_dir, run_dir, **settings)
    (run_dir / "checkpoints" / "latest").write_text("global_step2")  # as if killed after step 2
    resumed = run_stage("rl", stopping_llama_dir, run_dir, resume=True, **settings)
    return {"first": train_steps(first), "resumed": train_steps(resumed), "run_dir": run_dir}


def test_rl_known_reward_rises_while_kl_stays_under_its_bound(rl_run):
    from align.rl import kl_bound

    steps = rl_run["first"]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(r["units"] == 8 for r in steps)  # 2 ranks x 1 x 4
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert steps[-1]["reward"] > steps[0]["reward"] + 0.1 and steps[-1]["reply_tokens"] < steps[0]["reply_tokens"]
    assert all(r["kl"] <= kl_bound(1.0, 0.1) for r in steps)
    assert all(math.isfinite(r["entropy"]) for r in steps)
    logs = rl_run["run_dir"] / "logs"
    assert (logs / "rl.png").is_file() and list(logs.glob("events.out.tfevents*"))


def test_rl_resumed_from_a_middle_checkpoint_samples_and_learns_as_the_uninterrupted_run(rl_run):
    first = {r["step"]: r for r in rl_run["first"]}
    resumed = {r["step"]: r for r in rl_run["resumed"]}
    assert sorted(resumed) == [1, 2, 3]  # the record after step 2 was replaced, not duplicated
    for step in (3,):
        for key in ("loss", "reward", "kl", "reply_tokens"):
            assert resumed[step][key] == pytest.approx(first[step][key], rel=1e-5, abs=1e-6), (step, key)


def test_rl_with_the_trained_reward_model_lora_zero3_and_compare(tmp_path, tiny_llama_dir, reward_run, pref_files,
                                                                 rl_run):
    from align.compare import CompareConfig, run

    records = run_stage("rl", tiny_llama_dir, tmp_path / "rl", mode="lora", deepspeed_config="configs/deepspeed/zero3.json",
                        reward=str(reward_run / "final"), max_steps=1, lr=1e-3, samples_per_prompt=2, max_new_tokens=6,
                        micro_batch_size=1, prompts={"files": [str(pref_files["train"])], "max_prompt_tokens": 48})
    (step,) = train_steps(records)
    assert math.isfinite(step["reward"]) and step["units"] == 4
    _chat_ready(tmp_path / "rl" / "final")
    cfg = load_config(CompareConfig, None, {
        "policies": [str(tmp_path / "rl" / "final"), str(rl_run["run_dir"] / "final")], "sft_model": str(tiny_llama_dir),
        "reward_model": str(reward_run / "final"), "pairs": [str(pref_files["eval"])], "max_seq_len": MAX_SEQ,
        "generation": {"max_new_tokens": 6}, "out_dir": str(tmp_path / "compare"), "device": "cpu"})
    assert run(cfg) == 0
    report = json.loads((tmp_path / "compare" / "report.json").read_text())
    sft, *policies = report["models"]
    assert sft["win_rate_vs_sft"] == 0.5 and sft["implicit_pref_accuracy"] == 0.5  # the baseline against itself
    assert len(policies) == 2 and all(0 <= p["win_rate_vs_sft"] <= 1 for p in policies)
    assert report["reward_model"]["n_pairs"] == 4 and (tmp_path / "compare" / "compare.png").is_file()
