"""Real DeepSpeed runs on CPU through the CLI (``python -m pretrain train``), tiny Llama, a few steps.

Each launch costs ~10-25 s on 2 idle cores (plus ~35 s once to compile DeepSpeed's comm op):
ZeRO-2 with 2 processes (loss, layout, export, logs), a resume of it in a new process from a
checkpoint whose successor was killed mid-save, ZeRO-3 full (its optimizer groups against ZeRO-2's,
held-out evaluation), ZeRO-3 + LoRA under ``torchrun``, two "nodes" on loopback (two ``deepspeed
--no_ssh`` launchers, node ranks 0 and 1, one process each) training the embeddings only, a
SIGINT and a SIGTERM to the CLI mid-run, and a 2-process save where one rank is slow to finish.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import save_tiny_llama
from zhllama import REPO_ROOT

pytestmark = [pytest.mark.deepspeed, pytest.mark.slow]

STEPS = 6
COMMON = ["--data.block_size_tokens", "64", "--data.mixture", "[]", "--warmup_steps", "2", "--lr", "0.003",
          "--micro_batch_size", "2", "--eval_every_steps", "0"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_argv(inputs: dict, run_dir: Path, *extra: str, config: str = "configs/pretrain/train.yaml") -> list[str]:
    return [
        sys.executable, "-m", "pretrain", "train", "--config", config,
        "--model_dir", str(inputs["model_dir"]), "--tokenizer_dir", str(inputs["tokenizer_dir"]),
        "--corpus_dir", str(inputs["corpus_dir"]), "--cache_dir", str(inputs["cache_dir"]),
        "--run_dir", str(run_dir), *COMMON, *extra,
    ]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), e.get("PYTHONPATH", "")])
    e.update(OMP_NUM_THREADS="1", DS_ACCELERATOR="cpu", TOKENIZERS_PARALLELISM="false")
    return e


def check_run(proc: subprocess.CompletedProcess | tuple) -> str:
    out = proc.stdout if isinstance(proc, subprocess.CompletedProcess) else proc[1]
    rc = proc.returncode if isinstance(proc, subprocess.CompletedProcess) else proc[0]
    assert rc == 0, f"training failed (exit {rc}):\n{out[-6000:]}"
    return out


def run_cli(argv: list[str]) -> str:
    proc = subprocess.run(argv, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=900)
    return check_run(proc)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, extended_tokenizer_dir, zh_sample_texts) -> dict:
    """A resized "init" model (tiny Llama over the extended vocabulary, tokenizer beside it) + a corpus."""
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("train_inputs")
    n_pieces = spm.SentencePieceProcessor(model_file=str(extended_tokenizer_dir / "tokenizer.model")).get_piece_size()
    model_dir = save_tiny_llama(root / "init", extended_tokenizer_dir, vocab_size=n_pieces)
    corpus = root / "corpus"
    (corpus / "train").mkdir(parents=True)
    with open(corpus / "train" / "shard-00000.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(zh_sample_texts[:20]):
            f.write(json.dumps({"id": f"zh{i}", "source": "zhwiki", "text": text[:1500]}, ensure_ascii=False) + "\n")
    (corpus / "heldout").mkdir()
    with open(corpus / "heldout" / "heldout.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(zh_sample_texts[20:23]):
            f.write(json.dumps({"id": f"h{i}", "source": "zhwiki", "text": text[:800]}, ensure_ascii=False) + "\n")
    return {"model_dir": model_dir, "tokenizer_dir": extended_tokenizer_dir, "corpus_dir": corpus,
            "cache_dir": root / "cache", "root": root}


@pytest.fixture(scope="module")
def zero2_run(inputs) -> Path:
    run_dir = inputs["root"] / "zero2"
    run_cli(train_argv(inputs, run_dir, "--nproc", "2", "--max_steps", str(STEPS), "--save_every_steps", "3",
                       "--keep_last_checkpoints", "2", "--launch.master_port", str(free_port())))
    return run_dir


def test_zero2_two_processes_loss_goes_down(zero2_run):
    records = metrics(zero2_run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    losses = [r["loss"] for r in records]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2 - 0.05, losses
    assert records[-1]["tokens_seen"] == STEPS * 2 * 2 * 64  # steps x procs x micro batch x block


def test_a_run_leaves_no_shared_memory_behind(zero2_run):
    """DeepSpeed's CPU shared-memory all-reduce op would leave a 69 MB /dev/shm file per process, forever."""
    spec = json.loads((zero2_run / ".launch" / "worker_spec.node0.json").read_text())
    port = spec["config"]["launch"]["master_port"]
    shm = Path("/dev/shm")
    left = [p.name for p in shm.glob(f"deepspeed_allreduce_buffer_*_{port}_*")] if shm.is_dir() else []
    assert left == [], left


