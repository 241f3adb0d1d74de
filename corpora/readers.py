"""Streaming readers: one generator per corpus format, yielding documents or rejections.

Every reader takes a path and yields, in file order, either a :class:`RawDoc` (a document to
clean) or a :class:`Rejection` (an input unit that could not become a document: a bad JSON line,
invalid UTF-8, a redirect page...). Readers never hold more than one line / one page in memory
(the SQuAD reader is the exception: a SQuAD file is a single JSON value and is loaded whole).

Character accounting starts here: ``RawDoc.text`` and ``Rejection.chars`` are the *input*
characters of the unit, so for every file ``chars read = chars of docs + chars of rejections``.

Fatal vs counted (the policy, see :class:`~zhllama.cli.UserError`):

- fatal (raise ``UserError`` naming the file): a missing path, a binary file (an archive, an
  image..., or a NUL byte on any line), Chinese text in GB18030/GBK on any line of a UTF-8 source,
  a file whose *first* record is not of the declared format (a whole file of the wrong format), a
  corrupt or truncated XML/bz2 dump, a SQuAD file that is not SQuAD JSON;
- counted (a :class:`Rejection` naming ``file:line``): one bad line inside an otherwise good file
  (invalid UTF-8, truncated JSON, a missing text field, a line longer than ``max_line_bytes``).
- read as they are (:mod:`corpora.inputs`): gzip, bzip2, xz and zstd files of any format, UTF-16/32
  text, and any encoding a source declares (``encoding: gb18030``).
- an empty file yields nothing; the build records a warning naming it. Blank lines hold no
  document and are skipped (in ``text`` format they separate paragraphs).

Example::

    >>> for item in read_jsonl(path, text_field="text"):        # doctest: +SKIP
    ...     print(item.doc_id if isinstance(item, RawDoc) else item.reason)
"""
from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Union

from corpora.inputs import Part, gb18030_error, looks_like_gb18030, open_input, open_part
from zhllama.cli import UserError

#: Lines longer than this many bytes are skipped (streamed past in chunks) and counted as
#: rejected ``line_too_long``: constant memory even for a pathological 50 MB line.
DEFAULT_MAX_LINE_BYTES = 8 << 20
_SNIFF_BYTES = 8192
_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RawDoc:
    """One document as read, before cleaning.

    Example: ``RawDoc("wiki_00.jsonl#13", "数学\\n\\n数学是...", "text")``.
    """

    doc_id: str
    """Stable id within its source: ``file#id`` (from the record) or ``file:line``."""
    text: str
    """The document text (or wikitext when ``markup == "wikitext"``)."""
    markup: Literal["text", "wikitext"] = "text"
    """``"wikitext"``: raw MediaWiki markup that the cleaner must turn into text first."""
    title: str = ""
    """Page title, used by the wikitext converter (empty for other formats)."""


@dataclass(frozen=True)
class Rejection:
    """An input unit that did not become a document, with why and how many characters it held.

    Example: ``Rejection("wiki_00.jsonl:7", "bad_json", 512, "Expecting ',' delimiter")``.
    """

    doc_id: str
    """``file:line`` of the unit (``file#id`` for units of a SQuAD or XML file)."""
    reason: str
    """A short snake_case reason, the key used in manifest.json's ``rejected`` tables."""
    chars: int
    """Input characters of the unit (invalid bytes count as one U+FFFD each)."""
    detail: str = ""
    """A human-readable detail (the JSON error, the missing key...)."""


Item = Union[RawDoc, Rejection]


def check_not_binary(path: Path) -> None:
    """Raise ``UserError`` if ``path`` is an archive or another binary (see :func:`corpora.inputs.open_input`)
    or has a NUL byte in its first 8 KiB after decompression."""
    stream, _ = open_input(path)
    with stream:
        head = stream.read(_SNIFF_BYTES)
    pos = head.find(b"\0")
    if pos >= 0:
        raise UserError(f"{path}: binary data (NUL byte at offset {pos}), not a text corpus")


def _decoded_len(data: bytes, encoding: str = "utf-8") -> int:
    return len(data.decode(encoding, errors="replace"))


