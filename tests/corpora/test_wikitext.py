"""zhwiki fidelity: real wikitext constructs come out as the text a zh-cn reader sees.

The fixtures are written in real zhwiki syntax (NoteTA, -{}- rules, lang-xx, bd, le, tsl, convert,
ruby, numbered lists, <math>, <code>, <syntaxhighlight>, infobox, refs, categories).
"""
from __future__ import annotations

import json

import pytest

from corpora.build import SourceSettings, process_item, run
from corpora.clean import CleanConfig
from corpora.dedup import DedupConfig
from corpora.readers import RawDoc, Rejection
from corpora.shards import iter_corpus_records, load_manifest
from corpora.sources import SourceConfig, resolve_source_files
from corpora.wiki_readers import read_wikiextractor
from corpora.wikitext import collect_conversion_rules, render_templates, unlist

PAULI = """{{NoteTA
|G1 = Physics
|1 = zh-hans:泡利; zh-hant:包立;
|2 = zh-cn:经典力学; zh-tw:古典力學;
}}
{{Infobox scientist
| name = 沃爾夫岡·包立
| image = Pauli.jpg
| birth_date = {{birth date|1900|4|25}}
}}
'''沃爾夫岡·恩斯特·包立'''（{{lang-de|Wolfgang Ernst Pauli}}，{{bd|1900年|4月25日|1958年|12月15日}}）是[[奧地利]][[理論物理學家]]，[[量子力學]]研究先驅者之一<ref name="nobel">{{cite web|url=https://www.nobelprize.org|title=Pauli}}</ref>。包立不相容原理與[[古典力學]]無關。

== 生平 ==
1925年，{{le|卡爾·埃卡特|Carl Eckart}}和-{zh-hans;zh-hant|Paul Dirac}-分別證明了等價性。包立曾在{{tsl|de|Universität Hamburg|漢堡大學}}任教，身高約{{convert|1.7|m|ft}}。日語稱為{{ruby|排他原理|はいたげんり}}。

狹義相對論基於兩條公設：
# [[相對性原理]]：物理定律在所有[[慣性參考系]]中都相同。
# [[光速不變原理]]：真空中的[[光速]]對任何觀察者都相同。

質能等價<math>E=mc^2</math>，程式碼<code>print("hi")</code>：
<syntaxhighlight lang="python">
def square(x):
    return x ** 2
</syntaxhighlight>

[[File:Pauli.jpg|thumb|包立]]
[[Category:奧地利物理學家]]
"""


def _clean(wikitext: str, title: str, convert: str) -> str:
    p = process_item(0, RawDoc("t#1", wikitext, "wikitext", title), CleanConfig(min_chars=5), DedupConfig(near=False),
                     SourceSettings(convert, "simplified" if convert != "none" else "mixed"))
    assert p.reason is None, p.detail
    return p.text


@pytest.fixture(scope="module")
def pauli_cn() -> str:
    return _clean(PAULI, "沃爾夫岡·包立", "zh-cn")


def test_page_conversion_rules_are_applied_not_deleted(pauli_cn):
    assert pauli_cn.startswith("沃尔夫冈·泡利\n\n沃尔夫冈·恩斯特·泡利（"), pauli_cn[:40]
    assert "泡利不相容原理与经典力学无关" in pauli_cn, "NoteTA rules 1 and 2 (Taiwan 包立/古典 -> 泡利/经典)"
    assert "包立" not in pauli_cn and "古典" not in pauli_cn


def test_text_bearing_templates_are_rendered_in_their_sentences(pauli_cn):
    assert "（德语：Wolfgang Ernst Pauli，1900年4月25日—1958年12月15日）是奥地利理论物理学家" in pauli_cn
    assert "1925年，卡尔·埃卡特和Paul Dirac分别证明了等价性" in pauli_cn, "le + -{zh-hans;zh-hant|...}-"
    assert "曾在汉堡大学任教，身高约1.7米" in pauli_cn, "tsl + convert"
    assert "排他原理（はいたげんり）" in pauli_cn, "ruby"
    for junk in ("{{", "}}", "-{", "}-", "zh-hans", "Infobox", "cite web", "nobelprize", "Category", "thumb"):
        assert junk not in pauli_cn, junk


