"""Atomic writes and self-describing artifacts.

Invariant: a crash at any point leaves either the old file/directory or the complete new one,
never a half-written one. Files go to a temp name in the same directory and are renamed
(``os.replace`` is atomic on POSIX); directories are built under a temp name and swapped in.

Every artifact directory carries ``meta.json``: the resolved config, library versions and the
sha256 of its inputs, so a cache or checkpoint can tell which tokenizer or corpus made it::

    write_meta(out_dir, config=cfg, inputs={"tokenizer": sha256_file(tok)})
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from zhllama.config import to_dict

META_NAME = "meta.json"


def _default_mode(is_dir: bool) -> int:
    # mkstemp/mkdtemp create 0600/0700 files; artifacts should get the usual umask-based modes.
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if is_dir else 0o666) & ~umask


def _apply_default_modes(root: Path) -> None:
    """Give every file and folder under ``root`` the modes a plain ``open``/``mkdir`` would (umask-based).

    Libraries that write through a private temp file hand back 0600 files (``safetensors``'
    ``save_file``, hence every ``save_pretrained`` model); an artifact must be readable like any other
    file its owner writes. Executable files keep their execute bits (subject to the umask).
    """
    file_mode, dir_mode = _default_mode(is_dir=False), _default_mode(is_dir=True)
    for p in [root, *root.rglob("*")]:
        if p.is_symlink():
            continue
        if p.is_dir():
            os.chmod(p, dir_mode)
        elif p.is_file():
            os.chmod(p, dir_mode if p.stat().st_mode & 0o111 else file_mode)


_TRACKED_PACKAGES = (
    "torch", "transformers", "tokenizers", "datasets", "deepspeed", "peft", "accelerate",
    "sentencepiece", "jieba", "opencc", "datasketch", "wikiextractor", "protobuf", "numpy",
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (constant memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            h.update(chunk)
    return h.hexdigest()


def sha256_tree(path: str | Path, skip: tuple[str, ...] = (META_NAME,)) -> str:
    """Hash of a file or of a directory's files (relative names + contents, sorted)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p)
    h = hashlib.sha256()
    for f in sorted(x for x in p.rglob("*") if x.is_file() and x.name not in skip):
        h.update(str(f.relative_to(p)).encode())
        h.update(b"\0")
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape results."""
    out = {"python": sys.version.split()[0], "platform": platform.platform(), "zhllama": _zhllama_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def _zhllama_version() -> str:
    from zhllama import __version__

    return __version__


def atomic_write_npz(path: str | Path, arrays: dict) -> None:
    """Write ``arrays`` (name -> numpy array) as an uncompressed ``.npz`` at ``path`` atomically.

    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.npz"; atomic_write_npz(p, {"x": np.arange(3)})
    >>> np.load(p)["x"].tolist()
    [0, 1, 2]
    """
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file + rename in the same directory."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        os.fchmod(fd, _default_mode(is_dir=False))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n")


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it (pure: the caller decides where they go).

    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> figure_png(plt.figure(figsize=(1, 1)))[:4] == bytes([0x89]) + b"PNG"
    True
    """
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (temp file + rename) and close it."""
    atomic_write_bytes(path, figure_png(fig, dpi))
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Build a directory under a temp name; on success swap it in for ``path``.

    Files and folders in it get umask-based modes (not the 0600 some writers leave). On an
    exception the temp directory is removed and ``path`` is untouched::

        with atomic_dir("artifacts/tokenizer") as tmp:
            (tmp / "tokenizer.model").write_bytes(model_bytes)
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        _apply_default_modes(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}-{time.time_ns()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def pid_running(pid: int) -> bool:
    """True when process ``pid`` exists on this machine (stale locks and scratch dirs name dead ones)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def build_meta(config: Any = None, inputs: dict[str, str] | None = None, **extra: Any) -> dict:
    """The dict written as ``meta.json``: config, versions, input hashes, creation time."""
    meta = {
        "created_unix_s": int(time.time()),
        "config": to_dict(config) if config is not None else None,
        "versions": versions(),
        "inputs_sha256": dict(inputs or {}),
    }
    meta.update(extra)
    return meta


def write_meta(directory: str | Path, config: Any = None, inputs: dict[str, str] | None = None, **extra: Any) -> Path:
    """Write ``meta.json`` into ``directory`` atomically; returns its path."""
    path = Path(directory) / META_NAME
    atomic_write_json(path, build_meta(config, inputs, **extra))
    return path


def read_meta(directory: str | Path) -> dict | None:
    path = Path(directory) / META_NAME
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
