"""Packing: bins respect capacity and lose nothing; per-conversation loss packed == alone (real tiny Llama)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sft.chat_format import IGNORE_INDEX, HFTextEncoder, TooLongError, encode_dialog
from sft.loss import forward_logits, nll_sum, supervised_count, token_nll
from sft.packing import collate, pack_rows, padding_efficiency, single_rows, to_torch


def test_best_fit_decreasing_loses_nothing_and_respects_capacity():
    rng = random.Random(0)
    lengths = [rng.randint(1, 100) for _ in range(500)]
    rows = pack_rows(lengths, 128)
    assert sorted(i for r in rows for i in r) == list(range(500))
    assert all(sum(lengths[i] for i in r) <= 128 for r in rows)
    # Near the lower bound: at most one row is at most half full (else two could merge).
    assert sum(1 for r in rows if sum(lengths[i] for i in r) <= 64) <= 1
    assert len(rows) < len(lengths) / 2
    with pytest.raises(ValueError, match="longer than the row capacity"):
        pack_rows([10, 200], 128)


class _Ex:
    def __init__(self, ids, labels):
        self.input_ids, self.labels = ids, labels


def test_collate_restarts_positions_and_masks_padding():
    a, b = _Ex([1, 5, 6], [IGNORE_INDEX, 5, 6]), _Ex([1, 7], [IGNORE_INDEX, 7])
    packed = collate([a, b], [[0, 1], [1]], pad_id=0, packed=True)
    assert packed["input_ids"].tolist() == [[1, 5, 6, 1, 7], [1, 7, 0, 0, 0]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert packed["labels"][1].tolist() == [IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]
    assert "attention_mask" not in packed
    padded = collate([a, b], [[0], [1]], pad_id=0, packed=False)
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    # 5, 6, 7 in the packed row and 7 alone: a conversation's first token is never a target.
    assert int(supervised_count(torch.from_numpy(packed["labels"]))) == 4
    assert padding_efficiency([a, b], [[0], [1]], micro_batch_size=2) == 5 / 6


@pytest.fixture(scope="module")
def examples(base_tokenizer_dir, random_dialogs):
    from transformers import AutoTokenizer

    enc = HFTextEncoder(AutoTokenizer.from_pretrained(str(base_tokenizer_dir)))
    out = []
    for d in random_dialogs(40, seed=11):
        try:
            out.append(encode_dialog(d, enc, max_seq_len=120))
        except TooLongError:
            continue
    return out[:16]


def _per_example_nll(model, exs, rows, packed):
    """Summed NLL of each example, computed from the rows it sits in."""
    batch = to_torch(collate(exs, rows, pad_id=0, packed=packed), "cpu")
    with torch.no_grad():
        nll = token_nll(forward_logits(model, batch), batch["labels"])
    out = {}
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = len(exs[i].input_ids)
            # Position j predicts token j+1: example i's targets are positions [start, start+n-1).
            out[i] = float(nll[r, start:start + n - 1].sum())
            start += n
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_per_conversation_loss_is_the_same_packed_or_alone(tiny_llama_dir, examples, attn):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(tiny_llama_dir), attn_implementation=attn).eval()
    rows = pack_rows([len(e.input_ids) for e in examples], 256)
    assert any(len(r) >= 3 for r in rows)  # several conversations really share a row
    packed = _per_example_nll(model, examples, rows, packed=True)
    alone = _per_example_nll(model, examples, single_rows(len(examples)), packed=False)
    for i in range(len(examples)):
        assert packed[i] == pytest.approx(alone[i], rel=1e-4, abs=1e-4)
    # Without restarting positions (one long sequence) the loss differs: the test can fail.
    batch = to_torch(collate(examples, rows, pad_id=0, packed=True), "cpu")
    batch["position_ids"] = torch.arange(batch["input_ids"].shape[1]).expand_as(batch["input_ids"])
    with torch.no_grad():
        leaky = token_nll(forward_logits(model, batch), batch["labels"]).sum()
    assert abs(float(leaky) - sum(packed.values())) > 1e-2


def test_batch_loss_sum_and_count_are_the_same_packed_or_padded(tiny_llama_dir, examples):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    rows = pack_rows([len(e.input_ids) for e in examples], 256)
    with torch.no_grad():
        s_packed, n_packed = nll_sum(model, to_torch(collate(examples, rows, 0, packed=True), "cpu"))
        s_padded, n_padded = nll_sum(model, to_torch(collate(examples, single_rows(len(examples)), 0, packed=False), "cpu"))
    assert int(n_packed) == int(n_padded) == sum(e.n_labels for e in examples)
    assert float(s_packed) == pytest.approx(float(s_padded), rel=1e-5)
    assert np.isfinite(float(s_packed))
