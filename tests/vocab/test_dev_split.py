"""The dev split: deterministic, disjoint from train-for-vocab and from held-out, about dev_fraction in size."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from vocab.dev_split import dev_bucket, is_dev, split_dev
from zhllama import REPO_ROOT


def test_split_is_a_partition_in_order(zh_sample_texts):
    train, dev = split_dev(zh_sample_texts, 0.3)
    assert sorted(train + dev) == sorted(zh_sample_texts)
    assert not set(train) & set(dev)
    assert train == [t for t in zh_sample_texts if not is_dev(t, 0.3)]


def test_bucket_is_the_documented_sha256_rule(zh_sample_texts):
    """Train (excludes dev) and merge (measures on dev) must agree across processes and versions:
    the bucket is the first 8 bytes of SHA-256 as a fraction of 2**64 (recomputed here), and a
    document in the 5% dev set stays in any larger one."""
    for text in zh_sample_texts + ["", "a", "數學"]:
        expected = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64
        assert dev_bucket(text) == expected
        if is_dev(text, 0.05):
            assert is_dev(text, 0.2)


def test_membership_does_not_depend_on_the_process(zh_sample_texts):
    """A fresh interpreter with another hash seed puts the same documents in dev (``hash()`` would not)."""
    code = ("import json,sys; from vocab.dev_split import is_dev; "
            "print(json.dumps([is_dev(t, 0.3) for t in json.load(sys.stdin)]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(zh_sample_texts), capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=60, check=True)
    assert json.loads(proc.stdout) == [is_dev(t, 0.3) for t in zh_sample_texts]


def test_fraction_is_roughly_respected():
    texts = [f"文档{i}" for i in range(4000)]
    _, dev = split_dev(texts, 0.05)
    assert 0.03 < len(dev) / len(texts) < 0.07


def test_bad_fraction_is_rejected():
    with pytest.raises(ValueError, match="dev_fraction"):
        is_dev("x", 1.5)


def test_dev_is_disjoint_from_vocab_training_and_heldout(tiny_corpus_dir):
    """On a corpus-stage directory: what ``vocab train`` trains on and what ``vocab merge`` measures
    on (dev) partition the train shards, and neither touches held-out."""
    from corpora.shards import iter_jsonl_records
    from vocab.merge import MergeConfig
    from vocab.merge_inputs import load_inputs
    from vocab.train import TrainConfig, corpus_files, weighted_texts

    fraction = 0.3
    inputs = load_inputs(MergeConfig(corpus_dir=tiny_corpus_dir, word_list="none", dev_fraction=fraction))
    dev = {t for name, texts in inputs.dev_sets.items() if "/" not in name for t in texts}
    cfg = TrainConfig(dev_fraction=fraction)
    records = list(iter_jsonl_records(corpus_files(tiny_corpus_dir)))
    trained = set(weighted_texts((r for r in records if not is_dev(r["text"], cfg.dev_fraction)), {}))
    heldout = {json.loads(ln)["text"] for ln in (tiny_corpus_dir / "heldout" / "heldout.jsonl").open(encoding="utf-8")}
    assert dev and trained and heldout
    assert dev | trained == {r["text"] for r in records} and not dev & trained
    assert not (dev | trained) & heldout