def test_list_items_are_kept_in_order(pauli_cn):
    first = pauli_cn.index("1. 相对性原理：物理定律在所有惯性参考系中都相同。")
    second = pauli_cn.index("2. 光速不变原理：真空中的光速对任何观察者都相同。")
    assert pauli_cn.index("狭义相对论基于两条公设：") < first < second


def test_formulae_and_code_keep_their_source_never_placeholders(pauli_cn):
    assert "质能等价E=mc^2" in pauli_cn
    assert 'print("hi")' in pauli_cn and "def square(x):" in pauli_cn and "return x ** 2" in pauli_cn
    assert "formula_" not in pauli_cn and "codice_" not in pauli_cn


def test_without_conversion_the_page_keeps_its_script_and_drops_the_rules():
    raw = _clean(PAULI, "沃爾夫岡·包立", "none")
    assert "包立不相容原理與古典力學無關" in raw
    assert "Paul Dirac分別證明" in raw and "zh-hans" not in raw and "-{" not in raw


def test_conversion_to_taiwan_applies_the_same_rules_the_other_way():
    rules_end = PAULI.index("}}") + 2
    simplified_page = PAULI[:rules_end] + PAULI[rules_end:].replace("包立", "泡利").replace("古典力學", "经典力学")
    tw = _clean(simplified_page, "泡利", "zh-tw")
    assert "包立不相容原理與古典力學無關" in tw and "泡利" not in tw


@pytest.mark.parametrize(("wikitext", "expected"), [
    ("{{link-en|马克斯·玻恩|Max Born}}是德国物理学家。", "马克斯·玻恩是德国物理学家。"),
    ("由{{link-ja|汤川秀树|湯川秀樹|汤川}}提出。", "由汤川提出。"),
    ("称{{lang|en|Copenhagen interpretation}}。", "称Copenhagen interpretation。"),
    ("约{{convert|5|-|10|km}}长。", "约5–10公里长。"),
    ("{{nowrap|1 000}}人", "1 000人"),
    ("他说{{quote|知识就是力量}}", "他说知识就是力量"),
    ("（{{lang-en|{{nowrap|Niels Bohr}}}}）", "（英语：Niels Bohr）"),
    ("费曼{{Citation needed|date=2020年1月}}认为", "费曼认为"),
], ids=["link-en", "link-ja-display", "lang", "convert-range", "nowrap", "quote", "nested", "dropped"])
def test_inline_templates(wikitext, expected):
    assert render_templates(wikitext) == expected


def test_noteta_groups_are_skipped_but_numbered_rules_collected():
    text, rules = collect_conversion_rules("{{noteTA|G1=IT|G2=Physics|1=zh-cn:软件;zh-tw:軟體;}}正文-{H|zh-cn:网络;zh-tw:網路;}-")
    assert text == "正文" and rules == ["zh-cn:软件;zh-tw:軟體;", "zh-cn:网络;zh-tw:網路;"]


def test_definition_and_nested_lists():
    assert unlist("; 术语 : 定义\n** 子项\n# 一\n#* 注\n# 二") == "术语：定义\n子项\n1. 一\n注\n2. 二"


def test_extracted_text_with_placeholders_loses_them_deliberately(data_dir):
    # The shared WikiExtractor files hold "碳-12(formula_1)": the formula is gone, so is the stand-in.
    p = process_item(0, RawDoc("w#1", "1摩尔是所含基本微粒个数与12克的碳-12(formula_1)中所含原子个数相等的物质的量。"),
                     CleanConfig(min_chars=5), DedupConfig(near=False))
    assert p.text == "1摩尔是所含基本微粒个数与12克的碳-12中所含原子个数相等的物质的量。"


# --- WikiExtractor's default <doc> format and split-dump names --------------------------------------

DOC_FILE = """<doc id="13" url="https://zh.wikipedia.org/wiki?curid=13" title="数学">
数学

数学是利用符号语言研究数量、结构、变化以及空间等概念的一门学科，从某种角度看属于形式科学的一种。

历史
数学有着久远的历史。它被认为起源于人类早期的生产活动：&lt;b&gt;计数&lt;/b&gt;与测量。
</doc>
<doc id="18" url="https://zh.wikipedia.org/wiki?curid=18" title="哲學 &amp; 邏輯">
哲學 &amp; 邏輯

哲學是研究普遍的、基礎問題的學科，包括存在、知識、價值、理智、心靈、語言等領域。
</doc>
"""


