"""Direct preference optimisation: the loss on summed reply log-probs of policy and reference.

With ``pi_c``, ``pi_r`` the policy's and ``ref_c``, ``ref_r`` the reference's log-probabilities of
the chosen and rejected replies (each summed over the reply tokens only, see
:mod:`align.logprobs`), and ``h = (pi_c - pi_r) - (ref_c - ref_r)``:

- ``sigmoid`` (Rafailov et al. 2023): ``-log sigmoid(beta * h)``;
- ``ipo`` (Azar et al. 2023): ``(h' - 1 / (2 beta))^2`` with ``h'`` built from log-probs
  *averaged* over each reply's tokens (as trl does), so it does not grow with reply length;
- ``sigmoid_norm`` (length-normalised DPO): the sigmoid loss on the averaged log-probs, the
  length-robust variant: a long reply can no longer win just by having more tokens to push.

The implicit rewards are ``beta * (pi - ref)`` of the same (summed or averaged) log-probs; their
difference is the reward margin. Invariant: policy == reference gives ``h = 0``, so the sigmoid
losses are exactly ``ln 2`` and every reward is 0::

    out = dpo_loss(pc, pr, rc, rr, beta=0.1)
    out.losses.mean(), (out.chosen_rewards - out.rejected_rewards).mean()
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

DpoLossType = Literal["sigmoid", "ipo", "sigmoid_norm"]
LOSS_TYPES: tuple[str, ...] = ("sigmoid", "ipo", "sigmoid_norm")


@dataclass
class DpoOutput:
    """Per-pair tensors ``[B]`` (losses and implicit rewards)."""

    losses: Any
    chosen_rewards: Any
    rejected_rewards: Any

    @property
    def margins(self) -> Any:
        return self.chosen_rewards - self.rejected_rewards


def dpo_loss(policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: float,
             loss_type: DpoLossType = "sigmoid", chosen_tokens: Any = None, rejected_tokens: Any = None,
             label_smoothing: float = 0.0) -> DpoOutput:
    """The DPO loss of each pair from summed reply log-probs (tensors ``[B]``).

    ``chosen_tokens``/``rejected_tokens`` (reply lengths, ``[B]``) are needed by the length-averaged
    variants (``ipo``, ``sigmoid_norm``). ``label_smoothing`` (cDPO) assumes that fraction of labels
    is flipped (sigmoid variants only).

    >>> import torch
    >>> z = torch.zeros(2)
    >>> out = dpo_loss(z, z, z, z, beta=0.1)
    >>> [round(v, 4) for v in out.losses.tolist()], out.margins.tolist()
    ([0.6931, 0.6931], [0.0, 0.0])
    """
    import torch.nn.functional as F

    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if loss_type in ("ipo", "sigmoid_norm"):
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError(f"loss_type {loss_type!r} needs chosen_tokens and rejected_tokens")
        policy_chosen, ref_chosen = policy_chosen / chosen_tokens, ref_chosen / chosen_tokens
        policy_rejected, ref_rejected = policy_rejected / rejected_tokens, ref_rejected / rejected_tokens
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    if loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        losses = -F.logsigmoid(beta * h) * (1.0 - label_smoothing) - F.logsigmoid(-beta * h) * label_smoothing
    chosen_rewards = beta * (policy_chosen - ref_chosen).detach()
    rejected_rewards = beta * (policy_rejected - ref_rejected).detach()
    return DpoOutput(losses, chosen_rewards, rejected_rewards)


TIE_NATS = 1e-4
"""Margins within this many nats are ties: a sum of a few hundred fp32 log-probs computed in two
batches of different padding differs by ~1e-5, which must not decide a preference."""


def preference_hits(margins: Any, tie: float = TIE_NATS) -> Any:
    """1 per pair ranked right (margin > tie), 0.5 per tie (|margin| <= tie), 0 otherwise.

    >>> import torch
    >>> preference_hits(torch.tensor([0.3, 1e-6, -2.0])).tolist()
    [1.0, 0.5, 0.0]
    """
    return (margins > tie).double() + 0.5 * (margins.abs() <= tie).double()


def implicit_reward_accuracy(policy_chosen: Any, policy_rejected: Any, ref_chosen: Any, ref_rejected: Any) -> float:
    """Share of pairs whose implicit DPO reward ranks chosen above rejected (ties count half).

    The implicit reward ``beta * (log pi - log ref)`` orders pairs the same for any ``beta > 0``.
    """
    h = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
    return float(preference_hits(h).mean()) if len(h) else float("nan")


def split_pair_batch(values: Any) -> tuple[Any, Any]:
    """A batch laid out ``[chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}]`` -> ``(chosen, rejected)``.

    One forward pass over both halves (see :func:`align.pairs.pair_batch`) keeps the policy's
    dropout and batch statistics identical for the two sides.
    """
    half = values.shape[0] // 2
    if values.shape[0] != 2 * half:
        raise ValueError(f"a pair batch has an even number of rows, got {values.shape[0]}")
    return values[:half], values[half:]
