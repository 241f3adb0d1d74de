"""vocab.domains: evaluation sets by domain and script, the measures, the target rule, cross-script copies."""
from __future__ import annotations

import math

import opencc
import pytest
import sentencepiece as spm

from vocab.domains import Doc, cross_script_copies, domain_table, geomean, group, target_check


def test_group_names_domains_scripts_and_totals():
    docs = [Doc("legal", "traditional", "第一條"), Doc("legal", "simplified", "第一条"), Doc("poetry", "mixed", "床前明月光")]
    sets = group(docs)
    assert sets["legal"] == ["第一條", "第一条"] and sets["poetry"] == ["床前明月光"]
    assert sets["all/traditional"] == ["第一條"] and "poetry/mixed" not in sets  # mixed counts in its domain only


def test_measures_match_an_independent_encode(base_sp_model, zh_sample_texts):
    sets = group([Doc("encyclopedia", "simplified", t) for t in zh_sample_texts[:5]])
    row = domain_table({"base": base_sp_model.read_bytes()}, sets)["base"]["encyclopedia"]
    sp = spm.SentencePieceProcessor(model_file=str(base_sp_model))
    pieces = [p for t in zh_sample_texts[:5] for p in sp.encode(t, out_type=str)]
    assert row["tokens"] == len(pieces)
    assert row["tokens_per_char"] == pytest.approx(len(pieces) / sum(map(len, zh_sample_texts[:5])))
    assert row["byte_fallback_share"] == pytest.approx(sum(p.startswith("<0x") for p in pieces) / len(pieces))
    assert row["pieces_used"] == len(set(pieces)) and row["added_pieces_used"] == 0


def _table(ours: dict, peer: dict) -> dict:
    return {"ours": {k: {"tokens_per_char": v} for k, v in ours.items()},
            "peer": {k: {"tokens_per_char": v} for k, v in peer.items()}}


def test_target_needs_every_domain_both_scripts_and_the_geomean():
    peer = {"a": 1.0, "b": 1.0, "all/simplified": 1.0, "all/traditional": 1.0, "a/simplified": 1.0}
    ok = target_check(_table({"a": 0.9, "b": 0.9, "all/simplified": 0.95, "all/traditional": 0.8,
                              "a/simplified": 1.2}, peer), "ours", "peer")
    assert ok["met"] and math.isclose(ok["geomean_ratio"], 0.9)  # finer cells are reported, not required
    one_domain_worse = target_check(_table({"a": 0.8, "b": 1.01, "all/simplified": 0.9, "all/traditional": 0.9}, peer),
                                    "ours", "peer")
    assert not one_domain_worse["met"] and one_domain_worse["worst"] == "b"
    script_worse = target_check(_table({"a": 0.8, "b": 0.8, "all/simplified": 0.9, "all/traditional": 1.05}, peer),
                                "ours", "peer")
    assert not script_worse["met"]
    mean_too_high = target_check(_table({"a": 0.97, "b": 0.96, "all/simplified": 0.9, "all/traditional": 0.9}, peer),
                                 "ours", "peer")
    assert not mean_too_high["met"] and mean_too_high["geomean_ratio"] == pytest.approx(geomean([0.97, 0.96]))


def test_cross_script_copies_convert_with_regional_phrases():
    recs = [{"id": "1", "script": "traditional", "text": "這個軟體的資料庫"},
            {"id": "2", "script": "simplified", "text": "这个软件的数据库"},
            {"id": "3", "script": "mixed", "text": "中文"}]
    out = list(cross_script_copies(recs, 1.0))
    assert out[0] == recs[0] and out[1]["text"] == opencc.OpenCC("tw2sp").convert(recs[0]["text"])
    assert out[1]["script"] == "simplified" and "软件" in out[1]["text"]
    assert out[3]["text"] == opencc.OpenCC("s2twp").convert(recs[1]["text"]) and "軟體" in out[3]["text"]
    assert len(out) == 5  # the mixed record is not copied
    assert list(cross_script_copies(recs, 0.0)) == recs
    many = [{"script": "simplified", "text": f"第{i}条"} for i in range(1000)]
    copies = sum(1 for r in cross_script_copies(many, 0.3) if "converted" in r)
    assert 230 < copies < 370 and copies == sum(1 for r in cross_script_copies(many, 0.3) if "converted" in r)
