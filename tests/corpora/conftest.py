"""Fixtures for the corpora tests: a tiny real multistream zhwiki dump, small input files."""
from __future__ import annotations

import bz2
import json
from pathlib import Path

import pytest

_NS = "http://www.mediawiki.org/xml/export-0.11/"

SITEINFO = """<mediawiki xmlns="{ns}" version="0.11" xml:lang="zh">
  <siteinfo>
    <sitename>维基百科</sitename>
    <dbname>zhwiki</dbname>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="1" case="first-letter">Talk</namespace>
      <namespace key="10" case="first-letter">Template</namespace>
    </namespaces>
  </siteinfo>
"""

PAGE = """  <page>
    <title>{title}</title>
    <ns>{ns}</ns>
    <id>{id}</id>{redirect}
    <revision>
      <id>9{id}</id>
      <timestamp>2024-01-01T00:00:00Z</timestamp>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="1" xml:space="preserve">{text}</text>
    </revision>
  </page>
"""

ARTICLE_WIKITEXT = """{{Infobox 学科|名称=数学|图像=Euclid.jpg}}
'''数学'''是研究[[数量]]、[[结构]]以及[[空间]]等概念的一门[[学科|科学]]&lt;ref&gt;{{cite book|title=数学史}}&lt;/ref&gt;。
[[File:Euclid.jpg|thumb|欧几里得]]

== 历史 ==
数学的历史很悠久，[[古埃及]]与[[巴比伦]]已有算术与几何的记载。参见[https://example.org 外部网站]。

[[Category:数学]]"""

TRADITIONAL_WIKITEXT = """'''哲學'''是研究[[存在]]、[[知識]]、價值、理智、心靈與語言等基本問題的學科，{{lang-en|philosophy}}與其他學科不同。"""

# (id, title, ns, is_redirect, wikitext); the dump gives each in its own bz2 stream, like the
# real multistream files (which bundle 100 pages per stream).
PAGES = [
    (13, "数学", 0, False, ARTICLE_WIKITEXT),
    (14, "算学", 0, True, "#REDIRECT [[数学]]"),
    (15, "Template:Infobox 学科", 10, False, "{{{名称}}}的信息框"),
    (16, "Talk:数学", 1, False, "这里讨论数学条目的改进，这段文字足够长但不是条目。"),
    (17, "哲學", 0, False, TRADITIONAL_WIKITEXT),
]


def write_multistream_dump(path: Path, pages=PAGES, pages_per_stream: int = 1, index: bool = False) -> Path:
    """Write a MediaWiki export as a multistream .xml.bz2, laid out as Wikimedia's: the header, streams
    of ``pages_per_stream`` pages (Wikimedia: 100), the footer; with ``index``, the
    ``...-multistream-index.txt.bz2`` next to it (``offset:page_id:title`` per page)."""
    from xml.sax.saxutils import escape

    streams = [bz2.compress(SITEINFO.format(ns=_NS).encode())]
    index_lines = []
    for start in range(0, len(pages), pages_per_stream):
        offset = sum(map(len, streams))
        xml = ""
        for pid, title, ns, is_redirect, text in pages[start : start + pages_per_stream]:
            redirect = f'\n    <redirect title="{escape(title)}" />' if is_redirect else ""
            # ARTICLE_WIKITEXT already holds escaped &lt;ref&gt; as in real dumps; escape the rest.
            body = text if "&lt;" in text else escape(text)
            xml += PAGE.format(title=escape(title), ns=ns, id=pid, redirect=redirect, text=body)
            index_lines.append(f"{offset}:{pid}:{title}\n")
        streams.append(bz2.compress(xml.encode()))
    streams.append(bz2.compress(b"</mediawiki>\n"))
    path.write_bytes(b"".join(streams))
    if index:
        name = path.name.replace("multistream", "multistream-index", 1).replace(".xml", ".txt", 1)
        (path.parent / name).write_bytes(bz2.compress("".join(index_lines).encode()))
    return path


def realistic_pages(data_dir: Path) -> list[tuple]:
    """zhwiki-like pages around real article text (the two zhwiki files of shared/data): an infobox,
    bold title, links, a reference, sections, a category. Every 7th article is followed by a redirect
    to it, every 11th by its talk page; every 13th has a copy with one added sentence (a near
    duplicate) and every 29th an exact copy (page ids from 30,000,000 on), both a few streams later."""
    docs = [json.loads(line) for f in sorted((data_dir / "zhwiki").glob("*.jsonl"))
            for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
    pages, copies = [], []
    for i, doc in enumerate(docs):
        title, *paras = [p for p in doc["text"].split("\n\n") if p.strip()]
        if not paras:
            continue
        body = [f"[[{p[:4]}]]{p[4:]}" if len(p) > 8 else p for p in paras]
        sections = "".join(f"== 第{k}节 ==\n{p}\n\n" for k, p in enumerate(body[1:], 1))
        wikitext = (f"{{{{Infobox 条目|名称={title}|图像=File{i}.jpg}}}}\n'''{title}'''{body[0]}"
                    f"<ref>{{{{cite web|url=https://example.org/{doc['id']}|title={title}}}}}</ref>\n\n"
                    f"{sections}[[Category:{title}]]")
        pid = int(doc["id"])
        pages.append((pid, title, 0, False, wikitext))
        if i % 7 == 3:
            pages.append((pid + 10_000_000, f"{title}（别名）", 0, True, f"#REDIRECT [[{title}]]"))
        if i % 11 == 5:
            pages.append((pid + 20_000_000, f"Talk:{title}", 1, False, f"关于{title}条目的讨论。" * 5))
        if i % 13 == 2 and len(doc["text"]) > 300:
            copies.append((pid + 30_000_000, title, 0, False, wikitext + "\n\n本条目另有一句补充说明。"))
        if i % 29 == 4 and len(doc["text"]) > 300:
            copies.append((pid + 40_000_000, title, 0, False, wikitext))
        if i % 5 == 4 and copies:
            pages.append(copies.pop(0))
    return pages + copies


@pytest.fixture(scope="session")
def wiki_dump(tmp_path_factory) -> Path:
    """A 5-page multistream zhwiki dump: 2 articles, a redirect, a template and a talk page."""
    return write_multistream_dump(tmp_path_factory.mktemp("wikidump") / "zhwiki-20240101-pages-articles-multistream.xml.bz2")


@pytest.fixture(scope="session")
def make_wiki_dump():
    """Factory: ``make_wiki_dump(path, n_articles)`` writes a dump of ``n_articles`` article pages."""

    def make(path: Path, n_articles: int) -> Path:
        pages = [(i, f"条目{i}", 0, False, ARTICLE_WIKITEXT * 3) for i in range(100, 100 + n_articles)]
        return write_multistream_dump(path, pages)

    return make


@pytest.fixture(scope="session")
def realistic_dump(tmp_path_factory, data_dir) -> Path:
    """A ~350-page zhwiki multistream dump of real article text, 10 pages per stream, with its index."""
    d = tmp_path_factory.mktemp("realdump")
    return write_multistream_dump(d / "zhwiki-20240101-pages-articles-multistream.xml.bz2", realistic_pages(data_dir),
                                  pages_per_stream=10, index=True)
