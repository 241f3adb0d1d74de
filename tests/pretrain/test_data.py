"""Packed blocks (pretrain/data.py, pretrain/packing.py) on real tokenizers and real zh wiki text.

Invariants: no packed token is lost (the stream read back from the blocks equals the direct
tokenization of every document framed by BOS/EOS), blocks do not depend on map batch size or
process count, builds are deterministic, the cache is reused and keyed by the tokenizer, and the
mixture share holds.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pretrain import packing
from pretrain.data import (
    IGNORE_INDEX,
    MixtureSource,
    PackCommandConfig,
    PackConfig,
    PackedBlocks,
    build_or_load_blocks,
    cache_path,
    run,
)
from zhllama.cli import UserError, main
from zhllama.config import load_config

REPO = Path(__file__).resolve().parents[2]
ENGLISH_TXT = REPO / "tests" / "data" / "english.txt"
BLOCK = 64


def write_corpus(root: Path, texts_by_shard: list[list[str]], split: str = "train") -> Path:
    """A corpus stage layout: ``root/<split>/shard-*.jsonl`` with ``{"id","source","text"}`` records."""
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    for s, texts in enumerate(texts_by_shard):
        with open(d / f"shard-{s:05d}.jsonl", "w", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"id": f"{s}-{i}", "source": "test", "text": t}, ensure_ascii=False) + "\n")
    return root


@pytest.fixture(scope="module")
def docs(zh_sample_texts) -> list[str]:
    """Real zh articles (cut short for speed), plus the awkward cases: an empty document, literal
    special-token text, leading spaces, English."""
    zh = [t[:400] for t in zh_sample_texts[:30]]
    odd = ["", "文本里写着 </s> 和 <s> 不是特殊符号", "  两个前导空格", "An English paragraph in the zh corpus."]
    return zh[:10] + odd + zh[10:]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, docs) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"), [docs[:17], docs[17:]])


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def cfg() -> PackConfig:
    # A tiny map batch (3 docs) so documents cross map-batch edges many times.
    return PackConfig(block_size_tokens=BLOCK, map_batch_size_docs=3, num_proc=1)


@pytest.fixture(scope="module")
def blocks(base_tokenizer_dir, corpus_dir, cache_root, cfg) -> PackedBlocks:
    return build_or_load_blocks(base_tokenizer_dir, corpus_dir, cache_root, cfg)


@functools.cache
def hf_tokenizer(tokenizer_dir: Path):
    """The reference: the directory loaded the way training and eval load it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def expected_stream(tokenizer_dir: Path, texts: list[str]) -> tuple[np.ndarray, list[int]]:
    """Direct tokenization of each non-empty document as BOS ids EOS, concatenated; doc starts."""
    tok = hf_tokenizer(tokenizer_dir)
    stream: list[int] = []
    starts = []
    for t in texts:
        ids = tok(t, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if ids:
            starts.append(len(stream))
            stream += [tok.bos_token_id, *ids, tok.eos_token_id]
    return np.array(stream, dtype=np.int32), starts


def read_stream(blocks: PackedBlocks) -> np.ndarray:
    return np.concatenate([blocks[i] for i in range(len(blocks))])[: blocks.n_tokens]


# ---------------------------------------------------------------------------------------------
# The pure packer


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=30),
    block=st.integers(2, 50),
    bos=st.booleans(),
    eos=st.booleans(),
)
def test_pack_documents_keeps_every_token(lengths, block, bos, eos):
    rng = np.random.default_rng(len(lengths) * 31 + block)
    docs = [rng.integers(3, 1000, size=n) for n in lengths]
    blocks, starts, n_tokens = packing.pack_documents(docs, block, 1 if bos else None, 2 if eos else None, pad_id=0)
    flat = blocks.reshape(-1)
    assert blocks.shape[1] == block
    assert n_tokens == sum(lengths) + len(lengths) * (bos + eos)
    assert blocks.size - n_tokens == (-n_tokens) % block  # pad only completes the last block
    assert not flat[n_tokens:].any()
    for d, s in zip(docs, starts, strict=True):
        body = flat[s + bos: s + bos + d.size]
        assert np.array_equal(body, d)
        if eos:
            assert flat[s + bos + d.size] == 2