def iter_lines(path: Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, encoding: str = "utf-8",
               part: Part | None = None) -> Iterator[tuple[int, str | None, Rejection | None]]:
    """Yield ``(line_number, text, None)`` per line (newline stripped), or ``(n, None, Rejection)``.

    The file is opened by :func:`corpora.inputs.open_input` (decompressed, UTF-16 re-encoded). A
    line that does not decode (``invalid_utf8`` / ``invalid_encoding``) or is longer than
    ``max_line_bytes`` becomes a rejection; the long line is read in 1 MiB chunks and never held
    whole (its characters are still counted). A NUL byte or a GB18030 line in a UTF-8 source stops
    with a ``UserError`` naming ``file:line``, on the first line as on the millionth. ``part``: only
    the lines of that byte range of an uncompressed file, numbered from ``part.first_line``.

    >>> list(iter_lines(Path("a.txt.gz")))  # doctest: +SKIP
    [(1, 'first', None), (2, 'second', None)]
    """
    name = path.name
    stream, what = open_input(path) if part is None else (open_part(path, part), None)
    if what and "utf-" in what:
        encoding = "utf-8"  # re-encoded from its BOM / NUL pattern: a declared encoding does not apply
    utf8 = codecs.lookup(encoding).name == "utf-8"
    with stream as f:
        lineno = part.first_line - 1 if part else 0
        while True:
            raw = f.readline(max_line_bytes + 1)
            if not raw:
                return
            lineno += 1
            if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
                # Stream past the rest of the line, counting its characters incrementally.
                decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
                chars = len(decoder.decode(raw))
                total_bytes = len(raw)
                while True:
                    chunk = f.readline(_CHUNK_BYTES)
                    if not chunk:
                        break
                    total_bytes += len(chunk)
                    chars += len(decoder.decode(chunk))
                    if chunk.endswith(b"\n"):
                        break
                chars += len(decoder.decode(b"", final=True))
                chars -= 1 if chunk.endswith(b"\n") else 0
                yield lineno, None, Rejection(
                    f"{name}:{lineno}", "line_too_long", chars,
                    f"{total_bytes} bytes > max_line_bytes={max_line_bytes}",
                )
                continue
            raw = raw.rstrip(b"\r\n")
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]  # a BOM is encoding metadata, not text
            nul = raw.find(b"\0")
            if nul >= 0:  # same treatment on every line: a text corpus never holds NUL
                after = f" ({what})" if what else ""
                raise UserError(f"{path}:{lineno}: binary data (NUL byte at byte {nul} of the line), "
                                f"not a text corpus{after}")
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as e:
                if utf8 and looks_like_gb18030(raw):
                    raise gb18030_error(f"{path}:{lineno}") from None
                reason = "invalid_utf8" if utf8 else "invalid_encoding"
                yield lineno, None, Rejection(
                    f"{name}:{lineno}", reason, _decoded_len(raw, encoding), f"byte {e.start}: {e.reason}"
                )
                continue
            yield lineno, line, None


def json_lines(path: Path, max_line_bytes: int, what: str, encoding: str = "utf-8",
                part: Part | None = None) -> Iterator[tuple[str, dict | None, Item | None]]:
    """Yield ``(doc_id, obj, None)`` per JSON-object line or ``(doc_id, None, Rejection)``.

    The first non-blank line must be a JSON object, else the whole file is of the wrong format
    (fatal); later bad lines are rejections.
    """
    seen_good = part is not None and part.first_line > 1  # a later part: its first line is not the file's
    for lineno, line, rej in iter_lines(path, max_line_bytes, encoding, part):
        doc_id = f"{path.name}:{lineno}"
        if rej is not None:
            yield doc_id, None, rej
            continue
        assert line is not None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            if not seen_good:
                raise UserError(
                    f"{path}:{lineno}: not a {what} file (first record is not a JSON object: {e})"
                ) from None
            yield doc_id, None, Rejection(doc_id, "bad_json", len(line), str(e))
            continue
        seen_good = True
        yield doc_id, obj, None


def read_jsonl(
    path: Path, text_field: str = "text", id_field: str | None = "id",
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, encoding: str = "utf-8", part: Part | None = None,
) -> Iterator[Item]:
    """JSON lines with the text in ``text_field`` (WikiExtractor ``--json`` output is this with "text").

    ``doc_id`` is ``file#<id_field value>`` when present, else ``file:line`` (rejections are
    always ``file:line``, so a bad line can be found).

    >>> # a line {"id": "13", "text": "数学..."}  ->  RawDoc("wiki_00.jsonl#13", "数学...")
    """
    for doc_id, obj, rej in json_lines(path, max_line_bytes, "JSON lines", encoding, part):
        if rej is not None:
            yield rej
            continue
        assert obj is not None
        text = obj.get(text_field)
        if not isinstance(text, str):
            why = f"no {text_field!r} key" if text_field not in obj else f"{text_field!r} is {type(text).__name__}"
            yield Rejection(doc_id, "missing_field", len(json.dumps(obj, ensure_ascii=False)), why)
            continue
        if id_field and obj.get(id_field) is not None:
            doc_id = f"{path.name}#{obj[id_field]}"
        yield RawDoc(doc_id, text)


