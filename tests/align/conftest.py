"""Fixtures for the align tests: real preference pairs, the chat encoder, tiny real models."""
from __future__ import annotations

from pathlib import Path

import pytest

from align.chat import ChatEncoder
from align.pairs import encode_pairs
from align.prefs import read_pairs


@pytest.fixture(scope="session")
def pref_train_path(data_dir) -> Path:
    return data_dir / "sft" / "pref_train.jsonl"


@pytest.fixture(scope="session")
def tier_a_pairs(pref_train_path):
    pairs, _ = read_pairs(pref_train_path, tiers=("A",))
    return pairs


@pytest.fixture(scope="session")
def base_tokenizer(base_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_tokenizer_dir))


@pytest.fixture(scope="session")
def chat_encoder(base_tokenizer):
    return ChatEncoder(base_tokenizer)


@pytest.fixture(scope="session")
def small_encoded(tier_a_pairs, chat_encoder):
    """8 real tier-A pairs (some multi-turn) as ids, fitted to 64 tokens (turns dropped, replies cut)."""
    multi = [p for p in tier_a_pairs if len(p.prompt) > 1][:3]
    single = [p for p in tier_a_pairs if len(p.prompt) == 1][:5]
    encoded, _ = encode_pairs(multi + single, chat_encoder, max_seq_len=64)
    return encoded


@pytest.fixture()
def moved_lora(tiny_llama_dir):
    """A LoRA model on the tiny Llama whose adapters and trainable embedding/head copies all moved
    away from the base (so "adapter disabled" and "adapter active" really differ)."""
    import torch

    from pretrain.lora import LoraSettings, apply_lora
    from pretrain.model import load_llama

    torch.manual_seed(0)
    model = apply_lora(load_llama(tiny_llama_dir), LoraSettings(r=4))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


@pytest.fixture()
def tiny_model(tiny_llama_dir):
    """A fresh copy of the session's tiny random Llama (eval mode, fp32)."""
    from pretrain.model import load_llama

    return load_llama(tiny_llama_dir).eval()


def make_stopping(model, prompt_ids, eos_id: int = 2, target_eos_prob: float = 0.02):
    """Turn a random tiny Llama into one that ends its reply at EOS ~``target_eos_prob`` of the time.

    A random 32k-vocabulary model samples EOS once in ~32,000 tokens, so no reward about stopping
    could ever be observed. Here every embedding gets a constant offset on dimension 0 (so the final
    hidden state has a positive dimension 0 in every context) and the EOS row of the head points
    along it, scaled until EOS has the target mean probability on the prompts: the habit an SFT
    model has of sometimes stopping. Returns the scale used.
    """
    import torch

    from align.logprobs import collate_replies, model_inputs

    batch = collate_replies([(p[:-1], p[-1:]) for p in prompt_ids], pad_id=0)
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, 0] += 4 * float(emb.std())
        direction = torch.zeros(emb.shape[1])
        direction[0] = 1.0
        for scale in (0.25 * k for k in range(1, 400)):
            model.lm_head.weight[eos_id] = scale * direction
            probs = torch.softmax(model(**model_inputs(batch)).logits[real], -1)[:, eos_id]
            if float(probs.mean()) >= target_eos_prob:
                return scale
    raise AssertionError("could not make EOS likely")


@pytest.fixture(scope="session")
def rl_prompts(tier_a_pairs, chat_encoder):
    """4 real single-turn prompts: (messages, the last 24 ids of their chat prompt)."""
    prompts = [list(p.prompt) for p in tier_a_pairs if len(p.prompt) == 1][:4]
    return prompts, [chat_encoder.prompt_ids(p)[-24:] for p in prompts]


@pytest.fixture(scope="session")
def stopping_llama_dir(tmp_path_factory, tiny_llama_dir, rl_prompts):
    """The tiny Llama after :func:`make_stopping`, saved with its tokenizer (a stand-in chat model)."""
    import shutil

    from pretrain.model import load_llama

    model = load_llama(tiny_llama_dir)
    make_stopping(model, rl_prompts[1])
    out = tmp_path_factory.mktemp("stopping_llama")
    model.save_pretrained(out)
    for f in tiny_llama_dir.iterdir():
        if f.is_file() and f.name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out
