"""Work units: big line-based files cut into parts of whole lines that read exactly like the whole file."""
from __future__ import annotations

import gzip
import json

import pytest

from corpora.build import iter_file_items
from corpora.sources import SourceConfig
from corpora.units import file_parts, plan_units
from zhllama.cli import UserError


def _items(src, path, parts):
    out = []
    for part in parts:
        out += list(iter_file_items(src, path, path.name, 0, 1000, {}, part))
    return out


@pytest.fixture()
def messy_jsonl(tmp_path, zh_sample_texts):
    """Real article lines with every counted defect at several places: bad JSON, invalid UTF-8, a
    missing field, blank lines, an over-long line, CRLF endings."""
    lines = []
    for i, text in enumerate(zh_sample_texts[:40]):
        lines.append(json.dumps({"text": text[:300]}, ensure_ascii=False).encode())
        if i % 9 == 4:
            lines += [b'{"text": "trunc', b"", b'{"text": "\xff\xfe"}', b'{"body": "x"}', b"x" * 1500]
        if i % 7 == 1:
            lines.append(b"  \r")
    path = tmp_path / "news.jsonl"
    path.write_bytes(b"\r\n".join(lines[:50]) + b"\n" + b"\n".join(lines[50:]) + b"\n")
    return path


def test_parts_of_a_jsonl_file_read_exactly_like_the_whole_file(messy_jsonl):
    src = SourceConfig("news", "jsonl", ["news.jsonl"], "news", "simplified", id_field="")
    parts = file_parts(src, messy_jsonl, 2000)
    assert len(parts) >= 5
    whole = _items(src, messy_jsonl, [None])
    assert _items(src, messy_jsonl, parts) == whole, "same documents, same file:line ids, same rejections"
    assert {getattr(i, "reason", "doc") for i in whole} == {"doc", "bad_json", "invalid_utf8", "missing_field",
                                                           "line_too_long"}
    data = messy_jsonl.read_bytes()
    for p in parts:  # every part starts on a line and knows its number
        assert data[p.start - 1 : p.start] in (b"", b"\n")
        assert p.first_line == data[: p.start].count(b"\n") + 1


def test_paragraph_text_is_cut_after_blank_lines_only(tmp_path, zh_sample_texts):
    src = SourceConfig("t", "text", ["a.txt"], "misc", "simplified")
    path = tmp_path / "a.txt"
    path.write_text("\n\n".join(t[:120] + "\n" + t[120:240] for t in zh_sample_texts[:30]) + "\n", encoding="utf-8")
    parts = file_parts(src, path, 1500)
    assert len(parts) >= 3
    assert _items(src, path, parts) == _items(src, path, [None])


def test_what_cannot_be_cut_is_one_unit(tmp_path, messy_jsonl):
    src = SourceConfig("news", "jsonl", ["news.jsonl"], "news", "simplified")
    gz = tmp_path / "news.jsonl.gz"
    gz.write_bytes(gzip.compress(messy_jsonl.read_bytes()))
    assert file_parts(src, gz, 2000) == [None], "a gzip stream has no byte offsets to cut at"
    assert file_parts(src, messy_jsonl, 10 << 20) == [None], "small enough"
    # A budget (the demo's max_chars_per_source) cuts where the characters run out: whole files.
    units = plan_units([src], [[messy_jsonl]], tmp_path, 2000, max_chars_per_source=5000)
    assert [(u.part, u.budget) for u in units] == [(None, 5000)]
    assert len(plan_units([src], [[messy_jsonl]], tmp_path, 2000)) >= 5


def test_a_wrong_format_file_is_still_fatal_on_its_first_line_only(tmp_path):
    src = SourceConfig("news", "jsonl", ["x.jsonl"], "news", "simplified")
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"not json at all\n" + b'{"text": "\xe6\x95\xb0\xe5\xad\xa6"}\n' * 400)
    parts = file_parts(src, path, 2000)
    assert len(parts) > 1
    with pytest.raises(UserError, match=r"x\.jsonl:1: not a JSON lines file"):
        _items(src, path, parts[:1])
    assert len(_items(src, path, parts[1:])) > 0, "later parts are not the file's first line"
