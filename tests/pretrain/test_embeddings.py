"""Embedding resize + initialisation (pretrain.embeddings) and model/tokenizer validation (pretrain.model).

Invariants: old rows bit-identical (input and output, tied and untied); each new row is the mean
of the base rows of the pieces that spelled it (computed here independently); padded to a
multiple of 64; the saved model reloads with AutoModelForCausalLM; mismatches are clear errors;
the ZeRO-3 path (2 real processes) gives the same matrices as the plain one.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from sentencepiece import sentencepiece_model_pb2 as pb

from pretrain.embeddings import (
    INIT_METHODS,
    TOKENIZER_DIR_FILES,
    InitConfig,
    base_sp_without_dummy_prefix,
    init_rows,
    new_row_sources,
    padded_vocab_size,
    plan_sources,
    resize_and_init,
    run,
)
from pretrain.model import check_tokenizer_extends, load_llama, tokenizer_pieces
from tests.conftest import save_tiny_llama
from zhllama.cli import UserError
from zhllama.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base_sp(base_sp_model):
    return spm.SentencePieceProcessor(model_file=str(base_sp_model))


@pytest.fixture(scope="module")
def tied_llama_dir(tmp_path_factory, base_tokenizer_dir) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_tied"), base_tokenizer_dir, vocab_size=32000, tie=True, seed=1)


def _weights(model_dir: Path):
    model = load_llama(model_dir)
    return model.get_input_embeddings().weight.detach().clone(), model.get_output_embeddings().weight.detach().clone()


# ------------------------------------------------------------------ which base pieces


def test_sources_spell_the_piece_text_with_and_without_word_boundary(base_sp_model, base_sp):
    sp = base_sp_without_dummy_prefix(base_sp_model.read_bytes())
    rare = "\u9fcf"  # a CJK character with no piece in Llama-2: spelled by its 3 UTF-8 byte pieces
    pieces = ["\u2581中国", "中国", "\u2581the", "ing", rare, "<0xE4>", "<pad>"]
    sources = new_row_sources(pieces, sp, special={"<pad>"})
    # "▁X" means " X" at a word start: exactly what the normal (dummy-prefix) encoder gives for "X"
    assert sources[0] == base_sp.encode("中国") and base_sp.id_to_piece(sources[0][0]) == "\u2581"
    assert sources[2] == base_sp.encode("the") == [base_sp.piece_to_id("\u2581the")]
    # inside a word: no "▁" piece at all; the pieces concatenate to the piece itself
    assert "".join(base_sp.id_to_piece(i) for i in sources[1]) == "中国"
    assert sources[3] == [base_sp.piece_to_id("ing")]
    assert [base_sp.id_to_piece(i) for i in sources[4]] == [f"<0x{b:02X}>" for b in rare.encode("utf-8")]
    assert sources[5] == [base_sp.piece_to_id("<0xE4>")]
    assert sources[6] == []


def test_init_rows_methods_on_a_worked_example():
    w = torch.tensor([[0.0, 2.0], [4.0, 6.0], [8.0, 1.0]])
    assert init_rows(w, [[0, 1], [2], []], "mean_of_pieces").tolist() == [[2.0, 4.0], [8.0, 1.0], [4.0, 3.0]]
    assert init_rows(w, [[0], [1]], "mean_all").tolist() == [[4.0, 3.0], [4.0, 3.0]]
    r1, r2 = init_rows(w, [[0]] * 500, "random", std=0.5, seed=3), init_rows(w, [[0]] * 500, "random", std=0.5, seed=3)
    assert torch.equal(r1, r2) and abs(r1.std().item() - 0.5) < 0.05
    with pytest.raises(ValueError, match="unknown method"):
        init_rows(w, [[0]], "zeros")


@pytest.mark.parametrize("n, multiple", [(32000, 64), (32300, 64), (55296, 64), (32001, 128), (32300, 1), (32300, 0)])
def test_padded_vocab_size_is_the_next_multiple(n, multiple):
    size = padded_vocab_size(n, multiple)
    if multiple <= 1:
        assert size == n
    else:
        assert size % multiple == 0 and n <= size < n + multiple


# ------------------------------------------------------------------ the CLI end to end


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_init_keeps_old_rows_and_sets_new_rows_to_the_mean_of_their_pieces(
        tied, tmp_path, tiny_llama_dir, tied_llama_dir, extended_tokenizer_dir, base_sp):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tied_llama_dir if tied else tiny_llama_dir
    old_in, old_out = _weights(model_dir)
    out = tmp_path / "init"
    assert run(InitConfig(model_dir=model_dir, tokenizer_dir=extended_tokenizer_dir, out_dir=out,
                          init_method="mean_of_pieces")) == 0

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    new_in, new_out = model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()
    n_old, n_tok = old_in.shape[0], len(tok)
    assert n_tok == 32300 and model.config.vocab_size == new_in.shape[0] == new_out.shape[0] == 32320
    assert (new_out.data_ptr() == new_in.data_ptr()) == tied
    pieces = tokenizer_pieces(out)
    for old, new in ((old_in, new_in), (old_out, new_out)):
        assert torch.equal(new[:n_old], old)  # bit-identical
        # independently: the fixture's new pieces are two Han characters, each a base piece
        ids = torch.tensor([[base_sp.piece_to_id(c) for c in pieces[i]] for i in range(n_old, n_tok)])
        assert ids.shape == (n_tok - n_old, 2) and (ids > 0).all()
        assert torch.allclose(new[n_old:n_tok], old[ids].mean(dim=1), atol=1e-7, rtol=0)
        assert torch.allclose(new[n_tok:], old.mean(dim=0).expand(new.shape[0] - n_tok, -1), atol=1e-7, rtol=0)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["init_method"] == "mean_of_pieces" and set(meta["inputs_sha256"]) == {"model_dir", "tokenizer_dir"}
    report = json.loads((out / "init_report.json").read_text())
    assert report["n_new_tokens"] == 300 and report["n_padding_rows"] == 20 and report["tied_embeddings"] == tied
    # only tokenizer files come along from the tokenizer dir (its own meta/report stay there)
    assert {f.name for f in out.iterdir()} - set(TOKENIZER_DIR_FILES) == {
        "config.json", "generation_config.json", "model.safetensors", "meta.json", "init_report.json", "init_report.md"}
    # the output is a valid model dir for the next stages: its tokenizer fits it
    assert check_tokenizer_extends(out, extended_tokenizer_dir).fits


def test_default_init_gives_a_tied_model_mean_of_pieces_rows(tmp_path, tied_llama_dir, extended_tokenizer_dir, base_sp):
    """README: under the default init a tied head uses the mean (its one matrix is the input side)."""
    from transformers import AutoModelForCausalLM

    old_in, _ = _weights(tied_llama_dir)
    out = tmp_path / "init"
    assert run(InitConfig(model_dir=tied_llama_dir, tokenizer_dir=extended_tokenizer_dir, out_dir=out)) == 0
    assert json.loads((out / "meta.json").read_text())["config"]["init_method"] == InitConfig().init_method
    model = AutoModelForCausalLM.from_pretrained(out)
    emb, head = model.get_input_embeddings().weight.detach(), model.get_output_embeddings().weight.detach()
    assert emb.data_ptr() == head.data_ptr()  # still tied
    pieces = tokenizer_pieces(out)
    n_old, n_tok = old_in.shape[0], 32300
    ids = torch.tensor([[base_sp.piece_to_id(c) for c in pieces[i]] for i in range(n_old, n_tok)])
    assert torch.allclose(emb[n_old:n_tok], old_in[ids].mean(dim=1), atol=1e-7, rtol=0)


def test_every_method_keeps_old_rows_and_fills_new_ones(tiny_llama_dir, extended_tokenizer_dir):
    check, _, sources = plan_sources(tiny_llama_dir, extended_tokenizer_dir)
    base = load_llama(tiny_llama_dir)
    old_in, old_out = (m.weight.detach().clone() for m in (base.get_input_embeddings(), base.get_output_embeddings()))
    new_rows = {}
    for method in INIT_METHODS:
        model = copy.deepcopy(base)
        rep = resize_and_init(model, sources, check.n_tokenizer, method=method, pad_to_multiple_of=64, seed=0)
        assert rep.n_rows == 32320 and model.config.vocab_size == 32320
        emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        for old, new in ((old_in, emb), (old_out, head)):
            assert torch.equal(new[:32000], old), method
            assert torch.isfinite(new).all() and new[32000:].abs().sum() > 0, method
        logits = model(input_ids=torch.tensor([[1, 32000, 32299]])).logits
        assert logits.shape == (1, 3, 32320) and torch.isfinite(logits).all()
        new_rows[method] = torch.cat([emb[32000:32300], head[32000:32300]]).detach()
        if method == "pieces_in_random_out":  # input rows as mean_of_pieces, output rows small random
            assert torch.equal(emb[32000:32300], new_rows["mean_of_pieces"][:300])
            assert head[32000:32300].std() < 0.03
    # the methods are really different initialisations
    for a, b in itertools.combinations(INIT_METHODS, 2):
        assert not torch.allclose(new_rows[a], new_rows[b]), (a, b)


# ------------------------------------------------------------------ bad input


def _sp_only_dir(path: Path, proto: pb.ModelProto) -> Path:
    path.mkdir()
    (path / "tokenizer.model").write_bytes(proto.SerializeToString())
    return path


def test_tokenizer_that_does_not_extend_the_model_is_refused(tmp_path, tiny_llama_dir, base_sp_model):
    proto = pb.ModelProto()
    proto.ParseFromString(base_sp_model.read_bytes())
    proto.pieces[500].piece = "\u2581zzzrenamed"
    extra = proto.pieces.add()
    extra.piece, extra.score = "中国人", -1e6
    changed = _sp_only_dir(tmp_path / "changed", proto)
    with pytest.raises(UserError, match=r"does not extend.*id 500"):
        plan_sources(tiny_llama_dir, changed)

    proto.ParseFromString(base_sp_model.read_bytes())
    del proto.pieces[31990:]
    smaller = _sp_only_dir(tmp_path / "smaller", proto)
    with pytest.raises(UserError, match="fewer than the model's tokenizer"):
        plan_sources(tiny_llama_dir, smaller)


def test_init_on_an_already_resized_model_is_refused(tmp_path, extended_tokenizer_dir, base_tokenizer_dir):
    resized = save_tiny_llama(tmp_path / "resized", extended_tokenizer_dir, vocab_size=32320)
    with pytest.raises(UserError, match="already resized"):
        plan_sources(resized, extended_tokenizer_dir)
    with pytest.raises(UserError, match="fewer than the model's tokenizer"):
        plan_sources(resized, base_tokenizer_dir)
    # and training with a tokenizer larger than the model is refused too
    with pytest.raises(UserError, match="embedding rows"):
        check_tokenizer_extends(save_tiny_llama(tmp_path / "small", base_tokenizer_dir, 32000), extended_tokenizer_dir)


def test_not_a_llama_checkpoint_is_a_one_line_cli_error(tmp_path, tiny_llama_dir, extended_tokenizer_dir, capsys):
    from pretrain.__main__ import COMMANDS

    empty = tmp_path / "empty"
    empty.mkdir()
    gpt2 = tmp_path / "gpt2"
    shutil.copytree(tiny_llama_dir, gpt2)
    cfg = json.loads((gpt2 / "config.json").read_text())
    (gpt2 / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_llama_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    cases = {empty: "no config.json", gpt2: "model_type is 'gpt2'", no_weights: "no weights",
             tmp_path / "missing": "not found"}
    for model_dir, message in cases.items():
        argv = ["init", "--model_dir", str(model_dir), "--tokenizer_dir", str(extended_tokenizer_dir),
                "--out_dir", str(tmp_path / "out")]
        assert cli_main("pretrain", COMMANDS, argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ ZeRO-3: two real processes

_ZERO3_WORKER = textwrap.dedent('''
    import sys, torch, deepspeed
    from transformers.integrations import HfDeepSpeedConfig
    model_dir, tok_dir, out = sys.argv[1:4]
    from pretrain.engine.loop import skip_cpu_shm_allreduce
    skip_cpu_shm_allreduce()
    deepspeed.init_distributed(dist_backend="gloo")
    keep = HfDeepSpeedConfig({"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3}})
    from pretrain.embeddings import plan_sources, resize_and_init
    from pretrain.model import load_llama
    check, _, sources = plan_sources(model_dir, tok_dir)
    model = load_llama(model_dir)  # built under zero.Init: every rank holds a shard
    assert model.get_input_embeddings().weight.ds_numel == 32000 * 64
    assert model.get_input_embeddings().weight.numel() == 0
    rep = resize_and_init(model, sources, check.n_tokenizer, "mean_of_pieces", pad_to_multiple_of=64)
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()  # lm_head is a new module now
    with deepspeed.zero.GatheredParameters([emb.weight, head.weight]):
        if torch.distributed.get_rank() == 0:
            torch.save({"in": emb.weight.detach().clone(), "out": head.weight.detach().clone(),
                        "vocab_size": model.config.vocab_size, "n_rows": rep.n_rows}, out)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
''')


@pytest.mark.deepspeed
def test_resize_under_zero3_matches_the_plain_resize(tmp_path, tiny_llama_dir, extended_tokenizer_dir):
    script, out = tmp_path / "zero3_resize.py", tmp_path / "zero3.pt"
    script.write_text(_ZERO3_WORKER)
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_port", "29533", str(script),
                           str(tiny_llama_dir), str(extended_tokenizer_dir), str(out)],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out)

    check, _, sources = plan_sources(tiny_llama_dir, extended_tokenizer_dir)
    model = load_llama(tiny_llama_dir)
    resize_and_init(model, sources, check.n_tokenizer, "mean_of_pieces", pad_to_multiple_of=64)
    assert got["vocab_size"] == got["n_rows"] == 32320
    assert torch.equal(got["in"], model.get_input_embeddings().weight)
    assert torch.equal(got["out"], model.get_output_embeddings().weight)
