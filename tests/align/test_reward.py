"""Reward model: HF sequence-classification conventions, last-real-token reading, pairwise metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from align.dpo import split_pair_batch
from align.logprobs import collate_replies
from align.pairs import pair_batch
from align.reward import build_reward_model, pairwise_loss, pairwise_report, reward_scores


@pytest.fixture(scope="module")
def reward_model(tiny_llama_dir):
    torch.manual_seed(0)
    return build_reward_model(tiny_llama_dir).eval()


def test_reward_is_read_at_the_last_real_token_whatever_the_padding(reward_model, small_encoded):
    """pad == eos (2): the sequences end with EOS, which must still be read; left == right == unpadded."""
    items = [(p.prompt_ids, p.chosen_ids) for p in small_encoded[:4]]
    assert any(r[-1] == 2 for _, r in items)  # uncut replies end with EOS == the pad id here
    with torch.no_grad():
        right = reward_scores(reward_model, collate_replies(items, pad_id=2, padding_side="right"))
        left = reward_scores(reward_model, collate_replies(items, pad_id=2, padding_side="left"))
        alone = torch.cat([reward_scores(reward_model, collate_replies([it], pad_id=2)) for it in items])
    torch.testing.assert_close(right, alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(left, alone, rtol=1e-5, atol=1e-5)
    # Reading one token earlier (what pad-id pooling does when pad == eos) gives other rewards.
    with torch.no_grad():
        shorter = torch.cat([reward_scores(reward_model, collate_replies([(p, r[:-1])], pad_id=2)) for p, r in items])
    assert not torch.allclose(shorter, alone, atol=1e-4)


def test_exported_reward_model_loads_with_auto_class_and_scores_the_same(reward_model, small_encoded, tmp_path):
    from transformers import AutoModelForSequenceClassification

    reward_model.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(again).__name__ == "LlamaForSequenceClassification" and again.config.num_labels == 1
    # Padded with the config's pad id (<unk>, never in the text), HF's own pooling reads the same token.
    batch = collate_replies([(p.prompt_ids, p.chosen_ids) for p in small_encoded[:3]], pad_id=again.config.pad_token_id)
    with torch.no_grad():
        ours = reward_scores(again, batch)
        hf = again(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    torch.testing.assert_close(ours, hf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, reward_scores(reward_model, batch), rtol=1e-6, atol=1e-6)


def test_pairwise_loss_and_a_few_steps_learn_the_training_pairs(tiny_llama_dir, small_encoded):
    torch.manual_seed(0)
    model = build_reward_model(tiny_llama_dir)
    batch = pair_batch(small_encoded[:4], pad_id=0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(4):
        rc, rr = split_pair_batch(reward_scores(model, batch))
        loss = pairwise_loss(rc, rr).mean()
        want = np.mean([np.logaddexp(0.0, -(a - b)) for a, b in zip(rc.tolist(), rr.tolist(), strict=True)])
        assert float(loss.detach()) == pytest.approx(want, rel=1e-5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_report_has_the_length_baseline_and_the_chosen_shorter_slice(tier_a_pairs):
    lc = [len(p.chosen.strip()) for p in tier_a_pairs]
    lr = [len(p.rejected.strip()) for p in tier_a_pairs]
    # A reward equal to the reply length *is* the length baseline, and wins no chosen-shorter pair.
    rep = pairwise_report(lc, lr, lc, lr)
    assert rep["accuracy"] == rep["length_baseline_accuracy"]
    assert rep["accuracy_chosen_shorter"] == 0.0
    # The data property the issue warns about: "prefers longer" is right on ~77-78% of tier-A pairs.
    assert 0.74 < rep["length_baseline_accuracy"] < 0.82
    assert rep["n_chosen_shorter"] == sum(a < b for a, b in zip(lc, lr, strict=True)) > 50
    # The opposite scorer is right exactly on the pairs where the chosen reply is shorter.
    flipped = pairwise_report([-x for x in lc], [-x for x in lr], lc, lr)
    assert flipped["accuracy_chosen_shorter"] == 1.0


def test_lora_reward_model_trains_adapters_and_the_score_head_and_merges(tiny_llama_dir, small_encoded):
    from align.train_reward import RewardConfig, reward_model_for
    from zhllama.config import load_config

    cfg = load_config(RewardConfig, None, {"model_dir": str(tiny_llama_dir), "mode": "lora", "lora": {"r": 4}})
    model = reward_model_for(cfg, None, pad_id=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("score" in n for n in trainable)
    assert not any("layers.0.mlp.up_proj.base_layer" in n for n in trainable)  # the base stays frozen
    batch = pair_batch(small_encoded[:2], pad_id=0)
    rc, rr = split_pair_batch(reward_scores(model, batch))
    pairwise_loss(rc, rr).mean().backward()
    with torch.no_grad():
        before = reward_scores(model, batch)
    merged = model.merge_and_unload()
    assert type(merged).__name__ == "LlamaForSequenceClassification"
    with torch.no_grad():
        torch.testing.assert_close(reward_scores(merged, batch), before, rtol=1e-5, atol=1e-5)
