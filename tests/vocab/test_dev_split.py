"""The dev split: deterministic, disjoint from train-for-vocab and from held-out, about dev_fraction in size."""

import json
from pathlib import Path

import pytest

from vocab.dev_split import dev_bucket, is_dev, split_dev

CORPUS = Path("artifacts/corpus")


def test_split_is_a_partition_in_order(zh_sample_texts):
    train, dev = split_dev(zh_sample_texts, 0.3)
    assert sorted(train + dev) == sorted(zh_sample_texts)
    assert not set(train) & set(dev)
    assert train == [t for t in zh_sample_texts if not is_dev(t, 0.3)]


def test_membership_is_deterministic_and_monotone_in_fraction(zh_sample_texts):
    for text in zh_sample_texts:
        assert dev_bucket(text) == dev_bucket(str(text))
        # a document in the 5% dev set stays in any larger dev set
        if is_dev(text, 0.05):
            assert is_dev(text, 0.2)


def test_fraction_is_roughly_respected():
    texts = [f"文档{i}" for i in range(4000)]
    _, dev = split_dev(texts, 0.05)
    assert 0.03 < len(dev) / len(texts) < 0.07


def test_bad_fraction_is_rejected():
    with pytest.raises(ValueError, match="dev_fraction"):
        is_dev("x", 1.5)


@pytest.mark.skipif(not (CORPUS / "heldout" / "heldout.jsonl").exists(), reason="needs the built corpus")
def test_dev_is_disjoint_from_heldout_on_real_corpus():
    def texts(path):
        return [json.loads(line)["text"] for line in path.open(encoding="utf-8") if line.strip()]

    train = [t for p in sorted((CORPUS / "train").glob("*.jsonl")) for t in texts(p)]
    heldout = set(texts(CORPUS / "heldout" / "heldout.jsonl"))
    vocab_train, dev = split_dev(train, 0.05)
    assert dev and vocab_train
    assert not set(dev) & heldout
    assert not set(dev) & set(vocab_train)