def test_wikiextractor_doc_format_is_read_with_ids_titles_and_text(tmp_path):
    path = tmp_path / "wiki_00"
    path.write_text(DOC_FILE, encoding="utf-8")
    items = list(read_wikiextractor(path))
    assert [(d.doc_id, d.title) for d in items] == [("wiki_00#13", "数学"), ("wiki_00#18", "哲學 & 邏輯")]
    assert items[0].text.startswith("数学\n\n数学是利用符号语言") and items[0].text.endswith("<b>计数</b>与测量。")
    p = process_item(0, items[0], CleanConfig(), DedupConfig(near=False))
    assert "起源于人类早期的生产活动：计数与测量。" in p.text, "stray tags removed by cleaning"


def test_broken_doc_files_are_counted_not_fatal(tmp_path):
    path = tmp_path / "wiki_01"
    lines = DOC_FILE.splitlines()
    broken = lines[:7] + lines[8:] + ["stray line", '<doc id="20" url="u" title="未完">', "未完的文本"]
    path.write_text("\n".join(broken) + "\n", encoding="utf-8")  # doc 13 loses its </doc>
    items = list(read_wikiextractor(path))
    got = [(x.doc_id, x.reason) if isinstance(x, Rejection) else (x.doc_id, "doc") for x in items]
    assert got == [("wiki_01#13", "unclosed_doc"), ("wiki_01#18", "doc"), (f"wiki_01:{broken.index('stray line') + 1}", "outside_doc"),
                   ("wiki_01#20", "unclosed_doc")]
    assert all(x.chars > 0 for x in items if isinstance(x, Rejection))


def test_a_directory_of_both_wikiextractor_formats_and_split_dumps(tmp_path, wiki_dump):
    (tmp_path / "extracted" / "AA").mkdir(parents=True)
    (tmp_path / "extracted" / "AB").mkdir()
    (tmp_path / "extracted" / "AA" / "wiki_00").write_text(DOC_FILE, encoding="utf-8")
    (tmp_path / "extracted" / "AB" / "wiki_00").write_text(
        json.dumps({"id": "99", "title": "物理学", "text": "物理学\n\n物理学是研究物质、能量的本质与性质的自然科学。" * 2},
                   ensure_ascii=False) + "\n", encoding="utf-8")
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    for name in ("zhwiki-20240101-pages-articles1.xml-p1p41242.bz2", "zhwiki-20240101-pages-articles2.xml-p41243p151573.bz2"):
        (dumps / name).write_bytes(wiki_dump.read_bytes())
    (dumps / "zhwiki-20240101-pages-articles-multistream-index1.txt-p1p41242.bz2").write_bytes(b"BZh9")
    found = resolve_source_files(SourceConfig("w", "wiki_xml", ["dumps"], "encyclopedia", "mixed"), tmp_path)
    assert [f.name for f in found] == ["zhwiki-20240101-pages-articles1.xml-p1p41242.bz2",
                                       "zhwiki-20240101-pages-articles2.xml-p41243p151573.bz2"], "index files skipped"
    out = tmp_path / "corpus"
    sources = [{"name": "ext", "format": "wikiextractor", "paths": ["extracted"], "domain": "encyclopedia",
                "script": "mixed", "convert": "zh-cn"},
               {"name": "dump", "format": "wiki_xml", "paths": ["dumps"], "domain": "encyclopedia",
                "script": "mixed", "convert": "zh-cn"}]
    from tests.corpora.test_build import _cfg

    run(_cfg(tmp_path, out, sources=sources, num_workers=1, heldout_min_documents=0))
    m = load_manifest(out)
    assert m["sources"]["ext"]["documents"]["written"] == 3
    # The two split files hold the same pages: the second copy is an exact duplicate.
    assert m["sources"]["dump"]["documents"]["rejected"]["exact_duplicate"] == 2
    texts = {r["id"]: r["text"] for split in ("train", "heldout") for r in iter_corpus_records(out, split)}
    assert texts["ext/extracted/AA/wiki_00#18"].startswith("哲学 & 逻辑\n\n哲学是研究普遍的、基础问题的学科"), "zh-cn applied"
