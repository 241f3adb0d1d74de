"""Shared plumbing for the zhllama stages: typed configs, atomic artifacts, self-describing metadata.

The stages themselves live in the top-level packages ``corpora``, ``vocab`` and ``pretrain``.
"""
import os
from pathlib import Path

__version__ = "0.1.0"

#: Repository root (the directory holding pyproject.toml).
REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """``$ZHLLAMA_DATA_DIR`` if set, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("ZHLLAMA_DATA_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")
