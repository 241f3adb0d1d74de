"""What ``vocab merge`` reads: corpus records by domain and script, split into evidence, dev and test.

- **evidence** (:class:`vocab.select.Evidence`): per domain, a hash sample (about
  ``evidence_max_chars``) of the train documents the BPE was trained on, weighted by
  ``evidence_weights``, plus the word list (and its Traditional forms) for the text we lack;
- **dev**: the train documents :func:`vocab.dev_split.is_dev` keeps out of BPE training, by domain
  and script: the size curve is measured here;
- **test**: ``heldout/heldout.jsonl``, by domain and script: only reported.

A record's domain is its ``domain`` field (corpus stage), else its ``source``; its script is its
``script`` field, else :func:`corpora.scripts.detect_script`.

Example::

    inputs = load_inputs(MergeConfig(corpus_dir=Path("artifacts/corpus")))
    sorted(inputs.dev_sets)   # ['all/simplified', 'all/traditional', 'dialogue', 'dialogue/simplified', ...]
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path

from vocab.domains import Doc, cross_script_copies, group
from vocab.select import Evidence
from zhllama.cli import UserError, existing_file


@dataclass
class MergeInputs:
    """Everything :func:`vocab.merge.run` measures on (texts grouped as :func:`vocab.domains.group` does)."""

    char_counts: collections.Counter
    evidence: list[Evidence]
    dev_sets: dict[str, list[str]]
    test_sets: dict[str, list[str]]
    english: list[str]
    extra: dict[str, list[str]] = field(default_factory=dict)
    domain_chars: dict[str, int] = field(default_factory=dict)
    """Training characters per domain (dev excluded)."""
    input_hashes: dict[str, str] = field(default_factory=dict)
    estimates: list[Evidence] = field(default_factory=list)
    """Word-list words kept out of the evidence: the estimate for text we have no corpus of."""


def doc_of(record: dict) -> Doc:
    """The :class:`Doc` of a corpus record. ``doc_of({"text": "這個軟體", "source": "x"}) == Doc("x", "traditional", "這個軟體")``."""
    from corpora.scripts import detect_script

    text = record["text"]
    domain = record.get("domain") or record.get("source") or "all"
    script = record.get("script") or detect_script(text)
    return Doc(str(domain), str(script), text)


def _keep_share(text: str, share: float) -> bool:
    """A stable hash sample (independent of the dev split's hash: a different salt)."""
    from vocab.dev_split import dev_bucket

    return share >= 1.0 or dev_bucket("evidence\0" + text) < share


def check_evidence_weights(weights: dict[str, float], domains: set[str]) -> None:
    """Unknown domains or all-zero weights are a :class:`UserError` naming the key."""
    unknown = sorted(set(weights) - domains)
    if unknown:
        raise UserError(f"evidence_weights.{unknown[0]}: unknown domain {unknown[0]!r}; the corpus has "
                        f"{', '.join(sorted(domains))}")
    if domains and all(weights.get(d, 1.0) == 0 for d in domains):
        raise UserError(f"evidence_weights: every domain has weight 0 ({', '.join(sorted(domains))}): no evidence left")


WORD_LIST_DEV_FRACTION = 0.1
"""Share of the word list's words (by hash) kept out of the evidence to estimate tokens/char on the
text we lack without measuring on the words that chose the pieces."""


def word_list_evidence(cfg) -> tuple[list[Evidence], list[Evidence]]:
    """The word list as (evidence, estimate sets): each word a text weighted by its frequency, encoded
    as it occurs inside running text (no dummy prefix); Traditional forms as a second group. A
    stable 10% of the words (:data:`WORD_LIST_DEV_FRACTION`) form the estimate sets instead."""
    from vocab.dev_split import dev_bucket
    from vocab.wordlists import check_variants, load_words, with_variants

    if cfg.word_list == "none" or cfg.word_list_words <= 0:
        return [], []
    words = load_words(cfg.word_list, cfg.word_list_words, min_chars=1)
    groups = {"word list": (words, 1.0)}
    variants = check_variants(cfg.word_list_variants)
    if variants:
        simplified = {w for w, _ in words}
        forms = [wf for wf in with_variants(words, variants) if wf[0] not in simplified]
        groups["word list (Traditional forms)"] = (forms, cfg.word_list_variant_weight)
    evidence, estimate = [], []
    for name, (wl, rel) in groups.items():
        held = [dev_bucket("wordlist\0" + w) < WORD_LIST_DEV_FRACTION for w, _ in wl]
        ev = [wf for wf, h in zip(wl, held, strict=True) if not h]
        dv = [wf for wf, h in zip(wl, held, strict=True) if h]
        if cfg.word_list_weight * rel > 0:
            evidence.append(Evidence(name, [w for w, _ in ev], cfg.word_list_weight * rel, [f for _, f in ev],
                                     dummy_prefix=False))
        estimate.append(Evidence(f"{name} (estimate)", [w for w, _ in dv], 1.0, [f for _, f in dv], dummy_prefix=False))
    return evidence, estimate


def load_inputs(cfg) -> MergeInputs:
    """Read the corpus (two streaming passes over the train shards) and the report texts."""
    from tqdm import tqdm

    from corpora.shards import iter_jsonl_records
    from vocab.dev_split import is_dev
    from vocab.loaders import load_texts
    from vocab.train import corpus_files
    from zhllama import REPO_ROOT
    from zhllama.artifacts import sha256_file

    files = corpus_files(cfg.corpus_dir)
    heldout_path = existing_file(Path(cfg.corpus_dir) / "heldout" / "heldout.jsonl", "held-out corpus")
    english_path = existing_file(cfg.english_file or REPO_ROOT / "tests" / "data" / "english.txt", "English text")
    counts: collections.Counter = collections.Counter()
    domain_chars: collections.Counter = collections.Counter()
    dev: list[Doc] = []
    for rec in tqdm(iter_jsonl_records(files), desc="reading train shards", unit="doc", mininterval=1.0):
        d = doc_of(rec)
        if is_dev(d.text, cfg.dev_fraction):
            dev.append(d)
            continue
        counts.update(d.text)
        domain_chars[d.domain] += len(d.text)
    if not dev:
        raise UserError(f"{cfg.corpus_dir}: no dev documents (dev_fraction={cfg.dev_fraction}); raise dev_fraction")
    check_evidence_weights(cfg.evidence_weights, set(domain_chars))
    samples: dict[str, list[str]] = collections.defaultdict(list)
    # Dev documents are dropped before conversion: a dev document's converted copy is dev too.
    train_records = (r for r in iter_jsonl_records(files) if not is_dev(r["text"], cfg.dev_fraction))
    for rec in cross_script_copies(train_records, cfg.cross_script_share):
        d = doc_of(rec)
        share = cfg.evidence_max_chars / max(domain_chars[d.domain], 1)
        if _keep_share(d.text, share):
            samples[d.domain].append(d.text)
    evidence = [Evidence(dom, texts, cfg.evidence_weights.get(dom, 1.0)) for dom, texts in sorted(samples.items())]
    wl_evidence, estimates = word_list_evidence(cfg)
    evidence += wl_evidence
    heldout = [doc_of(r) for r in iter_jsonl_records([heldout_path])]
    if cfg.max_heldout_docs:
        heldout = heldout[: cfg.max_heldout_docs]
    extra = {Path(p).stem: load_texts(existing_file(p, "extra text")) for p in cfg.extra_texts}
    hashes = {"heldout": sha256_file(heldout_path), "english": sha256_file(english_path)}
    hashes.update({f"train/{f.name}": sha256_file(f) for f in files})
    return MergeInputs(char_counts=counts, evidence=evidence, dev_sets=group(dev), test_sets=group(heldout),
                       english=load_texts(english_path), extra=extra, domain_chars=dict(domain_chars),
                       input_hashes=hashes, estimates=estimates)
