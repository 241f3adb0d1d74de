"""Wikipedia readers: the MediaWiki XML dump (plain, ``.bz2``, split or multistream) and
WikiExtractor's output in both its formats (``--json`` lines and the default ``<doc>`` files).

    >>> # zhwiki-20240101-pages-articles-multistream.xml.bz2 -> RawDoc("...#13", "'\''数学'\''...", "wikitext")
    >>> # extracted/AA/wiki_00 (<doc id="13" url=... title="数学">...</doc>) -> RawDoc("wiki_00#13", "数学\\n\\n...")
"""
from __future__ import annotations

import html
import itertools
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from pathlib import Path

from corpora.inputs import Part, open_input
from corpora.multistream import iter_range_bytes
from corpora.readers import (
    DEFAULT_MAX_LINE_BYTES,
    Item,
    RawDoc,
    Rejection,
    check_not_binary,
    iter_lines,
    read_jsonl,
)
from zhllama.cli import UserError

_FEED_BYTES = 16 << 10  # as iterparse: the elements of one piece's pages are alive at once
_DOC_OPEN_RE = re.compile(r'^<doc\s+([^>]*)>\s*$')
_ATTR_RE = re.compile(r'(\w+)="([^"]*)"')


def _head(path: Path, n_bytes: int = 4096) -> bytes:
    """The file's first non-blank bytes, decompressed (a UTF-8 BOM and leading whitespace dropped)."""
    stream, _ = open_input(path)
    with stream:
        return stream.read(n_bytes).removeprefix(b"\xef\xbb\xbf").lstrip()


def read_wikiextractor(path: Path, id_field: str | None = "id", max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                       encoding: str = "utf-8", part: Part | None = None) -> Iterator[Item]:
    """WikiExtractor output in either format, told apart by the file's first line: ``--json``
    lines (``{"id","url","title","text"}``) or the default ``<doc id= url= title=>...</doc>`` blocks.

    >>> # AA/wiki_00 starting '<doc id="13" ...>' -> read_wikiextractor_doc; '{"id": "13", ...}' -> read_jsonl
    """
    if part is not None:  # only JSON lines files are cut into parts (corpora.units)
        return read_jsonl(path, "text", id_field, max_line_bytes, encoding, part)
    check_not_binary(path)
    head = _head(path)
    if head.startswith(b"<doc"):
        return read_wikiextractor_doc(path, max_line_bytes, encoding)
    if head.startswith(b"{") or not head:
        return read_jsonl(path, "text", id_field, max_line_bytes, encoding)
    first = head.split(b"\n", 1)[0][:60].decode("utf-8", errors="replace")
    raise UserError(f"{path}: not WikiExtractor output (neither JSON lines nor <doc ...> blocks; starts {first!r})")


def read_wikiextractor_doc(path: Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                           encoding: str = "utf-8") -> Iterator[Item]:
    """WikiExtractor's default format: ``<doc id="13" url="..." title="数学">``, the title line, the
    text, ``</doc>``. ``doc_id`` is ``file#id``; the text (title first, as in ``--json``) is
    HTML-unescaped (this format escapes ``<``, ``>``, ``&``); tags left in it are the cleaner's job.

    Counted, not fatal: text outside any ``<doc>`` (``outside_doc``), a ``<doc>`` not closed before
    the next one or the end of the file (``unclosed_doc``), and bad lines (``invalid_utf8``...).
    """
    name = path.name
    doc_id, title, lines = "", "", None
    seen_doc = False
    for lineno, line, rej in iter_lines(path, max_line_bytes, encoding):
        if rej is not None:
            yield rej
            continue
        assert line is not None
        opened = _DOC_OPEN_RE.match(line.strip()) if line.startswith("<doc") else None
        if opened:
            if lines is not None:
                yield Rejection(doc_id, "unclosed_doc", len("\n".join(lines)), f"no </doc> before line {lineno}")
            attrs = dict(_ATTR_RE.findall(opened.group(1)))
            doc_id = f"{name}#{attrs.get('id') or lineno}"
            title = html.unescape(attrs.get("title", ""))
            lines = []
            seen_doc = True
        elif lines is not None and line.strip() == "</doc>":
            # This format HTML-escapes the text (&lt; &amp;); undo it here, as the JSON format needs no undoing.
            yield RawDoc(doc_id, html.unescape("\n".join(lines).strip("\n")), title=title)
            lines = None
        elif lines is not None:
            lines.append(line)
        elif line.strip():
            if not seen_doc:
                raise UserError(f"{path}:{lineno}: not a WikiExtractor <doc> file (text before the first <doc>)")
            yield Rejection(f"{name}:{lineno}", "outside_doc", len(line), "text outside <doc>...</doc>")
    if lines is not None:
        yield Rejection(doc_id, "unclosed_doc", len("\n".join(lines)), "the file ends inside <doc>")