def test_block_writer_matches_pack_documents():
    import io

    rng = np.random.default_rng(0)
    docs = [rng.integers(3, 500, size=n) for n in (7, 0, 13, 1, 30)]
    ref, _, n_ref = packing.pack_documents(docs, 8, 1, 2, pad_id=0)
    f = io.BytesIO()
    w = packing.BlockWriter(f, 8, pad_id=0)
    for d in docs:  # one write per document, in odd sizes: carries must cross every edge
        w.write(packing.with_markers(d, 1, 2))
    stats = w.finish()
    assert stats["n_tokens"] == n_ref and stats["n_blocks"] * 8 == stats["n_tokens"] + stats["n_pad_tokens"]
    assert np.array_equal(np.frombuffer(f.getvalue(), dtype=np.int32).reshape(-1, 8), ref)


def test_restart_positions_zero_at_every_document_start():
    starts = np.array([0, 5, 6, 20])
    pos = np.concatenate([packing.restart_positions(starts, b * 8, 8) for b in range(3)])
    for s in starts[starts < 24]:
        assert pos[s] == 0
    for b in range(3):
        assert pos[b * 8] == 0  # a document carried into a block restarts too
    assert pos[4] == 4 and pos[7] == 1 and pos[19] == 3  # 19: doc at 6, block start at 16


def test_interleave_and_sampling_deterministic_and_complete():
    lengths = np.array([5, 50, 7, 9])
    a = packing.sample_documents(lengths, 200, seed=3)
    assert np.array_equal(a, packing.sample_documents(lengths, 200, seed=3))
    assert lengths[a].sum() >= 200 and lengths[a[:-1]].sum() < 200  # overshoot under one document
    src, rank = packing.interleave(10, [4, 2], seed=1)
    assert np.array_equal(rank[src == 0], np.arange(10))  # main corpus order kept
    assert sorted(rank[src == 1].tolist()) == [0, 1, 2, 3] and sorted(rank[src == 2].tolist()) == [0, 1]


# ---------------------------------------------------------------------------------------------
# Real builds


def test_no_packed_token_lost(blocks, base_tokenizer_dir, docs):
    want, want_starts = expected_stream(base_tokenizer_dir, docs)
    got = read_stream(blocks)
    assert blocks.n_tokens == want.size
    assert np.array_equal(got, want)
    assert len(blocks) * BLOCK == blocks.n_tokens + blocks.stats["n_pad_tokens"]
    assert blocks.stats["n_pad_tokens"] < BLOCK
    # Every document is closed by exactly one EOS and opened by one BOS, and no text makes either.
    assert blocks.stats["n_docs"] == len(want_starts) == len([d for d in docs if d]) == (got == 2).sum() == (got == 1).sum()
    assert np.array_equal(np.load(blocks.path / "doc_starts.npy"), want_starts)
    assert len(docs) > 3 * 5  # with map_batch_size_docs=3 the corpus spans several map batches


def test_padding_is_masked_and_positions_restart(blocks):
    last = len(blocks) - 1
    n_valid = blocks.valid_tokens(last)
    assert n_valid == blocks.n_tokens - last * BLOCK
    labels = blocks.labels(last)
    assert (labels[n_valid:] == IGNORE_INDEX).all() and (labels[:n_valid] >= 0).all()
    assert (blocks.labels(0) == blocks[0]).all() and blocks.loss_mask(0).all()
    starts = np.load(blocks.path / "doc_starts.npy")
    for i in range(len(blocks)):
        pos = blocks.position_ids(i)
        ids = blocks[i]
        valid = blocks.valid_tokens(i)
        assert pos[0] == 0 and (pos[:valid][ids[:valid] == 1] == 0).all()  # 0 at every BOS
        inside = starts[(starts >= i * BLOCK) & (starts < (i + 1) * BLOCK)] - i * BLOCK
        assert (pos[inside] == 0).all()
    ex = PackedBlocks(blocks.path, restart_position_ids=True).example(1)
    assert set(ex) == {"input_ids", "labels", "position_ids"}


