"""The training stage without launching workers: schedule, data order, DeepSpeed configs, launch
commands, checkpoint bookkeeping, logs, and every bad input rejected before a worker starts."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from pretrain.checkpoint import COMPLETE_NAME, list_tags, prune_checkpoints, verify_checkpoint
from pretrain.deepspeed_config import build_ds_config, load_ds_template, uses_offload, zero_stage
from pretrain.launch import LaunchSettings, worker_command
from pretrain.logging_utils import MetricsLogger, plot_loss, read_metrics, truncate_metrics
from pretrain.train import TrainConfig, epoch_order, lr_at, rank_micro_blocks, run, step_blocks
from tests.conftest import save_tiny_llama
from zhllama import REPO_ROOT
from zhllama.artifacts import atomic_write_json, sha256_file
from zhllama.cli import UserError
from zhllama.config import load_config

DS_DIR = REPO_ROOT / "configs" / "deepspeed"


# -- learning rate and data order ---------------------------------------------------------------


def test_lr_warmup_then_cosine_to_floor():
    peak, warm, steps, floor = 1e-3, 10, 100, 0.1
    lrs = [lr_at(s, peak, warm, steps, floor) for s in range(steps)]
    assert lrs[:warm] == pytest.approx([peak * (s + 1) / warm for s in range(warm)])
    assert max(lrs) == pytest.approx(peak)
    decay = lrs[warm - 1:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))
    assert lrs[-1] == pytest.approx(peak * floor) and min(lrs[warm:]) >= peak * floor - 1e-15


@pytest.mark.parametrize("n_blocks,global_batch", [(10, 4), (7, 7), (5, 8), (1, 3)])
def test_every_block_once_per_epoch_and_order_is_a_function_of_the_step(n_blocks, global_batch):
    steps = 3 * n_blocks  # several epochs, whatever the batch
    stream = np.concatenate([step_blocks(s, n_blocks, global_batch, seed=7) for s in range(steps)])
    for epoch in range(len(stream) // n_blocks):
        assert sorted(stream[epoch * n_blocks:(epoch + 1) * n_blocks].tolist()) == list(range(n_blocks))
    # Asking for step k alone (as a resumed run does) gives exactly step k of the stream.
    k = steps // 2
    epoch_order.cache_clear()  # nothing remembered from the loop above
    assert np.array_equal(step_blocks(k, n_blocks, global_batch, 7), stream[k * global_batch:(k + 1) * global_batch])


def test_data_order_in_a_fresh_process_is_the_documented_one():
    """Golden values from another interpreter (another process, another moment) equal the definition
    rebuilt here with numpy alone: epoch e is ``default_rng([seed, e]).permutation(n)``, steps are
    consecutive slices of the concatenated epochs. Anything depending on the clock, the process or
    hash randomisation fails this."""
    import subprocess
    import sys

    n_blocks, batch, seed, steps = 37, 8, 11, 12
    code = ("import json; from pretrain.train import step_blocks; "
            f"print(json.dumps([step_blocks(s, {n_blocks}, {batch}, {seed}).tolist() for s in range({steps})]))")
    runs = [subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": str(h)})
            for h in (1, 2)]
    stream = np.concatenate([np.random.default_rng([seed, e]).permutation(n_blocks) for e in range(4)])
    expected = [stream[s * batch:(s + 1) * batch].tolist() for s in range(steps)]
    assert [json.loads(r.stdout) for r in runs] == [expected, expected]


def test_seed_changes_order():
    assert not np.array_equal(step_blocks(0, 100, 50, 0), step_blocks(0, 100, 50, 1))


def test_ranks_and_micro_steps_partition_a_step():
    world, micro, accum = 3, 2, 2
    step = step_blocks(5, 50, world * micro * accum, 0)
    parts = [rank_micro_blocks(step, r, world, micro, m) for m in range(accum) for r in range(world)]
    assert all(len(p) == micro for p in parts)
    assert sorted(np.concatenate(parts).tolist()) == sorted(step.tolist())


# -- DeepSpeed configs --------------------------------------------------------------------------


@pytest.mark.parametrize("name,stage,offload", [("zero2", 2, False), ("zero3", 3, False),
                                                ("zero2_offload", 2, True), ("zero3_offload", 3, True)])
def test_deepspeed_templates_build(name, stage, offload):
    path = DS_DIR / f"{name}.json"
    ds = build_ds_config(load_ds_template(path), micro_batch_size=3, grad_accum_steps=2, world_size=4,
                         grad_clip_norm=1.0, bf16=False, source=str(path))
    assert ds["train_batch_size"] == 3 * 2 * 4
    assert zero_stage(ds) == stage and uses_offload(ds) == offload
    assert ds["bf16"]["enabled"] is False and "optimizer" not in ds and ds["zero_allow_untested_optimizer"]
    gpu = build_ds_config(load_ds_template(path), micro_batch_size=1, grad_accum_steps=1, world_size=8,
                          grad_clip_norm=1.0, bf16=True)
    assert gpu["bf16"]["enabled"] is True


def test_there_is_a_template_for_each_zero_variant():
    assert {p.stem for p in DS_DIR.glob("*.json")} >= {"zero2", "zero3", "zero2_offload", "zero3_offload"}


@pytest.mark.parametrize("template,match", [
    ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu=8 contradicts"),
    ({"optimizer": {"type": "AdamW"}}, "remove the 'optimizer' block"),
    ({"zero_optimization": {"stage": 7}}, "stage"),
    ({"zero_optimization": {"stage": 2, "no_such_key": 1}}, "no_such_key"),
    ({"bf16": {"enabled": True}}, "bf16.enabled"),
])
def test_bad_deepspeed_config_is_a_user_error_naming_the_file(template, match):
    with pytest.raises(UserError, match=match) as e:
        build_ds_config(template, micro_batch_size=2, grad_accum_steps=1, world_size=2, grad_clip_norm=1.0,
                        bf16=False, source="my_ds.json")
    assert "my_ds.json" in str(e.value)


def test_bad_json_names_file_and_line(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('{\n  "zero_optimization": {"stage": 2,}\n}\n')
    with pytest.raises(UserError, match=r"broken.json: not valid JSON \(line 2"):
        load_ds_template(p)


# -- launch commands ----------------------------------------------------------------------------


def test_deepspeed_launch_command(tmp_path):
    cmd = worker_command(LaunchSettings(nproc=4, master_port=29555), tmp_path / "spec.json")
    assert Path(cmd[0]).name == "deepspeed" or cmd[:3][-1] == "deepspeed.launcher.runner"
    joined = " ".join(cmd)
    assert "--num_gpus 4" in joined and "--master_port 29555" in joined and "--hostfile" not in joined
    assert cmd[-3:] == ["--module", "pretrain.worker", str(tmp_path / "spec.json")]


def test_multi_node_launch_commands(tmp_path):
    hostfile = tmp_path / "hosts"
    hostfile.write_text("a slots=8\nb slots=8\n")
    ds = worker_command(LaunchSettings(nproc=8, num_nodes=2, node_rank=1, hostfile=hostfile, no_ssh=True,
                                       master_addr="10.0.0.1"), Path("s.json"))
    assert " ".join(ds).count("--node_rank 1") == 1 and "--no_ssh" in ds and str(hostfile) in ds
    tr = worker_command(LaunchSettings(nproc=8, num_nodes=2, node_rank=1, launcher="torchrun", master_addr="10.0.0.1"),
                        Path("s.json"))
    assert tr[1:3] == ["-m", "torch.distributed.run"]
    assert "--nnodes 2 --node_rank 1 --nproc_per_node 8 --master_addr 10.0.0.1" in " ".join(tr)
    with pytest.raises(UserError, match="needs launch.hostfile"):
        worker_command(LaunchSettings(nproc=1, num_nodes=2), Path("s.json"))
    with pytest.raises(ValueError, match="node_rank"):
        LaunchSettings(num_nodes=2, node_rank=2)


def test_worker_env_sets_glibc_malloc_settings_by_default_and_keeps_the_users():
    from pretrain.launch import MALLOC_ENV, worker_env

    assert LaunchSettings().malloc_tuning
    on = worker_env({"PATH": "/bin", "MALLOC_TOP_PAD_": "1"}, cuda=False, malloc_tuning=True)
    assert on["MALLOC_TOP_PAD_"] == "1" and on["MALLOC_MMAP_THRESHOLD_"] == MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert not any(k.startswith("MALLOC_") for k in worker_env({"PATH": "/bin"}, cuda=False, malloc_tuning=False))


# -- checkpoints bookkeeping (the DeepSpeed files themselves are covered by test_train_deepspeed) --


def fake_checkpoint(ckpt: Path, step: int, complete: bool = True, world_size: int = 2, data: dict | None = None) -> Path:
    """A checkpoint folder as save_checkpoint leaves it (one 10-byte file; marker with size and sha256)."""
    tag_dir = ckpt / f"global_step{step}"
    tag_dir.mkdir(parents=True)
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    if complete:
        atomic_write_json(tag_dir / COMPLETE_NAME, {
            "step": step, "world_size": world_size, "data": data or {},
            "files_bytes": {"mp_rank_00_model_states.pt": 10},
            "files_sha256": {"mp_rank_00_model_states.pt": sha256_file(tag_dir / "mp_rank_00_model_states.pt")}})
    return tag_dir


def test_prune_keeps_last_complete_and_drops_half_written(tmp_path):
    for step in (2, 4, 6):
        fake_checkpoint(tmp_path, step)
    fake_checkpoint(tmp_path, 8, complete=False)  # killed during its save
    (tmp_path / "latest").write_text("global_step6")
    removed = prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(removed) == ["global_step2", "global_step8"]
    assert [t for _, t in list_tags(tmp_path)] == ["global_step4", "global_step6"]
    assert verify_checkpoint(tmp_path, world_size=2)[0] == "global_step6"


def test_verify_rejects_missing_incomplete_corrupt_or_resharded(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        verify_checkpoint(tmp_path)
    (tmp_path / "latest").write_text("global_step4")
    with pytest.raises(UserError, match="does not exist"):
        verify_checkpoint(tmp_path)
    tag_dir = fake_checkpoint(tmp_path, 4, complete=False)
    with pytest.raises(UserError, match="incomplete or corrupt"):
        verify_checkpoint(tmp_path)
    atomic_write_json(tag_dir / COMPLETE_NAME, {"step": 4, "world_size": 2,
                                                "files_bytes": {"mp_rank_00_model_states.pt": 99}})
    with pytest.raises(UserError, match="corrupt"):
        verify_checkpoint(tmp_path)
    atomic_write_json(tag_dir / COMPLETE_NAME, {"step": 4, "world_size": 2,
                                                "files_bytes": {"mp_rank_00_model_states.pt": 10}})
    with pytest.raises(UserError, match="saved by 2 processes, this run has 4"):
        verify_checkpoint(tmp_path, world_size=4)


def test_a_checkpoint_corrupted_without_a_size_change_is_refused(tmp_path):
    fake_checkpoint(tmp_path, 2)
    tag_dir = fake_checkpoint(tmp_path, 4)
    (tmp_path / "latest").write_text("global_step4")
    assert verify_checkpoint(tmp_path)[0] == "global_step4"
    (tag_dir / "mp_rank_00_model_states.pt").write_bytes(b"x" * 9 + b"y")  # one byte flipped, same size
    with pytest.raises(UserError, match=r"mp_rank_00_model_states.pt is corrupt \(its sha256 differs.*global_step2"):
        verify_checkpoint(tmp_path)


def test_resume_names_the_checkpoint_and_the_newer_ones_it_skips(small_inputs, tmp_path):
    from pretrain.engine.rundir import find_resume_point

    ckpt = tmp_path / "r" / "checkpoints"
    fake_checkpoint(ckpt, 2)
    fake_checkpoint(ckpt, 4, complete=False)  # killed mid-save
    fake_checkpoint(ckpt, 6)                  # complete, but `latest` was moved back to 2
    (ckpt / "latest").write_text("global_step2")
    text = find_resume_point(make_cfg(small_inputs, run_dir=tmp_path / "r", resume=True)).describe(ckpt)
    lines = text.splitlines()
    assert lines[0] == f"resuming from {ckpt / 'global_step2'} (step 2)"
    assert lines[1].startswith("  skipping newer global_step4: no zhllama_complete.json")
    assert lines[2].startswith("  skipping newer global_step6: complete, but `latest` names global_step2")


# -- logs ---------------------------------------------------------------------------------------


def test_metrics_truncated_on_resume_and_plotted(tmp_path):
    logger = MetricsLogger(tmp_path, enabled=True, tensorboard=False)
    for step in range(1, 7):
        logger.log({"step": step, "loss": 10.0 - step, "lr": 1e-3})
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # a kill in the middle of a line
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert truncate_metrics(tmp_path / "metrics.jsonl", keep_through_step=3) == 3
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3]
    png = plot_loss(read_metrics(tmp_path / "metrics.jsonl"), tmp_path / "loss.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    MetricsLogger(tmp_path / "off", enabled=False).log({"step": 1, "loss": 1.0})
    assert not (tmp_path / "off").exists()


def test_tensorboard_keeps_each_step_once_after_a_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from pretrain.logging_utils import truncate_logs

    def log(steps):
        logger = MetricsLogger(tmp_path)
        for step in steps:
            logger.log({"step": step, "loss": float(step), "eval_loss": 2.0 * step})
        logger.close()

    log(range(1, 7))            # the interrupted run got to step 6, its checkpoint is step 3
    truncate_logs(tmp_path, 3)  # what a resume does before the workers start
    log(range(4, 7))            # steps 4..6 redone
    acc = EventAccumulator(str(tmp_path), purge_orphaned_data=False)  # no purging: read the files as they are
    acc.Reload()
    for tag in ("train/loss", "eval/loss"):
        assert [e.step for e in acc.Scalars(tag)] == [1, 2, 3, 4, 5, 6], tag
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4, 5, 6]


def test_closing_line_reports_the_run_average_and_the_last_step(tmp_path):
    from pretrain.engine.config import EngineConfig, RunPaths
    from pretrain.engine.launcher import summary_line

    records = [{"step": 1, "loss": 9.0, "tokens_seen": 512, "tokens_per_second": 100.0, "run_tokens_per_second": 100.0},
               {"step": 1, "eval_loss": 8.5},
               {"step": 2, "loss": 8.0, "tokens_seen": 1024, "tokens_per_second": 300.0, "run_tokens_per_second": 150.0}]
    line = summary_line(EngineConfig(export=False), records, RunPaths(tmp_path), 3.0)
    assert "loss 9.000 -> 8.000, held-out loss 8.500, 1,024 tokens, 150 tokens/s average (300 last step)" in line


# -- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train", "train_lora", "train_embeddings"])
def test_train_yamls_load(name):
    cfg = load_config(TrainConfig, REPO_ROOT / "configs" / "pretrain" / f"{name}.yaml", ["--nproc", "3"])
    assert cfg.launch.nproc == 3 and cfg.global_batch_blocks == cfg.micro_batch_size * cfg.grad_accum_steps * 3
    assert cfg.mode == {"train": "full", "train_lora": "lora", "train_embeddings": "embeddings"}[name]


# -- bad inputs: rejected before any worker starts ----------------------------------------------


@pytest.fixture(scope="module")
def small_inputs(tmp_path_factory, extended_tokenizer_dir, zh_sample_texts) -> dict:
    import sentencepiece as spm

    root = tmp_path_factory.mktemp("train_errors")
    n = spm.SentencePieceProcessor(model_file=str(extended_tokenizer_dir / "tokenizer.model")).get_piece_size()
    save_tiny_llama(root / "init", extended_tokenizer_dir, vocab_size=n)
    for name, texts in (("corpus", zh_sample_texts[:3]), ("tiny_corpus", ["你好"])):
        (root / name / "train").mkdir(parents=True)
        (root / name / "train" / "a.jsonl").write_text(
            "".join(json.dumps({"id": str(i), "source": "t", "text": t}, ensure_ascii=False) + "\n"
                    for i, t in enumerate(texts)), encoding="utf-8")
    return {"root": root, "model_dir": root / "init", "tokenizer_dir": extended_tokenizer_dir}


def make_cfg(inp: dict, **kw) -> TrainConfig:
    base = {"model_dir": inp["model_dir"], "tokenizer_dir": inp["tokenizer_dir"], "corpus_dir": inp["root"] / "corpus",
            "cache_dir": inp["root"] / "cache", "run_dir": inp["root"] / "run", "nproc": 2,
            "data": {"block_size_tokens": 64, "mixture": []}}
    base.update(kw)
    return load_config(TrainConfig, None, base)


def test_model_dir_that_is_not_llama(small_inputs, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": 10}))
    with pytest.raises(UserError, match="expected 'llama'"):
        run(make_cfg(small_inputs, model_dir=tmp_path))
    with pytest.raises(UserError, match="no config.json"):
        run(make_cfg(small_inputs, model_dir=small_inputs["tokenizer_dir"]))


def test_tokenizer_that_does_not_extend_the_models(small_inputs, base_tokenizer_dir, tiny_llama_dir):
    with pytest.raises(UserError, match="cannot extend"):  # 32000 pieces vs the model's 32300
        run(make_cfg(small_inputs, tokenizer_dir=base_tokenizer_dir))
    with pytest.raises(UserError, match="pretrain init"):  # merged tokenizer on the un-resized 32k model
        run(make_cfg(small_inputs, model_dir=tiny_llama_dir))


def test_invalid_deepspeed_config_file(small_inputs, tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text(json.dumps({"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "gpu"}}}))
    with pytest.raises(UserError, match=r"ds.json: invalid DeepSpeed config.*offload_optimizer"):
        run(make_cfg(small_inputs, deepspeed_config=bad))


def test_fewer_tokens_than_one_block(small_inputs, tmp_path):
    with pytest.raises(UserError, match="fewer than one block of 64"):
        run(make_cfg(small_inputs, corpus_dir=small_inputs["root"] / "tiny_corpus", cache_dir=tmp_path / "cache",
                     run_dir=tmp_path / "run"))
    assert list(tmp_path.iterdir()) == []  # no empty cache folder, no run directory, no lock file


def corrupt_copy(model_dir: Path, out: Path, how: str) -> Path:
    import shutil

    shutil.copytree(model_dir, out)
    if how == "config_shapes":  # config.json of another shape than the weights
        cfg = json.loads((out / "config.json").read_text())
        cfg["intermediate_size"] = 96
        (out / "config.json").write_text(json.dumps(cfg))
    elif how == "truncated":
        with open(out / "model.safetensors", "r+b") as f:
            f.truncate((out / "model.safetensors").stat().st_size - 1000)
    return out


@pytest.mark.parametrize("how,message", [
    ("config_shapes", r"model.safetensors: model.layers.0.mlp.gate_proj.weight has shape \[128, 64\] but config.json "
                      r"says \[96, 64\]"),
    ("truncated", r"model.safetensors: truncated: [\d,]+ bytes, its header describes [\d,]+"),
])
def test_broken_weights_are_one_line_errors_before_anything_is_written(small_inputs, tmp_path, capsys, how, message):
    from pretrain.__main__ import COMMANDS
    from zhllama.cli import main

    model = corrupt_copy(small_inputs["model_dir"], tmp_path / "model", how)
    cfg = make_cfg(small_inputs, model_dir=model, run_dir=tmp_path / "run", cache_dir=tmp_path / "cache")
    with pytest.raises(UserError, match=message):
        run(cfg)
    argv = ["train", "--model_dir", str(model), "--tokenizer_dir", str(cfg.tokenizer_dir), "--run_dir",
            str(tmp_path / "run"), "--corpus_dir", str(cfg.corpus_dir), "--cache_dir", str(tmp_path / "cache")]
    assert main("pretrain", COMMANDS, argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no run dir, no cache, no lock


def test_resume_refuses_another_seed_or_global_batch(small_inputs, tmp_path):
    from pretrain.data import cache_path

    run_dir = tmp_path / "r"
    cfg = make_cfg(small_inputs, run_dir=run_dir, resume=True)
    blocks = cache_path(cfg.tokenizer_dir, cfg.corpus_dir, cfg.cache_dir, cfg.data).name
    fake_checkpoint(run_dir / "checkpoints", 4, data={"seed": 0, "global_batch_size": 4, "blocks": blocks})
    (run_dir / "checkpoints" / "latest").write_text("global_step4")
    (run_dir / "logs").mkdir()
    (run_dir / "logs" / "metrics.jsonl").write_text('{"step": 5, "loss": 1.0}\n')
    with pytest.raises(UserError, match=r"trained with seed=0, this run has seed=1"):
        run(make_cfg(small_inputs, run_dir=run_dir, resume=True, seed=1))
    with pytest.raises(UserError, match=r"trained with global_batch_size=4, this run has global_batch_size=6"):
        run(make_cfg(small_inputs, run_dir=run_dir, resume=True, micro_batch_size=3))
    assert (run_dir / "logs" / "metrics.jsonl").read_text() == '{"step": 5, "loss": 1.0}\n'  # nothing touched


def test_flash_attention_without_a_gpu_is_refused_up_front(small_inputs, tmp_path):
    with pytest.raises(UserError, match="attn_implementation=flash_attention_2 needs a CUDA GPU"):
        run(make_cfg(small_inputs, attn_implementation="flash_attention_2", run_dir=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_held_out_split_that_is_also_trained_on_is_refused(small_inputs, tmp_path):
    import shutil

    corpus = tmp_path / "corpus"
    shutil.copytree(small_inputs["root"] / "corpus", corpus)
    (corpus / "heldout").mkdir()
    shutil.copy(corpus / "train" / "a.jsonl", corpus / "heldout" / "heldout.jsonl")  # same content, other name
    with pytest.raises(UserError, match=r"heldout.jsonl has the same content as .*train/a.jsonl, a training source"):
        run(make_cfg(small_inputs, corpus_dir=corpus, eval_every_steps=5, run_dir=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_grad_clipping_setting_reaches_the_deepspeed_config(small_inputs):
    from pretrain.engine import check_inputs

    for clip in (0.0, 0.37, 2.5):
        assert check_inputs(make_cfg(small_inputs, grad_clip_norm=clip))["gradient_clipping"] == clip


def test_a_second_train_on_a_locked_run_is_refused_and_a_stale_lock_taken_over(small_inputs, tmp_path, capsys):
    import subprocess
    import sys

    from pretrain.engine import run_lock
    from pretrain.engine.rundir import lock_path

    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pretrain.engine import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(120)\n",
         str(run_dir)], cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for resume in (False, True):
            with pytest.raises(UserError, match=rf"{run_dir} is in use by another training process \(pid {holder.pid} on "):
                run(make_cfg(small_inputs, run_dir=run_dir, resume=resume))
    finally:
        holder.kill()
        holder.wait()
    assert lock_path(run_dir, 0).is_file()  # a killed holder leaves its lock file behind
    with run_lock(run_dir):
        assert json.loads(lock_path(run_dir, 0).read_text())["pid"] == os.getpid()
    assert f"taking over the stale lock of pid {holder.pid}" in capsys.readouterr().out
    assert not lock_path(run_dir, 0).exists() and not run_dir.exists()


def test_resume_without_or_with_corrupt_checkpoint(small_inputs, tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        run(make_cfg(small_inputs, run_dir=tmp_path / "r", resume=True))
    fake_checkpoint(tmp_path / "r" / "checkpoints", 4, complete=False)
    (tmp_path / "r" / "checkpoints" / "latest").write_text("global_step4")
    with pytest.raises(UserError, match="incomplete or corrupt"):
        run(make_cfg(small_inputs, run_dir=tmp_path / "r", resume=True))
    with pytest.raises(UserError, match="already holds a run"):  # and never wiped without --overwrite
        run(make_cfg(small_inputs, run_dir=tmp_path / "r"))
    assert (tmp_path / "r" / "checkpoints" / "global_step4").is_dir()


def test_cli_prints_one_line_and_exits_2(small_inputs, tmp_path, capsys):
    from pretrain.__main__ import COMMANDS
    from zhllama.cli import main

    rc = main("pretrain", COMMANDS, ["train", "--model_dir", str(tmp_path / "nope"), "--run_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: model directory not found") and "Traceback" not in err
