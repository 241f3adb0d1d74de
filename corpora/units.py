"""Work units of the local engine: every input file, or a part of it, that one worker reads alone.

A file larger than ``unit_bytes`` is cut into parts (:class:`~corpora.inputs.Part`) that workers
read at once, so one big file (a 20 GB dump, a 5 GB JSON-lines file) uses every core:

- a multistream ``.xml.bz2`` dump: ranges of whole bz2 streams (:mod:`corpora.multistream`);
- an uncompressed line-based file (``jsonl``, ``baike``, WikiExtractor ``--json`` lines, ``text``):
  ranges of whole lines, after a blank line for ``text`` paragraphs; ids keep their line numbers
  (the planner counts the newlines before each cut);
- anything else (SQuAD JSON, gzip/xz/zstd, UTF-16, WikiExtractor ``<doc>`` files, a source with a
  ``max_chars_per_source`` budget, whose cut point depends on what came before): one whole-file unit.

The plan depends only on the inputs and ``unit_bytes``, never on ``num_workers``, so the output is
the same whatever the number of workers.

    >>> [(u.path.name, u.part) for u in plan_units(cfg, files)]                     # doctest: +SKIP
    [('news.jsonl', Part(0, 4194381, 1)), ('news.jsonl', Part(4194381, 6128800, 1811)), ...]
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from corpora.inputs import SNIFF_BYTES, Part, identify
from corpora.multistream import index_path, split_offsets
from corpora.sources import SourceConfig, display_names

_COUNT_BYTES = 16 << 20
_LINE_FORMATS = ("jsonl", "baike", "text", "wikiextractor")


@dataclass(frozen=True)
class Unit:
    """One worker task: a file of a source, whole or a :class:`~corpora.inputs.Part` of it."""

    source_index: int
    """Index of the source in ``BuildConfig.sources``."""
    path: Path
    """The input file."""
    name: str
    """How the file is named in document ids (:func:`~corpora.sources.display_names`)."""
    budget: int = 0
    """Input characters this file may contribute (0 = all; whole-file units only)."""
    part: Part | None = None
    """The byte range read, None for the whole file."""


def file_budget(max_chars_per_source: int, n_files: int) -> int:
    """Input characters each of a source's ``n_files`` files may contribute (0 = all): the demo subset.

    >>> file_budget(1000, 3), file_budget(0, 3)
    (334, 0)
    """
    return -(-max_chars_per_source // n_files) if max_chars_per_source else 0


def plan_units(sources: list[SourceConfig], files: list[list[Path]], data_dir: Path, unit_bytes: int,
               max_chars_per_source: int = 0) -> list[Unit]:
    """Every file of every source (config order, files sorted), cut into parts of about ``unit_bytes``."""
    units = []
    for si, src in enumerate(sources):
        names = display_names(files[si], data_dir)
        budget = file_budget(max_chars_per_source, len(files[si]))
        for path in files[si]:
            parts = file_parts(src, path, unit_bytes) if not budget else [None]
            units += [Unit(si, path, names[path], budget, part) for part in parts]
    return units


def file_parts(src: SourceConfig, path: Path, unit_bytes: int) -> list[Part | None]:
    """The parts of one file (``[None]``: read it whole)."""
    size = path.stat().st_size
    if size <= unit_bytes or src.format not in (*_LINE_FORMATS, "wiki_xml"):
        return [None]
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
    kind = identify(head)
    if src.format == "wiki_xml":
        if kind != "bzip2":
            return [None]
        cuts = split_offsets(path, unit_bytes, index_path(path))
        return [Part(a, b) for a, b in zip(cuts, cuts[1:], strict=False)] if len(cuts) > 2 else [None]
    if kind is not None:  # compressed or UTF-16: no byte offset maps to a line
        return [None]
    if src.format == "wikiextractor" and not head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{"):
        return [None]  # <doc> blocks span lines
    paragraphs = src.format == "text" and src.text_unit == "paragraph"
    return line_parts(path, unit_bytes, after_blank_line=paragraphs)


def _skip_line(f) -> bool | None:
    """Read past one line in 1 MiB pieces: whether it was blank, None at the end of the file."""
    chunk = f.readline(1 << 20)
    if not chunk:
        return None
    blank = not chunk.strip()
    while not chunk.endswith(b"\n") and (chunk := f.readline(1 << 20)):
        blank = blank and not chunk.strip()
    return blank


def _line_end(f, pos: int, after_blank_line: bool) -> int:
    """The offset just past the line that holds byte ``pos`` (with ``after_blank_line``: past the next blank line)."""
    f.seek(pos)
    _skip_line(f)
    while after_blank_line and _skip_line(f) is False:
        pass
    return f.tell()


def line_parts(path: Path, unit_bytes: int, after_blank_line: bool = False) -> list[Part | None]:
    """Cut an uncompressed file into parts of whole lines (after a blank line: whole paragraphs), each
    starting at the first line boundary at or after a multiple of ``unit_bytes`` past the previous cut.

    Counts the newlines before every cut (one sequential read of the file, ~GB/s) so that each part
    knows the number of its first line.
    """
    size = path.stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        while (cut := _line_end(f, cuts[-1] + unit_bytes - 1, after_blank_line)) < size:
            cuts.append(cut)
        first_lines = [1]
        f.seek(0)
        pos = 0
        for end in cuts[1:]:
            lines = 0
            while pos < end:
                block = f.read(min(_COUNT_BYTES, end - pos))
                lines += block.count(b"\n")
                pos += len(block)
            first_lines.append(first_lines[-1] + lines)
    if len(cuts) == 1:
        return [None]
    return [Part(a, b, n) for a, b, n in zip(cuts, [*cuts[1:], size], first_lines, strict=True)]
