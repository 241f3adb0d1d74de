"""DPO: reply-only log-probs, the losses against an independent numpy derivation, sanity identities."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from align.dpo import dpo_loss, implicit_reward_accuracy, split_pair_batch
from align.logprobs import collate_replies, model_inputs, reply_logps
from align.pairs import pair_batch
from align.refcache import pair_logps


def _np_log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def _np_dpo(pc, pr, rc, rr, beta, loss_type, lc, lr, ls=0.0):
    """The published formulas (DPO, cDPO smoothing, IPO with length-averaged log-probs), by hand."""
    if loss_type in ("ipo", "sigmoid_norm"):
        pc, rc, pr, rr = pc / lc, rc / lc, pr / lr, rr / lr
    h = (pc - pr) - (rc - rr)
    if loss_type == "ipo":
        loss = (h - 1 / (2 * beta)) ** 2
    else:
        loss = -_np_log_sigmoid(beta * h) * (1 - ls) - _np_log_sigmoid(-beta * h) * ls
    return loss, beta * (pc - rc), beta * (pr - rr)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "sigmoid_norm"])
@pytest.mark.parametrize("beta,smoothing", [(0.1, 0.0), (0.5, 0.0), (0.1, 0.2)])
def test_losses_and_margins_match_an_independent_derivation(loss_type, beta, smoothing):
    if loss_type == "ipo" and smoothing:
        pytest.skip("label smoothing is defined for the sigmoid losses")
    rng = np.random.default_rng(3)
    n = 16
    pc, pr, rc, rr = (rng.normal(-60, 20, n) for _ in range(4))
    lc, lr = rng.integers(1, 80, n).astype(float), rng.integers(1, 80, n).astype(float)
    want_loss, want_c, want_r = _np_dpo(pc, pr, rc, rr, beta, loss_type, lc, lr, smoothing)
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    out = dpo_loss(t(pc), t(pr), t(rc), t(rr), beta, loss_type, t(lc), t(lr), label_smoothing=smoothing)
    np.testing.assert_allclose(out.losses.numpy(), want_loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.margins.numpy(), want_c - want_r, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out.chosen_rewards.numpy(), want_c, rtol=1e-10, atol=1e-12)


def test_reply_logps_match_a_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 6, 11))
    labels = np.array([[-100, -100, 3, 4, 5, -100], [-100, 7, 1, -100, -100, -100]])
    want = []
    for b in range(2):
        total = 0.0
        for t in range(1, 6):
            if labels[b, t] != -100:
                row = logits[b, t - 1]
                total += row[labels[b, t]] - (np.log(np.exp(row - row.max()).sum()) + row.max())
        want.append(total)
    got, n = reply_logps(torch.tensor(logits), torch.tensor(labels))
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    assert n.tolist() == [3, 2]


def test_prompt_and_padding_do_not_enter_the_value(small_encoded, tiny_model):
    """Perturbing everything but the reply's predicting logits, or the pad/prompt ids, changes nothing."""
    items = [(p.prompt_ids, p.chosen_ids) for p in small_encoded[:4]]
    batch = collate_replies(items, pad_id=0)
    with torch.no_grad():
        logits = tiny_model(**model_inputs(batch)).logits
    base, _ = reply_logps(logits, batch["labels"])
    # 1. Logits at prompt positions (except the last, which predicts the first reply token) and at padding.
    noisy = logits.clone()
    for i, (prompt, reply) in enumerate(items):
        noisy[i, : len(prompt) - 1] += torch.randn_like(noisy[i, : len(prompt) - 1]) * 5
        noisy[i, len(prompt) + len(reply) - 1:] += 7.0  # the last token's logits predict padding
    assert torch.equal(reply_logps(noisy, batch["labels"])[0], base)
    # 2. The model itself: another pad id, and left instead of right padding.
    for pad_id, side in ((2, "right"), (0, "left"), (31999, "left")):
        other = collate_replies(items, pad_id=pad_id, padding_side=side)
        with torch.no_grad():
            got, _ = reply_logps(tiny_model(**model_inputs(other)).logits, other["labels"])
        torch.testing.assert_close(got, base, rtol=1e-5, atol=1e-4)
    # 3. The logit that predicts the first reply token does count (the test can fail).
    moved = logits.clone()
    moved[0, len(items[0][0]) - 1] += torch.randn_like(moved[0, 0]) * 5
    assert not torch.equal(reply_logps(moved, batch["labels"])[0][0], base[0])


