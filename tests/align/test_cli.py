"""The align CLI and Makefile: every target parses into its typed config, ARGS override, bad input is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.__main__ import COMMANDS
from tests.test_makefile import parse, stage_commands
from zhllama.cli import main

TARGETS = {"reward": ("reward", "run_dir"), "dpo": ("dpo", "run_dir"), "rl": ("rl", "run_dir"),
           "compare": ("compare", "out_dir")}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_each_make_target_runs_its_command_and_args_override_it(target, tmp_path):
    command, key = TARGETS[target]
    wanted = tmp_path / "elsewhere"
    commands = [c for c in stage_commands(target, ARGS=f"--{key} {wanted}") if c[:2] == ["align", command]]
    assert len(commands) == 1, commands
    cfg = parse(commands[0])
    assert Path(getattr(cfg, key)) == wanted
    if target != "compare":
        assert Path(cfg.model_dir) == Path("artifacts/sft/demo/final")  # every stage starts from the SFT model


def test_demo_runs_the_alignment_stages_last_in_order():
    stages = [c[:2] for c in stage_commands("demo")]
    assert stages[-4:] == [["align", "reward"], ["align", "dpo"], ["align", "rl"], ["align", "compare"]]


def test_bad_inputs_are_one_line_errors(tmp_path, capsys, tiny_llama_dir):
    assert set(COMMANDS) == {"reward", "dpo", "rl", "compare"}
    # A typo'd key names the key.
    assert main("align", COMMANDS, ["dpo", "--betta", "0.2"]) == 2
    assert "betta" in capsys.readouterr().err
    # adapter_disabled without LoRA is refused before anything runs.
    assert main("align", COMMANDS, ["dpo", "--reference", "adapter_disabled"]) == 2
    assert "needs mode: lora" in capsys.readouterr().err
    # A preference file with nothing usable: the reasons are counted in the message.
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps({"id": "x", "tier": "A", "prompt": [{"role": "user", "content": "hi"}],
                               "chosen": "same", "rejected": "same"}) + "\n", encoding="utf-8")
    argv = ["reward", "--model_dir", str(tiny_llama_dir), "--tokenizer_dir", str(tiny_llama_dir), "--run_dir",
            str(tmp_path / "run"), "--data.train_files", str(bad), "--data.eval_files", "[]"]
    assert main("align", COMMANDS, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable preference pair" in err[0] and "identical_replies 1" in err[0]
    # RL without a trained reward model says what to run.
    assert main("align", COMMANDS, ["rl", "--reward", str(tmp_path / "nowhere")]) == 2
    assert "make reward" in capsys.readouterr().err
