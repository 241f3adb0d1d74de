"""Every Makefile target that runs a stage CLI lets ``ARGS="--key value"`` override the keys it passes.

Read from ``make -n`` (the commands make would run), parsed with the CLIs' own config loading:
``ARGS`` comes after the Makefile's arguments and the last value of a key wins.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from zhllama import REPO_ROOT
from zhllama.cli import import_object
from zhllama.config import load_config

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

#: target -> (stage, command, the output key the Makefile itself passes)
TARGETS = {
    "corpus": ("corpora", "build", "out_dir"),
    "vocab": ("vocab", "train", "out_dir"),
    "merge-tokenizer": ("vocab", "merge", "out_dir"),
    "standin": ("pretrain", "standin", "out_dir"),
    "init": ("pretrain", "init", "out_dir"),
    "pack": ("pretrain", "pack", "cache_dir"),
    "pretrain": ("pretrain", "train", "run_dir"),
    "eval": ("pretrain", "eval", "out_dir"),
    "benchmark": ("mcq", "score", "out_dir"),
}


def stage_commands(target: str, **variables: str) -> list[list[str]]:
    """The ``python -m STAGE COMMAND ...`` argv lists ``make -n TARGET`` prints."""
    argv = ["make", "-n", "--no-print-directory", target, "PY=python", *(f"{k}={v}" for k, v in variables.items())]
    out = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    commands = []
    for line in out.replace("\\\n", " ").splitlines():
        words = shlex.split(line)
        while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
            words = words[1:]  # `VAR=value python -m ...`: an environment assignment before the command
        if words[:2] == ["python", "-m"] and len(words) > 3 and (REPO_ROOT / words[2] / "__main__.py").is_file():
            commands.append(words[2:])
    return commands


def parse(command: list[str]):
    """The config a stage CLI would build from ``[stage, command, --config F, --key value ...]``."""
    stage, name, *rest = command
    cls = import_object(import_object(f"{stage}.__main__:COMMANDS")[name][0])
    i = rest.index("--config")
    return load_config(cls, REPO_ROOT / rest[i + 1], rest[:i] + rest[i + 2:])


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_args_override_the_key_the_makefile_passes(target, tmp_path):
    stage, command, key = TARGETS[target]
    wanted = tmp_path / "elsewhere"
    commands = [c for c in stage_commands(target, ARGS=f"--{key} {wanted}") if c[:2] == [stage, command]]
    assert len(commands) == 1, commands
    assert Path(getattr(parse(commands[0]), key)) == wanted


def test_pretrain_args_reach_the_train_command_only():
    commands = stage_commands("pretrain", ARGS="--max_steps 3 --launch.nproc 1", INIT_ARGS="--seed 5")
    assert [c[:2] for c in commands] == [["pretrain", "standin"], ["pretrain", "init"], ["pretrain", "train"]]
    standin, init, train = (parse(c) for c in commands)
    assert train.max_steps == 3 and train.launch.nproc == 1 and init.seed == 5
    assert standin.max_steps != 3  # the standin's own max_steps key is untouched
    assert parse(stage_commands("pretrain", NPROC="3")[-1]).launch.nproc == 3


def test_the_demo_never_evaluates_on_a_training_source():
    """The demo mixes English into training: its English evaluation must be other text (by content)."""
    from zhllama.artifacts import sha256_file

    commands = stage_commands("demo")
    train = parse(next(c for c in commands if c[:2] == ["pretrain", "train"]))
    evals = [c for c in commands if c[:2] == ["pretrain", "eval"]]
    assert len(evals) == 1 and train.data.mixture
    files = [REPO_ROOT / f for f in parse(evals[0]).files if (REPO_ROOT / f).is_file()]
    assert any(f.suffix == ".txt" for f in files), "the demo evaluates English (forgetting) on a text file"
    mixture = {sha256_file(REPO_ROOT / m.path): m.path for m in train.data.mixture}
    for f in files:
        assert sha256_file(f) not in mixture, f"{f} is also the training mixture source {mixture.get(sha256_file(f))}"
