"""Readers: every format on the real shared data or a real-format fixture, and every bad input."""
from __future__ import annotations

import bz2
import json
import tracemalloc

import pytest

from corpora import readers, wiki_readers
from corpora.readers import RawDoc, Rejection
from zhllama.cli import UserError


def _docs(items):
    return [x for x in items if isinstance(x, RawDoc)]


def _rejections(items):
    return [x for x in items if isinstance(x, Rejection)]


# --- the real files in shared/data -------------------------------------------------------------


@pytest.mark.parametrize("name", ["jastfkjg_wiki_00.jsonl", "KazuhiraDZ_wiki_00.jsonl"])
def test_wikiextractor_reader_reads_every_article_of_real_zhwiki(data_dir, name):
    path = data_dir / "zhwiki" / name
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    items = list(wiki_readers.read_wikiextractor(path))
    assert not _rejections(items)
    assert [d.text for d in items] == [o["text"] for o in lines]
    assert [d.doc_id for d in items] == [f"{name}#{o['id']}" for o in lines]
    # WikiExtractor puts the title on the first line of the text.
    assert all(d.text.split("\n", 1)[0] == o["title"] for d, o in zip(items, lines, strict=True))


@pytest.mark.parametrize("rel", ["cmrc2018/cmrc2018_dev.json", "cmrc2018/cmrc2018_trial.json",
                                 "drcd/DRCD_dev.json", "drcd/DRCD_test.json"])
def test_squad_reader_yields_every_context_of_real_files(data_dir, rel):
    path = data_dir / rel
    obj = json.loads(path.read_text(encoding="utf-8"))
    contexts = [p["context"] for a in obj["data"] for p in a["paragraphs"]]
    items = list(readers.read_squad(path))
    assert not _rejections(items)
    assert [d.text for d in items] == contexts
    assert len({d.doc_id for d in items}) == len(items), "doc ids are unique within a file"


# --- the MediaWiki XML dump (multistream bz2) ---------------------------------------------------


def test_wiki_xml_reader_on_multistream_dump(wiki_dump):
    items = list(wiki_readers.read_wiki_xml(wiki_dump))
    assert len(items) == 5, "every page of every bz2 stream is seen"
    docs = _docs(items)
    assert [d.title for d in docs] == ["数学", "哲學"]
    assert all(d.markup == "wikitext" for d in docs)
    reasons = {r.doc_id.split("#")[-1]: r.reason for r in _rejections(items)}
    assert reasons == {"14": "redirect", "15": "non_article_namespace", "16": "non_article_namespace"}
    assert all(r.chars > 0 for r in _rejections(items))


def test_wiki_xml_reader_memory_does_not_grow_with_the_dump(tmp_path, make_wiki_dump):
    dump = make_wiki_dump(tmp_path / "big.xml.bz2", 1000)

    def peak_after(n_pages: int) -> int:
        tracemalloc.start()
        try:
            for i, _ in enumerate(wiki_readers.read_wiki_xml(dump), 1):
                if i == n_pages:
                    break
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, full = peak_after(100), peak_after(1000)
    xml_bytes = len(bz2.decompress(dump.read_bytes()))
    assert full < 2 * small, f"peak grew from {small} to {full} bytes between 100 and 1000 pages"
    assert full < xml_bytes / 4, "the dump is never held whole"


def test_wiki_xml_reader_truncated_dump_is_fatal(wiki_dump, tmp_path):
    bad = tmp_path / "zhwiki-truncated.xml.bz2"
    data = wiki_dump.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="zhwiki-truncated.xml.bz2"):
        list(wiki_readers.read_wiki_xml(bad))


def test_wiki_xml_reader_rejects_non_mediawiki_xml(tmp_path):
    path = tmp_path / "other.xml.bz2"
    path.write_bytes(bz2.compress(b"<rss><item>x</item></rss>"))
    with pytest.raises(UserError, match="not a MediaWiki XML export"):
        list(wiki_readers.read_wiki_xml(path))


# --- Baike, plain text, JSONL with a configurable field ----------------------------------------


def test_baike_reader_joins_title_summary_and_sections(tmp_path):
    path = tmp_path / "baike.jsonl"
    recs = [
        {"title": "长城", "summary": "长城是中国古代的军事防御工程。",
         "sections": [{"title": "历史", "content": "长城始建于西周时期。"}, {"title": "空", "content": ""}]},
        {"title": "只有标题"},
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in recs) + "\n", encoding="utf-8")
    items = list(readers.read_baike(path))
    assert _docs(items) == [RawDoc("baike.jsonl:1", "长城\n\n长城是中国古代的军事防御工程。\n\n历史\n长城始建于西周时期。")]
    [rej] = _rejections(items)
    assert (rej.doc_id, rej.reason) == ("baike.jsonl:2", "missing_field")


def test_plain_text_reader_by_paragraph_and_by_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("第一段第一行\n第一段第二行\n\n\n第二段\n", encoding="utf-8")
    paras = list(readers.read_plain_text(path, "paragraph"))
    assert paras == [RawDoc("a.txt:1", "第一段第一行\n第一段第二行"), RawDoc("a.txt:5", "第二段")]
    lines = list(readers.read_plain_text(path, "line"))
    assert [d.text for d in lines] == ["第一段第一行", "第一段第二行", "第二段"]
    # Characters are conserved either way: the non-blank lines' characters.
    assert sum(len(d.text.replace("\n", "")) for d in paras) == sum(len(d.text) for d in lines)


