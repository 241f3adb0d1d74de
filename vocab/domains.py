"""Per-domain, per-script evaluation of tokenizers: the table the vocabulary target is stated in.

A document is ``(domain, script, text)``, the corpus stage's labels (``script``: ``simplified``,
``traditional`` or ``mixed``; :func:`corpora.scripts.detect_script` for unlabelled text). :func:`domain_table` measures
every tokenizer on every domain and script: tokens per character, byte-fallback share, distinct
pieces used; :func:`target_check` states the goal (every domain and both scripts no worse than the
peer, geometric mean over domains at most ``max_geomean_ratio`` of the peer's).

>>> sorted(group([Doc("legal", "traditional", "第一條"), Doc("legal", "simplified", "第一条")]))
['all/simplified', 'all/traditional', 'legal', 'legal/simplified', 'legal/traditional']
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

SCRIPTS = ("simplified", "traditional")
"""The corpus stage's script labels; ``mixed`` (or anything else) is counted in its domain only."""


@dataclass(frozen=True)
class Doc:
    """One evaluation document. Example: ``Doc("legal", "traditional", "第一條 ...")``."""

    domain: str
    script: str
    text: str


CROSS_SCRIPT = {"traditional": ("tw2sp", "simplified"), "simplified": ("s2twp", "traditional")}
"""OpenCC conversion (and resulting script) giving a record's text in the other script: Taiwan
phrases to mainland ones (軟體 -> 软件) and back."""


def cross_script_copies(records: Iterable[dict], share: float) -> Iterator[dict]:
    """Each record, then (for a stable ``share`` of the Simplified or Traditional ones, by text hash)
    a copy converted to the other script: every content seen in both scripts, so pieces shared by
    the scripts are measured on all the text and each script's own forms get evidence.
    ``share`` may exceed 1 only up to 1 (every record). Mixed-script records are not copied.

    >>> [r["text"] for r in cross_script_copies([{"script": "traditional", "text": "軟體"}], 1.0)]
    ['軟體', '软件']
    """
    from corpora.scripts import convert_text, detect_script
    from vocab.dev_split import dev_bucket

    for rec in records:
        yield rec
        script = rec.get("script") or detect_script(rec["text"])
        if share > 0 and script in CROSS_SCRIPT and dev_bucket("cross-script\0" + rec["text"]) < share:
            conv, other = CROSS_SCRIPT[script]
            yield {**rec, "text": convert_text(rec["text"], conv), "script": other, "converted": conv}


def group(docs: Iterable[Doc]) -> dict[str, list[str]]:
    """Texts by evaluation set: ``<domain>`` (both scripts), ``<domain>/<script>`` and ``all/<script>``.

    >>> sorted(group([Doc("news", "traditional", "甲"), Doc("news", "simplified", "乙")]))
    ['all/simplified', 'all/traditional', 'news', 'news/simplified', 'news/traditional']
    """
    out: dict[str, list[str]] = defaultdict(list)
    for d in docs:
        out[d.domain].append(d.text)
        if d.script in SCRIPTS:
            out[f"{d.domain}/{d.script}"].append(d.text)
            out[f"all/{d.script}"].append(d.text)
    return dict(sorted(out.items()))


def domains_of(sets: Iterable[str]) -> list[str]:
    """The plain domain names among evaluation-set names (no ``/``)."""
    return [s for s in sets if "/" not in s]


def measure(model_bytes: bytes, sets: Mapping[str, list[str]], base_pieces: int = 32000) -> dict[str, dict]:
    """``{set: {tokens, chars, tokens_per_char, byte_fallback_share, pieces_used, added_pieces_used}}``
    for one SentencePiece model (no BOS/EOS counted)."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
    out = {}
    for name, texts in sets.items():
        ids = sp.encode(list(texts))
        tokens = sum(map(len, ids))
        chars = sum(map(len, texts))
        used = {i for s in ids for i in s}
        out[name] = {
            "documents": len(texts), "chars": chars, "tokens": tokens,
            "tokens_per_char": tokens / chars if chars else float("nan"),
            "byte_fallback_share": sum(1 for s in ids for i in s if i in byte_ids) / tokens if tokens else 0.0,
            "pieces_used": len(used), "added_pieces_used": sum(1 for i in used if i >= base_pieces),
        }
    return out


def weighted_tokens_per_char(model_bytes: bytes, texts: list[str], weights: list[float], dummy_prefix: bool = False) -> float:
    """Tokens per character of ``texts`` weighted by ``weights`` (a word list as pseudo-text: each
    word as it occurs inside running text, so no dummy prefix by default)."""
    import sentencepiece as spm

    from vocab.proto import parse_model

    m = parse_model(model_bytes)
    m.normalizer_spec.add_dummy_prefix = dummy_prefix
    sp = spm.SentencePieceProcessor(model_proto=m.SerializeToString())
    tokens = sum(w * len(ids) for ids, w in zip(sp.encode(texts), weights, strict=True))
    chars = sum(w * len(t) for t, w in zip(texts, weights, strict=True))
    return tokens / chars if chars else float("nan")


def domain_table(tokenizers: Mapping[str, bytes], sets: Mapping[str, list[str]]) -> dict[str, dict[str, dict]]:
    """``table[tokenizer][set]`` = :func:`measure` row, for every tokenizer (name -> model bytes)."""
    return {name: measure(b, sets) for name, b in tokenizers.items()}


def geomean(values: Iterable[float]) -> float:
    """Geometric mean. ``geomean([1, 4]) == 2.0``."""
    vals = list(values)
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else float("nan")


def target_check(table: Mapping[str, Mapping[str, dict]], ours: str, peer: str, max_geomean_ratio: float = 0.95) -> dict:
    """Is ``ours`` no worse than ``peer`` on every domain and on both scripts, with the geometric
    mean of the per-domain tokens/char ratios at most ``max_geomean_ratio``?

    Returns ``{"ratios": {set: ours/peer}, "geomean_ratio", "worst", "met"}``; the sets checked
    are the domains and ``all/simplified``, ``all/traditional`` (finer cells are reported, not required).
    """
    sets = [s for s in table[ours] if "/" not in s or s in ("all/simplified", "all/traditional")]
    ratios = {s: table[ours][s]["tokens_per_char"] / table[peer][s]["tokens_per_char"] for s in sets}
    g = geomean(ratios[s] for s in domains_of(ratios))
    worst = max(ratios, key=ratios.get) if ratios else None
    return {"ratios": ratios, "geomean_ratio": g, "worst": worst,
            "met": bool(ratios) and all(r <= 1.0 for r in ratios.values()) and g <= max_geomean_ratio}


def table_markdown(table: Mapping[str, Mapping[str, dict]], sets: Iterable[str] | None = None,
                   pieces: Mapping[str, int] | None = None) -> str:
    """A Markdown table: one row per evaluation set, per tokenizer tokens/char (byte-fallback share,
    pieces used)."""
    names = list(table)
    sets = list(sets or next(iter(table.values())))
    head = "| set | chars | " + " | ".join(
        f"{n}{f' ({pieces[n]:,})' if pieces and n in pieces else ''}" for n in names) + " |"
    lines = [head, "|---|---|" + "---|" * len(names)]
    for s in sets:
        first = table[names[0]][s]
        cells = [f"{table[n][s]['tokens_per_char']:.4f} ({100 * table[n][s]['byte_fallback_share']:.1f}% bytes, "
                 f"{table[n][s]['pieces_used']:,} used)" for n in names]
        lines.append(f"| {s} | {first['chars']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
