"""The supervised loss: summed token NLL over labelled positions, and its unit count.

The training step's loss is ``sum of token NLL / number of supervised tokens`` over *all*
micro-batches of all ranks (the engine divides by the global count), so this module returns sums,
never means: a micro-batch with 3 supervised tokens must weigh 3/N of the step, not 1/accum.
The sum is the engine's :func:`pretrain.engine.causal_lm_loss_sum` (one loss for every stage)::

    loss_sum, n_tokens = nll_sum(model, batch)     # batch from sft.packing.collate(...)
    loss_sum / n_tokens                           # the mean NLL per supervised token of this batch

:func:`token_nll` gives the per-position NLL (per-conversation figures, tests).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from sft.chat_format import IGNORE_INDEX

MODEL_INPUTS = ("input_ids", "position_ids", "attention_mask")


def supervised_count(labels: torch.Tensor) -> torch.Tensor:
    """Tokens that carry a loss: labels at positions >= 1 that are not ignored (the model shifts)."""
    return (labels[..., 1:] != IGNORE_INDEX).sum()


def nll_sum(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(summed NLL over supervised tokens, number of supervised tokens)`` of one micro-batch.

    ``model`` is any callable taking the batch as keywords (a model, ``engine.forward``). The KV
    cache is off: with a cache, transformers skips reading conversation boundaries from the
    position ids, and packed conversations would attend to each other.
    """
    from pretrain.engine import causal_lm_loss_sum

    return causal_lm_loss_sum(model, {**batch, "use_cache": False}), supervised_count(batch["labels"])


def forward_logits(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits of ``model`` on the model inputs of ``batch`` (labels not passed)."""
    return model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, use_cache=False).logits


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B, T-1]`` NLL of ``labels[:, 1:]`` under ``logits[:, :-1]`` (fp32), 0 at ignored positions."""
    targets = labels[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets.clamp_min(0), reduction="none")
    return nll * (targets != IGNORE_INDEX)
