"""Sources of a corpus build: what each is (format, domain, script, conversion) and its files.

Example (YAML, ``configs/corpora/build.yaml``)::

    sources:
      - {name: drcd, format: squad, paths: ["drcd/*.json"], domain: encyclopedia, script: traditional}
      - {name: twlaw, format: jsonl, paths: ["domains/legal/twlaw_tw.jsonl"], domain: legal,
         script: traditional, convert: none}
"""
from __future__ import annotations

import glob
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from corpora import readers, wiki_readers
from corpora.inputs import COMPRESSED_SUFFIXES, Part, check_encoding
from corpora.readers import Item
from corpora.scripts import SCRIPTS, check_conversion
from zhllama.cli import UserError

Format = Literal["wikiextractor", "wiki_xml", "squad", "baike", "jsonl", "text"]

#: What a directory given as a source path is expected to contain, per format.
FORMAT_PATTERNS: dict[str, tuple[str, ...]] = {
    "wikiextractor": ("*.jsonl", "*.json", "wiki_*"),
    # Full dumps (...-pages-articles-multistream.xml.bz2) and split ones (...-articles1.xml-p1p41242.bz2).
    "wiki_xml": ("*.xml.bz2", "*.xml", "*.xml-p*p*.bz2", "*.xml-p*p*"),
    "squad": ("*.json",),
    "baike": ("*.jsonl", "*.json"),
    "jsonl": ("*.jsonl",),
    "text": ("*.txt",),
}
_DOMAIN_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class SourceConfig:
    """One input source: a name (the ``source`` field of every record), a format and its files,
    the domain and script of its text and the conversion applied to it.

    Example (YAML)::

        - {name: zhwiki, format: wikiextractor, paths: ["zhwiki/*.jsonl"], domain: encyclopedia, script: mixed}
        - {name: news, format: jsonl, paths: [/data/news], text_field: content, domain: news,
           script: traditional, convert: tw2s}
    """

    name: str
    """Source name: recorded in each output record and keyed in the manifest."""
    format: Format
    """``wikiextractor`` (``--json`` lines or ``<doc>`` files) | ``wiki_xml`` (pages-articles .xml.bz2, whole
    or split) | ``squad`` | ``baike`` | ``jsonl`` | ``text``."""
    paths: list[str]
    """Files, directories or globs; relative ones are resolved against ``data_dir``."""
    domain: str = ""
    """Required: what kind of text (``encyclopedia``, ``legal``, ``news``, ``dialogue``...; lower-case
    snake_case). Recorded in every record; the manifest counts and the held-out split are per domain."""
    script: str = ""
    """Required: the script the text is written in: ``simplified`` | ``traditional`` | ``mixed``."""
    convert: str = "none"
    """OpenCC conversion applied after cleaning: ``none`` (default: text keeps the script its users
    write), ``t2s``/``tw2s``/``tw2sp``/``hk2s``/``hk2sp`` (to Simplified; ``p`` also maps regional
    vocabulary), ``s2t``/``s2tw``/``s2hk``... (to Traditional)."""
    text_field: str = "text"
    """``jsonl`` only: the key holding the text."""
    id_field: str = "id"
    """``jsonl``/``wikiextractor``: the key holding a document id (else the line number is used)."""
    text_unit: Literal["paragraph", "line"] = "paragraph"
    """``text`` only: a document per blank-line-separated paragraph, or per line."""
    encoding: str = "utf-8"
    """Text encoding of the files (``gb18030``, ``big5``...); UTF-16/32 with a BOM and compressed
    files (gzip, bzip2, xz, zstd) are recognised by their bytes whatever this says."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"source name must be non-empty without '/', got {self.name!r}")
        where = f"source {self.name!r}"
        if not self.paths:
            raise ValueError(f"{where}: paths is empty")
        if not _DOMAIN_RE.match(self.domain):
            raise ValueError(f"{where}: domain must be a lower-case name such as legal, news, dialogue, "
                             f"got {self.domain!r}" + (" (every source needs one)" if not self.domain else ""))
        if self.script not in SCRIPTS:
            raise ValueError(f"{where}: script must be one of {', '.join(SCRIPTS)}, got {self.script!r}")
        check_conversion(self.convert, f"{where}: convert")
        check_encoding(self.encoding, f"{where}: encoding")


def default_sources() -> list[SourceConfig]:
    """The Wikipedia part of ``shared/data`` (``configs/corpora/build.yaml`` lists every domain)."""
    return [
        SourceConfig("zhwiki", "wikiextractor", ["zhwiki/*.jsonl"], "encyclopedia", "mixed"),
        SourceConfig("cmrc2018", "squad", ["cmrc2018/*.json"], "encyclopedia", "simplified"),
        SourceConfig("drcd", "squad", ["drcd/*.json"], "encyclopedia", "traditional"),
    ]


def resolve_source_files(src: SourceConfig, data_dir: Path) -> list[Path]:
    """The files of a source, sorted; fatal ``UserError`` if a path is missing or matches nothing.

    A directory is expanded recursively with the format's patterns (``*.json`` for ``squad``,
    ``wiki_*`` and ``*.jsonl`` for ``wikiextractor``...).

    >>> resolve_source_files(SourceConfig("drcd", "squad", ["drcd"], "encyclopedia", "traditional"),
    ...                      Path("../shared/data"))  # doctest: +SKIP
    [PosixPath('../shared/data/drcd/DRCD_dev.json'), PosixPath('../shared/data/drcd/DRCD_test.json')]
    """
    files: list[Path] = []
    for pattern in src.paths:
        p = Path(pattern).expanduser()
        p = p if p.is_absolute() else data_dir / p
        if glob.has_magic(str(p)):
            matched = sorted(Path(m) for m in glob.glob(str(p)) if Path(m).is_file())
            if not matched:
                raise UserError(f"source {src.name!r}: no files match {p}")
            files.extend(matched)
        elif p.is_dir():
            # Recursive: WikiExtractor writes extracted/AA/wiki_00, extracted/AB/wiki_00, ...; each
            # pattern also matches its compressed forms (wiki_00.gz, news.jsonl.zst).
            patterns = [pat + ext for pat in FORMAT_PATTERNS[src.format] for ext in ("", *COMPRESSED_SUFFIXES)]
            matched = sorted({f for pat in patterns for f in p.rglob(pat) if f.is_file()})
            if not matched:
                want = " or ".join(FORMAT_PATTERNS[src.format])
                raise UserError(f"source {src.name!r}: directory {p} has no {want} files (format {src.format})")
            files.extend(matched)
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"source {src.name!r}: path not found: {p}")
    return list(dict.fromkeys(files))


def read_file(src: SourceConfig, path: Path, max_line_bytes: int, part: Part | None = None) -> Iterator[Item]:
    """Dispatch one file (or one part of it, see :mod:`corpora.units`) to the reader of its source's format."""
    if src.format == "wikiextractor":
        return wiki_readers.read_wikiextractor(path, src.id_field or None, max_line_bytes, src.encoding, part)
    if src.format == "jsonl":
        return readers.read_jsonl(path, src.text_field, src.id_field or None, max_line_bytes, src.encoding, part)
    if src.format == "baike":
        return readers.read_baike(path, max_line_bytes, src.encoding, part)
    if src.format == "text":
        return readers.read_plain_text(path, src.text_unit, max_line_bytes, src.encoding, part)
    if src.format == "wiki_xml":
        return wiki_readers.read_wiki_xml(path, part=part)
    if part is not None:
        raise ValueError(f"source {src.name!r}: {src.format} files are read whole, not in parts")
    if src.format == "squad":
        return readers.read_squad(path, src.encoding)
    raise UserError(f"source {src.name!r}: unknown format {src.format!r}")


def rel_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when below it, else as given."""
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def display_names(files: list[Path], data_dir: Path) -> dict[Path, str]:
    """How a source's files are named in document ids: the file name, or the path below
    ``data_dir`` when two files share a name (WikiExtractor's AA/wiki_00 and AB/wiki_00).

    >>> display_names([Path("d/AA/wiki_00"), Path("d/AB/wiki_00")], Path("d"))
    {PosixPath('d/AA/wiki_00'): 'AA/wiki_00', PosixPath('d/AB/wiki_00'): 'AB/wiki_00'}
    """
    names = [f.name for f in files]
    if len(set(names)) == len(names):
        return {f: f.name for f in files}
    return {f: rel_path(f, data_dir) for f in files}
