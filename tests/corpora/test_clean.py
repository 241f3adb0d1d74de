"""Cleaning steps: each keeps what it must keep and removes what it must remove."""
from __future__ import annotations

import unicodedata

import pytest

from corpora.clean import (
    CleanConfig,
    clean_text,
    filter_reason,
    han_fraction,
    normalize_unicode,
    remove_control,
    strip_markup,
    tidy_whitespace,
)
from corpora.scripts import convert_text
from corpora.wikitext import wikitext_to_text


def test_nfc_is_default_and_keeps_full_width_punctuation():
    text = "数学，（定义）：１２３！"
    assert normalize_unicode(text) == text, "NFC keeps full-width punctuation and digits"
    assert normalize_unicode("e\u0301") == "\u00e9"
    assert "，" not in normalize_unicode(text, "NFKC"), "NFKC would fold it: not the default"
    assert CleanConfig().unicode_form == "NFC"


def test_control_characters_removed_newlines_and_tabs_kept():
    assert remove_control("甲\x00乙\u200b丙\ufeff\r\n丁\t戊\x1b") == "甲乙丙\n丁\t戊"


def test_strip_markup_removes_refs_tags_entities_and_wiki_brackets():
    out = strip_markup("'''数学'''<ref name=\"a\">引文</ref>是[[科学]]<br/>的一种&nbsp;学科<!-- 注释 -->（）。")
    assert out == "数学是科学的一种\u00a0学科。"
    assert strip_markup("若 a < b 且 b > c") == "若 a < b 且 b > c", "comparison signs are not tags"


def test_tidy_whitespace_keeps_one_blank_line_between_paragraphs():
    assert tidy_whitespace("\n  甲  乙\t \n\n\n\n\u3000\u3000丙 \n") == "甲 乙\n\n丙"


def test_t2s_converts_traditional_and_leaves_simplified_unchanged(zh_sample_texts):
    assert convert_text("萬民福音部是羅馬教廷的機構", "t2s") == "万民福音部是罗马教廷的机构"
    simplified = zh_sample_texts[0][:2000]
    changed = sum(a != b for a, b in zip(simplified, convert_text(simplified, "t2s"), strict=True))
    assert changed <= len(simplified) // 200, "text already Simplified is (almost) untouched"


def test_clean_text_steps_can_each_be_switched_off():
    raw = "萬民\x07<b>福音</b>  部"
    assert clean_text(raw, CleanConfig(), convert="t2s") == "万民福音 部"
    assert clean_text(raw, CleanConfig()) == "萬民福音 部", "no conversion unless the source asks for one"
    off = CleanConfig(unicode_form="none", remove_control=False, strip_markup=False, tidy_whitespace=False)
    assert clean_text(raw, off) == raw


def test_clean_text_is_idempotent(zh_sample_texts):
    cfg = CleanConfig()
    for text in zh_sample_texts[:10]:
        once = clean_text(text, cfg)
        assert clean_text(once, cfg) == once
        assert unicodedata.is_normalized("NFC", once)


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "empty"), ("  \n ", "empty"), ("短短的一句", "too_short"),
     ("This paragraph is written in English with only 汉字 two characters.", "low_han_fraction"),
     ("数学" * 30, None)],
    ids=["empty", "blank", "short", "english", "ok"],
)
def test_filters(text, reason):
    assert filter_reason(text, CleanConfig(min_chars=20, min_han_fraction=0.3)) == reason


def test_max_line_chars_filter():
    cfg = CleanConfig(max_line_chars=50)
    assert filter_reason("数" * 51, cfg) == "long_line"
    assert filter_reason("\n".join(["数" * 50] * 3), cfg) is None


def test_han_fraction_counts_visible_characters():
    assert han_fraction("数学 ab\n") == 0.5
    assert han_fraction("") == 0.0


def test_wikitext_to_text_drops_templates_and_keeps_link_labels():
    wt = "{{Infobox|x=1}}'''数学'''是[[科学|一门学科]]<ref>{{cite}}</ref>。\n\n== 历史 ==\n很久以前。\n[[Category:数学]]"
    out = wikitext_to_text(wt, "数学")
    assert out == "数学\n\n数学是一门学科。\n\n历史\n很久以前。"


def test_language_conversion_markup_and_emptied_brackets_are_resolved():
    raw = "線西-{庄}-，又译-{zh-hans:赫丘勒·白罗; zh-hant:赫丘勒·白羅;}--{H|zh-cn:软件; zh-tw:軟體;}-。白头鹰（学名：''）是鸟（1782年）。"
    assert clean_text(raw, CleanConfig(), "t2s") == "线西庄，又译赫丘勒·白罗。白头鹰是鸟（1782年）。"


def test_real_wiki_text_has_no_leftover_markup(zh_sample_texts):
    cfg = CleanConfig()
    for text in zh_sample_texts:
        out = clean_text(text, cfg)
        for junk in ("-{", "}-", "<ref", "</", "[[", "{{", "（）", "&nbsp;"):
            assert junk not in out, (junk, out[max(0, out.find(junk) - 30): out.find(junk) + 30])
