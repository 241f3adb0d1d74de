"""vocab report: real tokenizers (Llama-2 32k and a 300-piece Chinese extension) on real text."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from vocab.loaders import load_texts
from vocab.report import LENGTH_BUCKETS, compare, plot, to_markdown
from zhllama import REPO_ROOT
from zhllama.cli import UserError

JIEBA_WORDS = 2000


@pytest.fixture(scope="module")
def zh_docs(zh_sample_texts) -> list[str]:
    return zh_sample_texts[:12]


@pytest.fixture(scope="module")
def result(base_sp_model, extended_sp_model, zh_docs, english_texts) -> dict:
    tokenizers = {"base": base_sp_model.read_bytes(), "extended": extended_sp_model.read_bytes()}
    return compare(tokenizers, {"zh": zh_docs, "en": english_texts}, base="base", jieba_words=JIEBA_WORDS)


def _encode_all(model_path, docs):
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    return sp, [sp.encode(d, out_type=str) for d in docs]


def test_metrics_match_an_independent_count(result, extended_sp_model, zh_docs):
    _, pieces = _encode_all(extended_sp_model, zh_docs)
    tokens = sum(map(len, pieces))
    m = result["metrics"]["extended"]["zh"]
    assert m["tokens"] == tokens
    assert m["tokens_per_char"] == pytest.approx(tokens / sum(map(len, zh_docs)))
    assert m["bytes_per_token"] == pytest.approx(sum(len(d.encode()) for d in zh_docs) / tokens)
    byte_tokens = sum(1 for doc in pieces for p in doc if p.startswith("<0x") and p.endswith(">"))
    assert m["byte_fallback_share"] == pytest.approx(byte_tokens / tokens)
    assert m["lossless_share"] == 1.0


def test_extension_compresses_chinese_and_leaves_english_alone(result):
    base, ext = result["metrics"]["base"], result["metrics"]["extended"]
    assert base["zh"]["tokens_vs_base"] == 1.0 and base["en"]["non_chinese_lines_same_as_base"] == 1.0
    assert ext["zh"]["tokens_per_char"] < base["zh"]["tokens_per_char"]
    assert ext["en"]["tokens"] == base["en"]["tokens"]
    assert ext["en"]["non_chinese_lines_same_as_base"] == 1.0
    # No Han characters were added, so coverage is unchanged; the base lacks some (byte fallback).
    assert ext["zh"]["han_char_coverage"] == base["zh"]["han_char_coverage"] < 1.0
    assert base["zh"]["byte_fallback_share"] > 0 and base["en"]["han_char_coverage"] is None


def test_tokenizer_facts(result):
    ext, base = result["tokenizers"]["extended"], result["tokenizers"]["base"]
    assert ext["vocab_size"] == 32300 and ext["added_pieces"] == 300
    assert ext["added_by_length"] == {b: (300 if b == "2" else 0) for b in LENGTH_BUCKETS}
    assert base["added_pieces"] == 0 and base["han_single_char_pieces"] == ext["han_single_char_pieces"] == 700
    # The fixture adds frequent wiki bigrams, many of which are common words.
    assert ext["jieba_words_tested"] == JIEBA_WORDS
    assert base["jieba_words_single_piece_share"] < ext["jieba_words_single_piece_share"]
    assert 0 < ext["jieba_words_single_piece_share_freq_weighted"] <= 1


def test_english_check_detects_a_changed_segmentation(base_sp_model, english_texts):
    """A tokenizer that adds one English piece must score below 100% on "same as base"."""
    m = pb.ModelProto()
    m.ParseFromString(base_sp_model.read_bytes())
    sp = spm.SentencePieceProcessor(model_proto=base_sp_model.read_bytes())
    line = english_texts[0]
    pieces = sp.encode(line, out_type=str)
    i = next(k for k in range(len(pieces) - 1) if pieces[k].startswith("\u2581") and pieces[k + 1].isalpha())
    p = m.pieces.add()
    p.piece, p.score, p.type = pieces[i] + pieces[i + 1], 0.0, pb.ModelProto.SentencePiece.NORMAL
    r = compare({"base": base_sp_model.read_bytes(), "bad": m.SerializeToString()}, {"en": english_texts},
                jieba_words=0)
    share = r["metrics"]["bad"]["en"]["non_chinese_lines_same_as_base"]
    assert 0 < share < 1
    assert r["tokenizers"]["bad"]["added_pieces"] == 1 and r["tokenizers"]["bad"]["added_pieces_with_space_prefix"] == 1
    assert r["tokenizers"]["bad"]["jieba_words_single_piece_share"] is None


def test_markdown_and_plot(result):
    md = to_markdown(result)
    for name in ("base", "extended", "zh", "en", "Tokens per character", "jieba words"):
        assert name in md
    tpc = result["metrics"]["extended"]["zh"]
    assert f"{tpc['tokens_per_char']:.3f} ({tpc['tokens_vs_base']:.2f}×)" in md
    fig = plot(result)
    assert len(fig.axes) == 2
    bars = [b.get_height() for b in fig.axes[0].patches]
    assert pytest.approx(tpc["tokens_per_char"]) in bars


def test_bad_inputs(base_sp_model, tmp_path):
    b = base_sp_model.read_bytes()
    with pytest.raises(UserError, match="base tokenizer 'nope'"):
        compare({"a": b}, {"t": ["x"]}, base="nope", jieba_words=0)
    with pytest.raises(UserError, match="without any text"):
        compare({"a": b}, {"t": ["", " "]}, jieba_words=0)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "好"}\n{"id": 1}\n', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad.jsonl:2: expected a JSON object with a string 'text'"):
        load_texts(bad)
    with pytest.raises(UserError, match="text file not found"):
        load_texts(tmp_path / "missing.txt")


def test_load_texts_formats(tmp_path, data_dir):
    squad = load_texts(data_dir / "cmrc2018" / "cmrc2018_trial.json")
    assert len(squad) == 256 and len(set(squad)) == 256  # the PROVENANCE count of unique contexts
    txt = tmp_path / "a.txt"
    txt.write_text("第一行\n\n second \n", encoding="utf-8")
    assert load_texts(txt) == ["第一行", " second "]
    assert len(load_texts(data_dir / "zhwiki" / "jastfkjg_wiki_00.jsonl", max_docs=5)) == 5


def test_cli_writes_json_markdown_png_and_meta(tmp_path, base_sp_model, extended_sp_model, zh_docs):
    tok_dir = tmp_path / "ext_tokenizer"  # a directory holding tokenizer.model (like an HF tokenizer dir)
    tok_dir.mkdir()
    (tok_dir / "tokenizer.model").write_bytes(extended_sp_model.read_bytes())
    zh = tmp_path / "zh.jsonl"
    zh.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in zh_docs), encoding="utf-8")
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "vocab", "report", "--tokenizer", str(base_sp_model), "--tokenizer",
         str(tok_dir), "--names", "llama2", "--names", "ext", "--text", str(zh),
         "--text", "tests/data/english.txt", "--jieba_words", "0", "--out_dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fewest tokens/char: zh=ext" in proc.stdout
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(report["metrics"]) == {"llama2", "ext"} and set(report["texts"]) == {"zh", "english"}
    assert (out / "report.png").stat().st_size > 10_000
    assert "| ext |" in (out / "report.md").read_text(encoding="utf-8")
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta["inputs_sha256"]) == {"tokenizer:llama2", "tokenizer:ext", "text:zh", "text:english"}


def test_cli_errors_are_one_line(tmp_path, base_sp_model):
    cases = [
        (["--tokenizer", str(tmp_path / "missing.model"), "--text", "tests/data/english.txt"], "tokenizer not found"),
        (["--tokenizer", str(base_sp_model), "--names", "a", "--names", "b", "--text", "tests/data/english.txt"],
         "2 tokenizer names for 1 tokenizers"),
        (["--tokenizer", str(base_sp_model)], "give at least one --text"),
    ]
    for args, message in cases:
        proc = subprocess.run([sys.executable, "-m", "vocab", "report", *args, "--out_dir", str(tmp_path / "o")],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "o").exists()


def test_cli_per_domain_table(tmp_path, base_sp_model, extended_sp_model, zh_docs, data_dir):
    """``--domains_file`` (corpus-stage records with domain/script) adds the per-domain, per-script
    table and domains.png; its token counts match an independent encode."""
    trad = load_texts(data_dir / "drcd" / "DRCD_test.json")[:6]
    recs = [{"domain": "encyclopedia", "script": "simplified", "text": t} for t in zh_docs[:6]]
    recs += [{"domain": "encyclopedia", "script": "traditional", "text": t} for t in trad]
    recs += [{"domain": "legal", "script": "traditional", "text": "第一條　本法依憲法制定之。"}]
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "vocab", "report", "--tokenizer", str(base_sp_model), "--tokenizer",
         str(extended_sp_model), "--names", "llama2", "--names", "ext", "--domains_file", str(path),
         "--jieba_words", "0", "--out_dir", str(out)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    table = json.loads((out / "report.json").read_text(encoding="utf-8"))["domains"]
    assert set(table["ext"]) == {"encyclopedia", "encyclopedia/simplified", "encyclopedia/traditional", "legal",
                                 "legal/traditional", "all/simplified", "all/traditional"}
    sp = spm.SentencePieceProcessor(model_file=str(extended_sp_model))
    assert table["ext"]["encyclopedia/traditional"]["tokens"] == sum(map(len, sp.encode(trad)))
    assert table["llama2"]["all/traditional"]["byte_fallback_share"] > 0.3  # Traditional Han is mostly bytes in Llama-2
    assert (out / "domains.png").stat().st_size > 10_000
    assert "By domain and script" in (out / "report.md").read_text(encoding="utf-8")
