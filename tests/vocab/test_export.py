"""The HF export (vocab/export.py) gives SentencePiece's ids and decodes, id for id.

Real SentencePiece vs real ``AutoTokenizer.from_pretrained`` on: the base and the merged model,
every line of the default corpus (all shared Chinese data), English, edge strings, random strings,
and exhaustively on every short string of a tiny model built to have SentencePiece score ties.
"""
from __future__ import annotations

import itertools
import json

import pytest
import sentencepiece as spm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocab.export import EDGE_STRINGS, bpe_merges, build_hf_tokenizer, export_hf, parity_mismatches
from vocab.proto import BYTE, NORMAL, SPIECE_UNDERLINE, copy_model, parse_model


def _load(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def base_hf(base_tokenizer_dir):
    return _load(base_tokenizer_dir)


@pytest.fixture(scope="module")
def merged_hf(merged_tokenizer_dir):
    return _load(merged_tokenizer_dir)


@pytest.fixture(scope="module")
def base_sp(base_sp_model):
    return spm.SentencePieceProcessor(model_file=str(base_sp_model))


@pytest.fixture(scope="module")
def merged_sp(merged_bytes):
    return spm.SentencePieceProcessor(model_proto=merged_bytes)


def _corpus_lines(data_dir) -> list[str]:
    """Every non-empty line of every document of the shared Chinese data (zhwiki, CMRC, DRCD)."""
    from vocab.loaders import load_texts

    files = sorted(data_dir.glob("zhwiki/*.jsonl")) + sorted(data_dir.glob("cmrc2018/*.json")) \
        + sorted(data_dir.glob("drcd/*.json"))
    return [ln for f in files for doc in load_texts(f) for ln in doc.split("\n") if ln]


def test_directory_loads_without_remote_code(merged_tokenizer_dir, merged_hf, merged_bytes):
    config = json.loads((merged_tokenizer_dir / "tokenizer_config.json").read_text())
    assert "auto_map" not in config and config["split_special_tokens"] is True
    assert (merged_tokenizer_dir / "tokenizer.model").read_bytes() == merged_bytes
    sp = spm.SentencePieceProcessor(model_proto=merged_bytes)
    assert len(merged_hf) == sp.get_piece_size() > 32000
    assert (merged_hf.bos_token_id, merged_hf.eos_token_id, merged_hf.unk_token_id) == (sp.bos_id(), sp.eos_id(), sp.unk_id())
    assert merged_hf.convert_ids_to_tokens(list(range(sp.get_piece_size()))) == [
        sp.id_to_piece(i) for i in range(sp.get_piece_size())
    ]


@pytest.mark.parametrize("which", ["base", "merged"])
def test_edge_strings_and_english_parity(which, base_hf, merged_hf, base_sp_model, merged_bytes, english_texts):
    tok, model_bytes = (base_hf, base_sp_model.read_bytes()) if which == "base" else (merged_hf, merged_bytes)
    assert parity_mismatches(tok, model_bytes, list(EDGE_STRINGS) + english_texts) == []


def test_every_line_of_default_corpus_parity(merged_hf, merged_sp, data_dir):
    lines = _corpus_lines(data_dir)
    assert len(lines) > 5000
    assert parity_mismatches(merged_hf, merged_sp, lines) == []


@pytest.mark.slow
def test_every_line_of_every_domain_parity(merged_hf, merged_sp, data_dir):
    """Every line of every domain file (legal, news, dialogue incl. Cantonese, literature, poetry,
    technical; Simplified and Traditional): HF ids and decoding == SentencePiece's."""
    from vocab.loaders import load_texts

    files = sorted((data_dir / "domains").glob("*/*.jsonl"))
    assert len(files) >= 20
    lines = list({ln: None for f in files for doc in load_texts(f) for ln in doc.split("\n") if ln})
    assert len(lines) > 100_000
    assert parity_mismatches(merged_hf, merged_sp, lines) == []


def test_special_tokens_written_as_text_are_plain_text(merged_hf, merged_bytes):
    sp = spm.SentencePieceProcessor(model_proto=merged_bytes)
    for text in ("<s>", "</s>", "a</s>b<s>", "<unk>"):
        ids = merged_hf(text).input_ids
        assert ids == [sp.bos_id()] + sp.encode(text)
        assert ids.count(sp.bos_id()) == 1 and sp.eos_id() not in ids and sp.unk_id() not in ids
        assert merged_hf.decode(ids, skip_special_tokens=True) == text


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40))
def test_random_strings_parity(merged_hf, merged_sp, text):
    assert parity_mismatches(merged_hf, merged_sp, [text]) == []


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from([" ", "  ", "\t", "\n", "a", "中国", "，", "<s>", "2", "▁"]), max_size=12).map("".join))
def test_space_heavy_strings_parity(base_hf, base_sp, text):
    assert parity_mismatches(base_hf, base_sp, [text]) == []


