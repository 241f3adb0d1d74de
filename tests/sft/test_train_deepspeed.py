"""Real ``python -m sft train`` runs (DeepSpeed on CPU, tiny Llama over a resized vocabulary).

Five launches share the work:

- the same SFT step split three ways (accumulation 4 x micro 1, 1 x 4, 2 ranks x 2), checked
  against a reference built here without packing: the packed rows' loss is the token-weighted
  mean over the step's conversations;
- the 2-rank run is exported (chat tokenizer + generation config) and resumed in a new process;
- the 1 x 4 run trains on until EOS is learned: greedy answers to training prompts stop in time;
- LoRA under ZeRO-3: the merged export equals the adapter reloaded onto the resized base.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import save_tiny_llama
from tests.pretrain.test_train_deepspeed import env, free_port, logits, metrics
from zhllama import REPO_ROOT

pytestmark = [pytest.mark.deepspeed, pytest.mark.slow]

ANSWERS = ["好的。", "北京。", "四。", "是的，没错。", "hello", "谢谢！", "不知道。", "三点。", "红色。", "明天见。",
           "可以。", "再见。"]
COMMON = ["--data.max_seq_len", "48", "--data.tiers", "[A]", "--warmup_steps", "3", "--lr", "0.01",
          "--eval_every_steps", "0", "--weight_decay", "0.0"]


def run_sft(inputs: dict, run_dir: Path, *extra: str, config: str = "configs/sft/train.yaml") -> str:
    argv = [sys.executable, "-m", "sft", "train", "--config", config, "--model_dir", str(inputs["model_dir"]),
            "--tokenizer_dir", str(inputs["tokenizer_dir"]), "--data.train_files", str(inputs["train"]),
            "--data.eval_files", str(inputs["train"]), "--run_dir", str(run_dir), *COMMON, *extra,
            "--launch.master_port", str(free_port())]
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"sft train failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, extended_tokenizer_dir) -> dict:
    """A resized model (tiny Llama, extended vocabulary padded to 64, tokenizer beside it) + chat data."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("sft_inputs")
    rows = -(-len(AutoTokenizer.from_pretrained(str(extended_tokenizer_dir))) // 64) * 64
    model_dir = save_tiny_llama(root / "base", extended_tokenizer_dir, vocab_size=rows)
    train = root / "train.jsonl"
    records = [{"id": f"c{i}", "tier": "A", "messages": [{"role": "user", "content": f"第{i}个问题：{a[0]}？"},
                                                         {"role": "assistant", "content": a}]}
               for i, a in enumerate(ANSWERS)]
    records.append({"id": "b", "tier": "B", "messages": records[0]["messages"]})  # filtered out by tier
    train.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return {"model_dir": model_dir, "tokenizer_dir": extended_tokenizer_dir, "train": train, "root": root,
            "records": records}


@pytest.fixture(scope="module")
def split_runs(inputs) -> dict:
    """Steps of 4 packed rows: 4 x 1 and 2 ranks x 2 run 2 steps; 1 x 4 runs 40 (EOS), same warmup."""
    runs = {}
    for name, (nproc, micro, accum, steps) in {"accum4_micro1": (1, 1, 4, 2), "ranks2_accum2": (2, 1, 2, 2),
                                               "accum1_micro4": (1, 4, 1, 40)}.items():
        run_dir = inputs["root"] / name
        out = run_sft(inputs, run_dir, "--nproc", str(nproc), "--micro_batch_size", str(micro),
                      "--grad_accum_steps", str(accum), "--max_steps", str(steps),
                      "--save_every_steps", "1" if name == "ranks2_accum2" else "1000",
                      "--export", "true" if name != "accum4_micro1" else "false")
        runs[name] = {"dir": run_dir, "records": [r for r in metrics(run_dir) if "loss" in r], "out": out}
    return runs


def test_a_step_is_token_weighted_whatever_the_split(split_runs, inputs):
    """Warmup >= 2, so the first two steps' learning rates do not depend on max_steps."""
    from transformers import LlamaForCausalLM

    from pretrain.train import step_blocks
    from sft.data import load_tokenized

    examples, rows = load_tokenized(inputs["root"] / "ranks2_accum2" / ".launch" / "sft_train.node0.npz")
    assert len(rows) >= 4 and len({sum(examples[i].n_labels for i in r) for r in rows}) > 1  # unequal rows
    # Reference without packing: each conversation alone, summed, divided by the step's labelled tokens.
    model = LlamaForCausalLM.from_pretrained(inputs["model_dir"], dtype=torch.float32)
    nll, n = torch.zeros((), dtype=torch.float64), 0
    with torch.no_grad():
        for r in step_blocks(0, len(rows), 4, seed=0):
            for i in rows[int(r)]:
                ids = torch.as_tensor(examples[i].input_ids)[None]
                labels = torch.as_tensor(examples[i].labels)[None]
                lg = model(input_ids=ids).logits[:, :-1]
                nll += torch.nn.functional.cross_entropy(lg.reshape(-1, lg.shape[-1]), labels[:, 1:].reshape(-1),
                                                         ignore_index=-100, reduction="sum").double()
                n += int((labels[:, 1:] != -100).sum())
    firsts = {name: run["records"][0] for name, run in split_runs.items()}
    for name, rec in firsts.items():
        assert rec["units"] == n, name
        assert rec["loss"] == pytest.approx(float(nll) / n, rel=1e-5), name
    base = split_runs["accum1_micro4"]["records"][:2]
    for name, run in split_runs.items():
        assert [r["loss"] for r in run["records"][:2]] == pytest.approx([r["loss"] for r in base], rel=1e-5), name
        assert [r["grad_norm"] for r in run["records"][:2]] == pytest.approx([r["grad_norm"] for r in base], rel=1e-4)


def test_the_manifest_counts_every_record(split_runs, inputs):
    manifest = json.loads((split_runs["ranks2_accum2"]["dir"] / "data_manifest.json").read_text())["train"]
    assert manifest["read"] == len(inputs["records"]) == manifest["used"] + manifest["rejected_total"]
    assert manifest["rejected"] == {"tier_not_selected": 1}
    assert f"read {len(inputs['records'])} = used {len(ANSWERS)} + rejected 1" in split_runs["ranks2_accum2"]["out"]


def test_export_is_a_chat_model_with_template_and_eos(split_runs, inputs, random_dialogs):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from sft.chat_format import HFTextEncoder, encode_prompt
    from sft.templates import LLAMA2, model_chat_format

    final = split_runs["ranks2_accum2"]["dir"] / "final"
    assert (final / "chat_format.json").is_file() and model_chat_format(final) == LLAMA2
    tok = AutoTokenizer.from_pretrained(str(final))
    assert GenerationConfig.from_pretrained(str(final)).eos_token_id == tok.eos_token_id == 2
    enc = HFTextEncoder(AutoTokenizer.from_pretrained(str(inputs["tokenizer_dir"])))
    for dialog in random_dialogs(5, seed=31, end="user"):
        assert tok.apply_chat_template(dialog, add_generation_prompt=True)["input_ids"] == encode_prompt(dialog, enc)
    model = AutoModelForCausalLM.from_pretrained(str(final))
    ids = torch.tensor([encode_prompt([{"role": "user", "content": "你好"}], enc)])
    base = AutoModelForCausalLM.from_pretrained(str(inputs["model_dir"]))
    assert not torch.allclose(logits(model, ids), logits(base, ids), atol=1e-3)  # it trained


def test_resume_in_a_new_process_reproduces_the_losses(split_runs, inputs):
    src = split_runs["ranks2_accum2"]["dir"]
    run_dir = inputs["root"] / "resumed"
    shutil.copytree(src, run_dir)
    (run_dir / "checkpoints" / "latest").write_text("global_step1")
    shutil.rmtree(run_dir / "checkpoints" / "global_step2")
    out = run_sft(inputs, run_dir, "--nproc", "2", "--micro_batch_size", "1", "--grad_accum_steps", "2",
                  "--max_steps", "2", "--save_every_steps", "1", "--export", "false", "--resume")
    assert "steps 1->2" in out
    before = [r["loss"] for r in split_runs["ranks2_accum2"]["records"]]
    after = [r["loss"] for r in metrics(run_dir) if "loss" in r]
    assert after == pytest.approx(before, abs=1e-5)
    # Other data is another run: refused before any worker starts.
    other = inputs["root"] / "other.jsonl"
    other.write_text(inputs["train"].read_text(encoding="utf-8").replace("好的。", "好的好的。"), encoding="utf-8")
    manifest_before = (run_dir / "data_manifest.json").read_text()
    argv = [sys.executable, "-m", "sft", "train", "--config", "configs/sft/train.yaml", "--model_dir",
            str(inputs["model_dir"]), "--tokenizer_dir", str(inputs["tokenizer_dir"]), "--data.train_files", str(other),
            "--run_dir", str(run_dir), *COMMON, "--nproc", "2", "--micro_batch_size", "1", "--grad_accum_steps", "2",
            "--max_steps", "3", "--resume"]
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 2 and "sft_data" in proc.stdout and "data order would differ" in proc.stdout
    assert (run_dir / "data_manifest.json").read_text() == manifest_before  # nothing written


def test_eos_is_learned_greedy_answers_stop_in_time(split_runs, inputs, tmp_path):
    from transformers import AutoTokenizer

    from sft.chat_format import HFTextEncoder, encode_dialog
    from sft.generate import GenerateConfig, GenerationSettings
    from sft.generate import run as generate_run

    run = split_runs["accum1_micro4"]
    assert run["records"][-1]["loss"] < 0.5 * run["records"][0]["loss"]
    out = tmp_path / "gen.jsonl"
    generate_run(GenerateConfig(model=run["dir"] / "final", input=inputs["train"], output=out, device="cpu",
                                tiers=["A"], generation=GenerationSettings(max_new_tokens=24)))
    enc = HFTextEncoder(AutoTokenizer.from_pretrained(str(inputs["tokenizer_dir"])))
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(ANSWERS)
    for r in rows:
        trained = encode_dialog(r["messages"] + [{"role": "assistant", "content": r["reference"]}], enc)
        answer_tokens = trained.n_labels - 1  # the labelled answer, EOS excluded
        assert r["stopped_at_eos"] and r["new_tokens"] <= answer_tokens + 2, r


def test_lora_zero3_export_equals_the_adapter_on_the_resized_base(inputs, tiny_llama_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pretrain.lora import load_adapter
    from zhllama.cli import UserError

    run_dir = inputs["root"] / "lora3"
    run_sft(inputs, run_dir, "--nproc", "2", "--max_steps", "3", "--micro_batch_size", "1", "--grad_accum_steps", "1",
            "--deepspeed_config", "configs/deepspeed/zero3.json", config="configs/sft/train_lora.yaml")
    losses = [r["loss"] for r in metrics(run_dir) if "loss" in r]
    assert losses[-1] < losses[0], losses
    final = run_dir / "final"
    assert (final / "chat_template.jinja").is_file() and (final / "adapter" / "adapter_config.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(final))
    ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": "上海？"}],
                                                add_generation_prompt=True)["input_ids"]])
    merged = AutoModelForCausalLM.from_pretrained(str(final))
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(inputs["model_dir"])),
                                         str(final / "adapter"))
    assert torch.allclose(logits(reloaded, ids), logits(merged, ids), atol=1e-5)
    with pytest.raises(UserError) as err:
        load_adapter(tiny_llama_dir, final / "adapter")
    assert str(merged.config.vocab_size) in str(err.value) and "32000" in str(err.value)
