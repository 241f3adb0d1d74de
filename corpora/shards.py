"""The corpus on disk: JSONL shards of ``{"id", "source", "text"}`` records, and how to read them back.

Layout written by ``python -m corpora build``::

    artifacts/corpus/
      train/shard-00000.jsonl ...     # vocab training and pretraining read only these
      heldout/heldout.jsonl           # evaluation reads this (a stable hash-chosen share)
      manifest.json  meta.json

Other stages read it with :func:`iter_corpus_texts` / :func:`iter_corpus_records`, and any JSON-lines
file of ``{"text": ...}`` records (corpus shards, evaluation files) with :func:`iter_jsonl_texts`:
the project's one strict JSONL reader (every bad line is a ``UserError`` naming ``file:line``)::

    >>> from corpora.shards import iter_corpus_texts              # doctest: +SKIP
    >>> n_chars = sum(len(t) for t in iter_corpus_texts("artifacts/corpus", split="train"))  # doctest: +SKIP
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

from corpora.readers import DEFAULT_MAX_LINE_BYTES, iter_lines
from zhllama.cli import UserError

SPLITS = ("train", "heldout")
HELDOUT_FILE = "heldout/heldout.jsonl"


def shard_files(corpus_dir: str | Path, split: str = "train") -> list[Path]:
    """The ``corpus_dir/<split>/*.jsonl`` files, sorted; a :class:`UserError` if there are none.

    The one lister the later stages share (unlike :func:`split_files` it needs no manifest, so a
    hand-made directory of JSONL shards works too).

    >>> shard_files("artifacts/corpus")                             # doctest: +SKIP
    [PosixPath('artifacts/corpus/train/shard-00000.jsonl')]
    """
    d = Path(corpus_dir)
    kind = "training" if split == "train" else split
    if not d.is_dir():
        raise UserError(f"corpus directory not found: {d}, so no {kind} shards (run `make corpus` first)")
    files = sorted((d / split).glob("*.jsonl"))
    if not files:
        raise UserError(f"no {kind} shards in {d / split} (expected *.jsonl from `make corpus`)")
    return files


def split_files(corpus_dir: str | Path, split: Literal["train", "heldout"] = "train") -> list[Path]:
    """The JSONL files of one split, in order (raises ``UserError`` if the corpus is missing).

    >>> split_files("artifacts/corpus", "heldout")                  # doctest: +SKIP
    [PosixPath('artifacts/corpus/heldout/heldout.jsonl')]
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(corpus_dir)
    if not (root / "manifest.json").is_file():
        raise UserError(f"{root}: not a corpus directory (no manifest.json); run `python -m corpora build` first")
    if split == "heldout":
        files = [root / HELDOUT_FILE]
    else:
        files = sorted((root / "train").glob("shard-*.jsonl"))
    missing = [f for f in files if not f.is_file()]
    if missing or not files:
        raise UserError(f"{root}: corpus split {split!r} has no files ({missing or 'train/shard-*.jsonl'})")
    return files


def parse_jsonl_record(line: str, where: str, text_field: str = "text", hint: str = "") -> dict | None:
    """One JSON line -> the record (None for a blank line); a ``UserError`` naming ``where`` unless it is
    a JSON object with a string ``text_field``. The one wording every stage reports.

    >>> parse_jsonl_record('{"text": "你好", "id": 1}', "a.jsonl:1")
    {'text': '你好', 'id': 1}
    >>> parse_jsonl_record('{"body": "你好"}', "a.jsonl:3")
    Traceback (most recent call last):
    ...
    zhllama.cli.UserError: a.jsonl:3: expected a JSON object with a string 'text' field, got no 'text' key (keys: body)
    """
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
    text = record.get(text_field) if isinstance(record, dict) else None
    if not isinstance(text, str):
        if not isinstance(record, dict):
            got = f"a JSON {type(record).__name__}"
        elif text_field not in record:
            got = f"no {text_field!r} key (keys: {', '.join(sorted(record)) or 'none'})"
        else:
            got = f"{text_field!r} of type {type(text).__name__}"
        raise UserError(f"{where}: expected a JSON object with a string {text_field!r} field, got {got}"
                        + (f" ({hint})" if hint else ""))
    return record


def iter_jsonl_records(paths: Iterable[str | Path], text_field: str = "text", hint: str = "",
                       max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Iterator[dict]:
    """Stream the records of JSON-lines files (blank lines skipped); strict: a bad line is a ``UserError``.

    Invalid UTF-8, a binary or compressed file, a line over ``max_line_bytes``, bad JSON and a record
    without a string ``text_field`` all stop with one line naming ``file:line``.

    >>> next(iter_jsonl_records(["artifacts/corpus/heldout/heldout.jsonl"]))["domain"]  # doctest: +SKIP
    'encyclopedia'
    """
    for path in paths:
        for lineno, line, rej in iter_lines(Path(path), max_line_bytes):
            where = f"{path}:{lineno}"
            if rej is not None:
                what = "not valid UTF-8" if rej.reason == "invalid_utf8" else "line too long"
                raise UserError(f"{where}: {what} ({rej.detail})")
            assert line is not None
            record = parse_jsonl_record(line, where, text_field, hint)
            if record is not None:
                yield record


def iter_jsonl_texts(paths: Iterable[str | Path], text_field: str = "text", max_chars: int = 0,
                     hint: str = "") -> Iterator[str]:
    """The ``text_field`` of every record of ``paths`` (see :func:`iter_jsonl_records`), streaming;
    stops once ``max_chars`` characters were yielded (0 = no limit).

    >>> sum(len(t) for t in iter_jsonl_texts(["a.jsonl"], max_chars=1000)) >= 1000  # doctest: +SKIP
    True
    """
    total = 0
    for record in iter_jsonl_records(paths, text_field, hint):
        text = record[text_field]
        yield text
        total += len(text)
        if max_chars and total >= max_chars:
            return


def iter_corpus_records(corpus_dir: str | Path, split: Literal["train", "heldout"] = "train") -> Iterator[dict]:
    """Yield the ``{"id", "source", "domain", "script", "text"}`` records of a split, streaming, in shard order."""
    yield from iter_jsonl_records(split_files(corpus_dir, split))


def iter_corpus_texts(corpus_dir: str | Path, split: Literal["train", "heldout"] = "train") -> Iterator[str]:
    """Yield the document texts of a split (``"train"`` or ``"heldout"``), streaming.

    >>> texts = iter_corpus_texts("artifacts/corpus", "heldout")   # doctest: +SKIP
    >>> next(texts)[:10]                                            # doctest: +SKIP
    '数学\\n\\n数学是利用符号'
    """
    for rec in iter_corpus_records(corpus_dir, split):
        yield rec["text"]


def load_manifest(corpus_dir: str | Path) -> dict:
    """The corpus ``manifest.json`` as a dict (counts per source and split, config, input hashes)."""
    path = Path(corpus_dir) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{corpus_dir}: not a corpus directory (no manifest.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def record_line(record: dict) -> bytes:
    """A record as the shards hold it: one JSON line, UTF-8, non-ASCII kept.

    >>> record_line({"id": "s/1", "text": "数学"})
    b'{"id": "s/1", "text": "\\xe6\\x95\\xb0\\xe5\\xad\\xa6"}\\n'
    """
    return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")


class ShardWriter:
    """Append records to ``train/shard-NNNNN.jsonl`` files, starting a new shard at either limit.

    >>> w = ShardWriter(Path(tmp) / "train", max_documents=2, max_bytes=1 << 20)  # doctest: +SKIP
    >>> for t in ["甲", "乙", "丙"]: w.write({"id": t, "source": "s", "text": t})  # doctest: +SKIP
    >>> w.close(); [p.name for p in w.paths]                                      # doctest: +SKIP
    ['shard-00000.jsonl', 'shard-00001.jsonl']
    """

    def __init__(self, directory: Path, max_documents: int, max_bytes: int, single_file: str | None = None) -> None:
        self.directory = directory
        self.max_documents = max_documents
        self.max_bytes = max_bytes
        self.single_file = single_file  # heldout: one file, no rotation
        self.paths: list[Path] = []
        self.documents = 0
        self.characters = 0
        self.bytes = 0
        self._f = None
        self._docs_in_shard = 0
        self._bytes_in_shard = 0
        directory.mkdir(parents=True, exist_ok=True)
        if single_file:
            self._open(directory / single_file)

    def _open(self, path: Path) -> None:
        if self._f is not None:
            self._f.close()
        self._f = open(path, "wb")
        self.paths.append(path)
        self._docs_in_shard = 0
        self._bytes_in_shard = 0

    def write(self, record: dict) -> None:
        """Write one record (one JSON line, UTF-8, non-ASCII kept)."""
        self.write_line(record_line(record), len(record["text"]))

    def write_line(self, data: bytes, text_chars: int) -> None:
        """Write one record already serialised by :func:`record_line` (its text has ``text_chars`` characters)."""
        if not self.single_file and (
            self._f is None or self._docs_in_shard >= self.max_documents
            or (self._docs_in_shard > 0 and self._bytes_in_shard + len(data) > self.max_bytes)
        ):
            self._open(self.directory / f"shard-{len(self.paths):05d}.jsonl")
        assert self._f is not None
        self._f.write(data)
        self._docs_in_shard += 1
        self._bytes_in_shard += len(data)
        self.documents += 1
        self.characters += text_chars
        self.bytes += len(data)

    def close(self) -> None:
        """Flush and close the current file (a train split with no documents still gets one empty shard)."""
        if self._f is None and not self.single_file:
            self._open(self.directory / "shard-00000.jsonl")
        if self._f is not None:
            self._f.close()
            self._f = None
