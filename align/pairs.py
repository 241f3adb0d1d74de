"""Preference pairs as token ids: one prompt, two replies, fitted to ``max_seq_len``.

Chosen and rejected share the *same* prompt ids by construction (the prompt is encoded once and
each reply's ids are what the reply adds after it), so their log-probabilities differ only by the
replies. Fitting a pair to ``max_seq_len`` tokens, in order:

1. whole older turns of the prompt are dropped, oldest first (the system message and the last
   user turn stay), as SFT's turn-aware truncation does;
2. if the longer reply still does not fit, both replies are cut to the room left (keep their
   beginnings; the cut reply loses its EOS) and the pair is counted as ``replies_truncated``.
   Dropping such pairs instead would remove mostly long *chosen* replies and bias the data
   toward the length cue (the chosen reply is the longer one in 77% of tier-A pairs);
3. a pair whose last user turn alone leaves fewer than ``min_reply_tokens`` is rejected
   (``prompt_too_long``), and one whose two replies become identical after the cut is rejected
   (``identical_after_truncation``).

::

    encoded, stats = encode_pairs(pairs, ChatEncoder(tokenizer), max_seq_len=512)  # align.chat.ChatEncoder
    batch = pair_batch(encoded[:4], pad_id=0)    # rows: 4 chosen, then the 4 rejected
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from align.prefs import PrefPair


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of one pair; ``prompt_ids + chosen_ids`` is the chosen conversation's id sequence."""

    pair_id: str
    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    chosen_chars: int
    """Characters of the chosen reply text (before any cut): the length baseline's measure."""
    rejected_chars: int


@dataclass
class EncodeStats:
    """What fitting did: ``pairs_in == len(encoded) + sum(rejected.values())``."""

    pairs_in: int = 0
    turns_dropped: int = 0
    replies_truncated: int = 0
    rejected: Counter = field(default_factory=Counter)
    rejected_ids: list[tuple[str, str]] = field(default_factory=list)
    """``(pair_id, reason)`` of every pair rejected while fitting."""

    def reject(self, pair_id: str, reason: str) -> None:
        self.rejected[reason] += 1
        self.rejected_ids.append((pair_id, reason))

    def to_dict(self) -> dict:
        return {"pairs_in": self.pairs_in, "turns_dropped": self.turns_dropped,
                "replies_truncated": self.replies_truncated, "rejected": dict(sorted(self.rejected.items()))}


def _keep_newest(messages: list[dict], dropped_turns: int) -> list[dict]:
    """``messages`` without its ``dropped_turns`` oldest (user, assistant) turns; the system message stays."""
    head = messages[:1] if messages[0]["role"] == "system" else []
    return head + messages[len(head) + 2 * dropped_turns:]


def encode_pair(pair: PrefPair, encoder: Any, max_seq_len: int, min_reply_tokens: int = 8,
                stats: EncodeStats | None = None) -> EncodedPair | None:
    """Ids of ``pair`` fitted to ``max_seq_len`` (see the module doc); ``None`` if rejected (reason in ``stats``)."""
    from sft.chat_format import PromptNotPrefixError, TooLongError

    stats = stats if stats is not None else EncodeStats()
    messages = [dict(m) for m in pair.prompt]
    try:
        longest = max(len(encoder.reply_ids(messages, pair.chosen)), len(encoder.reply_ids(messages, pair.rejected)))
        try:
            _, dropped = encoder.fit_prompt(messages, max_seq_len - longest)
        except TooLongError:  # the replies do not fit even after the last user turn: keep only that turn
            dropped = (len(messages) - (messages[0]["role"] == "system")) // 2
        messages = _keep_newest(messages, dropped)
        prompt = encoder.prompt_ids(messages)
        chosen, rejected = encoder.reply_ids(messages, pair.chosen), encoder.reply_ids(messages, pair.rejected)
    except PromptNotPrefixError:
        stats.reject(pair.pair_id, "prompt_not_prefix")
        return None
    stats.turns_dropped += dropped
    room = max_seq_len - len(prompt)
    if room < min_reply_tokens:
        stats.reject(pair.pair_id, "prompt_too_long")
        return None
    if max(len(chosen), len(rejected)) > room:
        chosen, rejected = chosen[:room], rejected[:room]
        stats.replies_truncated += 1
        if chosen == rejected:
            stats.reject(pair.pair_id, "identical_after_truncation")
            return None
    return EncodedPair(pair.pair_id, tuple(prompt), tuple(chosen), tuple(rejected),
                       len(pair.chosen.strip()), len(pair.rejected.strip()))


def encode_pairs(pairs: Sequence[PrefPair], encoder: Any, max_seq_len: int,
                 min_reply_tokens: int = 8) -> tuple[list[EncodedPair], EncodeStats]:
    """Encode every pair; rejected ones are counted in the returned stats by reason."""
    stats = EncodeStats(pairs_in=len(pairs))
    out = [e for p in pairs if (e := encode_pair(p, encoder, max_seq_len, min_reply_tokens, stats)) is not None]
    assert stats.pairs_in == len(out) + sum(stats.rejected.values())
    return out, stats


def pair_batch(pairs: Sequence[EncodedPair], pad_id: int, padding_side: str = "right") -> dict[str, Any]:
    """One padded batch: rows ``0..B-1`` the chosen sequences, rows ``B..2B-1`` the rejected ones."""
    from align.logprobs import collate_replies

    items = [(p.prompt_ids, p.chosen_ids) for p in pairs] + [(p.prompt_ids, p.rejected_ids) for p in pairs]
    return collate_replies(items, pad_id=pad_id, padding_side=padding_side)


def pairs_sha256(pairs: Sequence[EncodedPair]) -> str:
    """Hash of the encoded pairs (ids and order): half of the reference cache's key."""
    h = hashlib.sha256()
    for p in pairs:
        for part in (p.prompt_ids, p.chosen_ids, p.rejected_ids):
            h.update(len(part).to_bytes(4, "little"))
            h.update(b"".join(int(t).to_bytes(4, "little", signed=True) for t in part))
    return h.hexdigest()
