"""Deduplication: exact and near duplicates go, distinct documents stay, first occurrence wins."""
from __future__ import annotations

import functools
import multiprocessing
import random

import numpy as np
import pytest

from corpora.build import ordered_map
from corpora.dedup import DedupConfig, Deduplicator, minhash_signature, shingle_hashes, text_digest
from corpora.dedup_sharded import UnitKeys, find_duplicates


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


# --- the local engine's partitioned, disk-backed dedup: the in-memory decisions, exactly ----------


def _edit(rng: random.Random, text: str, n_chars: int) -> str:
    chars = list(text)
    for _ in range(n_chars):
        chars[rng.randrange(len(chars))] = "字"
    return "".join(chars)


@pytest.fixture(scope="module")
def near_duplicate_corpus(zh_sample_texts) -> list[str]:
    """Real articles with planted duplicates, shuffled: exact copies, copies with 8-12 characters of 600
    changed, chained (b edits a, c edits b: a~b and b~c above the 0.8 threshold, a~c below), copies of
    those, and short texts (no MinHash signature) repeated."""
    rng = random.Random(0)
    texts = []
    for text in [t[:600] for t in zh_sample_texts if len(t) > 700][:25]:
        chain = [text]
        for n in (8, 10, 12):
            chain.append(_edit(rng, chain[-1], n))
        texts += chain + [rng.choice(chain) for _ in range(2)]
    texts += ["数学", "数学", "物理", "数学"]
    rng.shuffle(texts)
    return texts


def _sharded_decisions(texts, unit_sizes, tmp_path, mapper, n_partitions, cfg):
    prefixes, counts, start = [], [], 0
    tmp_path.mkdir()
    for u, size in enumerate(unit_sizes):
        keys = UnitKeys(tmp_path / f"{u:06d}", cfg)
        for text in texts[start : start + size]:
            keys.add(text_digest(text), minhash_signature(text, cfg))
        prefixes.append(tmp_path / f"{u:06d}")
        counts.append(keys.close())
        start += size
    assert start == len(texts)
    d = find_duplicates(prefixes, counts, cfg, mapper, n_partitions)
    return [(d.reason(i), d.match(i) if d.reason(i) else None) for i in range(len(texts))]


@pytest.mark.parametrize(("exact", "near"), [(True, True), (False, True), (True, False)])
def test_partitioned_dedup_keeps_exactly_what_the_in_memory_deduplicator_keeps(near_duplicate_corpus, tmp_path,
                                                                               exact, near):
    texts = near_duplicate_corpus
    cfg = DedupConfig(exact=exact, near=near, max_partition_entries=100)  # several partitions per worker
    ref = Deduplicator(cfg)
    expected = []
    for i, text in enumerate(texts):
        reason = _check(ref, i, text)
        expected.append((reason, ref.match if reason else None))
    reasons = [r for r, _ in expected]
    if exact and near:  # the fixture exercises every rule
        assert reasons.count("exact_duplicate") >= 20 and reasons.count("near_duplicate") >= 20
        kept = {i for i, r in enumerate(reasons) if r is None}
        sigs = [minhash_signature(t, cfg) for t in texts]
        similar = lambda a, b: sigs[a] is not None and sigs[b] is not None and np.mean(sigs[a] == sigs[b]) >= 0.8  # noqa: E731
        assert any(similar(i, j) for j in kept for i in range(j) if i not in kept), \
            "a kept document similar to an earlier *rejected* one (a chain): clustering would drop it"
    sizes = [40, 1, 0, 33, len(texts) - 74]
    inline = functools.partial(ordered_map, num_workers=1)
    assert _sharded_decisions(texts, sizes, tmp_path / "a", inline, 1, cfg) == expected
    if exact and near:
        with multiprocessing.get_context().Pool(2) as pool:
            mapper = functools.partial(ordered_map, num_workers=2, pool=pool)
            assert _sharded_decisions(texts, sizes[::-1], tmp_path / "b", mapper, 2, cfg) == expected
