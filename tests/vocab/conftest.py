"""Fixtures of the merge/export tests: a small real Chinese BPE, its merge into Llama-2, the HF export.

The Chinese model is trained (real SentencePiece, ~2 s) on the 64 real zhwiki articles of the
shared data, every 8th article held out. It is trained with ``split_digits=False`` on purpose:
it then learns pieces like ``20`` and ``19世纪``, which is what breaks the classic score-0 merge
and what the merge must refuse (``20``) or prune as unreachable (``19世纪``).
"""
from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from vocab.proto import ModelProto, parse_model

ZH_VOCAB_SIZE = 4000


@pytest.fixture(scope="session")
def zh_split(zh_sample_texts) -> dict[str, list[str]]:
    """``{"train": [...], "heldout": [...]}``: real zhwiki articles, every 8th held out."""
    return {
        "train": [t for i, t in enumerate(zh_sample_texts) if i % 8],
        "heldout": [t for i, t in enumerate(zh_sample_texts) if i % 8 == 0],
    }


@pytest.fixture(scope="session")
def zh_model_bytes(zh_split) -> bytes:
    from vocab.train import TrainConfig, sample_sentences, train_bpe

    cfg = TrainConfig(vocab_size=ZH_VOCAB_SIZE, split_digits=False, min_chars_per_piece=1.0, num_threads=1,
                      word_list_words=0)
    return train_bpe(sample_sentences(zh_split["train"], cfg), cfg)


@pytest.fixture(scope="session")
def base_proto(base_sp_model) -> ModelProto:
    return parse_model(base_sp_model.read_bytes(), "base")


@pytest.fixture(scope="session")
def zh_proto(zh_model_bytes) -> ModelProto:
    return parse_model(zh_model_bytes, "zh")


@pytest.fixture(scope="session")
def zh_char_counts(zh_split) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for t in zh_split["train"]:
        counts.update(t)
    return counts


@pytest.fixture(scope="session")
def merged(base_proto, zh_proto, zh_char_counts):
    """``(merged ModelProto, MergeReport)`` with every candidate that fits (no size search)."""
    from vocab.merge import MergeConfig, merge

    return merge(base_proto, zh_proto, MergeConfig(), zh_char_counts)


@pytest.fixture(scope="session")
def merged_bytes(merged) -> bytes:
    return merged[0].SerializeToString()


@pytest.fixture(scope="session")
def merged_tokenizer_dir(tmp_path_factory, merged_bytes) -> Path:
    from vocab.export import export_hf

    return export_hf(merged_bytes, tmp_path_factory.mktemp("merged_tok"))


@pytest.fixture(scope="session")
def tiny_corpus_dir(tmp_path_factory, zh_split) -> Path:
    """A corpus-stage layout: ``train/train-00000.jsonl`` + ``heldout/heldout.jsonl``."""
    root = tmp_path_factory.mktemp("corpus")
    for part, name in (("train", "train-00000.jsonl"), ("heldout", "heldout.jsonl")):
        (root / part).mkdir()
        lines = [json.dumps({"id": str(i), "source": "zhwiki", "domain": "encyclopedia", "script": "simplified",
                             "text": t}, ensure_ascii=False)
                 for i, t in enumerate(zh_split[part])]
        (root / part / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root
