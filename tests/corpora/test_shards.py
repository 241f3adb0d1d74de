"""The project's one strict JSONL reader (corpus shards, evaluation files) and the shard layout."""
from __future__ import annotations

import json

import pytest

from corpora.shards import iter_jsonl_records, iter_jsonl_texts, parse_jsonl_record
from zhllama.cli import UserError


def _write(path, lines: list[str] | bytes):
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return path


def test_reads_every_record_of_several_files_in_order_and_skips_blank_lines(tmp_path):
    a = _write(tmp_path / "a.jsonl", [json.dumps({"text": "甲", "domain": "legal"}, ensure_ascii=False), "", "  ",
                                      json.dumps({"text": ""})])
    b = _write(tmp_path / "b.jsonl", b"\xef\xbb\xbf" + json.dumps({"text": "乙"}).encode() + b"\r\n")  # BOM, CRLF
    assert list(iter_jsonl_texts([a, b])) == ["甲", "", "乙"], "an empty text is still a document"
    assert [r.get("domain") for r in iter_jsonl_records([a])] == ["legal", None]


def test_max_chars_stops_after_the_document_that_reaches_it(tmp_path):
    f = _write(tmp_path / "a.jsonl", [json.dumps({"text": "字" * 10}) for _ in range(5)])
    assert len(list(iter_jsonl_texts([f], max_chars=25))) == 3
    assert len(list(iter_jsonl_texts([f], max_chars=0))) == 5


@pytest.mark.parametrize(("content", "message"), [
    (b'{"text": "a"}\n{"text": \n', r"bad.jsonl:2: not valid JSON \(Expecting value"),
    (b'{"text": "a"}\n[1, 2]\n', r"bad.jsonl:2: expected a JSON object with a string 'text' field, got a JSON list"),
    (b'{"body": "a"}\n', r"bad.jsonl:1: expected a JSON object with a string 'text' field, got no 'text' key \(keys: body\)"),
    (b'{"text": 3}\n', r"bad.jsonl:1: expected a JSON object with a string 'text' field, got 'text' of type int"),
    (b'{"text": "a"}\n{"text": "\xff"}\n', r"bad.jsonl:2: not valid UTF-8 \(byte \d+"),
    (b'{"text": "a"}\n\x00\x01\x02', r"bad.jsonl:2: binary data \(NUL byte"),
], ids=["bad_json", "not_object", "missing_field", "not_string", "not_utf8", "binary"])
def test_every_bad_line_is_one_error_naming_file_and_line(tmp_path, content, message):
    bad = _write(tmp_path / "bad.jsonl", content)
    with pytest.raises(UserError, match=message):
        list(iter_jsonl_texts([bad]))


def test_a_line_longer_than_the_limit_is_an_error_not_a_memory_spike(tmp_path):
    bad = _write(tmp_path / "big.jsonl", [json.dumps({"text": "a"}), json.dumps({"text": "b" * 5000})])
    with pytest.raises(UserError, match=r"big.jsonl:2: line too long \(\d+ bytes > max_line_bytes=1000\)"):
        list(iter_jsonl_records([bad], max_line_bytes=1000))


def test_the_hint_is_appended_to_field_errors():
    with pytest.raises(UserError, match=r"x:1: .*got no 'body' key \(keys: text\) \(set --text_field\)$"):
        parse_jsonl_record('{"text": "a"}', "x:1", "body", hint="set --text_field")
    assert parse_jsonl_record("   ", "x:2") is None