def test_blocks_do_not_depend_on_batching_or_processes(blocks, base_tokenizer_dir, corpus_dir, tmp_path, cfg):
    # Same key (batching is not part of it), different cache root: a real second build.
    other = PackConfig(block_size_tokens=BLOCK, map_batch_size_docs=7, num_proc=2)
    again = build_or_load_blocks(base_tokenizer_dir, corpus_dir, tmp_path, other)
    assert again.path.name == blocks.path.name
    assert (again.path / "blocks.npy").read_bytes() == (blocks.path / "blocks.npy").read_bytes()
    assert (again.path / "doc_starts.npy").read_bytes() == (blocks.path / "doc_starts.npy").read_bytes()


def test_cache_reused_on_second_run(blocks, base_tokenizer_dir, corpus_dir, cache_root, cfg, capsys):
    before = (blocks.path / "blocks.npy").stat()
    meta_before = (blocks.path / "meta.json").read_bytes()
    code = main("pretrain", {"pack": (PackCommandConfig, run, "")}, [
        "pack", "--config", str(REPO / "configs" / "pretrain" / "pack.yaml"),
        "--tokenizer_dir", str(base_tokenizer_dir), "--corpus_dir", str(corpus_dir), "--cache_dir", str(cache_root),
        "--data.block_size_tokens", str(BLOCK), "--data.mixture", "[]", "--data.map_batch_size_docs", "5",
    ])
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0] == str(blocks.path) and "reused cache" in out[1]
    after = (blocks.path / "blocks.npy").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert (blocks.path / "meta.json").read_bytes() == meta_before


def test_rebuilt_when_tokenizer_changes(blocks, extended_tokenizer_dir, corpus_dir, cache_root, cfg, docs):
    ext = build_or_load_blocks(extended_tokenizer_dir, corpus_dir, cache_root, cfg)
    assert ext.path != blocks.path and blocks.path.is_dir()
    assert ext.meta["inputs_sha256"]["tokenizer"] != blocks.meta["inputs_sha256"]["tokenizer"]
    # The extended tokenizer has Chinese bigram pieces: the same text packs into fewer tokens.
    assert ext.n_tokens < blocks.n_tokens
    assert np.array_equal(read_stream(ext), expected_stream(extended_tokenizer_dir, docs)[0])


def test_mixture_share_respected(base_tokenizer_dir, corpus_dir, tmp_path, english_texts, docs):
    share = 0.25
    cfg = PackConfig(block_size_tokens=BLOCK, num_proc=1, seed=7,
                     mixture=[MixtureSource(path=str(ENGLISH_TXT), share=share)])
    mixed = build_or_load_blocks(base_tokenizer_dir, corpus_dir, tmp_path, cfg)
    src = mixed.stats["sources"]
    en = src[str(ENGLISH_TXT)]
    # Realized share within one English document of the target.
    tok = hf_tokenizer(base_tokenizer_dir)
    en_docs = {tuple([1, *tok(t, add_special_tokens=False)["input_ids"], 2]) for t in english_texts}
    longest = max(len(d) for d in en_docs)
    assert abs(en["tokens"] - share * mixed.n_tokens) <= longest
    assert en["docs"] > len(english_texts)  # the small source was repeated to reach its share
    # Every document in the stream is a corpus document (in order) or an English line, and the
    # English is spread over the stream, not bunched at one end.
    stream = read_stream(mixed)
    starts = np.load(mixed.path / "doc_starts.npy").tolist() + [stream.size]
    pieces = [tuple(stream[a:b].tolist()) for a, b in zip(starts[:-1], starts[1:], strict=True)]
    is_en = np.array([p in en_docs for p in pieces])
    assert is_en.sum() == en["docs"]
    main_docs = [p for p, e in zip(pieces, is_en, strict=True) if not e]
    assert np.array_equal(np.concatenate([np.array(p) for p in main_docs]), expected_stream(base_tokenizer_dir, docs)[0])
    half = len(pieces) // 2
    assert 0.25 < is_en[:half].sum() / is_en.sum() < 0.75
    # Same seed, same stream; a different seed interleaves differently.
    again = build_or_load_blocks(base_tokenizer_dir, corpus_dir, tmp_path / "again", cfg)
    assert (again.path / "blocks.npy").read_bytes() == (mixed.path / "blocks.npy").read_bytes()
    other = build_or_load_blocks(base_tokenizer_dir, corpus_dir, tmp_path / "other", dataclasses.replace(cfg, seed=8))
    assert other.path.name != mixed.path.name
    assert other.n_tokens == pytest.approx(mixed.n_tokens, rel=0.05)
    assert not np.array_equal(read_stream(other), read_stream(mixed))


