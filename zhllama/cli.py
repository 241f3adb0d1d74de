"""The thin shell shared by the stage CLIs: ``python -m STAGE COMMAND [--config F] [--key value ...]``.

Each stage's ``__main__`` passes a table ``{command: (ConfigClass, run_fn, help)}``; the config is
loaded from ``--config`` (default ``configs/STAGE/COMMAND.yaml`` if it exists) and the remaining
``--key value`` pairs override it. User errors (:class:`UserError`, :class:`ConfigError`) print one
clear line and exit with status 2 instead of a traceback.
"""
from __future__ import annotations

import sys
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from zhllama import REPO_ROOT
from zhllama.config import ConfigError, load_config


class UserError(Exception):
    """Bad input from the user (missing file, wrong format...): printed as one line, exit 2."""


class Interrupted(Exception):
    """A command stopped on a signal after cleaning up: printed as one line, exit ``128 + signum``."""

    def __init__(self, signum: int, what: str = ""):
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}" + (f": {what}" if what else ""))
        self.signum = signum


Command = tuple[Any, Any, str]
"""(config class or "module:Name", run function or "module:name", help text). Strings are imported
lazily so ``python -m STAGE --help`` stays fast and one broken command cannot break the others."""


def import_object(obj: Any) -> Any:
    """``"package.module:Name"`` -> the object (anything else is returned as is)."""
    if isinstance(obj, str):
        import importlib

        module, _, name = obj.partition(":")
        return getattr(importlib.import_module(module), name)
    return obj


_resolve = import_object


def _usage(stage: str, commands: dict[str, Command]) -> str:
    lines = [f"usage: python -m {stage} COMMAND [--config FILE.yaml] [--key value ...]", "", "commands:"]
    width = max(len(c) for c in commands)
    for name, (_, _, text) in commands.items():
        lines.append(f"  {name.ljust(width)}  {text}")
    lines.append("")
    lines.append(f"`python -m {stage} COMMAND --help` lists the command's config keys.")
    return "\n".join(lines)


def _command_help(stage: str, name: str, cls: type, text: str) -> str:
    lines = [f"usage: python -m {stage} {name} [--config FILE.yaml] [--key value ...]", "", text, "", "keys (default):"]
    if is_dataclass(cls):
        for f in fields(cls):
            default = f.default if f.default is not f.default_factory else "..."  # type: ignore[comparison-overlap]
            try:
                default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
            except Exception:
                pass
            lines.append(f"  --{f.name}  ({getattr(f.type, '__name__', f.type)}) = {default!r}")
    return "\n".join(lines)


def main(stage: str, commands: dict[str, Command], argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(stage, commands))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"error: unknown command {name!r}\n\n{_usage(stage, commands)}", file=sys.stderr)
        return 2
    cls_spec, fn_spec, text = commands[name]
    cls = _resolve(cls_spec)
    if "-h" in rest or "--help" in rest:
        print(_command_help(stage, name, cls, text))
        return 0
    config_path: str | None = None
    if "--config" in rest:
        i = rest.index("--config")
        if i + 1 >= len(rest):
            print("error: --config needs a file", file=sys.stderr)
            return 2
        config_path = rest[i + 1]
        rest = rest[:i] + rest[i + 2 :]
    else:
        default = REPO_ROOT / "configs" / stage / f"{name.replace('-', '_')}.yaml"
        if default.is_file():
            config_path = str(default)
    try:
        cfg = load_config(cls, config_path, rest)
        result = _resolve(fn_spec)(cfg)
    except (UserError, ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:  # Ctrl-C outside a section that handles it (nothing left running)
        print("error: interrupted by SIGINT", file=sys.stderr)
        return 130
    return int(result) if isinstance(result, int) and not isinstance(result, bool) else 0


def existing_file(path: str | Path, what: str) -> Path:
    """Return ``Path(path)`` or raise a :class:`UserError` naming what was expected."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{what} not found: {p}")
    if not p.is_file():
        raise UserError(f"{what} is not a file: {p}")
    return p
