"""Preference pairs: read ``pref_*.jsonl``, validate, and account for every record.

A record (``../shared/data/sft/pref_train.jsonl``)::

    {"id": "oasst1-zh-rm/0", "tier": "A", "group": "...",
     "prompt": [{"role": "user", "content": "布洛芬和对乙酰氨基酚的区别是？"}],
     "chosen": "根据维基百科……", "rejected": "能吃"}

becomes a :class:`PrefPair` or a counted rejection with a reason. The pair-level rules live here
(identical replies, an empty reply, a prompt that does not end with a user turn); the tier filter
and everything about the conversation itself (roles in order, string contents, the chat format's
delimiters or control tokens inside a message) are the SFT stage's rules, applied to
``prompt + [chosen]`` and ``prompt + [rejected]``: a pair is used only if both sides are valid SFT
conversations. Lines come from the project's JSONL reader; the accounting is sft's
:class:`~sft.records.Manifest`, so ``read == used + sum(rejected.values())`` (checked)::

    pairs, manifest = read_pairs(Path("pref_train.jsonl"), tiers=("A",))
    manifest.summary()   # 'read 981 = used 708 + rejected 273 (tier_not_selected 273)'
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sft.dialog import OnDelimiter
from sft.records import Manifest
from zhllama.cli import UserError


@dataclass(frozen=True)
class PrefPair:
    """One validated preference pair. ``PrefPair("a/0", ({"role": "user", "content": "你好"},), "你好！", "嗯", "A")``."""

    pair_id: str
    """``file#id`` (or ``file:line`` when the record has no id)."""
    prompt: tuple[dict, ...]
    """The conversation so far: optional system message, alternating turns, ending with a user turn."""
    chosen: str
    """The reply people ranked higher."""
    rejected: str
    """The reply people ranked lower."""
    tier: str | None = "A"
    """Data tier (A: written by people; B: produced by OpenAI models)."""
    group: str = ""
    """Conversation tree (held-out files share none with training files)."""


def pair_problem(obj: dict, on_delimiter: OnDelimiter = "reject") -> tuple[PrefPair | None, str | None]:
    """``(pair, None)`` for a usable record, ``(None, reason)`` otherwise (``pair_id`` left empty).

    >>> pair_problem({"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "a "})
    (None, 'identical_replies')
    """
    from align.chat import check_conversation

    prompt, chosen, rejected = obj.get("prompt"), obj.get("chosen"), obj.get("rejected")
    if not (isinstance(prompt, list) and isinstance(chosen, str) and isinstance(rejected, str)):
        return None, "missing_field"
    if not prompt:
        return None, "empty_prompt"
    if not isinstance(prompt[-1], dict) or prompt[-1].get("role") != "user":
        return None, "prompt_not_ending_with_user"
    if not chosen.strip() or not rejected.strip():
        return None, "empty_reply"
    if chosen.strip() == rejected.strip():
        return None, "identical_replies"
    sides = []
    for reply in (chosen, rejected):
        dialog, reason = check_conversation([*prompt, {"role": "assistant", "content": reply}], on_delimiter)
        if dialog is None:
            return None, reason
        sides.append(dialog)
    # With on_delimiter="escape" both sides carry the same escaped prompt.
    return PrefPair("", tuple(sides[0][:-1]), sides[0][-1]["content"], sides[1][-1]["content"],
                    obj.get("tier"), str(obj.get("group", ""))), None


def validate_pairs(records: Iterable[tuple[str, dict | None, str | None]], file: str,
                   tiers: Sequence[str] | None, manifest: Manifest,
                   on_delimiter: OnDelimiter = "reject") -> list[PrefPair]:
    """Turn ``(record_id, obj or None, read-error reason)`` items into pairs, counting each in ``manifest``.

    ``tiers=None`` keeps every tier; otherwise a record whose ``tier`` is not listed (or missing) is
    rejected as ``tier_not_selected``, as in the SFT stage.
    """
    pairs: list[PrefPair] = []
    keep = None if tiers is None else set(tiers)
    for record_id, obj, read_error in records:
        manifest.read += 1
        if obj is None:
            manifest.reject(record_id, read_error or "bad_record")
            continue
        rid = f"{file}#{obj['id']}" if isinstance(obj.get("id"), (str, int)) else record_id
        if keep is not None and obj.get("tier") not in keep:
            manifest.reject(rid, "tier_not_selected", f"tier={obj.get('tier')!r}")
            continue
        pair, reason = pair_problem(obj, on_delimiter)
        if pair is None:
            manifest.reject(rid, reason or "bad_record")
            continue
        pairs.append(PrefPair(rid, pair.prompt, pair.chosen, pair.rejected, pair.tier, pair.group))
        manifest.use()
    return pairs


def read_pairs(paths: str | Path | Sequence[str | Path], tiers: Sequence[str] | None = ("A",),
               on_delimiter: OnDelimiter = "reject", manifest: Manifest | None = None) -> tuple[list[PrefPair], Manifest]:
    """Read preference JSONL file(s); validate; account for every line in one manifest.

    A missing file or a file whose first record is not JSON is a :class:`UserError`, and so is a
    result without a single usable pair; a bad line later on is counted (``bad_json``...).
    """
    from corpora.readers import json_lines  # the project's JSONL reader

    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    manifest = manifest if manifest is not None else Manifest()
    pairs: list[PrefPair] = []
    for p in files:
        if not p.is_file():
            raise UserError(f"preference file not found: {p}")
        records = ((doc_id, obj, rej.reason if rej is not None else None)
                   for doc_id, obj, rej in json_lines(p, 8 << 20, "preference JSON lines"))
        pairs += validate_pairs(records, p.name, tiers, manifest, on_delimiter)
    manifest.check()
    if not pairs:
        raise UserError(f"{', '.join(map(str, files))}: no usable preference pair ({manifest.summary()})")
    return pairs, manifest


def drop_used(manifest: Manifest, record_id: str, reason: str) -> None:
    """Move one record counted as used to the rejected table (a later stage refused it)."""
    manifest.used -= 1
    manifest.reject(record_id, reason)
