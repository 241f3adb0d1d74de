"""The shared engine: token-weighted steps whatever the split, optimizer groups, and the Task contract.

The DeepSpeed test launches the real engine (``launch`` -> deepspeed launcher -> ``pretrain.worker``)
with :class:`tests.pretrain.engine_tasks.VarLenTask`, whose sequences have unequal lengths, so a
mean of per-micro-batch means would differ from the token-weighted mean.
"""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from pretrain.engine import CausalLMTask, EngineConfig, Task, launch, preflight, run_lock
from pretrain.engine.loop import decays, param_groups
from tests.pretrain.engine_tasks import pad, step_sequences
from zhllama.config import load_config

TASK = "tests.pretrain.engine_tasks:VarLenTask"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_causal_lm_task_satisfies_the_protocol_and_counts_shifted_tokens():
    task = CausalLMTask(EngineConfig(), {})
    assert isinstance(task, Task)
    batch = pad([np.array([5, 6, 7, 8]), np.array([9, 10])])
    # predicted tokens: 3 of the first sequence, 1 of the second (the first token is never predicted)
    assert task.units(batch) == 4


def test_weight_decay_only_on_matrices_never_on_norms_or_biases(tiny_llama_dir):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir)
    model.model.layers[0].self_attn.q_proj.bias = torch.nn.Parameter(torch.zeros(64))  # a bias to classify
    groups, names = param_groups(model, weight_decay=0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    by_name = dict(model.named_parameters())
    assert sum(len(g["params"]) for g in groups) == len(by_name)
    for name, p in by_name.items():
        expected = p.ndim >= 2  # the Llama's norms and the bias are its only 1-D parameters
        assert (name in names["decay"]) == expected, name
        assert any(q is p for q in groups[0 if expected else 1]["params"]), name
    assert {n for n in names["no_decay"] if "norm" in n} and "model.layers.0.self_attn.q_proj.bias" in names["no_decay"]
    # A norm stored as a matrix (e.g. a ZeRO-3 partition knows its real shape; here a 2-D norm) never decays.
    assert not decays("model.layers.0.input_layernorm.weight", (1, 64))
    assert decays("model.embed_tokens.weight", (32000, 64))


@pytest.fixture(scope="module")
def split_runs(tmp_path_factory, tiny_llama_dir, base_tokenizer_dir) -> dict:
    """One global batch of 4 sequences per step, split three ways: 4 x 1, 1 x 4, 2 ranks x (2 x 1)."""
    root = tmp_path_factory.mktemp("engine_split")
    runs = {}
    for name, (nproc, micro, accum) in {"accum4_micro1": (1, 1, 4), "accum1_micro4": (1, 4, 1),
                                        "ranks2_accum2": (2, 1, 2)}.items():
        cfg = load_config(EngineConfig, None, {
            "model_dir": str(tiny_llama_dir), "tokenizer_dir": str(base_tokenizer_dir), "run_dir": str(root / name),
            "nproc": nproc, "micro_batch_size": micro, "grad_accum_steps": accum, "max_steps": 2,
            "warmup_steps": 0, "lr": 1e-3, "save_every_steps": 2, "export": False,
            "launch": {"master_port": free_port()}})
        with run_lock(cfg.run_dir):
            ds_config, resume = preflight(cfg)
            records = launch(cfg, ds_config, resume, task=TASK)
        runs[name] = {"records": records, "ckpt": root / name / "checkpoints"}
    return runs


@pytest.mark.deepspeed
@pytest.mark.slow
def test_token_weighted_step_is_the_same_whatever_the_split(split_runs, tiny_llama_dir):
    from transformers import LlamaForCausalLM

    from pretrain.export import consolidated_state_dict

    # Reference, built independently: sum of next-token losses of step 0's 4 sequences / their tokens.
    model = LlamaForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    batch = pad(step_sequences(seed=0, step=0, n=4))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    targets = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                            ignore_index=-100, reduction="sum")
    n_tokens = int((targets != -100).sum())
    (nll / n_tokens).backward()
    ref_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters())).item()

    first = {name: r["records"][0] for name, r in split_runs.items()}
    for name, rec in first.items():
        assert rec["units"] == n_tokens, name
        assert rec["loss"] == pytest.approx(nll.item() / n_tokens, rel=1e-5), name
        assert rec["grad_norm"] == pytest.approx(ref_norm, rel=1e-4), name
    # Same data, same gradients: the second step's figures and the trained weights agree too.
    base = split_runs["accum1_micro4"]
    weights = consolidated_state_dict(base["ckpt"])
    for name, run in split_runs.items():
        assert [r["loss"] for r in run["records"]] == pytest.approx([r["loss"] for r in base["records"]], rel=1e-5)
        assert [r["grad_norm"] for r in run["records"]] == pytest.approx(
            [r["grad_norm"] for r in base["records"]], rel=1e-4)
        other = consolidated_state_dict(run["ckpt"])
        assert other.keys() == weights.keys()
        for key in weights:
            assert torch.allclose(other[key], weights[key], atol=2e-6), (name, key)