def test_jsonl_reader_uses_the_configured_text_field(tmp_path):
    path = tmp_path / "news.jsonl"
    path.write_text('{"doc": 7, "content": "新闻正文"}\n{"doc": 8, "text": "没有content"}\n', encoding="utf-8")
    items = list(readers.read_jsonl(path, text_field="content", id_field="doc"))
    assert _docs(items) == [RawDoc("news.jsonl#7", "新闻正文")]
    assert [r.reason for r in _rejections(items)] == ["missing_field"]


# --- bad input: fatal vs counted ---------------------------------------------------------------


def test_bad_lines_are_counted_with_file_and_line(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = json.dumps({"id": "1", "text": "好的一行"}, ensure_ascii=False).encode()
    path.write_bytes(
        good + b"\n"
        + b'{"id": "2", "text": "\xe4\xb8\xad\xff\xfe"}\n'  # invalid UTF-8
        + b'{"id": "3", "title": "no text"}\n'  # no text field
        + b"[1, 2]\n"  # JSON, but not an object
        + b'{"id": "5", "text": "truncat'  # truncated last line (an interrupted download)
    )
    items = list(wiki_readers.read_wikiextractor(path))
    assert _docs(items) == [RawDoc("mixed.jsonl#1", "好的一行")]
    got = [(r.doc_id, r.reason) for r in _rejections(items)]
    assert got == [("mixed.jsonl:2", "invalid_utf8"), ("mixed.jsonl:3", "missing_field"),
                   ("mixed.jsonl:4", "bad_json"), ("mixed.jsonl:5", "bad_json")]
    assert all(r.chars > 0 and r.detail for r in _rejections(items))


def test_a_50mb_line_is_skipped_in_constant_memory_and_counted(tmp_path):
    path = tmp_path / "huge.jsonl"
    n_chars = 50 * (1 << 20) // 3  # 3-byte Han characters: ~50 MB of UTF-8
    with open(path, "wb") as f:
        f.write(b'{"id": "0", "text": "' + "汉".encode() * n_chars + b'"}\n')
        f.write(json.dumps({"id": "1", "text": "之后的正常行"}, ensure_ascii=False).encode() + b"\n")
    tracemalloc.start()
    try:
        items = list(wiki_readers.read_wikiextractor(path, max_line_bytes=1 << 20))
        peak_bytes = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak_bytes < 8 << 20, f"peak {peak_bytes / 1e6:.1f} MB while skipping a 50 MB line"
    assert _docs(items) == [RawDoc("huge.jsonl#1", "之后的正常行")]  # doc id = the JSON "id"
    [rej] = _rejections(items)
    assert (rej.doc_id, rej.reason) == ("huge.jsonl:1", "line_too_long")  # file:line
    line_chars = len('{"id": "0", "text": "') + n_chars + len('"}')
    assert rej.chars == line_chars, "every character of the skipped line is still counted"


def test_binary_file_is_fatal_and_named(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    for read in (wiki_readers.read_wikiextractor, readers.read_squad, readers.read_plain_text):
        with pytest.raises(UserError, match=r"model\.bin.*binary"):
            list(read(path))


def test_wrong_format_file_is_fatal_and_named(data_dir):
    squad = data_dir / "cmrc2018" / "cmrc2018_trial.json"  # pretty-printed JSON, not JSON lines
    with pytest.raises(UserError, match=r"cmrc2018_trial\.json:1: not a JSON lines file"):
        list(wiki_readers.read_wikiextractor(squad))
    jsonl = data_dir / "zhwiki" / "jastfkjg_wiki_00.jsonl"  # JSON lines, not one SQuAD value
    with pytest.raises(UserError, match=r"jastfkjg_wiki_00\.jsonl:\d+: not a SQuAD JSON file"):
        list(readers.read_squad(jsonl))


def test_empty_file_yields_nothing(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert list(wiki_readers.read_wikiextractor(path)) == []
    assert list(readers.read_squad(path)) == []
    assert list(readers.read_plain_text(path)) == []


def test_a_utf8_bom_is_not_text_and_not_a_format_error(tmp_path):
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "1", "text": "有BOM的文件"}, ensure_ascii=False).encode() + b"\n")
    assert list(wiki_readers.read_wikiextractor(jsonl)) == [RawDoc("bom.jsonl#1", "有BOM的文件")]
    squad = tmp_path / "bom.json"
    squad.write_bytes(b"\xef\xbb\xbf" + json.dumps({"data": [{"paragraphs": [{"context": "段落"}]}]}).encode())
    assert [d.text for d in readers.read_squad(squad)] == ["段落"]
    text = tmp_path / "bom.txt"
    text.write_bytes(b"\xef\xbb\xbf" + "第一行".encode())
    assert [d.text for d in readers.read_plain_text(text)] == ["第一行"]
