"""Reply log-probabilities: batches of (prompt, reply) sequences and their summed token log-probs.

Everything the preference losses need from a causal LM is ``log pi(reply | prompt)``: the sum of
the log-probabilities of the reply tokens only. Prompt and padding are excluded by the labels
(``-100`` outside the reply), so changing them cannot change the value::

    batch = collate_replies([(prompt_ids, chosen_ids), (prompt_ids, rejected_ids)], pad_id=0)
    logits = model(**model_inputs(batch)).logits
    logps, n_tokens = reply_logps(logits, batch["labels"])     # [2], [2]

Invariant: the logit at position ``t`` predicts token ``t + 1``, so the reply's first token is
scored by the logit of the *last prompt position*; nothing else of the prompt enters.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

IGNORE_INDEX = -100


def collate_replies(items: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                    padding_side: str = "right") -> dict[str, Any]:
    """Pad ``(prompt_ids, reply_ids)`` pairs into ``input_ids``, ``attention_mask``, ``position_ids``, ``labels``.

    ``labels`` hold the reply ids and ``-100`` elsewhere; ``position_ids`` count real tokens only, so
    left and right padding give the same positions to the same tokens. Right padding is sft's
    :func:`~sft.packing.collate` (one conversation per row); left padding shifts each row right.

    >>> b = collate_replies([([1, 5], [7, 2]), ([1], [9])], pad_id=0)
    >>> b["input_ids"].tolist(), b["labels"].tolist()
    ([[1, 5, 7, 2], [1, 9, 0, 0]], [[-100, -100, 7, 2], [-100, 9, -100, -100]])
    """
    from types import SimpleNamespace

    import numpy as np
    import torch

    from sft.packing import collate, single_rows

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    for i, (_, reply) in enumerate(items):
        if not reply:
            raise ValueError(f"item {i}: empty reply (nothing to score)")
    examples = [SimpleNamespace(input_ids=[*p, *r], labels=[IGNORE_INDEX] * len(p) + list(r)) for p, r in items]
    batch = collate(examples, single_rows(len(examples)), pad_id, packed=False)
    if padding_side == "left":
        width = batch["input_ids"].shape[1]
        for row, ex in enumerate(examples):
            shift = width - len(ex.input_ids)
            for key in batch:
                batch[key][row] = np.roll(batch[key][row], shift)
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    """The keys a Hugging Face causal LM takes (no ``labels``: the loss is ours)."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}


def token_logps(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Per-position log-probability of the next label, and the mask of scored positions.

    Returns ``(logps [B, T-1], mask [B, T-1])`` where ``logps[b, t] = log softmax(logits[b, t])[labels[b, t+1]]``
    (0 where the label is ``-100``). Computed in float32 whatever the model's dtype.
    """
    import torch

    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp_all = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = torch.gather(logp_all, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * mask, mask


def reply_logps(logits: Any, labels: Any) -> tuple[Any, Any]:
    """``(sum of reply-token log-probs [B], reply tokens [B])`` of each sequence.

    >>> import torch
    >>> logits = torch.zeros(1, 3, 4)                 # uniform over 4 tokens
    >>> lp, n = reply_logps(logits, torch.tensor([[-100, 1, 2]]))
    >>> round(float(lp[0]), 4), int(n[0])            # two reply tokens, each log(1/4)
    (-2.7726, 2)
    """
    logps, mask = token_logps(logits, labels)
    return logps.sum(-1), mask.sum(-1)


def token_entropy(logits: Any, labels: Any) -> tuple[Any, Any]:
    """``(sum of the policy's entropy at reply positions [B], reply tokens [B])`` (nats)."""
    import torch

    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    entropy = -(logp.exp() * logp).sum(-1)
    return (entropy * mask).sum(-1), mask.sum(-1)