def test_key_follows_corpus_content(base_tokenizer_dir, tmp_path, cfg):
    corpus = write_corpus(tmp_path / "c", [["第一篇文档。" * 30, "第二篇。" * 30]])
    before = cache_path(base_tokenizer_dir, corpus, tmp_path / "cache", cfg)
    assert cache_path(base_tokenizer_dir, corpus, tmp_path / "cache", dataclasses.replace(cfg, num_proc=2)) == before
    assert cache_path(base_tokenizer_dir, corpus, tmp_path / "cache", dataclasses.replace(cfg, add_eos=False)) != before
    write_corpus(corpus, [["第一篇文档。" * 30, "第二篇改了。" * 30]])
    assert cache_path(base_tokenizer_dir, corpus, tmp_path / "cache", cfg) != before


def test_key_follows_every_option_that_changes_the_blocks(base_tokenizer_dir, corpus_dir, tmp_path):
    """A run asking for another mixture share, mixture seed, framing... must never reuse another's cache."""
    english = tmp_path / "english.txt"
    english.write_text(ENGLISH_TXT.read_text(encoding="utf-8"), encoding="utf-8")
    base = PackConfig(block_size_tokens=BLOCK, mixture=[MixtureSource(path=str(english), share=0.05)], seed=0)

    def key(c: PackConfig) -> str:
        return cache_path(base_tokenizer_dir, corpus_dir, tmp_path / "cache", c).name

    def with_mixture(**kw) -> PackConfig:
        return dataclasses.replace(base, mixture=[dataclasses.replace(base.mixture[0], **kw)])

    changed = {
        "mixture share": with_mixture(share=0.25), "mixture seed": dataclasses.replace(base, seed=1),
        "add_bos": dataclasses.replace(base, add_bos=False), "add_eos": dataclasses.replace(base, add_eos=False),
        "block size": dataclasses.replace(base, block_size_tokens=2 * BLOCK),
        "corpus text field": dataclasses.replace(base, text_field="body"),
        "mixture text field": with_mixture(text_field="body"),
        "no mixture": dataclasses.replace(base, mixture=[]),
    }
    keys = {name: key(c) for name, c in changed.items()}
    before = key(base)
    assert before not in keys.values() and len(set(keys.values())) == len(keys), keys
    english.write_text(ENGLISH_TXT.read_text(encoding="utf-8") + "One more line.\n", encoding="utf-8")
    assert key(base) != before  # the mixture file's content
    # Read-side and speed options do not change the blocks: same key.
    same = [dataclasses.replace(base, num_proc=2), dataclasses.replace(base, map_batch_size_docs=7),
            dataclasses.replace(base, restart_position_ids=True)]
    assert {key(c) for c in same} == {key(base)}
    assert key(dataclasses.replace(base, mixture=[], seed=5)) == keys["no mixture"]  # no mixture: the seed is unused


def test_crash_leaves_no_half_cache(base_tokenizer_dir, corpus_dir, tmp_path, cfg, monkeypatch):
    def crash(self):
        raise RuntimeError("disk full")

    monkeypatch.setattr(packing.BlockWriter, "finish", crash)  # fails after the blocks were written
    with pytest.raises(RuntimeError, match="disk full"):
        build_or_load_blocks(base_tokenizer_dir, corpus_dir, tmp_path, cfg)
    assert list(tmp_path.iterdir()) == []  # no cache dir, no temp dir, no scratch


