"""Multistream bz2 dumps read in parallel: byte ranges of whole bz2 streams, each decompressed alone.

A ``zhwiki-*-pages-articles-multistream.xml.bz2`` is a concatenation of independent bz2 streams:
the first holds ``<mediawiki><siteinfo>``, each of the next holds 100 ``<page>`` elements, the last
the closing ``</mediawiki>``. Any run of consecutive page streams therefore decompresses on its own
to whole pages, so a dump is cut at stream starts into ranges of about ``target_bytes`` that worker
processes read at once (:func:`split_offsets`, :func:`iter_range_bytes`).

Stream starts come from the dump's ``-index.txt.bz2`` when it lies next to it (``offset:page_id:title``
lines, :func:`index_path`), else from a scan for the stream magic ``BZh[1-9]`` followed by the first
block header ``1AY&SY`` (0x314159265359). A cut is only made where a stream verifiably starts a page
(its first block decompresses to ``<page``), so a bz2 file whose streams do not hold whole pages
(``pbzip2`` output) is never cut inside a page: it is read as one range. Both ways find the same cuts:
the first verified stream at or after each multiple of ``target_bytes``.

    >>> split_offsets(Path("zhwiki-...-multistream.xml.bz2"), 64 << 20)   # doctest: +SKIP
    [0, 67108991, 134218101, ..., 3412332718]
"""
from __future__ import annotations

import bz2
import re
from collections.abc import Iterator
from pathlib import Path

from zhllama.cli import UserError

STREAM_MAGIC = re.compile(rb"BZh[1-9]1AY&SY")
_READ_BYTES = 1 << 20
_VERIFY_MAX_BYTES = 2 << 20  # a bz2 block (<= 900 kB of data) compresses to less than this


def index_path(dump: Path) -> Path | None:
    """The Wikimedia index file of a multistream dump, if it lies next to it.

    >>> index_path(Path("zhwiki-20240101-pages-articles-multistream.xml.bz2")) is None   # not on disk
    True
    >>> _index_name("zhwiki-20240101-pages-articles-multistream1.xml-p1p187712.bz2")
    'zhwiki-20240101-pages-articles-multistream-index1.txt-p1p187712.bz2'
    """
    if "multistream" not in dump.name:
        return None
    index = dump.with_name(_index_name(dump.name))
    return index if index.is_file() else None


def _index_name(name: str) -> str:
    return name.replace("multistream", "multistream-index", 1).replace(".xml", ".txt", 1)


def index_offsets(index: Path) -> Iterator[int]:
    """The distinct stream offsets of an index file (``offset:page_id:title`` lines), in order."""
    last = -1
    with bz2.open(index, "rt", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            head = line.split(":", 1)[0]
            if not head.strip():
                continue
            try:
                offset = int(head)
            except ValueError:
                raise UserError(f"{index}:{lineno}: not a multistream index line (offset:page_id:title): "
                                f"{line[:60]!r}") from None
            if offset != last:
                last = offset
                yield offset


def starts_a_page(f, offset: int) -> bool:
    """Whether a bz2 stream starts at ``offset`` of the open file ``f`` and its data begins with ``<page``."""
    f.seek(offset)
    dec = bz2.BZ2Decompressor()
    consumed = 0
    out = b""
    try:
        while consumed < _VERIFY_MAX_BYTES and not out.strip() and not dec.eof:
            chunk = f.read(64 << 10)
            if not chunk:
                return False
            consumed += len(chunk)
            out += dec.decompress(chunk, max_length=64)
    except OSError:  # not a stream start: the magic occurred inside compressed data
        return False
    return out.lstrip().startswith(b"<page")


def _scan_stream_starts(f, start: int) -> Iterator[int]:
    """Offsets >= ``start`` where the stream magic occurs (unverified), in order."""
    pos = start
    tail = b""
    while True:
        f.seek(pos)
        block = f.read(_READ_BYTES)
        if not block:
            return
        data = tail + block
        base = pos - len(tail)
        for m in STREAM_MAGIC.finditer(data):
            if base + m.start() >= start:
                yield base + m.start()
        tail = data[-(len(b"BZh91AY&SY") - 1):]
        pos += len(block)


def split_offsets(path: Path, target_bytes: int, index: Path | None = None) -> list[int]:
    """Range boundaries ``[0, c1, ..., size]`` cutting a multistream dump at verified page-stream starts,
    one cut at the first such stream at or after each multiple of ``target_bytes`` (``index`` offsets
    when given, else a scan). A file that cannot be cut gives ``[0, size]``."""
    size = path.stat().st_size
    cuts = [0]
    offsets = index_offsets(index) if index is not None else None
    with open(path, "rb") as f:
        target = target_bytes
        while target < size:
            found = None
            candidates = offsets if offsets is not None else _scan_stream_starts(f, target)
            for off in candidates:
                if off >= size:
                    break
                if off >= target and starts_a_page(f, off):
                    found = off
                    break
            if found is None:
                break
            cuts.append(found)
            target = (found // target_bytes + 1) * target_bytes
    return [*cuts, size]


def iter_range_bytes(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The decompressed data of the bz2 streams in ``[start, end)`` of ``path``, in pieces.

    ``start`` and ``end`` must be stream boundaries (from :func:`split_offsets`); a truncated or
    corrupt stream is a ``UserError`` naming the file and the byte where its stream began.

    >>> b"".join(iter_range_bytes(dump, 0, dump.stat().st_size))[:10]   # doctest: +SKIP
    b'<mediawiki'
    """
    dec = bz2.BZ2Decompressor()
    stream_at = start
    with open(path, "rb") as f:
        f.seek(start)
        pos = start
        while pos < end:
            data = f.read(min(_READ_BYTES, end - pos))
            if not data:
                break
            pos += len(data)
            while True:
                try:  # at most _READ_BYTES out per call: highly compressible input stays bounded too
                    out = dec.decompress(data, max_length=_READ_BYTES)
                except OSError as e:
                    raise UserError(f"{path}: cannot read compressed dump: {e} (bz2 stream at byte {stream_at})") from None
                if out:
                    yield out
                if dec.eof:  # the next stream begins in this piece (or at the next byte)
                    data = dec.unused_data
                    stream_at = pos - len(data)
                    dec = bz2.BZ2Decompressor()
                    if not data:
                        break
                elif dec.needs_input:
                    break
                else:
                    data = b""
    if stream_at < end and not dec.eof:
        raise UserError(f"{path}: cannot read compressed dump: Compressed file ended before the end-of-stream "
                        f"marker was reached (bz2 stream at byte {stream_at})")
