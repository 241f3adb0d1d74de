"""Domain weights (per-record repeat counts) and the per-domain held-out split."""
from __future__ import annotations

import collections
import random

import pytest

from corpora.dedup import text_digest
from corpora.domains import (
    HeldoutSplitter,
    check_weights,
    heldout_share,
    repeat_count,
    weighted_sample,
    weights_for_shares,
)


def _records(n_per_domain: dict[str, int], chars: int = 10) -> list[dict]:
    return [{"id": f"{d}/{i}", "domain": d, "text": "字" * chars} for d, n in n_per_domain.items() for i in range(n)]


def test_weights_scale_each_domain_by_its_multiplier_in_expectation():
    recs = _records({"legal": 4000, "dialogue": 4000, "news": 4000})
    weights = {"legal": 0.25, "dialogue": 2.5}  # news: missing = 1
    used = collections.Counter(r["domain"] for r in weighted_sample(recs, weights, seed=3))
    assert used["news"] == 4000
    assert abs(used["legal"] / 4000 - 0.25) < 0.03
    assert abs(used["dialogue"] / 4000 - 2.5) < 0.03
    assert all(repeat_count(r, weights, 3) in (2, 3) for r in recs if r["domain"] == "dialogue")


def test_repeat_counts_are_stable_under_reordering_and_change_with_the_seed():
    recs = _records({"legal": 500})
    counts = {r["id"]: repeat_count(r, {"legal": 0.5}, seed=1) for r in recs}
    shuffled = recs[:]
    random.Random(0).shuffle(shuffled)
    assert {r["id"]: repeat_count(r, {"legal": 0.5}, seed=1) for r in shuffled} == counts
    other = {r["id"]: repeat_count(r, {"legal": 0.5}, seed=2) for r in recs}
    assert other != counts and sum(other.values()) > 0


def test_weights_for_shares_give_the_target_character_shares():
    chars = {"legal": 3_000_000, "dialogue": 1_000_000, "poetry": 250_000}
    target = {"legal": 0.4, "dialogue": 0.4, "poetry": 0.2}
    w = weights_for_shares(chars, target)
    total = sum(chars[d] * w[d] for d in chars)
    for d in chars:
        assert chars[d] * w[d] / total == pytest.approx(target[d])
    assert total == pytest.approx(sum(chars.values())), "same total size"


@pytest.mark.parametrize(
    ("weights", "known", "message"),
    [
        ({"legal": -1.0}, None, r"domain_weights\.legal: weight must be a finite number >= 0, got -1\.0"),
        ({"legal": float("nan")}, None, r"domain_weights\.legal: weight must be"),
        ({"legal": "2"}, None, r"domain_weights\.legal: weight must be"),
        ({"lgeal": 1.0}, ["legal", "news"], r"domain_weights\.lgeal: unknown domain 'lgeal'; the corpus has legal, news"),
        ({"legal": 0.0, "news": 0}, ["legal", "news"], r"domain_weights: every domain has weight 0"),
        ({"legal": 0.0}, None, r"every domain has weight 0"),
    ],
    ids=["negative", "nan", "string", "unknown", "all_zero", "all_zero_no_known"],
)
def test_weights_that_make_no_sense_are_errors_naming_the_key(weights, known, message):
    with pytest.raises(ValueError, match=message):
        check_weights(weights, known)


@pytest.mark.parametrize(
    ("shares", "message"),
    [
        ({"legal": 0.5, "news": 0.6}, r"domain_shares: shares sum to 1\.1, not 1"),
        ({"legal": 1.0}, r"domain_shares\.news: no target share for domain 'news'"),
    ],
)
def test_target_shares_must_cover_every_domain_and_sum_to_one(shares, message):
    with pytest.raises(ValueError, match=message):
        weights_for_shares({"legal": 10, "news": 10}, shares)


def _split_all(splitter: HeldoutSplitter, docs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {"train": [], "heldout": []}
    for group, text in docs:
        for split, rec in splitter.add(group, text_digest(text), text):
            out[split].append(rec)
    for split, rec in splitter.finish():
        out[split].append(rec)
    return out


def test_heldout_split_is_the_hash_share_plus_a_minimum_per_group():
    big = [("big", f"大文档{i}") for i in range(2000)]
    small = [("small", f"小文档{i}") for i in range(12)]
    out = _split_all(HeldoutSplitter(fraction=0.05, min_documents=5), big + small)
    assert sorted(out["train"] + out["heldout"]) == sorted(t for _, t in big + small), "every document once"
    held_big = [t for t in out["heldout"] if t.startswith("大")]
    assert held_big == [t for _, t in big if heldout_share(text_digest(t)) < 0.05], "big group: the hash share only"
    held_small = [t for t in out["heldout"] if t.startswith("小")]
    by_share = sorted((t for _, t in small), key=lambda t: heldout_share(text_digest(t)))
    assert sorted(held_small) == sorted(by_share[:5]), "small group: its 5 smallest hashes"


def test_min_rule_never_takes_more_than_half_of_a_group():
    out = _split_all(HeldoutSplitter(fraction=0.0, min_documents=20), [("g", f"文{i}") for i in range(7)])
    assert len(out["heldout"]) == 3 and len(out["train"]) == 4
