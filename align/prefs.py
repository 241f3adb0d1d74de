"""Preference pairs: read ``pref_*.jsonl``, validate, and account for every record.

A record (``../shared/data/sft/pref_train.jsonl``)::

    {"id": "oasst1-zh-rm/0", "tier": "A", "group": "...",
     "prompt": [{"role": "user", "content": "布洛芬和对乙酰氨基酚的区别是？"}],
     "chosen": "根据维基百科……", "rejected": "能吃"}

becomes a :class:`PrefPair` or a counted rejection with a reason. The pair-level rules live here
(identical replies, an empty reply, a prompt that does not end with a user turn, a tier not asked
for); everything about the conversation itself (roles in order, string contents, the chat
format's delimiters inside a message) is the SFT validator's, applied to ``prompt + [chosen]``
and ``prompt + [rejected]``, so a pair is used only if both sides are valid SFT conversations.

Invariant (checked by :func:`read_pairs`): ``read == used + sum(rejected.values())``::

    pairs, manifest = read_pairs(Path("pref_train.jsonl"), tiers=("A",))
    manifest.read == len(pairs) + sum(manifest.rejected.values())
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zhllama.cli import UserError

#: Examples of rejected record ids kept per reason in the manifest (all are counted).
EXAMPLES_PER_REASON = 5


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
    tier: str = "A"
    """Data tier (A: written by people; B: produced by OpenAI models)."""
    group: str = ""
    """Conversation tree (held-out files share none with training files)."""

    def conversation(self, which: str) -> list[dict]:
        """``prompt + [assistant reply]`` for ``which`` in ``("chosen", "rejected")``."""
        return [dict(m) for m in self.prompt] + [{"role": "assistant", "content": getattr(self, which)}]


@dataclass
class PairManifest:
    """Accounting of one preference file: ``read == used + sum(rejected.values())``."""

    file: str
    read: int = 0
    used: int = 0
    rejected: Counter = field(default_factory=Counter)
    """``{reason: count}``; reasons are snake_case (``identical_replies``, ``empty_reply``...)."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """A few record ids per reason, to find them in the file."""

    def reject(self, record_id: str, reason: str) -> None:
        self.rejected[reason] += 1
        ids = self.examples.setdefault(reason, [])
        if len(ids) < EXAMPLES_PER_REASON:
            ids.append(record_id)

    def check(self) -> None:
        """Raise if a record was lost (the accounting identity does not hold)."""
        if self.read != self.used + sum(self.rejected.values()):
            raise AssertionError(f"{self.file}: read {self.read} != used {self.used} + rejected {dict(self.rejected)}")

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "read": self.read, "used": self.used,
                "rejected": dict(sorted(self.rejected.items())), "examples": self.examples}


ConversationCheck = Callable[[list[dict]], "tuple[str, str] | None"]
"""``check(messages) -> (reason, detail)`` for an invalid SFT conversation, ``None`` for a valid one."""


def pair_problem(obj: dict, check_conversation: ConversationCheck) -> tuple[str, str] | None:
    """Why the record ``obj`` is not a usable pair, as ``(reason, detail)``; ``None`` if it is.

    >>> ok = lambda messages: None
    >>> pair_problem({"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "a"}, ok)
    ('identical_replies', 'chosen and rejected are the same text')
    """
    prompt, chosen, rejected = obj.get("prompt"), obj.get("chosen"), obj.get("rejected")
    for key, value, kind in (("prompt", prompt, list), ("chosen", chosen, str), ("rejected", rejected, str)):
        if key not in obj:
            return "missing_field", f"no {key!r} key"
        if not isinstance(value, kind):
            return "missing_field", f"{key!r} is {type(value).__name__}, expected {kind.__name__}"
    assert isinstance(prompt, list) and isinstance(chosen, str) and isinstance(rejected, str)
    if not prompt:
        return "empty_prompt", "'prompt' has no messages"
    last = prompt[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        role = last.get("role") if isinstance(last, dict) else type(last).__name__
        return "prompt_not_ending_with_user", f"last prompt message is {role!r}"
    if not chosen.strip() or not rejected.strip():
        return "empty_reply", "chosen is empty" if not chosen.strip() else "rejected is empty"
    if chosen.strip() == rejected.strip():
        return "identical_replies", "chosen and rejected are the same text"
    for side in (chosen, rejected):
        problem = check_conversation([*prompt, {"role": "assistant", "content": side}])
        if problem is not None:
            return problem
    return None


def validate_pairs(
    records: Iterable[tuple[str, dict | None, str | None]], file: str, tiers: tuple[str, ...] | None,
    check_conversation: ConversationCheck, default_tier: str = "A",
) -> tuple[list[PrefPair], PairManifest]:
    """Turn ``(record_id, obj_or_None, read_error_reason)`` items into pairs + their manifest.

    ``tiers=None`` keeps every tier; otherwise a record of another tier is counted as
    ``tier_excluded``. A record without ``tier`` is ``default_tier`` (A).
    """
    manifest = PairManifest(file=file)
    pairs: list[PrefPair] = []
    for record_id, obj, read_error in records:
        manifest.read += 1
        if obj is None:
            manifest.reject(record_id, read_error or "bad_record")
            continue
        tier = obj.get("tier", default_tier)
        if tiers is not None and tier not in tiers:
            manifest.reject(record_id, "tier_excluded")
            continue
        problem = pair_problem(obj, check_conversation)
        if problem is not None:
            manifest.reject(record_id, problem[0])
            continue
        pid = f"{file}#{obj['id']}" if obj.get("id") is not None else record_id
        pairs.append(PrefPair(pid, tuple(dict(m) for m in obj["prompt"]), obj["chosen"], obj["rejected"],
                              str(tier), str(obj.get("group", ""))))
        manifest.used += 1
    manifest.check()
    return pairs, manifest


def read_pairs(path: str | Path, tiers: tuple[str, ...] | None = ("A",),
               check_conversation: ConversationCheck | None = None) -> tuple[list[PrefPair], PairManifest]:
    """Read a preference JSONL file with the project's JSONL reader; validate; account for every line.

    A missing file or a file whose first record is not JSON is a :class:`UserError`; a bad line
    later on is counted (``bad_json``, ``invalid_utf8``...) like any other rejection.
    """
    from align.chat import conversation_problem

    p = Path(path)
    if not p.is_file():
        raise UserError(f"preference file not found: {p}")
    check = check_conversation or conversation_problem
    pairs, manifest = validate_pairs(_json_records(p), p.name, tiers, check)
    if not pairs:
        raise UserError(f"{p}: no usable preference pair (read {manifest.read}, rejected {dict(manifest.rejected)})")
    return pairs, manifest


def _json_records(path: Path):
    """``(record_id, obj, None)`` per JSON line, ``(record_id, None, reason)`` for an unreadable one."""
    from corpora.readers import _json_lines

    for doc_id, obj, rej in _json_lines(path, 8 << 20, "preference JSON lines"):
        yield doc_id, obj, (rej.reason if rej is not None else None)


def write_manifest(manifests: list[PairManifest], extra: dict | None = None) -> dict:
    """The manifest dict for several files (+ totals); ``json.dumps``-able."""
    total = Counter()
    for m in manifests:
        total.update(m.rejected)
    out = {"files": [m.to_dict() for m in manifests],
           "total": {"read": sum(m.read for m in manifests), "used": sum(m.used for m in manifests),
                     "rejected": dict(sorted(total.items()))}}
    out.update(extra or {})
    return out


def dumps_pair(pair: PrefPair) -> str:
    """One pair as a JSON line in the input schema (for tests and ``compare`` outputs)."""
    return json.dumps({"id": pair.pair_id, "tier": pair.tier, "group": pair.group, "prompt": list(pair.prompt),
                       "chosen": pair.chosen, "rejected": pair.rejected}, ensure_ascii=False)
