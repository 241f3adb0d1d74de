"""vocab train: real SentencePiece training on real Chinese Wikipedia text (~370k chars, 2k pieces)."""
from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb

from vocab.jieba_tools import DEFAULT_DELIMITER, dict_training_lines, mark_word_boundaries
from vocab.train import (
    TrainConfig,
    run,
    sample_sentences,
    split_sentences,
    train_bpe,
    training_lines,
    weighted_texts,
)
from vocab.wordlists import load_words, with_variants
from zhllama import REPO_ROOT
from zhllama.cli import UserError
from zhllama.config import load_config

# Small enough for a 370k-char corpus: 2.5k pieces, and coverage low enough that the required
# characters fit (the rest falls back to bytes).
SMALL = dict(vocab_size=2500, character_coverage=0.98, min_chars_per_piece=20.0)


@pytest.fixture(scope="module")
def small_cfg() -> TrainConfig:
    return load_config(TrainConfig, REPO_ROOT / "configs/vocab/train.yaml", {**SMALL, "word_list_words": 0})


@pytest.fixture(scope="module")
def sentences(zh_sample_texts, small_cfg) -> list[str]:
    return sample_sentences(zh_sample_texts, small_cfg)


@pytest.fixture(scope="module")
def plain_model(sentences, small_cfg) -> bytes:
    return train_bpe(sentences, small_cfg)


def _proto(model_bytes: bytes) -> pb.ModelProto:
    m = pb.ModelProto()
    m.ParseFromString(model_bytes)
    return m


def test_model_has_llama_compatible_settings(plain_model, base_sp_model):
    m, base = _proto(plain_model), _proto(base_sp_model.read_bytes())
    assert len(m.pieces) == 2500
    assert m.trainer_spec.model_type == pb.TrainerSpec.BPE
    # Same control ids and byte pieces as Llama-2, at the same ids.
    assert [p.piece for p in m.pieces[:259]] == [p.piece for p in base.pieces[:259]]
    for field in ("byte_fallback", "split_digits", "allow_whitespace_only_pieces", "unk_id", "bos_id", "eos_id",
                  "pad_id"):
        assert getattr(m.trainer_spec, field) == getattr(base.trainer_spec, field), field
    for field in ("name", "add_dummy_prefix", "remove_extra_whitespaces"):
        assert getattr(m.normalizer_spec, field) == getattr(base.normalizer_spec, field), field
    # The training-only delimiter never reaches the saved model.
    assert m.trainer_spec.pretokenization_delimiter == ""
    assert not any(DEFAULT_DELIMITER in p.piece for p in m.pieces)


def test_model_is_lossless_splits_digits_and_falls_back_to_bytes(plain_model, zh_sample_texts):
    sp = spm.SentencePieceProcessor(model_proto=plain_model)
    for text in zh_sample_texts[:20] + ["  两个空格  和\t制表符", "罕见字𠀀😀", "2023年"]:
        assert sp.decode(sp.encode(text)) == text
    assert [p for p in sp.encode("12345", out_type=str) if p != "\u2581"] == list("12345")
    rare = sp.encode("𠀀", out_type=str)
    assert [p for p in rare if p.startswith("<0x")] == ["<0xF0>", "<0xA0>", "<0x80>", "<0x80>"]
    # It learned Chinese words, not just characters.
    assert any(len(p) >= 2 and "\u4e00" <= p[0] <= "\u9fff" for p in (sp.id_to_piece(i) for i in range(2500)))


def test_training_is_deterministic(sentences, small_cfg, plain_model):
    assert train_bpe(sentences, small_cfg) == plain_model


def _substrings(words: set[str], max_len: int = 16) -> set[str]:
    return {w[i:j] for w in words for i in range(len(w)) for j in range(i + 1, min(len(w), i + max_len) + 1)}