def baike_text(obj: dict) -> str | None:
    """Join a Baidu-Baike-style record into one text: title, summary, then each section.

    >>> baike_text({"title": "长城", "summary": "中国古代的军事防御工程。",
    ...             "sections": [{"title": "历史", "content": "始建于西周。"}]})
    '长城\\n\\n中国古代的军事防御工程。\\n\\n历史\\n始建于西周。'
    >>> baike_text({"title": "空"}) is None
    True
    """
    parts: list[str] = []
    title = obj.get("title")
    summary = obj.get("summary")
    sections = obj.get("sections") or []
    if isinstance(title, str) and title.strip():
        parts.append(title.strip())
    body = 0
    if isinstance(summary, str) and summary.strip():
        parts.append(summary.strip())
        body += 1
    if isinstance(sections, list):
        for sec in sections:
            if not isinstance(sec, dict):
                continue
            content = sec.get("content")
            if not isinstance(content, str) or not content.strip():
                continue
            head = sec.get("title")
            parts.append(f"{head.strip()}\n{content.strip()}" if isinstance(head, str) and head.strip() else content.strip())
            body += 1
    return "\n\n".join(parts) if body else None


def read_baike(path: Path, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, encoding: str = "utf-8",
               part: Part | None = None) -> Iterator[Item]:
    """Baidu Baike style JSON lines: ``title``, ``summary``, ``sections: [{title, content}]``."""
    for doc_id, obj, rej in json_lines(path, max_line_bytes, "Baike JSON lines", encoding, part):
        if rej is not None:
            yield rej
            continue
        assert obj is not None
        text = baike_text(obj)
        if text is None:
            raw_len = len(json.dumps(obj, ensure_ascii=False))
            yield Rejection(doc_id, "missing_field", raw_len, "no summary or section content")
            continue
        yield RawDoc(doc_id, text)


def read_squad(path: Path, encoding: str = "utf-8") -> Iterator[Item]:
    """SQuAD-style JSON (CMRC2018, DRCD): one document per ``data[].paragraphs[].context``.

    The file is one JSON value and is loaded whole (SQuAD files are a few MB). Repeated
    contexts are left to the build's exact deduplication, which counts them.

    >>> # {"data": [{"paragraphs": [{"id": "P1", "context": "..."}]}]} -> RawDoc("dev.json#P1", "...")
    """
    stream, what = open_input(path)
    with stream:
        raw = stream.read()
    if not raw.strip():
        return
    if b"\0" in raw:
        line = raw[: raw.index(b"\0")].count(b"\n") + 1
        raise UserError(f"{path}:{line}: binary data (NUL byte), not a text corpus")
    encoding = "utf-8-sig" if (what and "utf-" in what) or codecs.lookup(encoding).name == "utf-8" else encoding
    try:
        obj = json.loads(raw.decode(encoding))
    except UnicodeDecodeError as e:
        line_no = raw[: e.start].count(b"\n") + 1
        bad_line = raw.split(b"\n")[line_no - 1]
        if encoding == "utf-8-sig" and looks_like_gb18030(bad_line):
            raise gb18030_error(f"{path}:{line_no}") from None
        raise UserError(f"{path}:{line_no}: not {encoding} (byte {e.start}): not a SQuAD JSON file") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not a SQuAD JSON file ({e.msg}, column {e.colno})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise UserError(f"{path}: not a SQuAD JSON file (no top-level 'data' list)")
    for ai, article in enumerate(obj["data"]):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            n = len(json.dumps(article, ensure_ascii=False))
            yield Rejection(f"{path.name}:data[{ai}]", "missing_field", n, "no 'paragraphs' list")
            continue
        for pi, para in enumerate(paragraphs):
            pid = para.get("id") if isinstance(para, dict) else None
            doc_id = f"{path.name}#{pid}" if pid is not None else f"{path.name}:data[{ai}].paragraphs[{pi}]"
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str):
                n = len(json.dumps(para, ensure_ascii=False))
                yield Rejection(doc_id, "missing_field", n, "no 'context' string")
                continue
            yield RawDoc(doc_id, context)


def read_plain_text(
    path: Path, unit: Literal["paragraph", "line"] = "paragraph", max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    encoding: str = "utf-8", part: Part | None = None,
) -> Iterator[Item]:
    """Plain UTF-8 text: a document per blank-line-separated paragraph, or per line.

    ``doc_id`` is ``file:first_line``. Characters read are the characters of the non-blank
    lines (blank separator lines carry none).

    >>> # "甲\\n乙\\n\\n丙\\n" -> RawDoc("a.txt:1", "甲\\n乙"), RawDoc("a.txt:4", "丙")
    """
    if unit not in ("paragraph", "line"):
        raise ValueError(f"unit must be 'paragraph' or 'line', got {unit!r}")
    block: list[str] = []
    start = 0
    for lineno, line, rej in iter_lines(path, max_line_bytes, encoding, part):
        if rej is not None:
            yield rej
            continue
        assert line is not None
        if unit == "line":
            if line.strip():
                yield RawDoc(f"{path.name}:{lineno}", line)
            continue
        if line.strip():
            if not block:
                start = lineno
            block.append(line)
        elif block:
            yield RawDoc(f"{path.name}:{start}", "\n".join(block))
            block = []
    if block:
        yield RawDoc(f"{path.name}:{start}", "\n".join(block))