def test_zero2_checkpoint_is_a_real_deepspeed_one(zero2_run):
    ckpt = zero2_run / "checkpoints"
    assert (ckpt / "latest").read_text().strip() == f"global_step{STEPS}"
    tags = sorted(p.name for p in ckpt.glob("global_step*"))
    assert tags == ["global_step3", f"global_step{STEPS}"]
    for tag in tags:
        names = {p.name for p in (ckpt / tag).iterdir()}
        assert {"mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                "zero_pp_rank_1_mp_rank_00_optim_states.pt", "zhllama_complete.json"} <= names
    # Self-describing: config + tokenizer + meta beside the checkpoints.
    assert {"config.json", "tokenizer.json", "tokenizer.model", "meta.json"} <= {p.name for p in ckpt.iterdir()}
    assert json.loads((ckpt / "meta.json").read_text())["config"]["mode"] == "full"


def test_zero2_export_matches_consolidated_checkpoint(zero2_run, inputs):
    """final/ loads with Auto classes and equals what the eval helper consolidates from checkpoints/."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    final = zero2_run / "final"
    assert (final / "model.safetensors").is_file() and (final / "meta.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(final)
    tok = AutoTokenizer.from_pretrained(final)
    assert len(tok) == len(AutoTokenizer.from_pretrained(inputs["tokenizer_dir"]))
    ckpt = zero2_run / "checkpoints"
    consolidated = LlamaForCausalLM(AutoConfig.from_pretrained(ckpt))
    consolidated.load_state_dict(get_fp32_state_dict_from_zero_checkpoint(str(ckpt), tag=f"global_step{STEPS}"))
    ids = torch.tensor([tok("北京是中国的首都。Hello")["input_ids"]])
    assert torch.allclose(logits(model, ids), logits(consolidated, ids), atol=1e-6)
    init = AutoModelForCausalLM.from_pretrained(inputs["model_dir"])
    assert not torch.allclose(logits(model, ids), logits(init, ids), atol=1e-3)  # it did train


def test_zero2_logs(zero2_run):
    logs = zero2_run / "logs"
    assert list(logs.glob("events.out.tfevents.*")), "no TensorBoard events"
    assert (logs / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_in_new_process_reproduces_losses(zero2_run, inputs):
    """Kill simulated during the save of step 6: resume from step 3 and get the uninterrupted losses."""
    run_dir = inputs["root"] / "resumed"
    shutil.copytree(zero2_run, run_dir)
    ckpt = run_dir / "checkpoints"
    (ckpt / "latest").write_text("global_step3")
    half = ckpt / f"global_step{STEPS}"
    (half / "zhllama_complete.json").unlink()  # the marker comes last: this save never finished
    with open(half / "zero_pp_rank_1_mp_rank_00_optim_states.pt", "r+b") as f:
        f.truncate(1000)
    shutil.rmtree(run_dir / "final")
    out = run_cli(train_argv(inputs, run_dir, "--nproc", "2", "--max_steps", str(STEPS), "--save_every_steps", "3",
                             "--resume", "--launch.master_port", str(free_port())))
    assert "steps 3->6" in out
    assert f"resuming from {ckpt / 'global_step3'} (step 3)\n  skipping newer global_step{STEPS}: no zhllama_complete.json" in out
    before, after = metrics(zero2_run), metrics(run_dir)
    assert [r["step"] for r in after] == list(range(1, STEPS + 1))  # no duplicated steps after the resume
    assert [r["loss"] for r in after] == pytest.approx([r["loss"] for r in before], abs=1e-5)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "logs"), purge_orphaned_data=False)  # the files as they are
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, STEPS + 1))
    assert json.loads((half / "zhllama_complete.json").read_text())["step"] == STEPS
    from safetensors.torch import load_file

    a, b = load_file(zero2_run / "final" / "model.safetensors"), load_file(run_dir / "final" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # One byte of the newest checkpoint damaged, same size: refused up front, in one line.
    victim = half / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    proc = subprocess.run(train_argv(inputs, run_dir, "--nproc", "2", "--max_steps", str(STEPS + 2), "--resume"),
                          cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"error: cannot resume: checkpoint file {victim} is corrupt (its sha256 differs from the one recorded when "
        f"it was saved); point {ckpt / 'latest'} at an older complete checkpoint (global_step3)"]


def test_zero3_full_has_zero2s_optimizer_groups_and_logs_held_out_evaluation(zero2_run, inputs):
    """ZeRO-3 partitions parameters into 1-D slices before the optimizer exists: weight decay must still
    follow the real shapes (the same groups as ZeRO-2), and the held-out evaluation must run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import AutoModelForCausalLM

    from pretrain.data import PackConfig, PackedBlocks, cache_path
    from pretrain.train import eval_block_ids

    run_dir = inputs["root"] / "zero3"
    run_cli(train_argv(inputs, run_dir, "--nproc", "2", "--max_steps", "4", "--save_every_steps", "4",
                       "--deepspeed_config", "configs/deepspeed/zero3.json", "--eval_every_steps", "2",
                       "--eval_max_blocks", "3", "--export", "false", "--launch.master_port", str(free_port())))
    groups = {name: json.loads((r / "logs" / "optimizer_groups.json").read_text()) for name, r in
              (("zero2", zero2_run), ("zero3", run_dir))}
    assert groups["zero3"] == groups["zero2"]
    assert groups["zero3"]["decay"] and all(len(shape) == 2 for shape in groups["zero3"]["decay"].values())
    assert groups["zero3"]["no_decay"] and all("norm" in name for name in groups["zero3"]["no_decay"])
    evals = [r for r in metrics(run_dir) if "eval_loss" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    # Step 0's held-out loss, rebuilt here: the init model on the same 3 held-out blocks.
    held = PackedBlocks(cache_path(inputs["tokenizer_dir"], inputs["corpus_dir"], inputs["cache_dir"],
                                   PackConfig(block_size_tokens=64), split="heldout"))
    ids = sorted(i for r in range(2) for i in eval_block_ids(len(held), 3, r, 2) if i >= 0)
    assert len(ids) == 3
    model = AutoModelForCausalLM.from_pretrained(inputs["model_dir"])
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for i in ids:
            ex = held.example(i)
            logits = model(torch.from_numpy(ex["input_ids"])[None]).logits[0, :-1]
            target = torch.from_numpy(ex["labels"])[1:]
            nll += float(torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum"))
            tokens += int((target != -100).sum())
    assert evals[0]["eval_loss"] == pytest.approx(nll / tokens, rel=1e-4)
    chars_per_token = held.stats["corpus_chars"] / held.stats["corpus_tokens"]
    assert evals[0]["eval_bits_per_char"] == pytest.approx(nll / math.log(2) / (tokens * chars_per_token), rel=1e-4)
    acc = EventAccumulator(str(run_dir / "logs"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/loss")] == [0, 2, 4]


def test_zero3_lora_torchrun_save_reload_merge(inputs, tiny_llama_dir):
    """LoRA + trainable embeddings/head under ZeRO-3 (torchrun, gradient checkpointing): the adapter
    reloads onto the resized base and merges into a plain checkpoint with the same outputs."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pretrain.lora import load_adapter
    from zhllama.cli import UserError

    run_dir = inputs["root"] / "lora3"
    run_cli(train_argv(inputs, run_dir, "--nproc", "2", "--max_steps", "4", "--save_every_steps", "4",
                       "--deepspeed_config", "configs/deepspeed/zero3.json", "--launch.launcher", "torchrun",
                       "--gradient_checkpointing",
                       "--launch.master_port", str(free_port()), config="configs/pretrain/train_lora.yaml"))
    losses = [r["loss"] for r in metrics(run_dir)]
    assert losses[-1] < losses[0], losses
    assert (run_dir / "checkpoints" / "global_step4" / "zhllama_complete.json").is_file()
    final, adapter = run_dir / "final", run_dir / "final" / "adapter"
    tok = AutoTokenizer.from_pretrained(final)
    ids = torch.tensor([tok("上海是一座城市。")["input_ids"]])
    merged = AutoModelForCausalLM.from_pretrained(final)
    base = AutoModelForCausalLM.from_pretrained(inputs["model_dir"])
    base_logits = logits(base, ids)
    reloaded = PeftModel.from_pretrained(base, adapter)
    assert torch.allclose(logits(reloaded, ids), logits(merged, ids), atol=1e-5)
    assert not torch.allclose(logits(merged, ids), base_logits, atol=1e-3)
    # The embeddings and head trained in full (modules_to_save), new rows included.
    from safetensors.torch import load_file

    init = load_file(Path(inputs["model_dir"]) / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        trained = merged.state_dict()[name]
        assert not torch.equal(trained[32000:], init[name][32000:]), name
    # The peers' failure mode, as a clear message: onto the 32k base the adapter does not fit.
    with pytest.raises(UserError, match="embedding rows"):
        load_adapter(tiny_llama_dir, adapter)


def test_two_nodes_on_loopback_train_embeddings_only(inputs, tmp_path):
    """Two `deepspeed --no_ssh` launchers (node ranks 0, 1; 1 process each) train one model together."""
    from safetensors.torch import load_file

    run_dir = inputs["root"] / "two_nodes"
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = str(free_port())
    procs = [
        subprocess.Popen(
            train_argv(inputs, run_dir, "--nproc", "1", "--max_steps", "4", "--save_every_steps", "4",
                       "--launch.num_nodes", "2", "--launch.node_rank", str(rank), "--launch.hostfile", str(hostfile),
                       "--launch.no_ssh", "--launch.master_port", port, config="configs/pretrain/train_embeddings.yaml"),
            cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs, strict=True):
        check_run((p.returncode, out))
    assert "world=2" in outs[0]
    marker = json.loads((run_dir / "checkpoints" / "global_step4" / "zhllama_complete.json").read_text())
    assert marker["world_size"] == 2 and "zero_pp_rank_1_mp_rank_00_optim_states.pt" in marker["files_bytes"]
    losses = [r["loss"] for r in metrics(run_dir)]
    assert losses[-1] < losses[0], losses
    # Stage-one invariant: the transformer is frozen, only embed_tokens and lm_head moved.
    before = load_file(Path(inputs["model_dir"]) / "model.safetensors")
    after = load_file(run_dir / "final" / "model.safetensors")
    assert before.keys() == after.keys()
    for name in before:
        moved = not torch.equal(before[name], after[name])
        assert moved == name.endswith(("embed_tokens.weight", "lm_head.weight")), name


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_the_cli_stops_every_worker(inputs, signum):
    """Ctrl-C in a terminal (SIGINT) or a scheduler's SIGTERM reaches only `python -m pretrain train`:
    it must stop the launcher and every worker, wait for them, release the run lock, and say so."""
    import time

    import psutil

    from pretrain.engine.rundir import lock_path

    run_dir = inputs["root"] / f"signal_{signum.name}"
    proc = subprocess.Popen(train_argv(inputs, run_dir, "--nproc", "2", "--max_steps", "500", "--save_every_steps", "1000",
                                       "--export", "false", "--launch.master_port", str(free_port())),
                            cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = run_dir / "logs" / "metrics.jsonl"
    deadline = time.monotonic() + 600
    try:
        while not (log.is_file() and log.read_text().strip()):  # training is under way
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-4000:]
            time.sleep(0.5)
        started = psutil.Process(proc.pid).children(recursive=True)
        workers = [p for p in started if any(a == "-m" and b == "pretrain.worker"
                                             for a, b in zip(p.cmdline(), p.cmdline()[1:], strict=False))]
        assert len(workers) == 2, [p.cmdline() for p in started]
        proc.send_signal(signum)  # to the CLI process only, as a scheduler does
        out = proc.communicate(timeout=300)[0]
    finally:
        if proc.poll() is None:  # the test failed before the signal: stop the run the same way
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, out[-3000:]
    assert f"error: interrupted by {signum.name}: stopped the launcher and" in out
    _, alive = psutil.wait_procs(started, timeout=5)
    assert alive == [], [p.cmdline() for p in alive]
    assert not lock_path(run_dir, 0).exists()


_SAVE_SCRIPT = """
import sys, time
from pathlib import Path
import deepspeed, torch
from pretrain.engine.loop import skip_cpu_shm_allreduce
skip_cpu_shm_allreduce()  # no shared-memory op: no compile, no /dev/shm file left
from pretrain.checkpoint import save_checkpoint
ckpt, flags = Path(sys.argv[1]), Path(sys.argv[2])
deepspeed.init_distributed()
model = torch.nn.Linear(8, 8)
cfg = {"train_batch_size": 2, "train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 2},
       "zero_allow_untested_optimizer": True}
engine, _, _, _ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters()), config=cfg)
engine.backward(engine(torch.ones(1, 8)).sum())
engine.step()
save_checkpoint(engine, ckpt, 1, {"completed_steps": 1}, keep_last=3)
if torch.distributed.get_rank() == 1:  # rank 1 is slow to come back from its save
    real = engine.save_checkpoint
    def slow(*args, **kwargs):
        out = real(*args, **kwargs)
        (flags / "rank1_saved").touch()
        while not (flags / "release").exists():
            time.sleep(0.05)
        return out
    engine.save_checkpoint = slow
save_checkpoint(engine, ckpt, 2, {"completed_steps": 2}, keep_last=3)
torch.distributed.destroy_process_group()
"""


def test_latest_moves_only_after_every_rank_has_saved(tmp_path):
    import time

    from pretrain.checkpoint import COMPLETE_NAME, read_latest

    script, ckpt, flags = tmp_path / "save.py", tmp_path / "ckpt", tmp_path / "flags"
    script.write_text(_SAVE_SCRIPT)
    flags.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             str(free_port()), str(script), str(ckpt), str(flags)],
                            cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (flags / "rank1_saved").exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-4000:]
            time.sleep(0.1)
        time.sleep(3)  # rank 0 has long finished its own part of the save
        assert read_latest(ckpt) == "global_step1"
        assert not (ckpt / "global_step2" / COMPLETE_NAME).exists()
    finally:
        (flags / "release").touch()
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out[-4000:]
    assert read_latest(ckpt) == "global_step2" and (ckpt / "global_step2" / COMPLETE_NAME).is_file()
