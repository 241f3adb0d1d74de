"""Opening input files: what a file *is* (by its bytes, not its name), decompression, encodings.

- Compressed files (gzip, bzip2, xz, zstd) are decompressed transparently, whatever their suffix.
- Text in UTF-16/UTF-32 (a byte-order mark, or a NUL every other byte) is read as such.
- Archives and other binaries (zip, 7z, PDF, images, anything with NUL bytes) are named and refused.
- A line in GB18030/GBK (the usual legacy Chinese encoding) in a UTF-8 source stops the build with
  a message saying so, wherever the line is, unless the source declares ``encoding: gb18030``.

    >>> identify(b"\\x1f\\x8b\\x08\\x00"), identify(b"\\xff\\xfeA\\x00"), identify(b'{"text": 1}')
    ('gzip', 'utf-16-le', None)
"""
from __future__ import annotations

import bz2
import codecs
import gzip
import io
import lzma
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from zhllama.cli import UserError

#: Compression formats read transparently (the project's inputs may carry any of these suffixes).
COMPRESSED = ("gzip", "bzip2", "xz", "zstd")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"PK\x03\x04", "zip archive"), (b"7z\xbc\xaf\x27\x1c", "7z archive"), (b"Rar!", "rar archive"),
    (b"%PDF", "PDF document"), (b"\x89PNG", "PNG image"), (b"\xff\xd8\xff", "JPEG image"),
    (b"SQLite format 3\x00", "SQLite database"), (b"\x7fELF", "executable"),
    # BOMs: UTF-32 before UTF-16 (FF FE 00 00 starts with FF FE).
    (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
)
_UTF16 = ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be")
_HAN_RE = re.compile("[\u4e00-\u9fff\u3400-\u4dbf]")
SNIFF_BYTES = 8192


def identify(head: bytes) -> str | None:
    """What the first bytes of a file say it is: a compression, an archive, a UTF-16/32 text, or
    None (plain bytes: UTF-8 or another ASCII-compatible text). Without a BOM, UTF-16 is recognised
    by its NUL bytes in every other position.

    >>> identify(b"B\\x00A\\x00" * 4), identify(b"BZh91AY&SY"), identify(b"PK\\x03\\x04")
    ('utf-16-le', 'bzip2', 'zip archive')
    """
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    sample = head[:512]
    if len(sample) >= 8:
        even, odd = sample[0::2], sample[1::2]
        if odd.count(0) > 0.4 * len(odd) and even.count(0) < 0.05 * len(even):
            return "utf-16-le"
        if even.count(0) > 0.4 * len(even) and odd.count(0) < 0.05 * len(odd):
            return "utf-16-be"
    return None


def _decompressor(kind: str, raw: BinaryIO) -> BinaryIO:
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw)
    if kind == "bzip2":
        return bz2.BZ2File(raw)  # multistream dumps: every stream, in order
    if kind == "xz":
        return lzma.LZMAFile(raw)
    import zstandard

    return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)


class _Reencoded(io.RawIOBase):
    """A UTF-16/32 byte stream presented as UTF-8 bytes (so line splitting stays byte-based)."""

    def __init__(self, raw: BinaryIO, encoding: str) -> None:
        self._text = io.TextIOWrapper(raw, encoding=encoding.replace("-le", "").replace("-be", "")
                                      if raw.peek(4)[:2] in (b"\xff\xfe", b"\xfe\xff") else encoding,
                                      errors="replace", newline="")
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            chunk = self._text.read(1 << 16)
            if not chunk:
                return 0
            self._buf = chunk.encode("utf-8")
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def open_input(path: Path) -> tuple[BinaryIO, str | None]:
    """Open ``path`` for reading bytes: decompressed, UTF-16/32 re-encoded to UTF-8.

    Returns ``(stream, what)`` where ``what`` describes the transformation (``"gzip"``,
    ``"utf-16-le"``, ``"gzip + utf-16-le"``, None). Raises ``UserError`` naming the file for an
    archive or another binary format.
    """
    raw = open(path, "rb")  # noqa: SIM115 (returned to the caller, who closes it)
    kinds: list[str] = []
    stream: BinaryIO = io.BufferedReader(raw) if not isinstance(raw, io.BufferedReader) else raw
    for _ in range(2):  # a compressed UTF-16 file: decompress, then re-encode
        try:
            head = stream.peek(SNIFF_BYTES)[:SNIFF_BYTES]
        except (OSError, EOFError, ValueError) as e:  # truncated or corrupt compressed data
            raw.close()
            raise UserError(f"{path}: cannot read {' + '.join(kinds) or 'the file'}: {e}") from None
        kind = identify(head)
        if kind in COMPRESSED and not kinds:
            stream = io.BufferedReader(_decompressor(kind, stream))
            kinds.append(kind)
            continue
        if kind in _UTF16:
            stream = io.BufferedReader(_Reencoded(stream, kind))
            kinds.append(kind)
        elif kind is not None:
            raw.close()
            hint = " (unpack it first)" if "archive" in kind else ""
            raise UserError(f"{path}: a binary file (a {kind}), not a text corpus{hint}")
        break
    return stream, " + ".join(kinds) or None


@dataclass(frozen=True)
class Part:
    """A byte range of an input file that one worker reads on its own (:mod:`corpora.units`): whole
    lines of an uncompressed line-based file, or whole bz2 streams of a multistream dump.

    Example: ``Part(4194381, 8388702, first_line=1811)``: the lines from line 1811 on.
    """

    start: int
    """First byte."""
    end: int
    """One past the last byte."""
    first_line: int = 1
    """Line-based files: the number of the part's first line (its ids stay ``file:line``)."""


class _Window(io.RawIOBase):
    """Bytes ``[start, end)`` of a file, as a stream."""

    def __init__(self, path: Path, part: Part) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 (closed with the window)
        self._f.seek(part.start)
        self._left = part.end - part.start

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self._f.readinto(memoryview(b)[: min(len(b), self._left)])
        self._left -= n
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def open_part(path: Path, part: Part) -> BinaryIO:
    """Open bytes ``[part.start, part.end)`` of an uncompressed file for reading.

    >>> with open_part(Path("news.jsonl"), Part(4096, 8192)) as f: f.readline()   # doctest: +SKIP
    b'{"text": ...}\\n'
    """
    return io.BufferedReader(_Window(path, part))


def looks_like_gb18030(raw_line: bytes) -> bool:
    """True when bytes that are not UTF-8 decode cleanly as GB18030 into mostly Chinese text.

    >>> looks_like_gb18030("数学是一门学科".encode("gb18030")), looks_like_gb18030(b"\\xff\\xfe bad")
    (True, False)
    """
    try:
        text = raw_line.decode("gb18030")
    except UnicodeDecodeError:
        return False
    non_ascii = sum(1 for c in text if ord(c) > 127)
    han = len(_HAN_RE.findall(text))
    return han >= 2 and han >= 0.5 * non_ascii


def gb18030_error(where: str) -> UserError:
    """The one message for Chinese text in a legacy encoding, wherever it is found."""
    return UserError(f"{where}: text in GB18030/GBK encoding, not UTF-8 (declare `encoding: gb18030` on the "
                     "source to read it, or convert the file with `iconv -f gb18030 -t utf-8`)")


def check_encoding(name: str, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless Python knows the codec ``name``."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise ValueError(f"{where}: unknown encoding {name!r} (e.g. utf-8, gb18030, big5)") from None
