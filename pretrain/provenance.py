"""Which files a model was trained on, by content hash, so evaluation never scores training text.

``python -m pretrain train`` records the sha256 of every training source (the corpus split's shards,
each mixture file) in ``checkpoints/meta.json`` and ``final/meta.json`` under
:data:`SOURCES_KEY`; ``python -m pretrain eval`` refuses an evaluation file whose content equals one
of them (renamed or copied files included), and ``train`` refuses a held-out split
(``eval_every_steps``) that is also a training source::

    sources = training_sources("artifacts/corpus", "train", [MixtureSource("tests/data/english.txt", 0.05)])
    refuse_training_text({"tests/data/english.txt": sha256_file(...)}, sources, "final/")   # UserError
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zhllama.artifacts import sha256_file
from zhllama.cli import UserError

SOURCES_KEY = "training_sources_sha256"


def training_sources(corpus_dir: str | Path, split: str, mixture: list[Any]) -> dict[str, str]:
    """``{path: sha256}`` of the corpus split's shards and of every mixture file (a directory's files)."""
    from pretrain.data import corpus_files, source_files

    files = list(corpus_files(corpus_dir, split))
    for m in mixture:
        files += source_files(m.path)
    return {str(f): sha256_file(f) for f in files}


def recorded_sources(model_path: str | Path) -> dict[str, str]:
    """The training sources recorded beside a model (HF dir, LoRA adapter in ``final/adapter``,
    DeepSpeed checkpoints dir or step dir); ``{}`` when nothing was recorded (e.g. a base model)."""
    p = Path(model_path)
    for d in (p, p.parent, p.parent.parent):
        meta = d / "meta.json"
        if meta.is_file():
            try:
                found = json.loads(meta.read_text(encoding="utf-8")).get(SOURCES_KEY)
            except (OSError, json.JSONDecodeError):
                continue
            if found:
                return dict(found)
    return {}


def trained_on(files_sha256: dict[str, str], sources: dict[str, str]) -> dict[str, str]:
    """``{file: training source}`` for each file whose content equals a training source's.

    >>> trained_on({"a.txt": "h1", "b.txt": "h2"}, {"corpus/train/x.jsonl": "h2"})
    {'b.txt': 'corpus/train/x.jsonl'}
    """
    by_hash = {v: k for k, v in sources.items()}
    return {path: by_hash[digest] for path, digest in files_sha256.items() if digest in by_hash}


def refuse_training_text(files_sha256: dict[str, str], sources: dict[str, str], model: str,
                         allow: bool = False) -> dict[str, str]:
    """:func:`trained_on`, raising :class:`UserError` on a match unless ``allow`` (then the matches are returned)."""
    seen = trained_on(files_sha256, sources)
    if seen and not allow:
        path, source = next(iter(seen.items()))
        raise UserError(f"{path} has the same content as {source}, a training source of {model}: its figures "
                        "would measure memorisation, not held-out quality; evaluate on text the model did not "
                        "train on (or pass --allow_training_text to score it anyway)")
    return seen
