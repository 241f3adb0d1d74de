"""Typed configs: dataclasses loaded from YAML, with ``--key value`` overrides.

Strict on purpose: an unknown key or a value of the wrong type is a :class:`ConfigError` that
names the file and the key, because a typo in a config silently falling back to a default is
the most expensive kind of bug in a long training run.

Example::

    @dataclass
    class Cfg:
        block_size_tokens: int = 128
        lr: float = 1e-4

    cfg = load_config(Cfg, None, ["--block_size_tokens", "256"])
    assert cfg.block_size_tokens == 256

Nested dataclasses are addressed with dots (``--optim.lr 3e-4``); lists take YAML syntax
(``--sources '[a, b]'``); ``Optional[X]`` fields accept ``null``.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the file and key."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only lossless cases (int -> float)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return _from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, (str, int, float, Path)) and not isinstance(value, bool):
            value = [value]  # `--tokenizer a.model` given once means a one-item list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if tp is float:
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads "1e-4" (no dot) as a string; it is a number here
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected float, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected int, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected bool (true/false), got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected str, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _from_dict(cls: type[T], data: dict, where: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown}; valid keys for {cls.__name__}: {sorted(fields)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:  # __post_init__ validation or a missing required key
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def from_dict(cls: type[T], data: dict, source: str = "<dict>") -> T:
    """Build ``cls`` from a plain mapping, strictly; ``source`` names the origin in errors."""
    return _from_dict(cls, data, source)


def to_dict(cfg: Any) -> dict:
    """A YAML/JSON-friendly dict of a config (paths become strings)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


class Repeated(list):
    """The values of a key given more than once on the command line, in order (resolved by type)."""


def parse_overrides(argv: list[str]) -> dict:
    """``['--a.b', '3', '--c', 'x']`` -> ``{'a': {'b': 3}, 'c': 'x'}`` (values parsed as YAML).

    ``--flag`` with no value (end of argv or followed by another ``--key``) means ``true``.
    A key given more than once keeps every value as a :class:`Repeated` list; :func:`load_config`
    resolves it by the field's type: for a list field a scalar appends and a list replaces
    (``--text a --text b`` -> ``['a', 'b']``), for any other field the LAST value wins, so
    ``make corpus ARGS="--out_dir X"`` overrides the ``--out_dir`` the Makefile passed before it.
    """
    out: dict = {}
    i = 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--") or len(key) <= 2:
            raise ConfigError(f"expected --key value, got {key!r}")
        key = key[2:].replace("-", "_")
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            raw = argv[i + 1]
            i += 2
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            if raw.strip() == "":
                value = ""
        else:
            value = True
            i += 1
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--{key}: {p!r} was given a value, it cannot also have keys")
        leaf = parts[-1]
        if leaf in node:
            prev = node[leaf]
            node[leaf] = Repeated([*prev, value]) if isinstance(prev, Repeated) else Repeated([prev, value])
        else:
            node[leaf] = value
    return out


def _is_list_type(tp: Any) -> bool:
    if typing.get_origin(tp) in (list, tuple):
        return True
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and any(_is_list_type(a) for a in typing.get_args(tp))


def _resolve_repeated(d: dict, cls: Any) -> dict:
    """Collapse :class:`Repeated` values: list fields collect (a list value replaces), others keep the last."""
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    out = {}
    for k, v in d.items():
        tp = hints.get(k)
        if isinstance(v, Repeated):
            if _is_list_type(tp):
                acc: list = []
                for item in v:
                    acc = list(item) if isinstance(item, list) else [*acc, item]
                v = acc
            else:
                v = v[-1]
        if isinstance(v, dict) and dataclasses.is_dataclass(tp):
            v = _resolve_repeated(v, tp)
        out[k] = v
    return out


def _deep_merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = _deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def _stringify_paths(d: dict, cls: type) -> dict:
    # Overrides given as YAML may parse "123" as int for a str field; keep it a string.
    hints = typing.get_type_hints(cls)
    for k, v in list(d.items()):
        tp = hints.get(k)
        if tp in (str, Path) and isinstance(v, (int, float)) and not isinstance(v, bool):
            d[k] = str(v)
        elif dataclasses.is_dataclass(tp) and isinstance(v, dict):
            d[k] = _stringify_paths(dict(v), tp)
    return d


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | dict | None = None) -> T:
    """Load ``cls`` from YAML ``path`` (or defaults if None), then apply ``--key value`` overrides."""
    data = load_yaml(path) if path else {}
    source = str(path) if path else cls.__name__
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list) else overrides
        data = _deep_merge(data, _stringify_paths(_resolve_repeated(dict(extra), cls), cls))
        source = f"{source} (+overrides)"
    return _from_dict(cls, data, source)
