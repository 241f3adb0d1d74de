"""Script conversion and detection, measured on the real Traditional and Simplified sources."""
from __future__ import annotations

import json

import pytest

from corpora.scripts import CONVERSIONS, check_conversion, conversion_stats, convert_text, detect_script


def _texts(data_dir, rel: str, n: int = 150) -> list[str]:
    with (data_dir / "domains" / rel).open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f, strict=False)]


@pytest.mark.parametrize(("rel", "script"), [
    ("legal/twlaw_tw.jsonl", "traditional"), ("dialogue/hkcancor_yue.jsonl", "traditional"),
    ("legal/lawrefbook_laws.jsonl", "simplified"), ("dialogue/kdconv.jsonl", "simplified"),
])
def test_detect_script_agrees_with_the_provenance_of_real_sources(data_dir, rel, script):
    texts = _texts(data_dir, rel, 50)
    assert sum(detect_script(t) == script for t in texts) >= 0.95 * len(texts)


def test_every_conversion_loads_and_none_is_the_identity():
    for name in CONVERSIONS:
        assert isinstance(convert_text("軟體与软件", name), str)
    assert convert_text("軟體与软件", "none") == "軟體与软件"
    with pytest.raises(ValueError, match=r"src: unknown conversion 'zh_CN'"):
        check_conversion("zh_CN", "src")
    assert convert_text("軟體", "zh-cn") == "软件" and convert_text("软件", "zh-tw") == "軟體", "MediaWiki variants"


def test_t2s_keeps_the_taiwan_particle_tw2s_removes_it_tw2sp_maps_vocabulary(data_dir):
    texts = _texts(data_dir, "dialogue/transcripts_tw.jsonl", 20)
    stats = conversion_stats(texts, ["t2s", "tw2s", "tw2sp"])
    assert stats["none"]["chars_changed"] == 0
    assert stats["none"]["zhuo_particle"] > 0, "Taiwan transcripts write 看著/接著"
    assert stats["t2s"]["zhuo_particle"] == stats["none"]["zhuo_particle"], "t2s leaves 著"
    assert stats["tw2s"]["zhuo_particle"] < 0.05 * stats["none"]["zhuo_particle"]
    assert stats["tw2sp"]["taiwan_terms"] < stats["tw2s"]["taiwan_terms"], "tw2sp maps 軟體 -> 软件 etc."
    for conv in ("t2s", "tw2s", "tw2sp"):
        s = stats[conv]
        assert s["traditional_only_chars"] < 0.001 * s["chars"] < s["chars_changed"]
