"""Bad and unusual input files: compressed, UTF-16, GB18030, binary: told by their bytes, same
treatment wherever the defect sits in the file."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
import zipfile

import pytest
import zstandard

from corpora import readers, wiki_readers
from corpora.build import run
from corpora.inputs import identify
from corpora.readers import RawDoc, Rejection
from corpora.shards import iter_corpus_texts, iter_jsonl_texts, load_manifest
from zhllama.cli import UserError

TEXTS = [f"第{i}篇文档：长城是中国古代的军事防御工程，用以限隔敌骑的行动。" for i in range(400)]  # > 8 KiB
JSONL = "".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(TEXTS)).encode()
COMPRESS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress,
            "zst": lambda b: zstandard.ZstdCompressor().compress(b)}


@pytest.mark.parametrize("ext", list(COMPRESS))
def test_compressed_inputs_of_every_format_read_like_the_plain_file(tmp_path, ext, wiki_dump):
    z = COMPRESS[ext]
    (tmp_path / f"a.jsonl.{ext}").write_bytes(z(JSONL))
    assert [d.text for d in readers.read_jsonl(tmp_path / f"a.jsonl.{ext}")] == TEXTS
    (tmp_path / f"b.txt.{ext}").write_bytes(z("\n\n".join(TEXTS).encode()))
    assert [d.text for d in readers.read_plain_text(tmp_path / f"b.txt.{ext}")] == TEXTS
    squad = {"data": [{"paragraphs": [{"id": str(i), "context": t} for i, t in enumerate(TEXTS)]}]}
    (tmp_path / f"c.json.{ext}").write_bytes(z(json.dumps(squad, ensure_ascii=False).encode()))
    assert [d.text for d in readers.read_squad(tmp_path / f"c.json.{ext}")] == TEXTS
    doc = "".join(f'<doc id="{i}" url="u" title="t{i}">\n{t}\n</doc>\n' for i, t in enumerate(TEXTS)).encode()
    (tmp_path / f"wiki_00.{ext}").write_bytes(z(doc))
    assert [d.text for d in wiki_readers.read_wikiextractor(tmp_path / f"wiki_00.{ext}")] == TEXTS
    (tmp_path / f"dump.xml.{ext}").write_bytes(z(bz2.decompress(wiki_dump.read_bytes())))
    assert len(list(wiki_readers.read_wiki_xml(tmp_path / f"dump.xml.{ext}"))) == 5
    assert list(iter_jsonl_texts([tmp_path / f"a.jsonl.{ext}"])) == TEXTS, "the strict reader too"


def test_a_compressed_file_is_recognised_by_its_bytes_not_its_name(tmp_path):
    (tmp_path / "misnamed.jsonl").write_bytes(gzip.compress(JSONL))
    assert len(list(readers.read_jsonl(tmp_path / "misnamed.jsonl"))) == len(TEXTS)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_text_is_read_with_or_without_bom(tmp_path, encoding):
    path = tmp_path / "u.jsonl"
    path.write_bytes(JSONL.decode().encode(encoding))
    assert [d.text for d in readers.read_jsonl(path)] == TEXTS
    squad = tmp_path / "u.json"
    squad.write_bytes(json.dumps({"data": [{"paragraphs": [{"context": TEXTS[0]}]}]}, ensure_ascii=False).encode(encoding))
    assert [d.text for d in readers.read_squad(squad)] == TEXTS[:1]


@pytest.mark.parametrize("where", ["first_line", "line_300", "after_8kib_last_line"])
def test_gb18030_is_the_same_clear_error_wherever_the_line_is(tmp_path, where):
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in TEXTS]
    index = {"first_line": 0, "line_300": 299, "after_8kib_last_line": len(lines) - 1}[where]
    raw = [ln.encode() for ln in lines]
    raw[index] = lines[index].encode("gb18030")
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(b"\n".join(raw) + b"\n")
    assert sum(len(r) for r in raw[:index]) > 8192 or index == 0
    message = rf"gbk\.jsonl:{index + 1}: text in GB18030/GBK encoding, not UTF-8 \(declare `encoding: gb18030`"
    with pytest.raises(UserError, match=message):
        list(readers.read_jsonl(path))
    with pytest.raises(UserError, match=message):
        list(iter_jsonl_texts([path]))


def test_a_declared_gb18030_source_is_decoded(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "gbk.jsonl").write_bytes(JSONL.decode().encode("gb18030"))
    (data / "gbk.json").write_bytes(json.dumps({"data": [{"paragraphs": [{"context": TEXTS[1]}]}]},
                                               ensure_ascii=False).encode("gb18030"))
    src = {"domain": "news", "script": "simplified", "encoding": "gb18030"}
    from tests.corpora.test_build import _cfg

    run(_cfg(data, tmp_path / "out", sources=[{"name": "g", "format": "jsonl", "paths": ["gbk.jsonl"], **src},
                                             {"name": "s", "format": "squad", "paths": ["gbk.json"], **src}],
             num_workers=1, dedup={"near": False}))
    texts = set(iter_corpus_texts(tmp_path / "out", "train")) | set(iter_corpus_texts(tmp_path / "out", "heldout"))
    assert texts == set(TEXTS), "decoded to the same text as the UTF-8 original"
    m = load_manifest(tmp_path / "out")
    assert m["sources"]["g"]["documents"]["written"] == len(TEXTS)
    assert m["sources"]["s"]["documents"]["rejected"] == {"exact_duplicate": 1}, "same text as g's line 2"


def test_corrupt_bytes_that_are_not_gb18030_stay_a_counted_rejection(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(JSONL + b'{"text": "\xff\xfe\xff"}\n')
    items = list(readers.read_jsonl(path))
    assert [x.reason for x in items if isinstance(x, Rejection)] == ["invalid_utf8"]
    assert sum(isinstance(x, RawDoc) for x in items) == len(TEXTS)


@pytest.mark.parametrize("where", [0, 350])
def test_a_nul_byte_is_the_same_binary_error_on_the_first_line_or_after_8kib(tmp_path, where):
    raw = JSONL.split(b"\n")
    raw[where] = raw[where][:5] + b"\x00" + raw[where][5:]
    path = tmp_path / "n.jsonl"
    path.write_bytes(b"\n".join(raw))
    with pytest.raises(UserError, match=rf"n\.jsonl:{where + 1}: binary data \(NUL byte at byte 5 of the line\)"):
        list(readers.read_jsonl(path))


def test_archives_and_images_are_named(tmp_path):
    path = tmp_path / "corpus.jsonl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.jsonl", JSONL)
    with pytest.raises(UserError, match=r"corpus\.jsonl: a binary file \(a zip archive\), not a text corpus \(unpack it first\)"):
        list(readers.read_jsonl(path))
    truncated = tmp_path / "t.jsonl.gz"
    truncated.write_bytes(gzip.compress(JSONL)[:40])
    with pytest.raises(UserError, match=r"t\.jsonl\.gz: cannot read gzip"):
        list(readers.read_jsonl(truncated))
    assert identify(b"\x89PNG\r\n") == "PNG image" and identify("中文".encode()) is None
