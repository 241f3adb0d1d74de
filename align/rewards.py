"""Reward functions for online RL: a trained reward model, or a rule with a known optimum.

Every scorer is called as ``scorer(prompts, replies, prompt_ids, reply_ids) -> list[float]`` with
``prompts`` the conversations (lists of messages ending with a user turn), ``replies`` the decoded
texts and the ids as sampled (the reply's ids end with EOS unless cut at ``max_new_tokens``).
``reward_range`` is ``max r - min r`` when known (rules), which bounds the KL of the optimal
regularised policy (see :mod:`align.rl`).

- ``rule:han_share``: the share of Chinese (Han) characters among the reply's non-space
  characters, in [0, 1]: "answer in Chinese";
- ``rule:brevity``: ``exp(-reply_tokens / 16)``, in (0, 1]: a length penalty, the counterweight
  to a reward model's taste for long replies, and a reward whose optimum (stop at once) is known;
- a reward-model directory (``python -m align reward`` output), scored at the reply's EOS.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def han_share(text: str) -> float:
    """Share of Han characters among non-space characters (0 for an empty reply).

    >>> han_share("你好 ab"), han_share("")
    (0.5, 0.0)
    """
    chars = [c for c in text if not c.isspace()]
    return sum(1 for c in chars if _HAN.match(c)) / len(chars) if chars else 0.0


def brevity(reply_tokens: int, scale_tokens: float = 16.0) -> float:
    """``exp(-reply_tokens / scale_tokens)``: 1 for an immediate EOS, ~0.37 at 16 tokens.

    >>> round(brevity(1), 3), round(brevity(16), 3)
    (0.939, 0.368)
    """
    return math.exp(-reply_tokens / scale_tokens)


RULES = {
    "han_share": (lambda text, ids: han_share(text), 1.0),
    "brevity": (lambda text, ids: brevity(len(ids)), 1.0),
}
"""``name: ((reply text, reply ids) -> reward, reward range)``."""


class RuleScorer:
    """``rule:NAME`` from :data:`RULES`, applied to each reply's text."""

    def __init__(self, name: str):
        if name not in RULES:
            raise ValueError(f"unknown reward rule {name!r}; known: {sorted(RULES)}")
        self.fn, self.reward_range = RULES[name]

    def __call__(self, prompts: Sequence[list[dict]], replies: Sequence[str], prompt_ids: Any = None,
                 reply_ids: Any = None) -> list[float]:
        ids = reply_ids if reply_ids is not None else [[] for _ in replies]
        return [float(self.fn(text, list(i))) for text, i in zip(replies, ids, strict=True)]


class RewardModelScorer:
    """A reward model directory as a scorer: the ids ``prompt + reply`` as sampled, read at the last token."""

    reward_range = None

    def __init__(self, model_dir: str | Path, pad_id: int, batch_size: int = 8, device: Any = "cpu"):
        from align.reward import build_reward_model

        self.model = build_reward_model(model_dir, pad_token_id=pad_id).to(device).eval()
        self.pad_id, self.batch_size, self.device = pad_id, batch_size, device

    def __call__(self, prompts: Sequence[list[dict]], replies: Sequence[str], prompt_ids: Sequence[Sequence[int]],
                 reply_ids: Sequence[Sequence[int]]) -> list[float]:
        import torch

        from align.logprobs import collate_replies
        from align.reward import reward_scores

        items = list(zip(prompt_ids, reply_ids, strict=True))
        out: list[float] = []
        with torch.no_grad():
            for s in range(0, len(items), self.batch_size):
                batch = collate_replies(items[s:s + self.batch_size], pad_id=self.pad_id)
                out += reward_scores(self.model, {k: v.to(self.device) for k, v in batch.items()}).tolist()
        return out


def make_scorer(spec: str, pad_id: int = 0, device: Any = "cpu") -> Any:
    """``"rule:han_share"`` or a reward-model directory -> a scorer."""
    if spec.startswith("rule:"):
        return RuleScorer(spec[len("rule:"):])
    return RewardModelScorer(spec, pad_id, device=device)
