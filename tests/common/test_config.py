"""The typed-config loader: strict keys and types, overrides, helpful errors."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from zhllama.config import ConfigError, load_config, parse_overrides, to_dict


@dataclass
class Optim:
    lr: float = 1e-4
    warmup_steps: int = 10


@dataclass
class Cfg:
    block_size_tokens: int = 128
    name: str = "run"
    out_dir: Path = Path("artifacts")
    mode: Literal["full", "lora"] = "full"
    seed: int | None = None
    files: list[str] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)
    flag: bool = False


def test_defaults_without_a_file():
    assert load_config(Cfg, None) == Cfg()


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("block_size_tokens: 256\noptim:\n  lr: 3.0e-4\nfiles: [a.txt]\n")
    cfg = load_config(Cfg, f, ["--optim.warmup_steps", "5", "--name", "123", "--flag", "--files", "b.txt", "--files", "c.txt"])
    assert cfg.block_size_tokens == 256 and cfg.optim.lr == 3e-4 and cfg.optim.warmup_steps == 5
    assert cfg.name == "123" and cfg.flag is True and cfg.files == ["b.txt", "c.txt"]


def test_int_is_accepted_for_float_but_not_the_reverse():
    assert load_config(Cfg, None, ["--optim.lr", "1"]).optim.lr == 1.0
    assert load_config(Cfg, None, ["--optim.lr", "1e-4"]).optim.lr == 1e-4  # YAML 1.1 reads this as a string
    with pytest.raises(ConfigError, match=r"lr: expected float"):
        load_config(Cfg, None, ["--optim.lr", "fast"])
    with pytest.raises(ConfigError, match=r"block_size_tokens: expected int"):
        load_config(Cfg, None, ["--block_size_tokens", "1.5"])


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["--block_size", "3"], r"unknown key\(s\) \['block_size'\]"),
        (["--optim.betas", "3"], r"optim: unknown key"),
        (["--mode", "qlora"], r"mode: expected one of"),
        (["--flag", "yes please"], r"flag: expected bool"),
        (["--optim", "3"], r"optim: expected a mapping"),
    ],
)
def test_bad_overrides_name_the_key(argv, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(Cfg, None, argv)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Cfg, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: expected a mapping"):
        load_config(Cfg, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("block_sise_tokens: 3\n")
    with pytest.raises(ConfigError, match=r"typo.yaml.*block_sise_tokens"):
        load_config(Cfg, typo)


def test_optional_accepts_null_and_round_trips_to_dict():
    cfg = load_config(Cfg, None, ["--seed", "null"])
    assert cfg.seed is None
    d = to_dict(load_config(Cfg, None, ["--seed", "7"]))
    assert d["seed"] == 7 and d["out_dir"] == "artifacts" and d["optim"]["lr"] == 1e-4


def test_parse_overrides_rejects_positional_values():
    with pytest.raises(ConfigError):
        parse_overrides(["value-without-key"])


def test_a_key_given_twice_keeps_the_last_value_unless_it_is_a_list():
    # The Makefile passes `--out_dir X`, then the user's ARGS: the user's value must win.
    cfg = load_config(Cfg, None, ["--out_dir", "a", "--name", "x", "--out_dir", "b", "--optim.lr", "1",
                                  "--optim.lr", "2", "--flag", "--flag", "false", "--name", "y"])
    assert cfg.out_dir == Path("b") and cfg.name == "y" and cfg.optim.lr == 2.0 and cfg.flag is False
    # A list field collects scalars; a list value replaces what came before it.
    assert load_config(Cfg, None, ["--files", "a", "--files", "b"]).files == ["a", "b"]
    assert load_config(Cfg, None, ["--files", "a", "--files", "[c, d]"]).files == ["c", "d"]
    assert load_config(Cfg, None, ["--files", "a", "--files", "[]"]).files == []
