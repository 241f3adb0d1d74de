"""Tokenize a corpus split (plus a share of other text), pack it into fixed-size blocks, cache on disk.

``python -m pretrain pack`` and the trainer both call :func:`build_or_load_blocks`::

    blocks = build_or_load_blocks("artifacts/tokenizer", "artifacts/corpus", "artifacts/cache", PackConfig())
    blocks[0]            # int32 ids, shape (block_size_tokens,)
    blocks.labels(0)     # the same ids with -100 on padding (only the very last block has any)

How it works:

1. Each source (the corpus split, every mixture file) is read with ``datasets`` into Arrow and
   tokenized with ``Dataset.map`` (batched, ``num_proc`` processes) by the fast tokenizer's
   ``encode_batch_fast``; a batch returns one Arrow list column of ``BOS ids EOS`` documents, built
   with numpy, with no per-token Python lists handed to ``datasets``. Empty documents are dropped.
2. Mixture sources are sampled to their token share and interleaved by seed
   (:mod:`pretrain.packing`); the main corpus keeps its order.
3. The documents are streamed straight from the memory-mapped Arrow cache into ``blocks.npy``
   (an int32 ``[n_blocks, block_size_tokens]`` array), carrying every remainder across batch edges.
   The final partial block is padded and its valid length recorded, so no token is lost:
   ``n_blocks * block_size_tokens == n_tokens + n_pad_tokens``. ``doc_starts.npy`` holds each
   document's stream offset (for position ids that restart per document).

The cache directory ``cache_root/<split>-b<block>-<key>/`` is keyed by the sha256 of the tokenizer
files, of the split's corpus shards, of the mixture files and of the options that change the
blocks (not ``num_proc`` or the batch size: the blocks do not depend on them). It is built with
``atomic_dir``, so a crash leaves no half cache, and carries ``meta.json`` (config, versions, input
hashes, counts). Delete the directory to force a rebuild.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pretrain import packing
from pretrain.blocks import BLOCKS_FILE, DOC_STARTS_FILE, IGNORE_INDEX, PackedBlocks
from pretrain.cache_key import (
    cache_material,
    cache_path,
    corpus_files,
    path_for,
    source_files,
    tokenizer_sha256,
)
from pretrain.tokenizing import DocStore, count_characters, load_texts, load_tokenizer, tokenize_dataset
from zhllama.artifacts import atomic_dir, pid_running, read_meta, write_meta
from zhllama.cli import UserError

# The names other modules use from here (the store, the key, the tokenizer live in their own modules).
__all__ = ["BLOCKS_FILE", "DOC_STARTS_FILE", "IGNORE_INDEX", "MixtureSource", "PackCommandConfig", "PackConfig",
           "PackedBlocks", "build_or_load_blocks", "cache_path", "load_tokenizer", "remove_stale_scratch", "run",
           "source_files", "summary_line", "tokenizer_sha256"]


@dataclass
class MixtureSource:
    """An extra text source mixed into the stream against forgetting, e.g.
    ``{path: tests/data/english.txt, share: 0.1}``."""

    path: str
    """A ``.jsonl`` file (one JSON object per line), a ``.txt`` file (one document per non-empty line),
    or a directory of such files (sorted by name)."""
    share: float
    """Target fraction of all packed tokens taken from this source (0 < share; all shares sum < 1).
    A small source is repeated (fresh seeded shuffle each pass), a large one subsampled."""
    text_field: str = "text"
    """JSONL key holding the text (ignored for .txt)."""


@dataclass
class PackConfig:
    """Packing options (``TrainConfig`` embeds this as ``data``); e.g. ``PackConfig(block_size_tokens=128)``."""

    block_size_tokens: int = 256
    """Tokens per block (the training sequence length)."""
    add_bos: bool = True
    """Start every document with the tokenizer's BOS id."""
    add_eos: bool = True
    """End every document with the EOS id (so the model learns where a document stops)."""
    mixture: list[MixtureSource] = field(default_factory=list)
    """Other text mixed in by token share, e.g. ``[{path: tests/data/english.txt, share: 0.1}]``."""
    restart_position_ids: bool = False
    """Read-side option: :meth:`PackedBlocks.example` adds position ids restarting at each document
    (for attention kernels that honour them). Does not change the cache."""
    seed: int = 0
    """Seed of mixture sampling and interleaving (the main corpus order never changes)."""
    text_field: str = "text"
    """Key of the text in the corpus JSONL records."""
    num_proc: int | None = None
    """Tokenizer processes for ``datasets.map``; ``None`` means all cores. Does not change the blocks."""
    map_batch_size_docs: int = 1000
    """Documents per ``datasets.map`` batch. Does not change the blocks."""

    def __post_init__(self):
        if self.block_size_tokens < 2:
            raise ValueError(f"block_size_tokens must be >= 2, got {self.block_size_tokens}")
        if self.num_proc is not None and self.num_proc < 1:
            raise ValueError(f"num_proc must be >= 1 or null, got {self.num_proc}")
        if self.map_batch_size_docs < 1:
            raise ValueError(f"map_batch_size_docs must be >= 1, got {self.map_batch_size_docs}")
        shares = [m.share for m in self.mixture]
        if any(s <= 0 for s in shares) or sum(shares) >= 1:
            raise ValueError(f"mixture shares must each be > 0 and sum to < 1, got {shares}")


