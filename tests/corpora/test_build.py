"""The whole corpora stage: real shared data -> shards + manifest; accounting, splits, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpora.build import BuildConfig, SourceConfig, heldout_split, run
from corpora.clean import to_simplified
from corpora.dedup import text_digest
from corpora.shards import iter_corpus_records, iter_corpus_texts, load_manifest
from zhllama import REPO_ROOT
from zhllama.cli import UserError
from zhllama.config import load_config

BUILD_YAML = REPO_ROOT / "configs" / "corpora" / "build.yaml"


def _cfg(data_dir: Path, out_dir: Path, **overrides) -> BuildConfig:
    """The default YAML config, pointed at ``data_dir``/``out_dir``, quiet."""
    base = {"data_dir": str(data_dir), "out_dir": str(out_dir), "progress": False, **overrides}
    return load_config(BuildConfig, BUILD_YAML, base)


def _assert_identity(counts: dict, where: str) -> None:
    for unit in ("documents", "characters"):
        c = counts[unit]
        assert c["read"] == c["written"] + sum(c["rejected"].values()), f"{where}: {unit} {c}"


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory, data_dir) -> Path:
    """The corpus built by the default config from all of shared/data (2 workers)."""
    out = tmp_path_factory.mktemp("corpus") / "corpus"
    assert run(_cfg(data_dir, out, num_workers=2)) == 0
    return out


def test_default_config_reads_every_unit_of_shared_data(default_corpus, data_dir):
    m = load_manifest(default_corpus)
    lines = sum(1 for f in (data_dir / "zhwiki").glob("*.jsonl") for ln in f.open(encoding="utf-8") if ln.strip())
    paragraphs = {}
    for name in ("cmrc2018", "drcd"):
        paragraphs[name] = sum(
            len(a["paragraphs"]) for f in (data_dir / name).glob("*.json")
            for a in json.loads(f.read_text(encoding="utf-8"))["data"]
        )
    assert m["sources"]["zhwiki"]["documents"]["read"] == lines
    assert m["sources"]["cmrc2018"]["documents"]["read"] == paragraphs["cmrc2018"]
    assert m["sources"]["drcd"]["documents"]["read"] == paragraphs["drcd"]
    listed = {f["path"] for s in m["sources"].values() for f in s["files"]}
    expected = {str(p.relative_to(data_dir)) for d in ("zhwiki", "cmrc2018", "drcd") for p in (data_dir / d).iterdir()}
    assert listed == expected, "every corpus file of shared/data is read"
    assert all(len(h) == 64 for h in m["inputs_sha256"].values())


def test_read_equals_written_plus_rejected_per_source_and_total(default_corpus):
    m = load_manifest(default_corpus)
    for name, src in m["sources"].items():
        _assert_identity(src, name)
        assert src["documents"]["written"] == src["documents"]["train"] + src["documents"]["heldout"]
    _assert_identity(m["total"], "total")
    for key in ("read", "written", "train", "heldout"):
        assert m["total"]["documents"][key] == sum(s["documents"][key] for s in m["sources"].values())
    # Kept most of a clean corpus: a filter gone wrong would show here.
    assert m["total"]["documents"]["written"] >= 0.95 * m["total"]["documents"]["read"]


def test_shards_hold_exactly_what_the_manifest_counts(default_corpus):
    m = load_manifest(default_corpus)
    for split in ("train", "heldout"):
        records = list(iter_corpus_records(default_corpus, split))
        assert len(records) == m["splits"][split]["documents"] == m["total"]["documents"][split]
        assert sum(len(r["text"]) for r in records) == m["splits"][split]["characters"]
        assert {r["source"] for r in records} == set(m["sources"])
        assert all(r["id"].startswith(r["source"] + "/") for r in records)
    assert m["total"]["characters"]["output"] == sum(m["splits"][s]["characters"] for s in ("train", "heldout"))
    texts = list(iter_corpus_texts(default_corpus, "train")) + list(iter_corpus_texts(default_corpus, "heldout"))
    assert len(set(texts)) == len(texts), "no exact duplicates remain, across sources and splits"


def test_heldout_split_is_the_stable_hash_share(default_corpus):
    m = load_manifest(default_corpus)
    total = m["total"]["documents"]["written"]
    assert 0.02 * total < m["splits"]["heldout"]["documents"] < 0.09 * total
    for split in ("train", "heldout"):
        for text in iter_corpus_texts(default_corpus, split):
            assert heldout_split(text_digest(text), 0.05) == split


def test_output_is_simplified_clean_text(default_corpus):
    records = [r for r in iter_corpus_records(default_corpus, "train") if r["source"] == "drcd"][:200]
    assert records, "DRCD (Traditional) documents are in the corpus"
    assert all(to_simplified(r["text"]) == r["text"] for r in records), "t2s applied"
    for r in iter_corpus_records(default_corpus, "heldout"):
        assert "\n\n\n" not in r["text"] and r["text"] == r["text"].strip()
        assert "\x00" not in r["text"] and "[[" not in r["text"]


def test_meta_json_describes_the_corpus(default_corpus):
    meta = json.loads((default_corpus / "meta.json").read_text(encoding="utf-8"))
    assert meta["config"]["heldout_fraction"] == 0.05
    assert meta["inputs_sha256"] == load_manifest(default_corpus)["inputs_sha256"]
    assert "opencc" in meta["versions"] or "datasketch" in meta["versions"]
    report = (default_corpus / "report.md").read_text(encoding="utf-8")
    m = load_manifest(default_corpus)
    for name, src in m["sources"].items():
        assert f"| {name} | {src['documents']['read']:,} | {src['documents']['written']:,} |" in report


def test_same_output_with_one_or_two_workers(tmp_path, data_dir):
    sources = [{"name": "cmrc2018", "format": "squad", "paths": ["cmrc2018/cmrc2018_trial.json"]}]
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        run(_cfg(data_dir, out, sources=sources, num_workers=workers, batch_documents=16, shard_max_documents=60))
        outs.append(out)
    a, b = outs
    files = sorted(p.relative_to(a) for p in a.rglob("*.jsonl"))
    assert len(files) > 2, "several train shards were written"
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.jsonl"))
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()


# --- a mixed, partly broken input tree: every format, every counted problem ---------------------


@pytest.fixture()
def messy_data(tmp_path, wiki_dump) -> Path:
    d = tmp_path / "data"
    (d / "wiki").mkdir(parents=True)
    (d / "wiki" / wiki_dump.name).write_bytes(wiki_dump.read_bytes())
    para = "长城是中国古代的军事防御工程，是一道高大、坚固而且连绵不断的长垣，用以限隔敌骑的行动。"
    trad = "長城是中國古代的軍事防禦工程，是一道高大、堅固而且連綿不斷的長垣，用以限隔敵騎的行動。"
    (d / "baike.jsonl").write_text(
        json.dumps({"title": "长城", "summary": para, "sections": [{"title": "历史", "content": "始建于西周时期。" * 5}]},
                   ensure_ascii=False) + "\n" + '{"title": "空条目"}\n', encoding="utf-8")
    (d / "text").mkdir()
    (d / "text" / "a.txt").write_text(f"{trad}\n\n短\n\nEnglish only paragraph that is long enough to pass.\n",
                                      encoding="utf-8")
    (d / "text" / "empty.txt").write_bytes(b"")
    (d / "news.jsonl").write_bytes(
        json.dumps({"id": 1, "body": para}, ensure_ascii=False).encode() + b"\n"
        + b'{"id": 2, "body": "\xff\xfe bad"}\n' + b'{"id": 3, "title": "x"}\n' + b'{"id": 4, "body": "trunc'
    )
    return d


MESSY_SOURCES = [
    {"name": "wiki", "format": "wiki_xml", "paths": ["wiki"]},
    {"name": "baike", "format": "baike", "paths": ["baike.jsonl"]},
    {"name": "text", "format": "text", "paths": ["text"], "text_unit": "paragraph"},
    {"name": "news", "format": "jsonl", "paths": ["news.jsonl"], "text_field": "body"},
]


def test_every_format_and_counted_problem_in_one_build(tmp_path, messy_data):
    out = tmp_path / "corpus"
    run(_cfg(messy_data, out, sources=MESSY_SOURCES, num_workers=2, batch_documents=2, heldout_fraction=0.0))
    m = load_manifest(out)
    for name, src in m["sources"].items():
        _assert_identity(src, name)
    _assert_identity(m["total"], "total")
    rej = {name: src["documents"]["rejected"] for name, src in m["sources"].items()}
    assert rej["wiki"] == {"redirect": 1, "non_article_namespace": 2}
    assert rej["baike"] == {"missing_field": 1}
    # text's Traditional paragraph, once converted, equals news' Simplified line: sources are
    # deduplicated together and the earlier source (text) keeps it.
    assert rej["text"] == {"too_short": 1, "low_han_fraction": 1}
    assert rej["news"] == {"exact_duplicate": 1, "invalid_utf8": 1, "missing_field": 1, "bad_json": 1}
    assert m["sources"]["news"]["rejected_examples"]["exact_duplicate"] == ["news.jsonl#1: duplicate of text/a.txt:1"]
    assert m["sources"]["news"]["rejected_examples"]["invalid_utf8"][0].startswith("news.jsonl:2")
    assert m["sources"]["news"]["rejected_examples"]["bad_json"][0].startswith("news.jsonl:4")
    assert m["total"]["documents"]["written"] == 4  # 2 wiki articles, 1 baike, 1 text paragraph
    assert any("empty.txt" in w for w in m["warnings"])
    texts = list(iter_corpus_texts(out))
    assert any(t.startswith("数学\n\n数学是研究数量") for t in texts), "wikitext was converted"
    assert any(t.startswith("哲学\n\n") for t in texts), "Traditional wiki article converted to Simplified"


# --- fatal errors: one clear line, nothing half-written -----------------------------------------


@pytest.mark.parametrize(
    ("sources", "opencc_config", "message"),
    [
        ([{"name": "x", "format": "jsonl", "paths": ["missing.jsonl"]}], "t2s", r"path not found: .*missing\.jsonl"),
        ([{"name": "x", "format": "squad", "paths": ["wiki"]}], "t2s", r"directory .*wiki has no \*\.json files"),
        ([{"name": "x", "format": "squad", "paths": ["baike.jsonl"]}], "t2s", r"baike\.jsonl:\d+: not a SQuAD JSON file"),
        ([{"name": "x", "format": "text", "paths": ["blob.bin"]}], "t2s", r"blob\.bin: looks like a binary file"),
        ([{"name": "x", "format": "text", "paths": ["text"]}], "nope", r"cannot load OpenCC config 'nope'"),
    ],
    ids=["missing_path", "wrong_format_dir", "wrong_format_file", "binary", "bad_opencc_config"],
)
def test_fatal_input_errors_name_the_file_and_leave_old_output_untouched(tmp_path, messy_data, sources, opencc_config,
                                                                        message):
    (messy_data / "blob.bin").write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "previous.txt").write_text("old corpus")
    # A good source comes first: reader errors strike after output was started in the temp dir.
    cfg = _cfg(messy_data, out, sources=MESSY_SOURCES[1:2] + sources, num_workers=2,  # pool shut down too
               clean={"opencc_config": opencc_config})
    with pytest.raises(UserError, match=message):
        run(cfg)
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".corpus")], "temp dir cleaned up"


def test_cli_builds_and_prints_a_summary_line_or_a_one_line_error(tmp_path, messy_data):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    base = [sys.executable, "-m", "corpora", "build", "--config", str(BUILD_YAML), "--data_dir", str(messy_data),
            "--out_dir", str(tmp_path / "out"), "--progress", "false"]
    # The default sources (zhwiki/*.jsonl...) are not in this data dir: one clear line, exit 2.
    proc = subprocess.run(base, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: source 'zhwiki': no files match")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = subprocess.run(base + ["--sources", "[{name: text, format: text, paths: [text]}]", "--num_workers", "1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.strip().splitlines()
    assert line.startswith("corpus: read 3 docs") and "wrote 1 " in line and line.endswith(str(tmp_path / "out"))
    assert "empty.txt: empty file" in proc.stderr
    assert load_manifest(tmp_path / "out")["total"]["documents"]["written"] == 1


def test_ordered_map_keeps_input_order_and_a_bounded_number_of_tasks_in_flight():
    from corpora.build import ordered_map

    consumed: list[int] = []

    def tasks():
        for i in range(-300, 0):
            consumed.append(i)
            yield i

    results = ordered_map(abs, tasks(), num_workers=2, max_inflight=4)
    assert next(results) == 300
    assert len(consumed) <= 5, "the input stream is not drained ahead of the workers"
    assert list(results) == list(range(299, 0, -1))


def test_a_wikiextractor_output_directory_is_read_recursively(tmp_path):
    from corpora.build import resolve_source_files

    for sub in ("AA", "AB"):
        (tmp_path / "extracted" / sub).mkdir(parents=True)
        for name in ("wiki_00", "wiki_01"):
            (tmp_path / "extracted" / sub / name).write_text('{"id": "1", "text": "数学"}\n', encoding="utf-8")
    src = SourceConfig("zhwiki", "wikiextractor", ["extracted"])
    files = resolve_source_files(src, tmp_path)
    assert [str(f.relative_to(tmp_path / "extracted")) for f in files] == [
        "AA/wiki_00", "AA/wiki_01", "AB/wiki_00", "AB/wiki_01"]
    # Same file names in two folders, same line numbers: ids stay unique in the corpus.
    out = tmp_path / "corpus"
    run(_cfg(tmp_path, out, sources=[{"name": "zhwiki", "format": "wikiextractor", "paths": ["extracted"],
                                      "id_field": ""}], num_workers=1, dedup={"exact": False, "near": False},
             clean={"min_chars": 1}, heldout_fraction=0.0))
    ids = [r["id"] for r in iter_corpus_records(out)]
    assert ids == ["zhwiki/extracted/AA/wiki_00:1", "zhwiki/extracted/AA/wiki_01:1",
                   "zhwiki/extracted/AB/wiki_00:1", "zhwiki/extracted/AB/wiki_01:1"]
