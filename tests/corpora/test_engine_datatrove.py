"""The scale path end to end: the datatrove engine with its local executor, against the local engine."""
from __future__ import annotations

import pytest

from corpora.build import run
from corpora.shards import iter_corpus_records, load_manifest
from tests.corpora.test_build import _cfg

pytest.importorskip("datatrove")

SOURCES = [
    {"name": "tldr_tw", "format": "jsonl", "paths": ["domains/technical/tldr_tw.jsonl"], "domain": "technical",
     "script": "traditional"},  # 31 exact + 2 near duplicates in the full file
    {"name": "cmrc2018", "format": "squad", "paths": ["cmrc2018/cmrc2018_trial.json"], "domain": "encyclopedia",
     "script": "simplified"},
    {"name": "hkcancor", "format": "jsonl", "paths": ["domains/dialogue/hkcancor_yue.jsonl"], "domain": "dialogue",
     "script": "traditional", "convert": "hk2s"},
]


@pytest.fixture(scope="module")
def both(tmp_path_factory, data_dir):
    tmp = tmp_path_factory.mktemp("engines")
    common = {"sources": SOURCES, "max_chars_per_source": 40000, "hash_inputs": False}
    run(_cfg(data_dir, tmp / "local", num_workers=1, **common))
    run(_cfg(data_dir, tmp / "dt", engine="datatrove", **common,
             datatrove={"work_dir": str(tmp / "work"), "tasks": 3, "workers": 2}))
    return load_manifest(tmp / "local"), load_manifest(tmp / "dt"), tmp


def test_datatrove_engine_keeps_the_accounting_identity_and_the_manifest_shape(both):
    local, dt, _ = both
    assert dt["config"]["engine"] == "datatrove" and set(dt) == set(local)
    for name, src in {**dt["sources"], **dt["domains"], "total": dt["total"]}.items():
        for unit in ("documents", "characters"):
            c = src[unit]
            assert c["read"] == c["written"] + sum(c["rejected"].values()), (name, unit)
    for name in local["sources"]:
        assert dt["sources"][name]["documents"]["read"] == local["sources"][name]["documents"]["read"]
        assert dt["sources"][name]["characters"]["read"] == local["sources"][name]["characters"]["read"]


def test_datatrove_engine_finds_the_same_duplicates_give_or_take_lsh_collisions(both):
    local, dt, tmp = both
    dups = {n: sum(v for k, v in s["documents"]["rejected"].items() if k.endswith("duplicate"))
            for n, s in local["sources"].items()}
    dt_dups = {n: s["documents"]["rejected"].get("near_duplicate", 0) for n, s in dt["sources"].items()}
    assert dups["tldr_tw"] > 0
    for n in dups:
        assert dups[n] <= dt_dups[n] <= dups[n] + max(3, dups[n] // 5), (n, dups[n], dt_dups[n])
    dt_texts = {r["text"] for s in ("train", "heldout") for r in iter_corpus_records(tmp / "dt", s)}
    assert len(dt_texts) == dt["total"]["documents"]["written"], "no exact duplicates left"
    local_texts = {r["text"] for s in ("train", "heldout") for r in iter_corpus_records(tmp / "local", s)}
    # Same cleaning and conversion; only which member of a duplicate cluster survives may differ.
    assert len(dt_texts - local_texts) <= sum(dt_dups.values())
    assert len(dt_texts & local_texts) >= 0.95 * len(local_texts)
    recs = list(iter_corpus_records(tmp / "dt", "train"))
    assert {r["script"] for r in recs if r["source"] == "hkcancor"} == {"simplified"}, "per-source conversion"