@dataclass
class PackCommandConfig:
    """``python -m pretrain pack``: the paths plus the packing options (``--data.block_size_tokens 128``)."""

    tokenizer_dir: str = "artifacts/tokenizer"
    """HF tokenizer directory (``AutoTokenizer.from_pretrained``)."""
    corpus_dir: str = "artifacts/corpus"
    """Corpus stage output: ``<corpus_dir>/<split>/*.jsonl``."""
    cache_dir: str = "artifacts/cache"
    """Cache root; the blocks go to ``<cache_dir>/<key>/``."""
    split: str = "train"
    """Corpus split to pack (``train`` or ``heldout``)."""
    data: PackConfig = field(default_factory=PackConfig)
    """Packing options."""


def build_or_load_blocks(tokenizer_dir: str | Path, corpus_dir: str | Path, cache_root: str | Path,
                         cfg: PackConfig, split: str = "train") -> PackedBlocks:
    """The packed blocks of ``corpus_dir/split`` for this tokenizer and ``cfg``: reused from
    ``cache_root`` when the key matches, else built (atomically) and cached.

    >>> blocks = build_or_load_blocks("artifacts/tokenizer", "artifacts/corpus", "artifacts/cache",
    ...                               PackConfig(block_size_tokens=128))    # doctest: +SKIP
    """
    corpus = corpus_files(corpus_dir, split)
    material = cache_material(Path(tokenizer_dir), corpus, split, cfg)
    path = path_for(cache_root, material)
    meta = read_meta(path)
    if meta is not None and meta.get("cache_key_material") == material and (path / BLOCKS_FILE).is_file():
        return PackedBlocks(path, cfg.restart_position_ids)
    root_existed = Path(cache_root).exists()
    try:
        _build(path, Path(tokenizer_dir), corpus, split, cfg, material)
    except BaseException:
        if not root_existed:  # a refused build (too little text, a bad line) leaves no empty cache folder
            with contextlib.suppress(OSError):
                Path(cache_root).rmdir()
        raise
    return PackedBlocks(path, cfg.restart_position_ids)


