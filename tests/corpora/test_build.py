"""The whole corpora stage: real shared data -> shards + manifest; accounting, splits, errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpora.build import BuildConfig, SourceConfig, heldout_split, run
from corpora.dedup import text_digest
from corpora.scripts import detect_script, script_counts
from corpora.shards import iter_corpus_records, iter_corpus_texts, load_manifest
from tests.corpora.conftest import realistic_pages
from zhllama import REPO_ROOT
from zhllama.cli import UserError
from zhllama.config import ConfigError, load_config

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


def _jsonl_lines(path: Path) -> int:
    return sum(1 for ln in path.open(encoding="utf-8") if ln.strip())


def test_default_config_reads_every_unit_of_shared_data(default_corpus, data_dir):
    m = load_manifest(default_corpus)
    for src in m["sources"].values():
        for f in src["files"]:
            path = data_dir / f["path"]
            if path.suffix == ".jsonl":
                assert f["documents_read"] == _jsonl_lines(path), f["path"]
            else:  # SQuAD: one document per paragraph
                obj = json.loads(path.read_text(encoding="utf-8"))
                assert f["documents_read"] == sum(len(a["paragraphs"]) for a in obj["data"]), f["path"]
    listed = {f["path"] for s in m["sources"].values() for f in s["files"]}
    corpus_files = {"zhwiki/*.jsonl", "cmrc2018/*.json", "drcd/*.json", "domains/**/*.jsonl"}
    expected = {str(p.relative_to(data_dir)) for pat in corpus_files for p in data_dir.glob(pat)}
    assert listed == expected, "every corpus file of shared/data is read, domains/ included"
    assert all(len(h) == 64 for h in m["inputs_sha256"].values())
    # Every source in domains/<domain>/ carries that domain.
    for src in m["sources"].values():
        folders = {Path(f["path"]).parts[1] for f in src["files"] if f["path"].startswith("domains/")}
        assert folders <= {src["domain"]}


def test_read_equals_written_plus_rejected_per_source_domain_and_total(default_corpus):
    m = load_manifest(default_corpus)
    for name, src in {**m["sources"], **m["domains"]}.items():
        _assert_identity(src, name)
        assert src["documents"]["written"] == src["documents"]["train"] + src["documents"]["heldout"]
        assert sum(s["train"] + s["heldout"] for s in src["by_script"].values()) == src["documents"]["written"]
    _assert_identity(m["total"], "total")
    for key in ("read", "written", "train", "heldout"):
        assert m["total"]["documents"][key] == sum(s["documents"][key] for s in m["sources"].values())
        assert m["total"]["documents"][key] == sum(d["documents"][key] for d in m["domains"].values())
    assert {d for d in m["domains"]} == {s["domain"] for s in m["sources"].values()}
    # Kept most of a clean corpus: a filter gone wrong would show here.
    assert m["total"]["documents"]["written"] >= 0.85 * m["total"]["documents"]["read"]


def test_shards_hold_exactly_what_the_manifest_counts(default_corpus):
    m = load_manifest(default_corpus)
    for split in ("train", "heldout"):
        records = list(iter_corpus_records(default_corpus, split))
        assert len(records) == m["splits"][split]["documents"] == m["total"]["documents"][split]
        assert sum(len(r["text"]) for r in records) == m["splits"][split]["characters"]
        assert all(r["id"].startswith(r["source"] + "/") for r in records)
        assert all(r["domain"] == m["sources"][r["source"]]["domain"] for r in records)
        for domain, d in m["domains"].items():
            for script, counts in d["by_script"].items():
                n = sum(1 for r in records if r["domain"] == domain and r["script"] == script)
                assert n == counts[split], (split, domain, script)
    assert m["total"]["characters"]["output"] == sum(m["splits"][s]["characters"] for s in ("train", "heldout"))
    texts = list(iter_corpus_texts(default_corpus, "train")) + list(iter_corpus_texts(default_corpus, "heldout"))
    assert len(set(texts)) == len(texts), "no exact duplicates remain, across sources and splits"


def test_every_domain_and_script_has_a_heldout_split_chosen_by_text_hash(default_corpus):
    m = load_manifest(default_corpus)
    total = m["total"]["documents"]["written"]
    assert 0.02 * total < m["splits"]["heldout"]["documents"] < 0.09 * total
    for domain, d in m["domains"].items():
        for script, counts in d["by_script"].items():
            group = counts["train"] + counts["heldout"]
            assert counts["heldout"] >= min(20, group // 2), (domain, script, counts)
    # A document is held out by its hash share, or as one of its group's smallest hashes.
    largest_extra: dict = {}
    for r in iter_corpus_records(default_corpus, "heldout"):
        if heldout_split(text_digest(r["text"]), 0.05) == "train":
            key = (r["domain"], r["script"])
            largest_extra[key] = max(largest_extra.get(key, b""), text_digest(r["text"])[:8])
    for r in iter_corpus_records(default_corpus, "train"):
        assert heldout_split(text_digest(r["text"]), 0.05) == "train"
        assert text_digest(r["text"])[:8] > largest_extra.get((r["domain"], r["script"]), b""), "smallest first"


def test_traditional_sources_keep_their_script_and_mixed_ones_are_labelled_per_document(default_corpus):
    m = load_manifest(default_corpus)
    records = list(iter_corpus_records(default_corpus, "train"))
    by_source: dict = {}
    for r in records:
        by_source.setdefault(r["source"], []).append(r)
    for name, src in m["sources"].items():
        assert src["convert"] == "none", "default config: every text keeps its script"
        recs = by_source[name]
        if src["script"] == "mixed":
            assert all(r["script"] == detect_script(r["text"]) for r in recs)
        else:
            assert {r["script"] for r in recs} == {src["script"]}
            agree = sum(detect_script(r["text"]) == src["script"] for r in recs)
            assert agree >= 0.95 * len(recs), f"{name}: declared {src['script']} but detected otherwise"
    assert m["total"]["by_script"]["traditional"]["characters"] > 0.3 * m["total"]["characters"]["output"]
    for r in records:
        assert "\n\n\n" not in r["text"] and r["text"] == r["text"].strip()
        assert "\x00" not in r["text"] and "[[" not in r["text"]


def test_a_source_converted_with_tw2s_is_simplified_and_loses_the_taiwan_particle(tmp_path, data_dir):
    src = {"name": "twnews", "format": "jsonl", "paths": ["domains/news/cofacts_tw.jsonl"], "domain": "news",
           "script": "traditional", "convert": "tw2s"}
    run(_cfg(data_dir, tmp_path / "c", sources=[src], num_workers=1, max_chars_per_source=60000,
             heldout_min_documents=0))
    records = list(iter_corpus_records(tmp_path / "c"))
    assert records and {r["script"] for r in records} == {"simplified"}
    trad_only = sum(script_counts(r["text"])[1] for r in records)
    assert trad_only <= 0.001 * sum(len(r["text"]) for r in records), "(almost) no Traditional-only characters left"
    raw = [json.loads(line)["text"] for line in (data_dir / "domains/news/cofacts_tw.jsonl").open(encoding="utf-8")]
    assert any("著" in t for t in raw[:200]), "the input has the Taiwan particle"
    assert sum(r["text"].count("看著") for r in records) == 0


def test_meta_json_describes_the_corpus(default_corpus):
    meta = json.loads((default_corpus / "meta.json").read_text(encoding="utf-8"))
    assert meta["config"]["heldout_fraction"] == 0.05
    assert meta["inputs_sha256"] == load_manifest(default_corpus)["inputs_sha256"]
    assert "opencc" in meta["versions"] or "datasketch" in meta["versions"]
    report = (default_corpus / "report.md").read_text(encoding="utf-8")
    m = load_manifest(default_corpus)
    for name, src in m["sources"].items():
        assert f"| {name} | {src['domain']}, {src['script']} -> {src['convert']} | {src['documents']['read']:,} | " \
               f"{src['documents']['written']:,} |" in report
    for name, d in m["domains"].items():
        assert f"| {name} | {', '.join(d['sources'])} | {d['documents']['read']:,} |" in report


def test_same_corpus_whatever_the_workers_and_however_files_are_cut(tmp_path, data_dir, realistic_dump):
    """A multistream dump (with its index) and JSON-lines files, read whole in one process, or cut into
    parts (bz2 streams, line ranges) read by 1 or 2 workers: byte-identical shards and manifest."""
    (tmp_path / "dumps").mkdir()
    for f in realistic_dump.parent.iterdir():
        (tmp_path / "dumps" / f.name).symlink_to(f)
    (tmp_path / "domains").symlink_to(data_dir / "domains")
    sources = [{"name": "zhwiki", "format": "wiki_xml", "paths": ["dumps"], "domain": "encyclopedia",
                "script": "mixed", "convert": "zh-cn"},
               {"name": "hkcancor", "format": "jsonl", "paths": ["domains/dialogue/hkcancor_yue.jsonl"],
                "domain": "dialogue", "script": "traditional"},
               {"name": "tldr_tw", "format": "jsonl", "paths": ["domains/technical/tldr_tw.jsonl"],
                "domain": "technical", "script": "traditional"}]
    outs = {}
    for name, workers, unit_bytes in (("whole", 1, 1 << 30), ("parts1", 1, 150_000), ("parts2", 2, 150_000)):
        outs[name] = tmp_path / name
        run(_cfg(tmp_path, outs[name], sources=sources, num_workers=workers, unit_bytes=unit_bytes,
                 shard_max_documents=200, heldout_min_documents=30))
    m = load_manifest(outs["parts2"])
    assert json.loads((outs["parts2"] / "meta.json").read_text())["run"]["units"] >= 10, "files were cut"
    pages = realistic_pages(data_dir)
    rejected = m["sources"]["zhwiki"]["documents"]["rejected"]
    assert rejected["redirect"] == sum(p[3] for p in pages) and rejected["non_article_namespace"] == sum(
        p[2] != 0 for p in pages)
    assert rejected["exact_duplicate"] >= 5 and rejected["near_duplicate"] >= 10
    kept_ids = [int(r["id"].split("#")[1]) for r in iter_corpus_records(outs["whole"]) if r["source"] == "zhwiki"]
    assert kept_ids and max(kept_ids) < 30_000_000, "every planted copy, in whichever part, is dropped"
    files = sorted(p.relative_to(outs["whole"]) for p in outs["whole"].rglob("*.jsonl"))
    assert len(files) > 3, "several train shards were written"
    for name in ("parts1", "parts2"):
        assert files == sorted(p.relative_to(outs[name]) for p in outs[name].rglob("*.jsonl"))
        for f in files:
            assert (outs[name] / f).read_bytes() == (outs["whole"] / f).read_bytes(), (name, f)
        assert not (outs[name] / ".work").exists(), "intermediate files are removed"
    strip = lambda m: {k: v for k, v in m.items() if k != "config"}  # noqa: E731
    assert strip(load_manifest(outs["parts1"])) == strip(m) == strip(load_manifest(outs["whole"]))
    assert (outs["parts1"] / "report.md").read_bytes() == (outs["parts2"] / "report.md").read_bytes()
    assert set(m["inputs_sha256"]) == {f["path"] for s in m["sources"].values() for f in s["files"]}


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
    {"name": "wiki", "format": "wiki_xml", "paths": ["wiki"], "domain": "encyclopedia", "script": "mixed",
     "convert": "t2s"},
    {"name": "baike", "format": "baike", "paths": ["baike.jsonl"], "domain": "encyclopedia", "script": "simplified"},
    {"name": "text", "format": "text", "paths": ["text"], "text_unit": "paragraph", "domain": "misc",
     "script": "traditional", "convert": "t2s"},
    {"name": "news", "format": "jsonl", "paths": ["news.jsonl"], "text_field": "body", "domain": "news",
     "script": "simplified"},
]
_X = {"domain": "misc", "script": "mixed"}


def test_every_format_and_counted_problem_in_one_build(tmp_path, messy_data):
    out = tmp_path / "corpus"
    run(_cfg(messy_data, out, sources=MESSY_SOURCES, num_workers=2, unit_bytes=100, heldout_fraction=0.0, heldout_min_documents=0))
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
    ("sources", "message"),
    [
        ([{"name": "x", "format": "jsonl", "paths": ["missing.jsonl"], **_X}], r"path not found: .*missing\.jsonl"),
        ([{"name": "x", "format": "squad", "paths": ["wiki"], **_X}], r"directory .*wiki has no \*\.json files"),
        ([{"name": "x", "format": "squad", "paths": ["baike.jsonl"], **_X}], r"baike\.jsonl:\d+: not a SQuAD JSON file"),
        ([{"name": "x", "format": "text", "paths": ["blob.bin"], **_X}], r"blob\.bin:1: binary data \(NUL byte"),
    ],
    ids=["missing_path", "wrong_format_dir", "wrong_format_file", "binary"],
)
def test_fatal_input_errors_name_the_file_and_leave_old_output_untouched(tmp_path, messy_data, sources, message):
    (messy_data / "blob.bin").write_bytes(bytes(range(256)) * 4)
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "previous.txt").write_text("old corpus")
    # A good source comes first: reader errors strike after output was started in the temp dir.
    cfg = _cfg(messy_data, out, sources=MESSY_SOURCES[1:2] + sources, num_workers=2)  # pool shut down too
    with pytest.raises(UserError, match=message):
        run(cfg)
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".corpus")], "temp dir cleaned up"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"convert": "t2x"}, r"sources\[1\].*source 'x': convert: unknown conversion 't2x'; choose one of none, t2s"),
        ({"domain": ""}, r"sources\[1\].*source 'x': domain must be .* \(every source needs one\)"),
        ({"domain": "Legal News"}, r"source 'x': domain must be a lower-case name"),
        ({"script": "cantonese"}, r"source 'x': script must be one of simplified, traditional, mixed"),
    ],
    ids=["unknown_conversion", "no_domain", "bad_domain", "bad_script"],
)
def test_bad_source_labels_are_config_errors_naming_the_source_and_key(tmp_path, messy_data, source, message):
    bad = {"name": "x", "format": "text", "paths": ["text"], **_X, **source}
    with pytest.raises(ConfigError, match=message):
        _cfg(messy_data, tmp_path / "out", sources=MESSY_SOURCES[1:2] + [bad])


def test_cli_builds_and_prints_a_summary_line_or_a_one_line_error(tmp_path, messy_data):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    base = [sys.executable, "-m", "corpora", "build", "--config", str(BUILD_YAML), "--data_dir", str(messy_data),
            "--out_dir", str(tmp_path / "out"), "--progress", "false"]
    # The default sources (zhwiki/*.jsonl...) are not in this data dir: one clear line, exit 2.
    proc = subprocess.run(base, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: source 'zhwiki': path not found")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    proc = subprocess.run(base + ["--sources", "[{name: text, format: text, paths: [text], domain: misc, script: mixed}]",
                                  "--num_workers", "1"],
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
    src = SourceConfig("zhwiki", "wikiextractor", ["extracted"], "encyclopedia", "mixed")
    files = resolve_source_files(src, tmp_path)
    assert [str(f.relative_to(tmp_path / "extracted")) for f in files] == [
        "AA/wiki_00", "AA/wiki_01", "AB/wiki_00", "AB/wiki_01"]
    # Same file names in two folders, same line numbers: ids stay unique in the corpus.
    out = tmp_path / "corpus"
    run(_cfg(tmp_path, out, sources=[{"name": "zhwiki", "format": "wikiextractor", "paths": ["extracted"],
                                      "id_field": "", **_X}], num_workers=1, dedup={"exact": False, "near": False},
             clean={"min_chars": 1}, heldout_fraction=0.0, heldout_min_documents=0))
    ids = [r["id"] for r in iter_corpus_records(out)]
    assert ids == ["zhwiki/extracted/AA/wiki_00:1", "zhwiki/extracted/AA/wiki_01:1",
                   "zhwiki/extracted/AB/wiki_00:1", "zhwiki/extracted/AB/wiki_01:1"]


def test_demo_subset_caps_each_source_and_keeps_every_domain(tmp_path, data_dir):
    cap = 20000
    out = tmp_path / "demo"
    run(_cfg(data_dir, out, num_workers=1, max_chars_per_source=cap, hash_inputs=False))
    m = load_manifest(out)
    full = load_config(BuildConfig, BUILD_YAML, {})
    assert set(m["sources"]) == {s.name for s in full.sources}
    assert set(m["domains"]) == {s.domain for s in full.sources}
    for name, src in m["sources"].items():
        _assert_identity(src, name)
        per_file = -(-cap // len(src["files"]))
        biggest_doc = 30000  # a document may cross the cap: the cut falls between documents
        assert src["characters"]["read"] <= len(src["files"]) * (per_file + biggest_doc), name
        for f in src["files"]:
            if "truncated_at_chars" in f:
                assert f["truncated_at_chars"] == per_file
    assert sum("truncated_at_chars" in f for s in m["sources"].values() for f in s["files"]) >= 15
    for domain, d in m["domains"].items():
        assert d["documents"]["heldout"] > 0, f"{domain}: the demo subset still has a test split"
