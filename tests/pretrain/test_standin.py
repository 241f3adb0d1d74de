"""The stand-in base model (pretrain.standin): a seconds-long smoke run that must learn, reload and cache."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrain.standin import StandinConfig, lr_at, resolve, run
from zhllama.cli import UserError
from zhllama.config import load_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, zh_sample_texts) -> Path:
    d = tmp_path_factory.mktemp("corpus")
    (d / "train").mkdir()
    lines = [json.dumps({"id": str(i), "source": "zhwiki", "text": t}, ensure_ascii=False)
             for i, t in enumerate(zh_sample_texts)]
    (d / "train" / "train-00000.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def test_smoke_run_learns_saves_a_loadable_model_and_is_cached(tmp_path, corpus_dir, base_sp_model, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pretrain.model import check_tokenizer_extends

    out = tmp_path / "standin"
    cfg = StandinConfig(tokenizer_model=base_sp_model, corpus_dir=corpus_dir, out_dir=out, smoke=True, num_threads=1)
    assert run(cfg) == 0
    meta = json.loads((out / "meta.json").read_text())
    train = meta["train"]
    # a 32k-way softmax starts at ~ln(32000) = 10.4; unigram statistics alone bring it well below
    assert train["initial_loss"] > 9.5 and train["last_loss"] < train["initial_loss"] - 1.5, train
    assert train["steps"] == resolve(cfg).max_steps
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(5, train["steps"] + 1, 5))

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tok) == 32000
    assert model.config.hidden_size == 32 and not model.config.tie_word_embeddings
    assert check_tokenizer_extends(out, out).n_new_tokens == 0
    ids = tok("数学是研究数量的学科")["input_ids"]
    assert ids[0] == tok.bos_token_id and model(input_ids=__import__("torch").tensor([ids])).logits.shape[-1] == 32000

    capsys.readouterr()
    before = (out / "model.safetensors").stat().st_mtime_ns
    assert run(cfg) == 0  # same config, corpus and tokenizer: reused
    assert "skipping" in capsys.readouterr().out
    assert (out / "model.safetensors").stat().st_mtime_ns == before


def test_bad_corpus_record_names_file_and_line(tmp_path, base_sp_model):
    (tmp_path / "c" / "train").mkdir(parents=True)
    (tmp_path / "c" / "train" / "a.jsonl").write_text('{"text": "好"}\n{"id": 1}\n', encoding="utf-8")
    cfg = StandinConfig(tokenizer_model=base_sp_model, corpus_dir=tmp_path / "c", out_dir=tmp_path / "o", smoke=True)
    with pytest.raises(UserError, match=r"a\.jsonl:2: .*'text'"):
        run(cfg)
    with pytest.raises(UserError, match="no training shards"):
        run(StandinConfig(tokenizer_model=base_sp_model, corpus_dir=tmp_path / "nothing", out_dir=tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_schedule_warms_up_then_decays_to_the_minimum():
    cfg = load_config(StandinConfig, REPO / "configs" / "pretrain" / "standin.yaml")
    lrs = [lr_at(step / cfg.max_steps, cfg, step) for step in range(cfg.max_steps + 1)]
    peak = lrs.index(max(lrs))
    assert peak == cfg.warmup_steps - 1 and max(lrs) == pytest.approx(cfg.learning_rate)
    assert all(a >= b for a, b in zip(lrs[peak:-1], lrs[peak + 1:], strict=True))
    assert lrs[-1] == pytest.approx(cfg.min_learning_rate)