def _local(tag: str) -> str:
    """``{http://www.mediawiki.org/xml/export-0.10/}page`` -> ``page`` (any export schema version)."""
    return tag.rsplit("}", 1)[-1]


def read_wiki_xml(path: Path, namespaces: tuple[int, ...] = (0,), part: Part | None = None) -> Iterator[Item]:
    """A MediaWiki XML export, plain or compressed (``.bz2`` multistream dumps included), page by page.

    Yields a ``RawDoc(markup="wikitext")`` per article page (the cleaner turns wikitext into text
    with ``wikiextractor``); redirects and pages outside ``namespaces`` are rejections
    (``redirect``, ``non_article_namespace``) carrying their wikitext length. Memory stays
    constant: each ``<page>`` element is cleared once handled. ``part`` reads only the bz2 streams in
    that byte range of a multistream dump (:mod:`corpora.multistream`): the parts cut at
    :func:`~corpora.multistream.split_offsets` together yield what the whole file does.

    >>> # zhwiki-20240101-pages-articles-multistream.xml.bz2 -> RawDoc("...#13", "'\''数学'\''...", "wikitext")
    """
    if part is None:
        stream, _ = open_input(path)  # plain, .bz2 (multistream too), .gz, .xz, .zst: told by the bytes
        yield from _pages(path, _file_chunks(path, stream), namespaces)
        return
    start, end = part.start, part.end
    # A range holds whole pages; only the first has the <mediawiki> header, only the last its end tag.
    yield from _pages(path, iter_range_bytes(path, start, end), namespaces, b"<mediawiki>" if start else b"",
                      b"</mediawiki>" if end < path.stat().st_size else b"", f" in the bz2 streams at bytes {start}-{end}")


def _file_chunks(path: Path, stream) -> Iterator[bytes]:
    with stream as f:
        try:
            while data := f.read(_FEED_BYTES):
                yield data
        except (OSError, EOFError) as e:  # bz2: "Invalid data stream", "Compressed file ended..."
            raise UserError(f"{path}: cannot read compressed dump: {e}") from None


def _pages(path: Path, chunks: Iterable[bytes], namespaces: tuple[int, ...], prefix: bytes = b"",
           suffix: bytes = b"", where: str = "") -> Iterator[Item]:
    parser = ET.XMLPullParser(events=("start", "end"))
    root = None
    try:
        for data in itertools.chain([prefix], chunks, [suffix]):
            for at in range(0, len(data), _FEED_BYTES):  # events (and their elements) pile up per feed
                parser.feed(data[at : at + _FEED_BYTES])
                for event, elem in parser.read_events():
                    if root is None:
                        root = elem
                        if _local(elem.tag) != "mediawiki":
                            raise UserError(f"{path}: not a MediaWiki XML export (root element <{_local(elem.tag)}>)")
                    elif event == "end" and _local(elem.tag) == "page":
                        yield _page_item(path.name, elem, namespaces)
                        root.clear()  # drop handled pages: constant memory on a 20 GB dump
        parser.close()
    except ET.ParseError as e:
        line, col = e.position
        at = f"{path}:{line}" if not where else f"{path}: line {line}{where}"
        raise UserError(f"{at}: malformed MediaWiki XML (column {col}): {e}") from None


def _page_item(name: str, page: ET.Element, namespaces: tuple[int, ...]) -> Item:
    fields: dict[str, str] = {}
    redirect = False
    text = ""
    for child in page.iter():
        tag = _local(child.tag)
        if tag in ("title", "ns", "id") and tag not in fields:  # the first <id> is the page id
            fields[tag] = (child.text or "").strip()
        elif tag == "redirect":
            redirect = True
        elif tag == "text":
            text = child.text or ""
    title = fields.get("title", "")
    doc_id = f"{name}#{fields.get('id') or title}"
    try:
        ns = int(fields.get("ns", "0"))
    except ValueError:
        ns = -1
    if ns not in namespaces:
        return Rejection(doc_id, "non_article_namespace", len(text), f"ns={ns} {title}")
    if redirect or text.lstrip()[:9].upper() == "#REDIRECT" or text.lstrip().startswith("#重定向"):
        return Rejection(doc_id, "redirect", len(text), title)
    return RawDoc(doc_id, text, markup="wikitext", title=title)
