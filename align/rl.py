"""Online RL with a group baseline (RLOO): sample, score, penalise KL to the reference, update.

One step, for a batch of prompts::

    replies = sample_replies(policy, prompts, k)             # k samples per prompt, current policy
    r       = reward_fn(prompts, replies)                    # reward model or a rule, [P, k]
    kl      = sum over reply tokens of log pi(y_t) - log ref(y_t)       # per sample, no grad
    R       = r - kl_coef * kl                               # KL-penalised reward
    A_i     = R_i - mean_{j != i} R_j                        # leave-one-out baseline of the group
    loss    = -sum_i A_i * log pi(y_i)                       # REINFORCE with that baseline

Why RLOO (Ahmadian et al. 2024, "Back to Basics") rather than PPO: no value model (PPO's critic is
a second copy of the network to train, the most fragile part of the recipe, and on a small model
a poorly fitted critic is worse than an empirical baseline), one on-policy update per batch (no
importance ratios to clip), and the leave-one-out mean of the other samples of the *same* prompt
is an unbiased, prompt-specific baseline. The KL term keeps the policy near the reference: the
optimum of ``E[r] - kl_coef * KL`` is ``pi_ref * exp(r / kl_coef) / Z``, whose KL is at most
``(max r - min r) / kl_coef``: that is the bound the tests check.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


def rloo_advantages(rewards: Any) -> Any:
    """Leave-one-out advantages of ``rewards [P, k]`` (k samples per prompt, k >= 2).

    ``A[p, i] = R[p, i] - mean_{j != i} R[p, j] = k / (k - 1) * (R[p, i] - mean_j R[p, j])``.

    >>> import torch
    >>> rloo_advantages(torch.tensor([[1.0, 0.0, 0.0]])).tolist()
    [[1.0, -0.5, -0.5]]
    """
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError("RLOO needs at least 2 samples per prompt")
    total = rewards.sum(-1, keepdim=True)
    return rewards - (total - rewards) / (k - 1)


def kl_bound(reward_range: float, kl_coef: float) -> float:
    """KL of the optimal KL-regularised policy is at most ``reward_range / kl_coef`` (nats per reply)."""
    return reward_range / kl_coef


def sample_replies(model: Any, prompts: Sequence[Sequence[int]], samples_per_prompt: int, max_new_tokens: int,
                   eos_id: int, pad_id: int, temperature: float = 1.0, seed: int = 0,
                   synced_gpus: bool = False) -> list[list[int]]:
    """``samples_per_prompt`` sampled replies per prompt (ids, ending at the first EOS, EOS included).

    Rows are ordered prompt-major: ``[p0 s0, p0 s1, ..., p1 s0, ...]``. The draw is a pure function
    of ``seed`` and the weights (the global RNG is forked and seeded), so a resumed run samples
    what the uninterrupted one did. ``synced_gpus`` is needed under ZeRO-3 (every rank runs the
    same number of forward passes).
    """
    import torch

    from align.logprobs import collate_replies

    rows = [list(p) for p in prompts for _ in range(samples_per_prompt)]
    # Left padding: every prompt ends at the same column, where generation starts.
    batch = collate_replies([(r[:-1], r[-1:]) for r in rows], pad_id=pad_id, padding_side="left")
    inner = getattr(model, "module", model)
    device = next(inner.parameters()).device
    was_training = inner.training
    inner.eval()
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        out = inner.generate(
            input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
            do_sample=True, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
            eos_token_id=eos_id, pad_token_id=pad_id, use_cache=True, synced_gpus=synced_gpus,
        )
    inner.train(was_training)
    width = batch["input_ids"].shape[1]
    replies = []
    for row in out[:, width:].tolist():
        reply = row[:row.index(eos_id) + 1] if eos_id in row else row
        replies.append(reply)
    return replies


def policy_gradient_loss(logps: Any, advantages: Any) -> Any:
    """``-A_i * log pi(y_i)`` per sample (the advantage is a constant: no gradient through it)."""
    return -(advantages.detach() * logps)


@dataclass
class Rollouts:
    """A batch of sampled replies, ready for :func:`rollout_loss` (rows prompt-major, ``k`` per prompt).

    ``batch`` holds the model inputs (``collate_replies`` of ``(prompt_ids, reply_ids)``) and, per
    sample (``[N]``): ``advantages`` (RLOO, of the KL-penalised reward), ``reward``, ``kl`` (nats,
    summed over the reply), ``reply_tokens``, ``stopped`` (1 if the reply ended with EOS).
    """

    batch: dict[str, Any]
    temperature: float = 1.0
    """The sampling temperature: the policy is ``softmax(logits / temperature)``."""

    @property
    def stats(self) -> dict[str, float]:
        """Means over the samples."""
        return {k: float(self.batch[k].double().mean()) for k in ROLLOUT_STATS}


ROLLOUT_STATS = ("reward", "kl", "reply_tokens", "stopped")


def make_rollouts(policy: Any, reference_logps: Callable[[dict, float], Any], scorer: Any, prompts: Sequence[list[dict]],
                  prompt_ids: Sequence[Sequence[int]], decode: Callable[[list[int]], str], *,
                  samples_per_prompt: int, max_new_tokens: int, kl_coef: float, eos_id: int, pad_id: int,
                  temperature: float = 1.0, seed: int = 0, synced_gpus: bool = False) -> Rollouts:
    """Sample ``samples_per_prompt`` replies per prompt with ``policy``, score them, compute advantages.

    ``reference_logps(batch, temperature)`` gives the reference's summed reply log-probs (a frozen
    model, or the LoRA policy with its adapter disabled; see :func:`reference_scorer`). The policy
    is the *sampling* distribution, ``softmax(logits / T)``, and the reference is tempered alike,
    so the KL, the loss and the samples agree. The KL of a
    sample is the k1 estimate ``log pi(y) - log ref(y)`` summed over its reply tokens (unbiased
    for the sequence KL).
    """
    import torch

    from align.logprobs import collate_replies, score_replies

    replies = sample_replies(policy, prompt_ids, samples_per_prompt, max_new_tokens, eos_id, pad_id,
                             temperature, seed, synced_gpus)
    rows_prompt_ids = [list(p) for p in prompt_ids for _ in range(samples_per_prompt)]
    rows_prompts = [list(p) for p in prompts for _ in range(samples_per_prompt)]
    batch = collate_replies(list(zip(rows_prompt_ids, replies, strict=True)), pad_id=pad_id)
    inner = getattr(policy, "module", policy)
    device = next(inner.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items()}
    with torch.no_grad():
        mine = score_replies(policy, inputs, temperature)
        policy_logps, n_tokens = mine.logps, mine.n_tokens
        ref_logps = reference_logps(inputs, temperature)
    kl = (policy_logps - ref_logps).double().cpu()
    rewards = torch.tensor(scorer(rows_prompts, [decode(r) for r in replies], rows_prompt_ids, replies),
                           dtype=torch.float64)
    advantages = rloo_advantages((rewards - kl_coef * kl).view(-1, samples_per_prompt)).view(-1)
    batch.update(advantages=advantages.float(), reward=rewards, kl=kl, reply_tokens=n_tokens.cpu(),
                 stopped=torch.tensor([float(bool(r) and r[-1] == eos_id) for r in replies]))
    return Rollouts(batch, temperature)


def rollout_loss(policy: Any, batch: dict[str, Any], temperature: float = 1.0) -> tuple[Any, int, dict]:
    """``(sum over samples of -A * log pi(y), n_samples, sums of the per-sample figures)`` of ``policy``
    (a model or a DeepSpeed engine).

    The figures (``reward``, ``kl``, ``reply_tokens``, ``stopped``, ``entropy``: mean nats per reply
    token of each sample) are *sums* over the samples, as the engine expects; divide by
    ``n_samples`` for means.
    """
    from align.logprobs import score_replies

    scores = score_replies(policy, batch, temperature, entropy=True)
    loss_sum = policy_gradient_loss(scores.logps, batch["advantages"]).sum()
    figures = {k: batch[k].double().sum() for k in ROLLOUT_STATS}
    figures["entropy"] = (scores.entropy.double() / scores.n_tokens.clamp(min=1)).sum()
    return loss_sum, len(scores.logps), figures


def reference_scorer(reference: Any = None, policy: Any = None) -> Callable[[dict, float], Any]:
    """``batch, temperature -> summed reply log-probs`` of a frozen ``reference`` model, or (LoRA)
    of ``policy`` with its adapter disabled; no gradient either way."""
    import torch

    from align.logprobs import score_replies
    from align.refcache import adapter_disabled

    def logps(batch: dict, temperature: float) -> Any:
        with torch.no_grad():
            if reference is not None:
                return score_replies(reference, batch, temperature).logps
            with adapter_disabled(policy):
                return score_replies(policy, batch, temperature).logps

    return logps
