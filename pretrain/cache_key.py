"""The packed-blocks cache key: every input and option that decides the blocks, hashed.

``cache_path(...) == <cache_root>/<split>-b<block>-<key>`` where ``key`` is the first 16 hex digits
of the sha256 of :func:`cache_material`: the tokenizer files' sha256, the split's shard contents,
the block size, BOS/EOS framing, the text field, and for a mixture each source's contents, share
and text field plus the mixture seed. Options that do not change the blocks (``num_proc``, the map
batch size, ``restart_position_ids``) are left out, so changing them reuses the cache. Invariant
(tested option by option): changing anything in the material changes the key.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from zhllama.artifacts import sha256_file
from zhllama.cli import UserError

if TYPE_CHECKING:
    from pretrain.data import PackConfig

CACHE_FORMAT_VERSION = 2  # 2: meta.json stats carry corpus_chars / corpus_tokens

#: Files of a tokenizer directory that decide the ids (reports and meta.json beside them do not).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def tokenizer_sha256(tokenizer_dir: str | Path) -> str:
    """sha256 over the tokenizer files that decide ids (``tokenizer.json``, ``tokenizer.model``, configs)."""
    d = Path(tokenizer_dir)
    if not d.is_dir():
        raise UserError(f"tokenizer directory not found: {d}")
    present = [name for name in TOKENIZER_FILES if (d / name).is_file()]
    if "tokenizer.json" not in present and "tokenizer.model" not in present:
        raise UserError(f"no tokenizer.json or tokenizer.model in tokenizer directory: {d}")
    h = hashlib.sha256()
    for name in present:
        h.update(f"{name}\0{sha256_file(d / name)}\0".encode())
    return h.hexdigest()


def corpus_files(corpus_dir: str | Path, split: str) -> list[Path]:
    """The split's JSONL shards, sorted: ``<corpus_dir>/<split>/*.jsonl``."""
    from corpora.shards import shard_files

    return shard_files(corpus_dir, split)


def source_files(path: str | Path) -> list[Path]:
    """Files of a mixture source: the file itself, or a directory's ``*.jsonl``/``*.txt`` sorted."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(x for x in p.iterdir() if x.suffix in (".jsonl", ".txt") and x.is_file())
    else:
        raise UserError(f"mixture source not found: {p}")
    if not files:
        raise UserError(f"mixture source has no .jsonl or .txt files: {p}")
    kinds = {f.suffix for f in files}
    if len(kinds) > 1 or not kinds <= {".jsonl", ".txt"}:
        raise UserError(f"mixture source must be all .jsonl or all .txt files, got {sorted(kinds)}: {p}")
    return files


def files_sha256(files: list[Path]) -> str:
    """sha256 over the contents of ``files`` in order (names excluded: a renamed shard is the same text)."""
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def cache_key(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def cache_material(tokenizer_dir: Path, corpus: list[Path], split: str, cfg: PackConfig) -> dict:
    """Everything that decides the blocks, hashed into the cache key (and stored in meta.json)."""
    return {
        "format": CACHE_FORMAT_VERSION,
        "tokenizer_sha256": tokenizer_sha256(tokenizer_dir),
        "corpus_sha256": files_sha256(corpus),
        "split": split,
        "block_size_tokens": cfg.block_size_tokens,
        "add_bos": cfg.add_bos,
        "add_eos": cfg.add_eos,
        "text_field": cfg.text_field,
        "seed": cfg.seed if cfg.mixture else None,
        "mixture": [
            {"sha256": files_sha256(source_files(m.path)), "share": m.share, "text_field": m.text_field}
            for m in cfg.mixture
        ],
    }


def cache_path(tokenizer_dir: str | Path, corpus_dir: str | Path, cache_root: str | Path, cfg: PackConfig,
               split: str = "train") -> Path:
    """Where the blocks for these inputs and options live (built or not)."""
    material = cache_material(Path(tokenizer_dir), corpus_files(corpus_dir, split), split, cfg)
    return path_for(cache_root, material)


def path_for(cache_root: str | Path, material: dict) -> Path:
    """``<cache_root>/<split>-b<block>-<key>`` of a :func:`cache_material` dict."""
    return Path(cache_root) / f"{material['split']}-b{material['block_size_tokens']}-{cache_key(material)}"
