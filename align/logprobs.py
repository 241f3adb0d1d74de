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
                    padding_side: str = "right", pad_to_multiple_of: int = 1) -> dict[str, Any]:
    """Pad ``(prompt_ids, reply_ids)`` pairs into ``input_ids``, ``attention_mask``, ``position_ids``, ``labels``.

    ``labels`` hold the reply ids and ``-100`` elsewhere; ``position_ids`` count real tokens only, so
    left and right padding give the same positions to the same tokens.

    >>> b = collate_replies([([1, 5], [7, 2]), ([1], [9])], pad_id=0)
    >>> b["input_ids"].tolist(), b["labels"].tolist()
    ([[1, 5, 7, 2], [1, 9, 0, 0]], [[-100, -100, 7, 2], [-100, 9, -100, -100]])
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    lengths = [len(p) + len(r) for p, r in items]
    width = max(lengths)
    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    n = len(items)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    positions = torch.zeros((n, width), dtype=torch.long)
    for i, (prompt, reply) in enumerate(items):
        if not reply:
            raise ValueError(f"item {i}: empty reply (nothing to score)")
        seq = list(prompt) + list(reply)
        start = 0 if padding_side == "right" else width - len(seq)
        sl = slice(start, start + len(seq))
        input_ids[i, sl] = torch.tensor(seq)
        labels[i, start + len(prompt):start + len(seq)] = torch.tensor(list(reply))
        attention[i, sl] = 1
        positions[i, sl] = torch.arange(len(seq))
    return {"input_ids": input_ids, "attention_mask": attention, "position_ids": positions, "labels": labels}


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
