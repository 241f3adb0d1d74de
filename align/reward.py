"""Reward model: a scalar head on the chat model, trained on pairs with -log sigmoid(r_chosen - r_rejected).

The model is Hugging Face's ``LlamaForSequenceClassification`` with ``num_labels=1`` (the chat
model's transformer + a ``score`` linear layer), so an exported reward model loads with
``AutoModelForSequenceClassification``. The reward of a sequence is the score at its **last real
token** (the reply's EOS), located from the attention mask, not from ``pad_token_id``: with
``pad == eos`` (common for Llama) Hugging Face's own pooling would skip the final EOS, and left
and right padding must give the same reward::

    model = build_reward_model("artifacts/sft/demo/final")
    batch = pair_batch(encoded, pad_id=0)                      # chosen rows, then rejected rows
    r = reward_scores(model, batch)                            # [2B]
    loss = pairwise_loss(*split_pair_batch(r)).mean()

Metrics (:func:`pairwise_report`): pairwise accuracy, the length baseline ("prefer the longer
reply", ~0.78 on tier A) and the accuracy on the pairs where the chosen reply is the *shorter*
one, which tells whether the model learned more than length.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from zhllama.cli import UserError


def build_reward_model(model_dir: str | Path, pad_token_id: int = 0, **kwargs: Any) -> Any:
    """``LlamaForSequenceClassification`` (``num_labels=1``) from a causal-LM (or reward) directory.

    The transformer weights come from the chat model; the ``score`` head is new (small random
    init) unless ``model_dir`` already is a reward model. ``pad_token_id`` (default ``<unk>``)
    goes into the config so Hugging Face's own pooling agrees with :func:`reward_scores` for
    inputs padded with it.
    """
    import torch
    from transformers import LlamaForSequenceClassification
    from transformers.utils import logging as hf_logging

    from pretrain.model import read_llama_config

    read_llama_config(model_dir)
    kwargs.setdefault("dtype", torch.float32)
    kwargs.setdefault("local_files_only", True)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "score.weight newly initialized" is the point here, not a warning
    try:
        model = LlamaForSequenceClassification.from_pretrained(str(model_dir), num_labels=1, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{model_dir}: cannot load as a Llama reward model: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = pad_token_id
    model.config.use_cache = False
    return model


def last_real_index(attention_mask: Any) -> Any:
    """Index of the last position with ``attention_mask == 1`` in each row (either padding side).

    >>> import torch
    >>> last_real_index(torch.tensor([[1, 1, 0], [0, 1, 1]])).tolist()
    [1, 2]
    """
    import torch

    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def reward_scores(model: Any, batch: dict[str, Any]) -> Any:
    """Scalar reward ``[B]`` of each row of ``batch`` (``input_ids``, ``attention_mask``, ``position_ids``)."""
    import torch

    from align.logprobs import unwrap

    clf = unwrap(model, "score")
    hidden = clf.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       position_ids=batch.get("position_ids")).last_hidden_state
    last = last_real_index(batch["attention_mask"])
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return clf.score(hidden[rows, last]).squeeze(-1).float()


def pairwise_loss(chosen_rewards: Any, rejected_rewards: Any) -> Any:
    """``-log sigmoid(r_chosen - r_rejected)`` per pair (Bradley-Terry), ``[B]``."""
    import torch.nn.functional as F

    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def _prefers(a: Any, b: Any) -> float:
    return 1.0 if a > b else 0.5 if a == b else 0.0


def pairwise_report(chosen_rewards: Any, rejected_rewards: Any, chosen_chars: Any, rejected_chars: Any) -> dict:
    """Accuracy of the rewards next to the length baseline (ties count half).

    >>> rep = pairwise_report([2.0, 0.0, 1.0], [1.0, 1.0, 0.0], [50, 5, 9], [10, 20, 9])
    >>> rep["accuracy"], rep["length_baseline_accuracy"], rep["n_chosen_shorter"], rep["accuracy_chosen_shorter"]
    (0.6667, 0.5, 1, 0.0)
    """
    rc, rr = [float(x) for x in chosen_rewards], [float(x) for x in rejected_rewards]
    lc, lr = [int(x) for x in chosen_chars], [int(x) for x in rejected_chars]
    n = len(rc)
    if not n:
        return {"n_pairs": 0}
    hits = [_prefers(a, b) for a, b in zip(rc, rr, strict=True)]
    length = [_prefers(a, b) for a, b in zip(lc, lr, strict=True)]
    shorter = [i for i in range(n) if lc[i] < lr[i]]
    return {
        "n_pairs": n,
        "accuracy": round(sum(hits) / n, 4),
        "length_baseline_accuracy": round(sum(length) / n, 4),
        "n_chosen_shorter": len(shorter),
        "accuracy_chosen_shorter": round(sum(hits[i] for i in shorter) / len(shorter), 4) if shorter else None,
        "mean_margin": round(sum(a - b for a, b in zip(rc, rr, strict=True)) / n, 4),
    }
