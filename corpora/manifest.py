"""The build's bookkeeping: counts per source, per domain and per script; the Markdown report.

Accounting invariant, checked per source, per domain and in total::

    documents.read  == documents.written  + sum(documents.rejected.values())
    characters.read == characters.written + sum(characters.rejected.values())

where characters are *input* characters (as read, before cleaning) so the identity is exact;
``characters.output`` is what the written documents hold after cleaning. ``by_script`` splits the
written documents by the ``script`` field of their records (train/heldout documents, output
characters).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

from corpora.scripts import SCRIPTS


def _script_counts() -> dict[str, dict[str, int]]:
    return {s: {"train": 0, "heldout": 0, "characters": 0} for s in SCRIPTS}


@dataclass
class SourceStats:
    """Counts of one source (or a sum of sources); ``read == written + rejected``.

    >>> st = SourceStats(documents_read=2, characters_read=10)
    >>> st.reject("too_short", 3); st.keep(7, 6); st.written("train", "simplified", 6)
    >>> st.to_dict()["documents"]["rejected"], st.to_dict()["by_script"]["simplified"]
    ({'too_short': 1}, {'train': 1, 'heldout': 0, 'characters': 6})
    """

    documents_read: int = 0
    """Documents (and rejected input units) read."""
    characters_read: int = 0
    """Input characters read."""
    documents_written: dict[str, int] = field(default_factory=lambda: {"train": 0, "heldout": 0})
    """Documents written, per split."""
    characters_written: int = 0
    """Input characters of the written documents."""
    characters_output: int = 0
    """Characters of the written documents after cleaning (what the shards hold)."""
    documents_rejected: collections.Counter = field(default_factory=collections.Counter)
    """Rejected documents by reason."""
    characters_rejected: collections.Counter = field(default_factory=collections.Counter)
    """Input characters of rejected documents by reason."""
    by_script: dict[str, dict[str, int]] = field(default_factory=_script_counts)
    """Written documents by record script: ``{script: {train, heldout, characters}}``."""
    detected_script: collections.Counter = field(default_factory=collections.Counter)
    """Written documents by the script detected in their text (a check of the declared script)."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    """A few ``file:line: detail`` examples per rejection reason."""

    def reject(self, reason: str, input_chars: int, example: str = "") -> None:
        """Count one rejected document."""
        self.documents_rejected[reason] += 1
        self.characters_rejected[reason] += input_chars
        examples = self.examples.setdefault(reason, [])
        if example and len(examples) < 5:
            examples.append(example)

    def keep(self, input_chars: int, output_chars: int, detected: str = "") -> None:
        """Count the characters of one kept document (its split is counted by :meth:`written`)."""
        self.characters_written += input_chars
        self.characters_output += output_chars
        if detected:
            self.detected_script[detected] += 1

    def written(self, split: str, script: str, output_chars: int) -> None:
        """Count one document written to ``split`` with record script ``script``."""
        self.documents_written[split] += 1
        self.by_script[script][split] += 1
        self.by_script[script]["characters"] += output_chars

    def add(self, other: SourceStats) -> None:
        """Accumulate ``other`` into this (for domain and total sums)."""
        self.documents_read += other.documents_read
        self.characters_read += other.characters_read
        for k, v in other.documents_written.items():
            self.documents_written[k] = self.documents_written.get(k, 0) + v
        self.characters_written += other.characters_written
        self.characters_output += other.characters_output
        self.documents_rejected.update(other.documents_rejected)
        self.characters_rejected.update(other.characters_rejected)
        for reason, examples in other.examples.items():  # the first 5, in the order the parts are added
            mine = self.examples.setdefault(reason, [])
            mine.extend(examples[: max(0, 5 - len(mine))])
        self.detected_script.update(other.detected_script)
        for s, counts in other.by_script.items():
            for k, v in counts.items():
                self.by_script[s][k] += v

    def to_dict(self) -> dict:
        """The manifest's view: ``{"documents": {...}, "characters": {...}, "by_script": {...}}``."""
        written = sum(self.documents_written.values())
        return {
            "documents": {
                "read": self.documents_read, "written": written, **self.documents_written,
                "rejected": dict(sorted(self.documents_rejected.items())),
                "rejected_total": sum(self.documents_rejected.values()),
            },
            "characters": {
                "read": self.characters_read, "written": self.characters_written,
                "rejected": dict(sorted(self.characters_rejected.items())),
                "rejected_total": sum(self.characters_rejected.values()),
                "output": self.characters_output,
            },
            "by_script": {s: dict(c) for s, c in self.by_script.items() if c["train"] or c["heldout"]},
            "detected_script": dict(sorted(self.detected_script.items())),
        }


