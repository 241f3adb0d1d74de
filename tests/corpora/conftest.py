"""Fixtures for the corpora tests: a tiny real multistream zhwiki dump, small input files."""
from __future__ import annotations

import bz2
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


def write_multistream_dump(path: Path, pages=PAGES) -> Path:
    """Write a MediaWiki export as a multistream .xml.bz2: header, one stream per page, footer."""
    from xml.sax.saxutils import escape

    streams = [bz2.compress(SITEINFO.format(ns=_NS).encode())]
    for pid, title, ns, is_redirect, text in pages:
        redirect = f'\n    <redirect title="{escape(title)}" />' if is_redirect else ""
        # ARTICLE_WIKITEXT already holds escaped &lt;ref&gt; as in real dumps; escape the rest.
        body = text if "&lt;" in text else escape(text)
        streams.append(bz2.compress(PAGE.format(title=escape(title), ns=ns, id=pid, redirect=redirect,
                                                text=body).encode()))
    streams.append(bz2.compress(b"</mediawiki>\n"))
    path.write_bytes(b"".join(streams))
    return path


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