@pytest.mark.parametrize("which", ["base", "merged"])
def test_whitespace_runs_parity_on_real_pieces(which, base_hf, merged_hf, base_sp_model, merged_bytes):
    """Llama-2's whitespace pieces ``▁▁`` .. ``▁×16`` share one score (-1e9): SentencePiece grows the
    leftmost run one ``▁`` at a time, which the export mirrors by ranking (``▁×k``, ``▁``) by
    descending k. Every run length 1..40 in every context, on the real base and merged tokenizers."""
    tok, model_bytes = (base_hf, base_sp_model.read_bytes()) if which == "base" else (merged_hf, merged_bytes)
    texts = []
    for n in range(1, 41):
        run = " " * n
        texts += [run, "a" + run + "b", run + "中文", "中文" + run + "，", "x\n" + run + "y", run + "a" + run,
                  "def f():\n" + run + "return 1", "數" + run + "学" + " " * (n // 2 + 1) + "end"]
    assert parity_mismatches(tok, model_bytes, texts) == []


def test_llama_whitespace_runs_are_mirrored_as_one_tie_group(base_sp_model, merged_bytes):
    """On the real Llama-2 pieces: the 15 runs ``▁▁`` .. ``▁×16`` tie at one score; the export must
    treat them as one complete run group, ranked (``▁×(k-1)``, ``▁``) by descending k, and report
    no ambiguous tie (else it warns that HF may differ from SentencePiece)."""
    import warnings

    for model_bytes in (base_sp_model.read_bytes(), merged_bytes):
        m = parse_model(model_bytes)
        runs = [p for p in m.pieces if p.type == NORMAL and len(p.piece) > 1 and set(p.piece) == {SPIECE_UNDERLINE}]
        assert len(runs) == 15 and len({p.score for p in runs}) == 1
        table = bpe_merges(m)
        assert table.ambiguous_tie_pieces == []
        run_merges = [(a, b) for a, b in table.merges if set(a + b) == {SPIECE_UNDERLINE}]
        assert run_merges == [(SPIECE_UNDERLINE * (k - 1), SPIECE_UNDERLINE) for k in range(16, 1, -1)]
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            build_hf_tokenizer(model_bytes)


def _tiny_model_with_ties(base_sp_model, run_lengths=(2, 3, 4, 5, 6)) -> bytes:
    """A 3-letter BPE (▁ a b) with Llama-2's specials and bytes, whitespace runs tied at -1e9 like
    Llama-2's, plus a few letter merges: the hardest case for rank-based BPE."""
    base = parse_model(base_sp_model.read_bytes(), "base")
    m = copy_model(base)
    del m.pieces[:]
    for p in base.pieces:
        if p.type != NORMAL:
            m.pieces.add().CopyFrom(p)
    normal = [("▁", -1e9), ("a", -90.0), ("b", -91.0)]
    normal += [(SPIECE_UNDERLINE * k, -1e9) for k in run_lengths]
    normal += [("ab", -1.0), ("▁a", -2.0), ("ba", -3.0), ("aba", -4.0), ("▁ab", -5.0), ("bb", -6.0), ("▁b", -7.0)]
    for piece, score in normal:
        p = m.pieces.add()
        p.piece, p.score, p.type = piece, score, NORMAL
    return m.SerializeToString()


def test_exhaustive_parity_on_tiny_model_with_score_ties(tmp_path, base_sp_model):
    model_bytes = _tiny_model_with_ties(base_sp_model)
    tok = _load(export_hf(model_bytes, tmp_path / "tiny"))
    texts = ["".join(t) for n in range(1, 9) for t in itertools.product(" ab", repeat=n)]
    texts += [" " * n + "a" + " " * k for n in range(14) for k in range(14)]
    assert len(texts) > 9000
    assert parity_mismatches(tok, model_bytes, texts) == []


def test_tie_group_with_a_gap_is_reported(base_sp_model):
    """Runs ▁▁, ▁×3, ▁×4, ▁×6 (no ▁×5): SentencePiece then merges ▁×4 + ▁▁ after a stop, a leftmost
    tie break no rank order can express: the exporter must say so rather than pass silently."""
    table = bpe_merges(parse_model(_tiny_model_with_ties(base_sp_model, (2, 3, 4, 6))))
    assert sorted(map(len, table.ambiguous_tie_pieces)) == [2, 3, 4, 6]
    complete = bpe_merges(parse_model(_tiny_model_with_ties(base_sp_model)))
    assert complete.ambiguous_tie_pieces == []
    with pytest.warns(UserWarning, match="4 pieces share a score"):
        build_hf_tokenizer(_tiny_model_with_ties(base_sp_model, (2, 3, 4, 6)))


def test_merge_ranks_follow_scores(merged):
    m, _ = merged
    score = {p.piece: p.score for p in m.pieces}
    table = bpe_merges(m)
    assert table.ambiguous_tie_pieces == []
    scores = [score[a + b] for a, b in table.merges]
    assert scores == sorted(scores, reverse=True)
    # Every merge's parts are pieces; no byte or control piece takes part in a merge.
    specials = {p.piece for p in m.pieces if p.type != NORMAL}
    assert all(a in score and b in score and a not in specials and b not in specials for a, b in table.merges)


def test_unsupported_models_are_refused(base_sp_model):
    base = parse_model(base_sp_model.read_bytes(), "base")
    nfkc = copy_model(base)
    nfkc.normalizer_spec.name = "nmt_nfkc"
    with pytest.raises(ValueError, match="normalizer 'nmt_nfkc' is not supported"):
        build_hf_tokenizer(nfkc.SerializeToString())
    squeeze = copy_model(base)
    squeeze.normalizer_spec.remove_extra_whitespaces = True
    with pytest.raises(ValueError, match="remove_extra_whitespaces"):
        build_hf_tokenizer(squeeze.SerializeToString())
    assert sum(p.type == BYTE for p in base.pieces) == 256