def test_word_boundaries_keep_pieces_inside_jieba_words(sentences, small_cfg):
    """With jieba word boundaries no piece crosses a boundary; plain BPE does cross them (the test can fail)."""
    sentences = sentences[: len(sentences) // 3]  # ~120k chars: jieba is the slow part
    lines = training_lines(sentences, replace(small_cfg, jieba_word_boundaries=True))
    words = {w.strip() for line in lines for w in line.split("\t")[0].split(DEFAULT_DELIMITER)}
    inside = _substrings({w for w in words if w})

    def crossing(model_bytes: bytes) -> list[str]:
        pieces = [p.piece.lstrip("\u2581") for p in _proto(model_bytes).pieces[259:]]
        return [p for p in pieces if len(p) >= 2 and "\u2581" not in p and p not in inside]

    bounded = train_bpe(sentences, replace(small_cfg, jieba_word_boundaries=True))
    assert crossing(bounded) == []
    assert len(crossing(train_bpe(sentences, small_cfg))) > 20
    # The dummy-prefix "▁" is not glued to sentence-initial Chinese words.
    han_space_pieces = [p.piece for p in _proto(bounded).pieces if p.piece.startswith("\u2581")
                        and len(p.piece) > 1 and "\u4e00" <= p.piece[1] <= "\u9fff"]
    assert han_space_pieces == []


def test_mark_word_boundaries_is_removable_and_keeps_space_words():
    for s in ["数学是研究数量的学科。", "Python是一种 programming language，汉字 表示", "  ", "abc", ""]:
        marked = mark_word_boundaries(s, "|")
        assert marked.replace("|", "") == s
        assert " |" not in marked  # a space stays glued to the next word, as SentencePiece's "▁word"
    assert mark_word_boundaries("数学是科学", "|") == "|数学|是|科学"


@pytest.mark.parametrize("word_list", ["wordfreq", "jieba"])
def test_word_list_input_makes_list_words_pieces(sentences, small_cfg, plain_model, word_list):
    top = [w for w, _ in load_words(word_list, 3000)]
    with_dict = train_bpe(sentences, replace(small_cfg, word_list=word_list, word_list_words=3000,
                                             word_list_weight=0.3, word_list_variants=[]))

    def single_piece_words(model_bytes: bytes) -> int:
        pieces = {p.piece for p in _proto(model_bytes).pieces}
        return sum(w in pieces for w in top)

    assert single_piece_words(with_dict) > 1.2 * single_piece_words(plain_model)


def test_dictionary_lines_are_scaled_to_the_requested_share():
    words = [("中国", 1000), ("我们", 500), ("罕见词", 1)]
    lines = list(dict_training_lines(words, corpus_chars=30_030, weight=0.1, delimiter="|"))
    # mass = 2*1000 + 2*500 + 3*1 = 3003 chars -> scale 1.0; the rare word rounds to 1 and stays.
    assert lines == ["|中国\t1000", "|我们\t500", "|罕见词\t1"]
    halved = list(dict_training_lines(words, corpus_chars=15_015, weight=0.1, delimiter="|"))
    assert halved == ["|中国\t500", "|我们\t250"]  # 0.5 rounds to 0: rare words are dropped, never inflated
    assert list(dict_training_lines(words, corpus_chars=1000, weight=0.0)) == []
    assert with_variants([("中国", 5), ("我们", 3), ("中國", 5)], ["s2t"]) == [("中国", 5), ("中國", 5), ("我们", 3),
                                                                           ("我們", 3)]
    # Taiwan phrase forms: 软件 -> 軟體 (s2twp), and a relative weight for the forms.
    assert with_variants([("软件", 4.0)], ["s2twp", "s2hk"], weight=0.5) == [("软件", 4.0), ("軟體", 2.0), ("軟件", 2.0)]


def test_traditional_forms_of_the_word_list_become_pieces(sentences, small_cfg):
    """With the list's Traditional forms as input, Traditional words are learned, although the
    corpus sample is Simplified: the pieces Traditional text needs come from the list."""
    sample = sentences[: len(sentences) // 3]
    cfg = replace(small_cfg, word_list="wordfreq", word_list_words=2000, word_list_weight=0.3, min_chars_per_piece=1.0)
    words = load_words("wordfreq", 2000)
    simplified = {w for w, _ in words}
    trad_only = [w for w, _ in with_variants(words, ["s2twp"]) if w not in simplified]
    learned = {}
    for variants in (["s2twp"], []):
        pieces = {p.piece for p in _proto(train_bpe(sample, replace(cfg, word_list_variants=variants))).pieces}
        learned[bool(variants)] = sum(w in pieces for w in trad_only)
    assert learned[True] > 5 * max(1, learned[False])


def test_domain_weights_repeat_records_stably():
    recs = [{"id": f"l/{i}", "domain": "legal", "text": f"法律文本{i}"} for i in range(400)]
    recs.append({"id": "d/0", "domain": "dialogue", "text": "你好"})
    out = list(weighted_texts(recs, {"legal": 0.5, "dialogue": 3.0}))
    assert out.count("你好") == 3
    assert 150 < len(out) - 3 < 250  # about half of the legal records, chosen by a hash of the record id
    assert out == list(weighted_texts(recs, {"legal": 0.5, "dialogue": 3.0}))  # stable
    assert list(weighted_texts(recs, {"legal": 0.0, "dialogue": 0.0})) == []


def test_bad_word_list_and_weights_name_the_key():
    with pytest.raises(ValueError, match=r"word_list_variants: unknown OpenCC conversion\(s\) \['s2x'\]"):
        TrainConfig(word_list_variants=["s2x"])
    with pytest.raises(ValueError, match="domain_weights.legal: weight must be a finite number >= 0"):
        TrainConfig(domain_weights={"legal": -1.0})
    with pytest.raises(UserError, match="jieba dictionary not found"):
        load_words("no/such/list.txt")


def test_split_sentences_bounds_and_preserves_text():
    line = "第一句很长。第二句！" * 50 + "没有句号的尾巴" * 30
    chunks = list(split_sentences(line + "\n\n短\n正常的一行", min_chars=2, max_chars=64))
    assert all(2 <= len(c) <= 64 for c in chunks)
    assert "".join(chunks[:-1]) == line  # long line: chunks concatenate back exactly
    assert chunks[-1] == "正常的一行"  # "短" is below min_chars


def test_sample_is_bounded_deterministic_and_counts_everything():
    docs = [f"文档{i}的第一行\n第二行{i}" for i in range(5000)]
    cfg = TrainConfig(max_sentences=300, seed=1)
    stats: dict = {}
    a = sample_sentences(iter(docs), cfg, stats)
    assert len(a) == 300 and stats["sentences_seen"] == 10000 and stats["documents_seen"] == 5000
    assert a == sample_sentences(iter(docs), cfg)
    assert a != sample_sentences(iter(docs), replace(cfg, seed=2))
    every = {s for d in docs for s in d.split("\n")}
    assert set(a) <= every
    # Roughly uniform: late documents are as likely as early ones (not just the first 300 sentences).
    late = sum(1 for s in a if int("".join(ch for ch in s if ch.isdigit())) >= 2500)
    assert 100 < late < 200


def test_sample_memory_stays_bounded_as_the_corpus_grows():
    """~24 MB of text streams through a 1,000-sentence reservoir with a small, fixed peak."""
    def corpus(n_docs):
        for i in range(n_docs):
            yield (f"第{i}篇文章。" + "这是一个用于测试内存的句子，" * 20 + "\n") * 10

    cfg = TrainConfig(max_sentences=1000)
    tracemalloc.start()
    try:
        sample = sample_sentences(corpus(4000), cfg)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    corpus_bytes = 4000 * len(next(corpus(1)).encode("utf-8"))
    assert len(sample) == 1000
    assert corpus_bytes > 20e6
    assert peak_bytes < corpus_bytes / 20


def _write_corpus(corpus_dir: Path, texts: list[str]) -> Path:
    (corpus_dir / "train").mkdir(parents=True)
    with open(corpus_dir / "train" / "shard-00000.jsonl", "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i), "source": "zhwiki", "domain": "encyclopedia", "script": "simplified",
                                "text": t}, ensure_ascii=False) + "\n")
    return corpus_dir


