"""Deduplication: exact and near duplicates go, distinct documents stay, first occurrence wins."""
from __future__ import annotations

import numpy as np

from corpora.dedup import DedupConfig, Deduplicator, minhash_signature, shingle_hashes, text_digest


def _check(d: Deduplicator, key: str, text: str) -> str | None:
    return d.check(key, text, minhash_signature(text, d.cfg), text_digest(text))


def test_exact_and_near_duplicates_are_dropped_distinct_texts_kept(zh_sample_texts):
    cfg = DedupConfig()
    d = Deduplicator(cfg)
    texts = [t for t in zh_sample_texts if len(t) > 500][:20]
    assert all(_check(d, f"a{i}", t) is None for i, t in enumerate(texts)), "distinct articles are all kept"
    assert _check(d, "dup", texts[3]) == "exact_duplicate"
    edited = texts[5][:200] + "（编者注）" + texts[5][200:]  # a small edit of a long article
    assert _check(d, "near", edited) == "near_duplicate"
    half = texts[7][: len(texts[7]) // 2]  # half an article is < 0.8 similar: kept
    assert _check(d, "half", half) is None


def test_near_dedup_switch_and_exact_switch(zh_sample_texts):
    text = zh_sample_texts[0]
    edited = text + "补充一句。"
    d = Deduplicator(DedupConfig(near=False))
    assert _check(d, "a", text) is None and _check(d, "b", edited) is None
    assert _check(d, "c", text) == "exact_duplicate"
    d = Deduplicator(DedupConfig(exact=False, near=False))
    assert _check(d, "a", text) is None and _check(d, "b", text) is None


def test_signature_is_deterministic_and_estimates_jaccard(zh_sample_texts):
    cfg = DedupConfig(num_perm=256)
    a = zh_sample_texts[1]
    b = a[: int(len(a) * 0.9)]
    sa, sb = minhash_signature(a, cfg), minhash_signature(b, cfg)
    assert np.array_equal(sa, minhash_signature(a, cfg))
    ha, hb = set(shingle_hashes(a, 5).tolist()), set(shingle_hashes(b, 5).tolist())
    true_jaccard = len(ha & hb) / len(ha | hb)
    assert abs(float(np.mean(sa == sb)) - true_jaccard) < 0.1


def test_short_text_has_no_signature_but_is_still_exact_deduplicated():
    d = Deduplicator(DedupConfig(shingle_chars=5))
    assert minhash_signature("数学", d.cfg) is None
    assert _check(d, "a", "数学") is None
    assert _check(d, "b", "数学") == "exact_duplicate"


def test_match_names_the_kept_document():
    d = Deduplicator(DedupConfig())
    text = "数学是研究数量、结构、变化以及空间等概念的一门学科，从某种角度看属于形式科学的一种。" * 3
    assert _check(d, "wiki/1", text) is None
    assert _check(d, "drcd/7", text) == "exact_duplicate" and d.match == "wiki/1"
    assert _check(d, "drcd/8", text + "补充。") == "near_duplicate" and d.match == "wiki/1"
