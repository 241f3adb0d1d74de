"""Multistream dumps cut into parts of whole bz2 streams: parts read in parallel == the serial read."""
from __future__ import annotations

import bz2
import multiprocessing

import pytest

from corpora import wiki_readers
from corpora.inputs import Part
from corpora.multistream import index_offsets, index_path, split_offsets
from corpora.sources import SourceConfig
from corpora.units import file_parts
from zhllama.cli import UserError

WIKI = SourceConfig("zhwiki", "wiki_xml", ["dumps"], "encyclopedia", "mixed")
TARGET_BYTES = 100_000  # the fixture is ~0.9 MB in ~40 streams: ~9 parts


def _read(args):
    path, part = args
    return list(wiki_readers.read_wiki_xml(path, part=part))


def test_the_index_and_a_scan_cut_at_the_same_page_streams(realistic_dump, tmp_path):
    index = index_path(realistic_dump)
    assert index is not None and index.name == "zhwiki-20240101-pages-articles-multistream-index.txt.bz2"
    by_index = split_offsets(realistic_dump, TARGET_BYTES, index)
    by_scan = split_offsets(realistic_dump, TARGET_BYTES)
    assert by_index == by_scan
    assert len(by_index) >= 6 and by_index[-1] == realistic_dump.stat().st_size
    assert set(by_index[1:-1]) <= set(index_offsets(index)), "every cut is at a stream start"
    # Without its index next to it, the planner scans and cuts the same way.
    lone = tmp_path / realistic_dump.name
    lone.write_bytes(realistic_dump.read_bytes())
    assert index_path(lone) is None
    assert file_parts(WIKI, lone, TARGET_BYTES) == file_parts(WIKI, realistic_dump, TARGET_BYTES)


def test_parts_read_in_parallel_yield_exactly_what_the_serial_read_does(realistic_dump):
    serial = list(wiki_readers.read_wiki_xml(realistic_dump))
    parts = file_parts(WIKI, realistic_dump, TARGET_BYTES)
    assert len(parts) >= 5 and all(isinstance(p, Part) for p in parts)
    with multiprocessing.get_context().Pool(2) as pool:
        parallel = [item for items in pool.map(_read, [(realistic_dump, p) for p in parts]) for item in items]
    assert parallel == serial
    reasons = {getattr(i, "reason", "doc") for i in serial}
    assert reasons == {"doc", "redirect", "non_article_namespace"}, "articles, redirects and talk pages"
    assert len(serial) > 300


def test_a_bz2_file_whose_streams_cut_pages_is_never_cut_inside_a_page(realistic_dump, tmp_path):
    # pbzip2/lbzip2 write several streams cut at fixed byte counts, not at pages.
    xml = bz2.decompress(realistic_dump.read_bytes())
    blocks = [xml[i : i + 50_000] for i in range(0, len(xml), 50_000)]
    odd = tmp_path / "zhwiki-pbzip2.xml.bz2"
    odd.write_bytes(b"".join(bz2.compress(b) for b in blocks))
    parts = file_parts(WIKI, odd, 20_000)
    serial = list(wiki_readers.read_wiki_xml(odd))
    assert [i for p in parts for i in (_read((odd, p)) if p else serial)] == serial
    ids = [i.doc_id.split("#")[1] for i in serial]
    assert ids == [i.doc_id.split("#")[1] for i in wiki_readers.read_wiki_xml(realistic_dump)], "every page, once"


def test_a_corrupt_stream_names_the_file_and_where_its_stream_begins(realistic_dump, tmp_path):
    cuts = split_offsets(realistic_dump, TARGET_BYTES)
    data = bytearray(realistic_dump.read_bytes())
    middle = (cuts[2] + cuts[3]) // 2
    data[middle : middle + 64] = bytes(64)
    bad = tmp_path / realistic_dump.name
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"multistream\.xml\.bz2: cannot read compressed dump: .*bz2 stream at byte \d+"):
        _read((bad, Part(cuts[2], cuts[3])))
    truncated = tmp_path / "zhwiki-cut-multistream.xml.bz2"
    truncated.write_bytes(bytes(data[: cuts[2] + 100]))
    with pytest.raises(UserError, match=rf"cut-multistream\.xml\.bz2: .*ended before .*at byte {cuts[2]}\)"):
        _read((truncated, Part(cuts[2], cuts[2] + 100)))
