"""The corpus output, shared by both engines: held-out split, shards, counts and the manifest.

Whichever engine produced the documents (:mod:`corpora.build` in one process tree, or
:mod:`corpora.engine_datatrove` on a cluster), they end here, so the layout, the record fields and
the accounting identity (read == written + rejected) are the same.

    >>> out = CorpusOutput(cfg, Path(tmp))                                     # doctest: +SKIP
    >>> out.read(0, 120); out.keep(0, "a.jsonl:1", "数学...", 120, "simplified", "simplified", digest)  # doctest: +SKIP
    >>> manifest = out.finish(files, file_counts, truncated={}, input_bytes=1234)  # doctest: +SKIP
"""
from __future__ import annotations

import sys
from pathlib import Path

from corpora.domains import HeldoutSplitter
from corpora.manifest import SourceStats, check_accounting, manifest_markdown
from corpora.shards import HELDOUT_FILE, ShardWriter, record_line
from corpora.sources import rel_path
from zhllama.artifacts import atomic_write_json, atomic_write_text, sha256_file
from zhllama.config import to_dict

MANIFEST_VERSION = 2  # 2: records carry domain and script; per-domain counts


def output_record(src, doc_id: str, text: str, script: str) -> dict:
    """The record of a kept document of source ``src`` (a :class:`~corpora.sources.SourceConfig`).

    >>> from corpora.sources import SourceConfig
    >>> output_record(SourceConfig("drcd", "squad", ["x"], "encyclopedia", "traditional"), "dev.json#7", "數學", "traditional")
    {'id': 'drcd/dev.json#7', 'source': 'drcd', 'domain': 'encyclopedia', 'script': 'traditional', 'text': '數學'}
    """
    return {"id": f"{src.name}/{doc_id}", "source": src.name, "domain": src.domain, "script": script, "text": text}


class CorpusOutput:
    """Accumulates the documents of a build (in a fixed order) into ``out_dir``."""

    def __init__(self, cfg, out_dir: Path) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.stats = [SourceStats() for _ in cfg.sources]
        self.splitter = HeldoutSplitter(cfg.heldout_fraction, cfg.heldout_min_documents)
        self.writers = {
            "train": ShardWriter(out_dir / "train", cfg.shard_max_documents, cfg.shard_max_bytes),
            "heldout": ShardWriter(out_dir / Path(HELDOUT_FILE).parent, 1, 1, single_file=Path(HELDOUT_FILE).name),
        }

    def read(self, si: int, input_chars: int) -> None:
        """Count one input unit of source ``si`` as read."""
        self.stats[si].documents_read += 1
        self.stats[si].characters_read += input_chars

    def reject(self, si: int, reason: str, input_chars: int, example: str = "") -> None:
        """Count a read unit as rejected."""
        self.stats[si].reject(reason, input_chars, example)

    def add_stats(self, si: int, stats: SourceStats) -> None:
        """Add counts made elsewhere (a worker's reads and rejections) to source ``si``."""
        self.stats[si].add(stats)

    def keep(self, si: int, doc_id: str, text: str, input_chars: int, script: str, detected: str,
             digest: bytes) -> None:
        """Keep a document: it goes to train or heldout (possibly later, see :class:`HeldoutSplitter`)."""
        line = record_line(output_record(self.cfg.sources[si], doc_id, text, script))
        self.keep_line(si, line, len(text), input_chars, script, detected, digest)

    def keep_line(self, si: int, line: bytes, text_chars: int, input_chars: int, script: str, detected: str,
                  digest: bytes) -> None:
        """:meth:`keep` for a record serialised already (by a worker, :func:`~corpora.shards.record_line`)."""
        self.stats[si].keep(input_chars, text_chars, detected)
        self._write(self.splitter.add((self.cfg.sources[si].domain, script), digest, (si, script, text_chars, line)))

    def _write(self, ready: list) -> None:
        for split, (si, script, text_chars, line) in ready:
            self.writers[split].write_line(line, text_chars)
            self.stats[si].written(split, script, text_chars)

    def _group(self, key) -> dict[str, dict]:
        groups: dict[str, tuple[list[str], SourceStats]] = {}
        for src, st in zip(self.cfg.sources, self.stats, strict=True):
            names, total = groups.setdefault(key(src), ([], SourceStats()))
            names.append(src.name)
            total.add(st)
        out = {}
        for name, (names, total) in groups.items():
            counts = total.to_dict()
            check_accounting(counts, f"domain {name}")
            out[name] = {"sources": names, **counts}
        return out

    def finish(self, files: list[list[Path]], file_counts: dict[Path, int], truncated: set[Path],
               extra_config: dict | None = None, hashes: dict[Path, str] | None = None) -> dict:
        """Flush held-back documents, close shards, check the accounting, write manifest.json + report.md.

        ``hashes``: the inputs' sha256 computed already (else computed here when ``hash_inputs``)."""
        cfg, data_dir = self.cfg, Path(self.cfg.data_dir)
        self._write(self.splitter.finish())
        for w in self.writers.values():
            w.close()
        warnings = [f"{rel_path(f, data_dir)}: empty file (no documents)" for fs in files for f in fs
                    if file_counts.get(f, 0) == 0]
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        total = SourceStats()
        sources_out = {}
        for src, fs, st in zip(cfg.sources, files, self.stats, strict=True):
            total.add(st)
            counts = st.to_dict()
            check_accounting(counts, f"source {src.name}")
            sources_out[src.name] = {
                "format": src.format, "domain": src.domain, "script": src.script, "convert": src.convert,
                "files": [
                    {"path": rel_path(f, data_dir), "bytes": f.stat().st_size, "documents_read": file_counts.get(f, 0),
                     **({"truncated_at_chars": -(-cfg.max_chars_per_source // len(fs))} if f in truncated else {}),
                     **({"sha256": (hashes or {}).get(f) or sha256_file(f)} if cfg.hash_inputs else {})}
                    for f in fs
                ],
                **counts,
                "rejected_examples": dict(sorted(st.examples.items())),
            }
        totals = total.to_dict()
        check_accounting(totals, "total")
        train, heldout = self.writers["train"], self.writers["heldout"]
        # Only the settings that shape the output (not paths, workers or progress), so the manifest
        # of the same inputs + settings is byte-identical across runs and machines.
        skip = ("data_dir", "out_dir", "num_workers", "progress", "datatrove")
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "accounting": "documents/characters: read == written + sum(rejected); characters are input "
                          "characters (before cleaning); characters.output = characters in the shards",
            "sources": sources_out,
            "domains": self._group(lambda s: s.domain),
            "total": totals,
            "splits": {
                "train": {"documents": train.documents, "characters": train.characters, "bytes": train.bytes,
                          "files": [rel_path(p, self.out_dir) for p in train.paths]},
                "heldout": {"documents": heldout.documents, "characters": heldout.characters, "bytes": heldout.bytes,
                            "files": [HELDOUT_FILE]},
            },
            "warnings": warnings,
            "config": {**{k: v for k, v in to_dict(cfg).items() if k not in skip}, **(extra_config or {})},
            "inputs_sha256": {f["path"]: f["sha256"] for s in sources_out.values() for f in s["files"] if "sha256" in f},
        }
        atomic_write_json(self.out_dir / "manifest.json", manifest)
        atomic_write_text(self.out_dir / "report.md", manifest_markdown(manifest))
        return manifest
