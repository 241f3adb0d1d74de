"""Reply log-probabilities: batches of (prompt, reply) sequences and their summed token log-probs.

Everything the preference losses need from a causal LM is ``log pi(reply | prompt)``: the sum of
the log-probabilities of the reply tokens only. Prompt and padding are excluded by the labels
(``-100`` outside the reply), so changing them cannot change the value::

    batch = collate_replies([(prompt_ids, chosen_ids), (prompt_ids, rejected_ids)], pad_id=0)
    scores = score_replies(model, batch)          # .logps [2], .n_tokens [2]

Invariant: the logit at position ``t`` predicts token ``t + 1``, so the reply's first token is
scored by the logit of the *last prompt position*; nothing else of the prompt enters.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    (0 where the label is ``-100``): minus sft's token NLL, in float32 whatever the model's dtype.
    """
    from sft.loss import token_nll

    return -token_nll(logits, labels), labels[:, 1:] != IGNORE_INDEX


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


@dataclass
class ReplyScores:
    """Per-sequence figures of the reply tokens (``[B]`` each)."""

    logps: Any
    """Sum of the reply tokens' log-probabilities (under ``softmax(logits / temperature)``)."""
    n_tokens: Any
    """Reply tokens."""
    entropy: Any = None
    """Sum of the policy's entropy (nats) at the reply positions, when asked for (no gradient)."""


def unwrap(model: Any, head: str = "lm_head") -> Any:
    """The Hugging Face model (``.model`` transformer + ``head``) inside a DeepSpeed engine and/or a
    peft wrapper; adapters stay active. ``head="score"`` for a reward model."""
    m = getattr(model, "module", model)
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    if not (hasattr(m, "model") and hasattr(m, head)):
        raise TypeError(f"not a model with a transformer and a {head!r} head: {type(m).__name__}")
    return m


def score_replies(model: Any, batch: dict[str, Any], temperature: float = 1.0, entropy: bool = False) -> ReplyScores:
    """Reply log-probs of ``batch`` with the LM head applied only where a reply token is predicted.

    Equal to :func:`reply_logps` of the full logits (tested), but the ``[tokens, vocabulary]``
    logits of prompt and padding positions are never computed: with a 50k vocabulary the head and
    its softmax cost more than a small transformer, and prompts are often longer than replies.
    Works on a plain model, a peft model (adapters active, or disabled by the caller) and a
    DeepSpeed engine (ZeRO-3 gathers the parameters of each submodule it runs).
    """
    import torch

    lm = unwrap(model, "lm_head")
    hidden = lm.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
                      position_ids=batch.get("position_ids"), use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    rows, cols = mask.nonzero(as_tuple=True)
    logp = torch.log_softmax(lm.lm_head(hidden[:, :-1][rows, cols]).float() / temperature, dim=-1)
    picked = logp.gather(1, targets[rows, cols].unsqueeze(1)).squeeze(1)
    n_rows = targets.shape[0]
    sums = torch.zeros(n_rows, dtype=picked.dtype, device=picked.device).index_add(0, rows, picked)
    out = ReplyScores(sums, mask.sum(-1))
    if entropy:
        with torch.no_grad():
            ent = -(logp.exp() * logp).sum(-1)
            out.entropy = torch.zeros(n_rows, dtype=ent.dtype, device=ent.device).index_add(0, rows, ent)
    return out
