"""Chat data formats as data: a :class:`FormatSpec` maps one JSON record onto a dialog.

The built-in specs (``messages``, ``sharegpt``, ``alpaca``) live in ``sft/formats.yaml``; a user adds
a format by writing another entry (``--data.formats_file my_formats.yaml --data.format mine``), not
code. Two record shapes exist: ``turns`` (a list of ``{role, content}``-like dicts under
``messages_field``) and ``fields`` (one instruction/response pair in named fields, optionally after
a ``history`` of pairs)::

    >>> spec = load_formats()["alpaca"]
    >>> to_dialog({"instruction": "翻译", "input": "hello", "output": "你好"}, spec)[0]
    [{'role': 'user', 'content': '翻译\\nhello'}, {'role': 'assistant', 'content': '你好'}]
    >>> to_dialog({"conversations": [{"from": "bot", "value": "x"}]}, load_formats()["sharegpt"])[1]
    'unknown_role'

:func:`to_dialog` only maps shapes; the rules (order, emptiness, delimiters) are
:func:`sft.dialog.check_dialog`'s.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from sft.dialog import ROLES, Dialog
from zhllama.config import ConfigError, from_dict, load_yaml

BUILTIN_FORMATS_FILE = Path(__file__).with_name("formats.yaml")
T = TypeVar("T")


@dataclass
class FormatSpec:
    """How one record of a chat data file becomes a dialog (see ``sft/formats.yaml``)."""

    shape: Literal["turns", "fields"]
    """``turns``: a list of messages under ``messages_field``; ``fields``: one pair in named fields."""
    messages_field: str = "messages"
    """(turns) Key of the message list."""
    role_field: str = "role"
    """(turns) Key of a message's role."""
    content_field: str = "content"
    """(turns) Key of a message's text."""
    role_map: dict[str, str] = field(default_factory=lambda: {r: r for r in ROLES})
    """(turns) Role name in the file -> ``system`` | ``user`` | ``assistant``; others are rejected."""
    prompt_fields: list[str] = field(default_factory=lambda: ["instruction", "input"])
    """(fields) Keys whose non-empty values, joined, form the user message."""
    prompt_joiner: str = "\n"
    """(fields) Joins the ``prompt_fields`` values."""
    response_field: str = "output"
    """(fields) Key of the assistant's answer."""
    system_field: str | None = None
    """Key of an optional system prompt beside the turns (a blank value means none)."""
    history_field: str | None = None
    """(fields) Key of optional earlier ``[[user, assistant], ...]`` pairs."""

    def __post_init__(self) -> None:
        bad = sorted(set(self.role_map.values()) - set(ROLES))
        if bad:
            raise ValueError(f"role_map values must be among {list(ROLES)}, got {bad}")
        if self.shape == "fields" and not self.prompt_fields:
            raise ValueError("a 'fields' format needs at least one prompt field")


def load_named_specs(cls: type[T], builtin_file: Path, extra_file: str | Path | None) -> dict[str, T]:
    """``{name: cls(**entry)}`` of a YAML file of named entries, overridden/extended by ``extra_file``."""
    specs: dict[str, T] = {}
    for path in [builtin_file] + ([Path(extra_file)] if extra_file else []):
        for name, raw in load_yaml(path).items():
            if not isinstance(raw, dict):
                raise ConfigError(f"{path}: {name!r} must be a mapping of {cls.__name__} keys")
            specs[name] = from_dict(cls, raw, source=f"{path}:{name}")
    return specs


def pick(specs: dict[str, T], name: str, what: str) -> T:
    """``specs[name]``, or a :class:`ConfigError` listing the known names."""
    if name not in specs:
        raise ConfigError(f"unknown {what} {name!r}; known: {sorted(specs)} (add one in a YAML file of the same shape)")
    return specs[name]


def load_formats(extra_file: str | Path | None = None) -> dict[str, FormatSpec]:
    """The built-in specs, overridden/extended by the specs in ``extra_file`` (same YAML shape)."""
    return load_named_specs(FormatSpec, BUILTIN_FORMATS_FILE, extra_file)


def get_format(name: str, extra_file: str | Path | None = None) -> FormatSpec:
    """The spec called ``name`` (a :class:`ConfigError` listing the known names otherwise)."""
    return pick(load_formats(extra_file), name, "chat data format")


Converted = tuple[Dialog | None, str | None, str]
"""``(dialog, None, "")`` or ``(None, reason, detail)``."""


def _system(record: dict, spec: FormatSpec) -> list[dict]:
    if spec.system_field is None or spec.system_field not in record:
        return []
    value = record[spec.system_field]
    if isinstance(value, str) and not value.strip():
        return []  # an empty system field is the common way of saying "none"
    return [{"role": "system", "content": value}]


def _turns(record: dict, spec: FormatSpec) -> Converted:
    messages = record.get(spec.messages_field)
    if not isinstance(messages, list):
        why = "missing" if spec.messages_field not in record else f"a {type(messages).__name__}, not a list"
        return None, "missing_field", f"{spec.messages_field!r} is {why}"
    out = _system(record, spec)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or spec.role_field not in m or spec.content_field not in m:
            return None, "missing_field", f"{spec.messages_field}[{i}] lacks {spec.role_field!r}/{spec.content_field!r}"
        role = spec.role_map.get(m[spec.role_field]) if isinstance(m[spec.role_field], str) else None
        if role is None:
            return None, "unknown_role", f"{spec.messages_field}[{i}].{spec.role_field} = {m[spec.role_field]!r}"
        out.append({"role": role, "content": m[spec.content_field]})
    return out, None, ""


def _fields(record: dict, spec: FormatSpec) -> Converted:
    parts = []
    for key in spec.prompt_fields:
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            return None, "non_string_content", f"{key!r} is a {type(value).__name__}"
        if value.strip():
            parts.append(value)
    if spec.response_field not in record:
        return None, "missing_field", f"no {spec.response_field!r}"
    out = _system(record, spec)
    history = record.get(spec.history_field) if spec.history_field else None
    if history:
        if not isinstance(history, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in history):
            return None, "missing_field", f"{spec.history_field!r} is not a list of [user, assistant] pairs"
        for user, answer in history:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    out += [{"role": "user", "content": spec.prompt_joiner.join(parts)},
            {"role": "assistant", "content": record[spec.response_field]}]
    return out, None, ""


def to_dialog(record: dict[str, Any], spec: FormatSpec) -> Converted:
    """Map one JSON record onto a dialog with ``spec`` (no rule checks; see :func:`sft.dialog.validate`)."""
    return _turns(record, spec) if spec.shape == "turns" else _fields(record, spec)