def remove_stale_scratch(cache_root: Path) -> list[Path]:
    """Delete ``.scratch-<pid>-*`` dirs (tokenized Arrow files) left by builds whose process died."""
    removed = []
    for d in cache_root.glob(".scratch-*-*"):
        pid = d.name.split("-")[1]
        if not pid.isdigit() or pid_running(int(pid)):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _build(path: Path, tokenizer_dir: Path, corpus: list[Path], split: str, cfg: PackConfig, material: dict) -> None:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    tok = load_tokenizer(tokenizer_dir)
    bos_id = tok.bos_id if cfg.add_bos else None
    eos_id = tok.eos_id if cfg.add_eos else None
    if cfg.add_bos and bos_id is None:
        raise UserError(f"add_bos is set but the tokenizer in {tokenizer_dir} has no BOS token")
    if cfg.add_eos and eos_id is None:
        raise UserError(f"add_eos is set but the tokenizer in {tokenizer_dir} has no EOS token")
    # Padding only ever fills the tail of the last block and is masked out of the loss.
    pad_id = next(i for i in (tok.pad_id, tok.eos_id, 0) if i is not None)

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(path.parent)
    with tempfile.TemporaryDirectory(prefix=f".scratch-{os.getpid()}-", dir=path.parent) as scratch:
        scratch_dir = Path(scratch)
        corpus_ds = load_texts(corpus, cfg.text_field, scratch_dir)
        corpus_chars = count_characters(corpus_ds)
        stores = [DocStore(tokenize_dataset(corpus_ds, tok, bos_id, eos_id, cfg, desc=f"{split} corpus"))]
        names = [f"corpus/{split}"]
        for j, m in enumerate(cfg.mixture):
            files = source_files(m.path)
            ds = load_texts(files, m.text_field, scratch_dir)
            stores.append(DocStore(tokenize_dataset(ds, tok, bos_id, eos_id, cfg, desc=f"mixture {j}")))
            names.append(str(m.path))
            if stores[-1].lengths.sum() == 0:
                raise UserError(f"mixture source has no tokens: {m.path}")

        # Which documents, in which order: the main corpus once, in order; extra sources sampled to share.
        main_tokens = int(stores[0].lengths.sum())
        targets = packing.mixture_targets(main_tokens, [m.share for m in cfg.mixture]) if cfg.mixture else []
        picks = [np.arange(len(stores[0]), dtype=np.int64)]
        picks += [packing.sample_documents(s.lengths, t, seed=cfg.seed + 1000 * (j + 1))
                  for j, (s, t) in enumerate(zip(stores[1:], targets, strict=True))]
        src, rank = packing.interleave(len(stores[0]), [p.size for p in picks[1:]], seed=cfg.seed)
        doc = np.empty_like(rank)
        for j, p in enumerate(picks):
            doc[src == j] = p[rank[src == j]]
        doc_lengths = np.empty(src.size, dtype=np.int64)
        for j, s in enumerate(stores):
            doc_lengths[src == j] = s.lengths[doc[src == j]]
        n_tokens = int(doc_lengths.sum())
        if n_tokens < cfg.block_size_tokens:
            raise UserError(
                f"{split} corpus in {corpus[0].parent} has {n_tokens} tokens, fewer than one block of "
                f"{cfg.block_size_tokens}: add text or lower data.block_size_tokens"
            )
        n_blocks = -(-n_tokens // cfg.block_size_tokens)
        per_source = {
            name: {"docs": int((src == j).sum()), "tokens": int(doc_lengths[src == j].sum()),
                   "share": float(doc_lengths[src == j].sum() / n_tokens)}
            for j, name in enumerate(names)
        }

        with atomic_dir(path) as tmp:
            with open(tmp / BLOCKS_FILE, "wb") as f:
                np.lib.format.write_array_header_1_0(
                    f, {"descr": np.lib.format.dtype_to_descr(np.dtype(packing.TOKEN_DTYPE)),
                        "fortran_order": False, "shape": (n_blocks, cfg.block_size_tokens)})
                writer = packing.BlockWriter(f, cfg.block_size_tokens, pad_id)
                with tqdm(total=n_tokens, unit="tok", unit_scale=True, desc="pack blocks") as bar:
                    for j, first, stop in packing.runs(src, doc):
                        for piece in stores[j].slices(first, stop):
                            writer.write(piece)
                            bar.update(piece.size)
                stats = writer.finish()
            assert stats["n_tokens"] == n_tokens and stats["n_blocks"] == n_blocks, stats
            doc_starts = np.zeros(src.size, dtype=np.int64)
            np.cumsum(doc_lengths[:-1], out=doc_starts[1:])
            np.save(tmp / DOC_STARTS_FILE, doc_starts)
            seconds = time.perf_counter() - t0
            stats.update(n_docs=int(src.size), corpus_chars=corpus_chars, block_size_tokens=cfg.block_size_tokens,
                         corpus_tokens=main_tokens, bos_id=bos_id,
                         eos_id=eos_id, pad_id=pad_id, vocab_size=tok.vocab_size, sources=per_source,
                         build_seconds=round(seconds, 3), tokens_per_second=round(n_tokens / max(seconds, 1e-9)))
            inputs = {"tokenizer": material["tokenizer_sha256"], f"corpus/{split}": material["corpus_sha256"]}
            inputs.update({f"mixture/{m.path}": x["sha256"] for m, x in zip(cfg.mixture, material["mixture"], strict=True)})
            write_meta(tmp, config=cfg, inputs=inputs, cache_key_material=material, stats=stats,
                       tokenizer_dir=str(tokenizer_dir), corpus_files=[str(c) for c in corpus])


# ----------------------------------------------------------------------------------------------
# CLI


def summary_line(blocks: PackedBlocks, reused: bool) -> str:
    """One line: what the cache holds and whether it was reused."""
    s = blocks.stats
    shares = ", ".join(f"{name} {v['share']:.1%}" for name, v in s["sources"].items())
    how = "reused cache" if reused else f"built in {s['build_seconds']:.1f}s ({s['tokens_per_second']:,} tokens/s)"
    return (f"{len(blocks):,} blocks x {blocks.block_size_tokens} tokens: {s['n_tokens']:,} tokens from "
            f"{s['n_docs']:,} docs + {s['n_pad_tokens']} pad ({shares}); {how}")


def run(cfg: PackCommandConfig) -> int:
    """CLI: build (or reuse) the blocks, print the cache path and a one-line summary."""
    path = cache_path(cfg.tokenizer_dir, cfg.corpus_dir, cfg.cache_dir, cfg.data, cfg.split)
    reused = read_meta(path) is not None
    blocks = build_or_load_blocks(cfg.tokenizer_dir, cfg.corpus_dir, cfg.cache_dir, cfg.data, cfg.split)
    print(blocks.path)
    print(summary_line(blocks, reused))
    return 0