def test_cli_writes_model_vocab_summary_and_meta(tmp_path, zh_sample_texts):
    corpus = _write_corpus(tmp_path / "corpus", zh_sample_texts)
    out = tmp_path / "vocab"
    proc = subprocess.run(
        [sys.executable, "-m", "vocab", "train", "--config", "configs/vocab/train.yaml",
         "--corpus_dir", str(corpus), "--out_dir", str(out), "--vocab_size", "2000",
         "--character_coverage", "0.98", "--word_list_words", "2000", "--model_name", "zh_small",
         "--cross_script_share", "0"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "vocab train: 2000 pieces" in proc.stdout
    sp = spm.SentencePieceProcessor(model_file=str(out / "zh_small.model"))
    assert sp.get_piece_size() == 2000
    vocab_lines = (out / "zh_small.vocab").read_text(encoding="utf-8").splitlines()
    assert [ln.split("\t")[0] for ln in vocab_lines] == [sp.id_to_piece(i) for i in range(2000)]
    summary = json.loads((out / "summary.json").read_text())
    from vocab.dev_split import is_dev

    # Dev documents (the merge's size-selection set) never reach BPE training.
    n_train = sum(not is_dev(t, TrainConfig().dev_fraction) for t in zh_sample_texts)
    assert summary["documents_seen"] == n_train and summary["peak_rss_mb"] > 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["vocab_size"] == 2000 and meta["config"]["word_list_words"] == 2000
    assert list(meta["inputs_sha256"]) == ["train/shard-00000.jsonl"]


def test_bad_inputs_are_clear_errors_and_leave_no_output(tmp_path, zh_sample_texts):
    out = tmp_path / "vocab"
    cfg = TrainConfig(out_dir=out, **SMALL)
    with pytest.raises(UserError, match="corpus directory not found"):
        run(replace(cfg, corpus_dir=tmp_path / "missing"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(UserError, match="no training shards"):
        run(replace(cfg, corpus_dir=tmp_path / "nothing"))
    with pytest.raises(UserError, match="no usable sentences"):
        run(replace(cfg, corpus_dir=_write_corpus(tmp_path / "empty", ["", "\n", "x"])))
    with pytest.raises(UserError, match=r"corpus too small for vocab_size=2500: .* need at least 50,000"):
        run(replace(cfg, corpus_dir=_write_corpus(tmp_path / "tiny", zh_sample_texts[:1])))
    bad = _write_corpus(tmp_path / "bad", ["好的文本"])
    with open(bad / "train" / "shard-00000.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(UserError, match=r"shard-00000.jsonl:2: not valid JSON"):
        run(replace(cfg, corpus_dir=bad))
    # SentencePiece refusing the settings is a UserError too, not a C++ traceback.
    big_cov = replace(cfg, corpus_dir=_write_corpus(tmp_path / "ok", zh_sample_texts), character_coverage=1.0,
                      vocab_size=1000)
    with pytest.raises(UserError, match="could not train vocab_size=1000"):
        run(big_cov)
    with pytest.raises(UserError, match=r"domain_weights.legal: unknown domain 'legal'; the corpus has encyclopedia"):
        run(replace(cfg, corpus_dir=_write_corpus(tmp_path / "ok2", zh_sample_texts), domain_weights={"legal": 2.0}))
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".vocab")]  # no temp dirs left behind


def test_cli_error_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vocab", "train", "--corpus_dir", str(tmp_path / "nope"), "--out_dir",
         str(tmp_path / "o")], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: corpus directory not found") and "Traceback" not in proc.stderr


def test_config_rejects_impossible_settings():
    with pytest.raises(ValueError, match="vocab_size"):
        TrainConfig(vocab_size=100)
    with pytest.raises(ValueError, match="character_coverage"):
        TrainConfig(character_coverage=0.5)
