"""Read chat data files into validated dialogs, counting every record: read = used + rejected.

One reader per file format for the project: lines come from corpora's JSONL reader (bad UTF-8,
bad JSON, over-long lines become counted rejections naming ``file:line``; a file whose first line is
not a JSON object is a :class:`~zhllama.cli.UserError`). A :class:`~sft.formats.FormatSpec` maps
each object onto a dialog, :func:`sft.dialog.validate` applies the rules, and the tier filter keeps
the selected tiers (``A`` = written by people, by default)::

    manifest = Manifest()
    records = list(read_chat_files([Path("sft_train.jsonl")], get_format("messages"), manifest, tiers=["A"]))
    manifest.summary()   # 'read 1613 = used 1210 + rejected 403 (tier_not_selected 403)'

Records that pass here can still be dropped later (a turn longer than ``max_seq_len``): the later
stage calls :meth:`Manifest.reject` for them and :meth:`Manifest.use` for the rest.
"""
from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# The project's counting JSONL reader (shared with the corpus stage: bad lines become counted rejections;
# corpora.shards.iter_jsonl_records is the strict variant, for files whose every line must be good).
from corpora.readers import DEFAULT_MAX_LINE_BYTES, json_lines
from sft.dialog import DEFAULT_DELIMITERS, Dialog, OnDelimiter, validate
from sft.formats import FormatSpec, to_dialog

#: How many record ids to keep per rejection reason in the manifest (to find examples).
EXAMPLES_PER_REASON = 5


@dataclass(frozen=True)
class ChatRecord:
    """One usable dialog and where it came from. ``ChatRecord("sft_train.jsonl#oasst1/0", [...], "A")``."""

    record_id: str
    """``file#<id>`` when the record has an ``id``, else ``file:line``."""
    dialog: Dialog
    """Validated (and, with ``on_delimiter: escape``, escaped) messages."""
    tier: str | None = None
    """The record's tier (``A`` people-written, ``B`` model-written), if it has one."""
    escaped: bool = False
    """True when delimiters inside a message were escaped."""


@dataclass
class Manifest:
    """Counts of records read, used and rejected by reason (with a few example ids per reason).

    Invariant (checked by :meth:`check`): ``read == used + sum(rejected.values())`` once every read
    record was either used or rejected.
    """

    read: int = 0
    used: int = 0
    escaped: int = 0
    rejected: collections.Counter = field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    """``reason -> ["file:line (detail)", ...]`` (the first few)."""
    notes: collections.Counter = field(default_factory=collections.Counter)
    """Counts that are not rejections (``turns_dropped_by_truncation``, ``rows_truncated``...)."""

    def reject(self, record_id: str, reason: str, detail: str = "") -> None:
        self.rejected[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < EXAMPLES_PER_REASON:
            ex.append(f"{record_id} ({detail})" if detail else record_id)

    def use(self, n: int = 1) -> None:
        self.used += n

    def check(self) -> None:
        """Raise ``RuntimeError`` if some record was neither used nor rejected (a silent loss)."""
        total = self.used + sum(self.rejected.values())
        if self.read != total:
            raise RuntimeError(f"manifest: read {self.read} != used {self.used} + rejected {total - self.used}")

    def summary(self) -> str:
        """``'read 10 = used 8 + rejected 2 (empty_content 1, roles_out_of_order 1)'``."""
        rej = sum(self.rejected.values())
        reasons = ", ".join(f"{k} {v}" for k, v in self.rejected.most_common())
        return f"read {self.read} = used {self.used} + rejected {rej}" + (f" ({reasons})" if reasons else "")

    def to_dict(self) -> dict:
        return {"read": self.read, "used": self.used, "rejected_total": sum(self.rejected.values()),
                "rejected": dict(self.rejected.most_common()), "escaped": self.escaped,
                "notes": dict(self.notes), "examples": self.examples}


def read_chat_file(path: Path, spec: FormatSpec, manifest: Manifest, *, tiers: Sequence[str] | None = ("A",),
                   tier_field: str = "tier", on_delimiter: OnDelimiter = "reject",
                   delimiters: Sequence[str] = DEFAULT_DELIMITERS, id_field: str = "id",
                   end: Literal["assistant", "user"] | None = "assistant") -> Iterator[ChatRecord]:
    """Yield the usable dialogs of one JSONL file; count every record in ``manifest``.

    ``tiers=None`` keeps every record; otherwise a record whose ``tier_field`` is not in ``tiers``
    (or that has none) is rejected as ``tier_not_selected``. ``end`` is the role the dialog must end
    with (``None``: no rule is checked here; the caller validates, e.g. after removing a reference).
    """
    keep = None if tiers is None else set(tiers)
    for doc_id, obj, rej in json_lines(path, DEFAULT_MAX_LINE_BYTES, "chat JSON lines"):
        manifest.read += 1
        if rej is not None:
            manifest.reject(rej.doc_id, rej.reason, rej.detail)
            continue
        assert obj is not None
        rid = f"{path.name}#{obj[id_field]}" if isinstance(obj.get(id_field), (str, int)) else doc_id
        dialog, reason, detail = to_dialog(obj, spec)
        if dialog is None:
            manifest.reject(rid, reason or "bad_record", detail)
            continue
        tier = obj.get(tier_field)
        if keep is not None and tier not in keep:
            manifest.reject(rid, "tier_not_selected", f"{tier_field}={tier!r}")
            continue
        escaped = False
        if end is not None:
            dialog, reason, escaped = validate(dialog, on_delimiter, end=end, delimiters=delimiters)
        if dialog is None:
            manifest.reject(rid, reason or "bad_record")
            continue
        manifest.escaped += int(escaped)
        yield ChatRecord(rid, dialog, tier if isinstance(tier, str) else None, escaped)


def read_chat_files(paths: Iterable[Path], spec: FormatSpec, manifest: Manifest, **kwargs) -> Iterator[ChatRecord]:
    """:func:`read_chat_file` over several files, in order (same keyword options)."""
    for path in paths:
        yield from read_chat_file(Path(path), spec, manifest, **kwargs)
