"""Online RL (RLOO): the leave-one-out baseline, seeded sampling, and a known reward that rises
while the KL to the reference stays under the bound of the KL-regularised optimum."""
from __future__ import annotations

import numpy as np
import torch

from align.rewards import RuleScorer
from align.rl import kl_bound, make_rollouts, reference_scorer, rloo_advantages, rollout_loss, sample_replies
from pretrain.model import load_llama


def test_rloo_advantage_is_reward_minus_mean_of_the_others():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(3, 5))
    want = np.array([[r[i] - np.delete(r, i).mean() for i in range(5)] for r in rewards])
    got = rloo_advantages(torch.tensor(rewards)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(got.sum(-1), 0.0, atol=1e-12)  # a group's advantages sum to zero


def test_sampling_is_a_function_of_the_seed_and_stops_at_eos(stopping_llama_dir, rl_prompts):
    model = load_llama(stopping_llama_dir)
    _, ids = rl_prompts
    a = sample_replies(model, ids[:2], 3, max_new_tokens=12, eos_id=2, pad_id=0, seed=5)
    b = sample_replies(model, ids[:2], 3, max_new_tokens=12, eos_id=2, pad_id=0, seed=5)
    c = sample_replies(model, ids[:2], 3, max_new_tokens=12, eos_id=2, pad_id=0, seed=6)
    assert a == b and a != c and len(a) == 6
    assert all(1 <= len(r) <= 12 and (2 not in r[:-1]) for r in a)  # nothing after the first EOS
    assert any(r[-1] == 2 for r in a + c)


def test_known_reward_rises_while_kl_stays_under_its_bound(stopping_llama_dir, base_tokenizer, rl_prompts):
    torch.manual_seed(0)
    policy = load_llama(stopping_llama_dir)
    reference = load_llama(stopping_llama_dir).eval()
    scorer = RuleScorer("brevity")  # exp(-tokens/16): the optimum stops at once
    kl_coef = 0.1
    bound = kl_bound(scorer.reward_range, kl_coef)
    opt = torch.optim.Adam(policy.parameters(), lr=5e-4)
    prompts, ids = rl_prompts
    history = []
    for step in range(4):
        rollouts = make_rollouts(
            policy, reference_scorer(reference), scorer, prompts[:2], ids[:2],
            lambda r: base_tokenizer.decode(r, skip_special_tokens=True), samples_per_prompt=4,
            max_new_tokens=16, kl_coef=kl_coef, eos_id=2, pad_id=0, seed=step)
        policy.train()
        loss_sum, n, sums = rollout_loss(policy, rollouts.batch)
        opt.zero_grad()
        (loss_sum / n).backward()
        opt.step()
        history.append({**rollouts.stats, "entropy": float(sums["entropy"]) / n})
    assert history[0]["kl"] == 0.0 or abs(history[0]["kl"]) < 1e-4  # the policy starts as the reference
    assert history[-1]["reward"] > history[0]["reward"] + 0.15
    assert history[-1]["reply_tokens"] < history[0]["reply_tokens"]
    assert all(h["kl"] <= bound for h in history)
    assert all(np.isfinite(h["entropy"]) and h["entropy"] >= 0 for h in history)
