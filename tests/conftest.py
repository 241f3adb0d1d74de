"""Session fixtures shared by every test package: real, tiny artifacts built once.

- ``data_dir``: ``../shared/data`` (or ``$ZHLLAMA_DATA_DIR``); tests needing it skip nowhere: it is
  part of the checkout's contract.
- ``base_sp_model``: the real Llama-2 32k SentencePiece model (path).
- ``extended_sp_model``: base + a few hundred Chinese pieces appended *reachably* (lower scores
  than every base piece, both halves already pieces), a stand-in for a merged tokenizer.
- ``base_tokenizer_dir`` / ``extended_tokenizer_dir``: Hugging Face tokenizer directories.
- ``tiny_llama_dir``: a random 2-layer Llama (hidden 64) over the 32k base vocabulary, with the
  base tokenizer saved beside it.
"""
from __future__ import annotations

import collections
import json
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from zhllama import default_data_dir  # noqa: E402

TESTS_DIR = Path(__file__).parent
HAN = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = default_data_dir()
    assert (d / "llama2_tokenizer.model").is_file(), f"shared data not found at {d} (set ZHLLAMA_DATA_DIR)"
    return d


@pytest.fixture(scope="session")
def base_sp_model(data_dir) -> Path:
    return data_dir / "llama2_tokenizer.model"


@pytest.fixture(scope="session")
def zh_sample_texts(data_dir) -> list[str]:
    """~64 real Chinese Wikipedia articles (Simplified), as plain strings."""
    path = data_dir / "zhwiki" / "jastfkjg_wiki_00.jsonl"
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="session")
def english_texts() -> list[str]:
    lines = (TESTS_DIR / "data" / "english.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()]


def make_hf_tokenizer_dir(model_bytes: bytes, out_dir: Path) -> Path:
    """Write an HF tokenizer directory for a SentencePiece model (the project's exporter)."""
    from vocab.export import export_hf  # the real exporter, with SentencePiece parity

    export_hf(model_bytes, out_dir)
    return out_dir


def _extended_model_bytes(base_path: Path, texts: list[str], n_new: int = 300) -> bytes:
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(base_path.read_bytes())
    have = {p.piece for p in m.pieces}
    counts: collections.Counter[str] = collections.Counter()
    for t in texts:
        for a, b in zip(t, t[1:], strict=False):
            if HAN.match(a) and HAN.match(b):
                counts[a + b] += 1
    # Every new piece must be reachable by BPE: both characters must already be pieces, and the
    # new pieces score below every base piece so no base merge order changes.
    # (Llama-2's whitespace-run pieces sit apart at -1e9; scores below them would round into a tie.)
    min_score = min(
        p.score for p in m.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL and set(p.piece) != {"\u2581"}
    )
    added = 0
    for bigram, _ in counts.most_common():
        if bigram in have or bigram[0] not in have or bigram[1] not in have:
            continue
        p = m.pieces.add()
        p.piece, p.score, p.type = bigram, min_score - 1.0 - added, pb.ModelProto.SentencePiece.NORMAL
        have.add(bigram)
        added += 1
        if added == n_new:
            break
    return m.SerializeToString()


@pytest.fixture(scope="session")
def extended_sp_model(tmp_path_factory, base_sp_model, zh_sample_texts) -> Path:
    out = tmp_path_factory.mktemp("extended_sp") / "tokenizer.model"
    out.write_bytes(_extended_model_bytes(base_sp_model, zh_sample_texts))
    return out


@pytest.fixture(scope="session")
def base_tokenizer_dir(tmp_path_factory, base_sp_model) -> Path:
    return make_hf_tokenizer_dir(base_sp_model.read_bytes(), tmp_path_factory.mktemp("base_tok"))


@pytest.fixture(scope="session")
def extended_tokenizer_dir(tmp_path_factory, extended_sp_model) -> Path:
    return make_hf_tokenizer_dir(extended_sp_model.read_bytes(), tmp_path_factory.mktemp("ext_tok"))


def save_tiny_llama(out_dir: Path, tokenizer_dir: Path, vocab_size: int, tie: bool = False, seed: int = 0) -> Path:
    """A random 2-layer Llama (hidden 64) saved as an HF directory with the tokenizer beside it."""
    import shutil

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out_dir)
    for f in tokenizer_dir.iterdir():
        if f.is_file() and f.name != "meta.json":
            shutil.copy(f, out_dir / f.name)
    return out_dir


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, base_tokenizer_dir) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), base_tokenizer_dir, vocab_size=32000)