def check_accounting(counts: dict, where: str) -> None:
    """Raise ``AssertionError`` unless read == written + rejected for documents and characters."""
    for unit in ("documents", "characters"):
        c = counts[unit]
        if c["read"] != c["written"] + sum(c["rejected"].values()):
            raise AssertionError(f"{where}: {unit} read {c['read']} != written {c['written']} + rejected {c['rejected']}")
    if sum(s["train"] + s["heldout"] for s in counts["by_script"].values()) != counts["documents"]["written"]:
        raise AssertionError(f"{where}: documents by script {counts['by_script']} != written {counts['documents']['written']}")


def _rejected(d: dict) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d["rejected"].items(), key=lambda kv: -kv[1])) or "-"


def manifest_markdown(manifest: dict) -> str:
    """The manifest as a Markdown report: per source, per domain (by script), splits, rejections.

    >>> empty = {**SourceStats().to_dict()}
    >>> md = manifest_markdown({"sources": {}, "domains": {}, "total": empty, "warnings": [],
    ...                         "splits": {"train": {"documents": 0, "characters": 0, "files": []},
    ...                                    "heldout": {"documents": 0, "characters": 0, "files": []}}})
    >>> md.splitlines()[0]
    '# Corpus report'
    """
    def row(name: str, c: dict, extra: str) -> str:
        d, ch = c["documents"], c["characters"]
        return (f"| {name} | {extra} | {d['read']:,} | {d['written']:,} | {d['train']:,} | {d['heldout']:,} | "
                f"{_rejected(d)} | {ch['read']:,} | {ch['output']:,} |")

    def scripts(c: dict, key: str) -> str:
        return " / ".join(f"{c['by_script'].get(s, {}).get(key, 0):,}" for s in SCRIPTS)

    lines = [
        "# Corpus report", "",
        "Documents and characters per source. Identity (checked by the build): read = written + rejected, for",
        "documents and for input characters; *chars out* is what the shards hold after cleaning.", "",
        "| source | domain, script -> convert | docs read | docs written | train | heldout | rejected (by reason) "
        "| chars read | chars out |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
        *(row(name, s, f"{s['domain']}, {s['script']} -> {s['convert']}") for name, s in manifest["sources"].items()),
        row("**total**", manifest["total"], ""), "",
        "## Per domain", "",
        f"Written documents and output characters by record script ({' / '.join(SCRIPTS)}); every",
        "domain and script has its own held-out (test) documents.", "",
        "| domain | sources | docs read | docs written | train | heldout | rejected (by reason) | chars read | chars out |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
        *(row(name, d, ", ".join(d["sources"])) for name, d in manifest["domains"].items()), "",
        f"| domain | chars out ({' / '.join(SCRIPTS)}) | heldout docs ({' / '.join(SCRIPTS)}) |", "|---|---:|---:|",
        *(f"| {name} | {scripts(d, 'characters')} | {scripts(d, 'heldout')} |" for name, d in manifest["domains"].items()),
        f"| **total** | {scripts(manifest['total'], 'characters')} | {scripts(manifest['total'], 'heldout')} |", "",
        "| split | documents | characters | files |", "|---|---:|---:|---|",
        *(f"| {k} | {v['documents']:,} | {v['characters']:,} | {', '.join(v['files'])} |"
          for k, v in manifest["splits"].items()),
    ]
    examples = [(name, reason, ex) for name, src in manifest["sources"].items()
                for reason, exs in src.get("rejected_examples", {}).items() for ex in exs[:2]]
    if examples:
        lines += ["", "## Rejection examples", "", *(f"- {name} / {reason}: `{ex}`" for name, reason, ex in examples)]
    if manifest["warnings"]:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in manifest["warnings"])]
    return "\n".join(lines) + "\n"


def summary_line(manifest: dict, out_dir) -> str:
    """One line: documents read / written (train, heldout) / rejected by reason, chars, speed."""
    d, c, run = manifest["total"]["documents"], manifest["total"]["characters"], manifest["_run"]
    rej = _rejected(d) if d["rejected"] else "none"
    mb_s = run["input_bytes"] / 1e6 / max(run["elapsed_s"], 1e-9)
    return (
        f"corpus: read {d['read']:,} docs ({c['read']:,} chars), wrote {d['written']:,} "
        f"(train {d['train']:,} / heldout {d['heldout']:,}, {c['output']:,} chars, {len(manifest['domains'])} domains), "
        f"rejected {d['rejected_total']:,} ({rej}) in {run['elapsed_s']:.1f} s "
        f"({d['read'] / max(run['elapsed_s'], 1e-9):,.0f} docs/s, {mb_s:.2f} MB/s, {run['num_workers']} workers) -> {out_dir}"
    )