def test_chosen_and_rejected_share_identical_prompt_ids(small_encoded):
    batch = pair_batch(small_encoded, pad_id=0)
    n = len(small_encoded)
    for i, p in enumerate(small_encoded):
        k = len(p.prompt_ids)
        assert torch.equal(batch["input_ids"][i, :k], batch["input_ids"][n + i, :k])
        assert (batch["labels"][i, :k] == -100).all() and (batch["labels"][n + i, :k] == -100).all()
        assert batch["labels"][i, k:k + len(p.chosen_ids)].tolist() == list(p.chosen_ids)
        assert batch["labels"][n + i, k:k + len(p.rejected_ids)].tolist() == list(p.rejected_ids)


def test_policy_equal_to_reference_gives_ln2_and_zero_rewards(small_encoded, tiny_model):
    batch = pair_batch(small_encoded, pad_id=0)
    with torch.no_grad():
        pc, pr = pair_logps(tiny_model, batch)
        # The "reference" is the same weights, evaluated in a separate pass with another padding.
        rc, rr = pair_logps(tiny_model, pair_batch(small_encoded, pad_id=0, padding_side="left"))
    for loss_type in ("sigmoid", "sigmoid_norm"):
        lengths = torch.tensor([len(p.chosen_ids) for p in small_encoded], dtype=torch.float32)
        out = dpo_loss(pc, pr, rc, rr, 0.1, loss_type, lengths, lengths)
        torch.testing.assert_close(out.losses, torch.full_like(out.losses, math.log(2)), rtol=0, atol=1e-5)
        assert out.chosen_rewards.abs().max() < 1e-5 and out.rejected_rewards.abs().max() < 1e-5


def test_the_loss_decreases_with_a_gradient_step_and_the_accuracy_rises(small_encoded, tiny_model):
    """Gradients flow through the policy's reply log-probs only (the reference is a constant)."""
    batch = pair_batch(small_encoded[:4], pad_id=0)
    with torch.no_grad():
        rc, rr = pair_logps(tiny_model, batch)
    opt = torch.optim.Adam(tiny_model.parameters(), lr=3e-3)
    tiny_model.train()
    losses = []
    for _ in range(3):
        pc, pr = pair_logps(tiny_model, batch)
        loss = dpo_loss(pc, pr, rc, rr, beta=0.5).losses.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.05
    with torch.no_grad():
        pc, pr = pair_logps(tiny_model, batch)
    assert implicit_reward_accuracy(pc, pr, rc, rr) > 0.5


def test_split_pair_batch_layout():
    c, r = split_pair_batch(torch.arange(6))
    assert c.tolist() == [0, 1, 2] and r.tolist() == [3, 4, 5]
    with pytest.raises(ValueError):
        split_pair_batch(torch.arange(5))
    with pytest.raises(ValueError, match="needs chosen_tokens"):
        dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), 0.1, "ipo")


def test_head_on_reply_positions_only_equals_the_full_logits(small_encoded, tiny_llama_dir, moved_lora):
    """score_replies (LM head only where a reply token is predicted) == reply_logps of the full logits,
    for a plain model and a LoRA model, tempered, with the entropy of the same distribution."""
    from align.logprobs import score_replies
    from pretrain.model import load_llama

    batch = pair_batch(small_encoded[:3], pad_id=0)
    for model in (load_llama(tiny_llama_dir), moved_lora):
        with torch.no_grad():
            logits = model(**model_inputs(batch)).logits / 0.7
            got = score_replies(model, batch, temperature=0.7, entropy=True)
        want, n = reply_logps(logits, batch["labels"])
        torch.testing.assert_close(got.logps, want, rtol=1e-5, atol=1e-4)
        assert torch.equal(got.n_tokens, n)
        logp = torch.log_softmax(logits[:, :-1], -1)
        mask = batch["labels"][:, 1:] != -100
        torch.testing.assert_close(got.entropy, (-(logp.exp() * logp).sum(-1) * mask).sum(-1), rtol=1e-5, atol=1e-3)
