"""Every YAML under configs/ loads into its command's typed config (strict: no unknown keys).

Which config class a file belongs to follows from where it lives: ``configs/STAGE/COMMAND[_variant].yaml``
is read by ``python -m STAGE COMMAND``, e.g. ``configs/pretrain/train_lora.yaml`` by ``pretrain train``.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from zhllama import REPO_ROOT
from zhllama.cli import _resolve
from zhllama.config import ConfigError, load_config, to_dict

CONFIGS = REPO_ROOT / "configs"
YAMLS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name != "deepspeed")


def _commands(stage: str) -> dict:
    return importlib.import_module(f"{stage}.__main__").COMMANDS


def _config_class(path: Path):
    stage = path.parent.name
    commands = _commands(stage)
    stem = path.stem
    # Longest command name that the file name starts with (``train_lora`` -> ``train``).
    for name in sorted(commands, key=len, reverse=True):
        if stem == name.replace("-", "_") or stem.startswith(name.replace("-", "_") + "_"):
            return _resolve(commands[name][0])
    raise AssertionError(f"{path}: no command of `python -m {stage}` matches this file name")


def test_there_are_configs_for_every_stage():
    stages = {p.parent.name for p in YAMLS}
    assert {"corpora", "vocab", "pretrain"} <= stages


def _assert_applied(yaml_value, cfg_value, where: str) -> None:
    """Every value written in the YAML is the one the config holds (nothing ignored or reset)."""
    if isinstance(yaml_value, dict):
        assert isinstance(cfg_value, dict), where
        for key, value in yaml_value.items():
            assert key in cfg_value, f"{where}.{key}"
            _assert_applied(value, cfg_value[key], f"{where}.{key}")
    elif isinstance(yaml_value, list):
        assert isinstance(cfg_value, list) and len(cfg_value) == len(yaml_value), where
        for i, (a, b) in enumerate(zip(yaml_value, cfg_value, strict=True)):
            _assert_applied(a, b, f"{where}[{i}]")
    else:
        assert cfg_value == yaml_value, f"{where}: YAML says {yaml_value!r}, the config holds {cfg_value!r}"


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_every_yaml_loads_strictly(path):
    import yaml

    cls = _config_class(path)
    cfg = load_config(cls, path)
    assert type(cfg) is cls
    _assert_applied(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, to_dict(cfg), path.name)


@pytest.mark.parametrize("path", sorted((CONFIGS / "deepspeed").glob("*.json")), ids=lambda p: p.name)
def test_deepspeed_configs_are_valid_json_with_a_zero_stage(path):
    cfg = json.loads(path.read_text())
    assert cfg["zero_optimization"]["stage"] in (0, 1, 2, 3)


def test_an_unknown_key_in_a_real_config_is_an_error_naming_file_and_key(tmp_path):
    src = YAMLS[0]
    bad = tmp_path / src.name
    bad.write_text(src.read_text() + "\nno_such_key_xyz: 1\n")
    with pytest.raises(ConfigError, match=r"no_such_key_xyz"):
        load_config(_config_class(src), bad)