def test_packed_blocks_pickle_by_path(blocks):
    state = pickle.dumps(blocks)
    assert len(state) < 1000  # the path, not the array
    clone = pickle.loads(state)
    assert len(clone) == len(blocks) and np.array_equal(clone[-1], blocks[-1])
    with pytest.raises(IndexError):
        blocks[len(blocks)]


# ---------------------------------------------------------------------------------------------
# Bad input


def test_fewer_tokens_than_one_block_is_a_clear_error(base_tokenizer_dir, tmp_path):
    corpus = write_corpus(tmp_path / "c", [["很短的文本。"]])
    with pytest.raises(UserError, match="fewer than one block"):
        build_or_load_blocks(base_tokenizer_dir, corpus, tmp_path / "cache", PackConfig(block_size_tokens=512))
    assert not (tmp_path / "cache").exists()  # no half cache, no scratch, not even an empty cache folder
    (tmp_path / "cache").mkdir()
    with pytest.raises(UserError, match="fewer than one block"):
        build_or_load_blocks(base_tokenizer_dir, corpus, tmp_path / "cache", PackConfig(block_size_tokens=512))
    assert list((tmp_path / "cache").iterdir()) == []  # a cache root that existed stays, empty


def test_stale_scratch_of_dead_build_removed(tmp_path):
    from pretrain.data import remove_stale_scratch

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".scratch-{int(dead.stdout)}-abc"
    live = tmp_path / f".scratch-{os.getpid()}-abc"
    stale.mkdir()
    live.mkdir()
    assert remove_stale_scratch(tmp_path) == [stale]
    assert live.is_dir() and not stale.exists()


def test_missing_inputs_name_the_path(base_tokenizer_dir, corpus_dir, tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "nope")):
        build_or_load_blocks(base_tokenizer_dir, tmp_path / "nope", tmp_path, PackConfig())
    with pytest.raises(UserError, match="tokenizer directory not found"):
        build_or_load_blocks(tmp_path / "no_tok", corpus_dir, tmp_path, PackConfig())
    with pytest.raises(UserError, match="heldout"):
        build_or_load_blocks(base_tokenizer_dir, corpus_dir, tmp_path, PackConfig(), split="heldout")
    with pytest.raises(UserError, match="mixture source not found"):
        build_or_load_blocks(base_tokenizer_dir, corpus_dir, tmp_path,
                             PackConfig(mixture=[MixtureSource(path=str(tmp_path / "x.txt"), share=0.1)]))


def test_bad_jsonl_names_file_and_line(base_tokenizer_dir, tmp_path):
    d = tmp_path / "c" / "train"
    d.mkdir(parents=True)
    (d / "a.jsonl").write_text('{"text": "好"}\n{"text": "也好"}\n{"txt": "坏"}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"a\.jsonl:3: record has no key 'text'"):
        build_or_load_blocks(base_tokenizer_dir, tmp_path / "c", tmp_path / "cache", PackConfig(block_size_tokens=2))
    (d / "a.jsonl").write_text('{"text": "好"}\n{"text": "也好"\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"a\.jsonl:2: not valid JSON"):
        build_or_load_blocks(base_tokenizer_dir, tmp_path / "c", tmp_path / "cache", PackConfig(block_size_tokens=2))


def test_config_validation_and_yaml():
    cfg = load_config(PackCommandConfig, REPO / "configs" / "pretrain" / "pack.yaml", ["--data.block_size_tokens", "32"])
    assert cfg.data.block_size_tokens == 32 and all(isinstance(m, MixtureSource) for m in cfg.data.mixture)
    from zhllama.config import ConfigError

    with pytest.raises(ConfigError, match="shares"):
        load_config(PackConfig, None, {"mixture": [{"path": "a.txt", "share": 0.7}, {"path": "b.txt", "share": 0.4}]})
