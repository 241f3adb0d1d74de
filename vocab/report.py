"""Compare any SentencePiece tokenizers on any texts: JSON, Markdown table, PNG chart.

``python -m vocab report --tokenizer A.model --tokenizer B/ --text heldout.jsonl --text en.txt --out_dir DIR``
(a tokenizer is a ``.model`` file or a directory holding ``tokenizer.model``, e.g. an HF tokenizer dir).

Pure cores: :func:`compare` (model bytes x documents -> result dict), :func:`to_markdown`, :func:`plot`.
Per tokenizer and text set it measures tokens per character (the number that matters for context
length and training cost), bytes per token, byte-fallback share, Han character coverage, the share
of non-Chinese lines tokenized exactly as the base does (what the merge must not break), and the
round-trip losslessness; per tokenizer: added pieces by length and the share of jieba dictionary
words that are one piece. Example::

    result = compare({"llama2": base_bytes, "merged": merged_bytes}, {"wiki": docs}, base="llama2")
    result["metrics"]["merged"]["wiki"]["tokens_per_char"]  # e.g. 0.72 vs 1.25 for the base
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from vocab.jieba_tools import HAN_RE, has_han, load_dict_words
from vocab.loaders import domain_sets, load_texts, load_tokenizer_bytes
from zhllama.artifacts import atomic_dir, atomic_write_json, atomic_write_text, sha256_bytes, write_meta
from zhllama.cli import UserError

#: Buckets of added-piece lengths (characters, not counting a leading ``▁``).
LENGTH_BUCKETS = ("1", "2", "3", "4", "5+")


@dataclass
class ReportConfig:
    """Settings of ``python -m vocab report`` (YAML: configs/vocab/report.yaml)."""

    tokenizer: list[Path] = field(default_factory=list)
    """SentencePiece ``.model`` files or directories holding ``tokenizer.model`` (repeat ``--tokenizer``)."""
    names: list[str] = field(default_factory=list)
    """Display names of the tokenizers, same order; empty = derived from the paths."""
    text: list[Path] = field(default_factory=list)
    """Text files: ``.jsonl`` (field ``text``), SQuAD-style ``.json`` (paragraph contexts) or plain text
    (one document per non-empty line); repeat ``--text``."""
    text_names: list[str] = field(default_factory=list)
    """Display names of the text sets, same order; empty = the file stems."""
    base: str = ""
    """Name of the reference tokenizer for "same as base" and ratios; empty = the first tokenizer."""
    out_dir: Path = Path("artifacts/report")
    """Where report.json, report.md, report.png and meta.json go (replaced atomically)."""
    max_docs_per_text: int = 0
    """Use at most this many documents of each text file (0 = all)."""
    jieba_words: int = 20000
    """How many of jieba's most frequent dictionary words to test for being a single piece (0 = skip)."""
    domains_file: Path | None = None
    """A corpus-stage JSONL file with ``domain``/``script`` fields (e.g. ``artifacts/corpus/heldout/heldout.jsonl``):
    adds the per-domain, per-script table (tokens/char, byte-fallback share, pieces used) and ``domains.png``."""


# ---------------------------------------------------------------------------------------------------
# Pure cores


def _added_length_bucket(piece: str) -> str:
    n = len(piece[1:] if piece.startswith("\u2581") else piece)
    return LENGTH_BUCKETS[min(n, 5) - 1] if n >= 1 else LENGTH_BUCKETS[0]


def _tokenizer_summary(model_bytes: bytes, base_pieces: set[str], words: list[tuple[str, int]]) -> dict:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    m = pb.ModelProto()
    m.ParseFromString(model_bytes)
    normal = pb.ModelProto.SentencePiece.NORMAL
    pieces = [p.piece for p in m.pieces]
    added = [p.piece for p in m.pieces if p.type == normal and p.piece not in base_pieces]
    by_length = Counter(_added_length_bucket(p) for p in added)
    out = {
        "sha256": sha256_bytes(model_bytes),
        "vocab_size": len(pieces),
        "model_type": pb.TrainerSpec.ModelType.Name(m.trainer_spec.model_type),
        "byte_fallback": bool(m.trainer_spec.byte_fallback),
        "added_pieces": len(added),
        "added_pieces_with_space_prefix": sum(p.startswith("\u2581") for p in added),
        "added_by_length": {b: by_length.get(b, 0) for b in LENGTH_BUCKETS},
        "han_single_char_pieces": sum(1 for p in pieces if len(p) == 1 and has_han(p)),
        "jieba_words_tested": len(words),
        "jieba_words_single_piece_share": None,
        "jieba_words_single_piece_share_freq_weighted": None,
    }
    if words:
        sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        single = []
        for ids in sp.encode([w for w, _ in words], out_type=str):
            # A lone leading "▁" is the dummy prefix, not part of the word; "▁中国" counts as the word.
            if len(ids) > 1 and ids[0] == "\u2581":
                ids = ids[1:]
            single.append(len(ids) == 1)
        total_freq = sum(f for _, f in words)
        out["jieba_words_single_piece_share"] = sum(single) / len(words)
        out["jieba_words_single_piece_share_freq_weighted"] = (
            sum(f for (_, f), s in zip(words, single, strict=True) if s) / total_freq
        )
    return out


def _text_summary(docs: list[str]) -> dict:
    chars = sum(map(len, docs))
    han = sum(len(HAN_RE.findall(d)) for d in docs)
    return {
        "documents": len(docs),
        "chars": chars,
        "bytes": sum(len(d.encode("utf-8")) for d in docs),
        "han_chars": han,
        "han_share": han / chars if chars else 0.0,
        "non_chinese_lines": len(_non_chinese_lines(docs)),
    }


def _non_chinese_lines(docs: list[str]) -> list[str]:
    return [ln for d in docs for ln in d.split("\n") if ln.strip() and not has_han(ln)]


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def compare(
    tokenizers: dict[str, bytes], texts: dict[str, list[str]], base: str | None = None, jieba_words: int = 20000
) -> dict:
    """Measure every tokenizer on every text set; returns a JSON-ready dict (see :func:`to_markdown`).

    ``tokenizers``: name -> serialized SentencePiece model; ``texts``: set name -> documents;
    ``base``: the name the others are compared with (default: the first). Keys of the result:
    ``base``, ``tokenizers`` (per-tokenizer facts), ``texts`` (per-set sizes) and ``metrics``
    (``metrics[tokenizer][text]``: tokens, tokens_per_char, bytes_per_token, byte_fallback_share,
    unk_share, han_char_coverage, non_chinese_lines_same_as_base, lossless_share, tokens_vs_base).
    Counts never include BOS/EOS. Example::

        r = compare({"a": a_bytes, "b": b_bytes}, {"wiki": ["数学是研究数量的学科。"]})
        r["metrics"]["b"]["wiki"]["tokens_per_char"]
    """
    import sentencepiece as spm

    if not tokenizers:
        raise UserError("no tokenizers to compare")
    if not texts:
        raise UserError("no texts to measure on")
    base = base or next(iter(tokenizers))
    if base not in tokenizers:
        raise UserError(f"base tokenizer {base!r} is not one of {sorted(tokenizers)}")
    empty = [name for name, docs in texts.items() if not any(d.strip() for d in docs)]
    if empty:
        raise UserError(f"text set(s) without any text: {empty}")

    from sentencepiece import sentencepiece_model_pb2 as pb

    base_model = pb.ModelProto()
    base_model.ParseFromString(tokenizers[base])
    base_pieces = {p.piece for p in base_model.pieces}
    words = load_dict_words(None, jieba_words) if jieba_words > 0 else []

    result: dict = {
        "base": base,
        "tokenizers": {name: _tokenizer_summary(b, base_pieces, words) for name, b in tokenizers.items()},
        "texts": {name: _text_summary(docs) for name, docs in texts.items()},
        "metrics": {},
    }
    base_sp = spm.SentencePieceProcessor(model_proto=tokenizers[base])
    base_line_ids = {name: base_sp.encode(_non_chinese_lines(docs)) for name, docs in texts.items()}
    for name, model_bytes in tokenizers.items():
        sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
        single_chars = {sp.id_to_piece(i) for i in range(sp.get_piece_size())
                        if len(sp.id_to_piece(i)) == 1 and not sp.is_control(i) and not sp.is_byte(i)}
        per_text = {}
        for text_name, docs in texts.items():
            ids = sp.encode(docs)
            tokens = sum(map(len, ids))
            facts = result["texts"][text_name]
            han = [c for d in docs for c in HAN_RE.findall(d)]
            lines = _non_chinese_lines(docs)
            line_ids = sp.encode(lines) if lines else []
            same = sum(a == b for a, b in zip(line_ids, base_line_ids[text_name], strict=True))
            decoded = sp.decode(ids)
            per_text[text_name] = {
                "tokens": tokens,
                "tokens_per_char": _ratio(tokens, facts["chars"]),
                "bytes_per_token": _ratio(facts["bytes"], tokens),
                "byte_fallback_share": _ratio(sum(1 for s in ids for i in s if i in byte_ids), tokens),
                "unk_share": _ratio(sum(1 for s in ids for i in s if i == sp.unk_id()), tokens),
                "han_char_coverage": _ratio(sum(1 for c in han if c in single_chars), len(han)),
                "non_chinese_lines_same_as_base": _ratio(same, len(lines)) if lines else None,
                "lossless_share": sum(a == b for a, b in zip(decoded, docs, strict=True)) / len(docs),
            }
        result["metrics"][name] = per_text
    for per_text in result["metrics"].values():
        for text_name, m in per_text.items():
            m["tokens_vs_base"] = _ratio(m["tokens"], result["metrics"][base][text_name]["tokens"])
    return result


def _fmt(v, pct: bool = False, digits: int = 3) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def to_markdown(result: dict) -> str:
    """Markdown tables of a :func:`compare` result: one table per metric (tokenizers x text sets),
    then the per-tokenizer facts and the text-set sizes."""
    toks = list(result["metrics"])
    sets = list(result["texts"])
    base = result["base"]
    out = [f"# Tokenizer comparison (base: `{base}`)", ""]
    sections = [
        ("tokens_per_char", "Tokens per character (lower = more text per context; ratio vs base)", False),
        ("bytes_per_token", "UTF-8 bytes per token", False),
        ("byte_fallback_share", "Share of tokens that are byte-fallback pieces", True),
        ("han_char_coverage", "Han character coverage (share of Han chars that are a piece)", True),
        ("non_chinese_lines_same_as_base", f"Non-Chinese lines tokenized exactly as `{base}`", True),
        ("lossless_share", "Documents that decode back exactly", True),
    ]
    for key, title, pct in sections:
        out += [f"## {title}", "", "| tokenizer | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
        for t in toks:
            cells = []
            for s in sets:
                m = result["metrics"][t][s]
                cell = _fmt(m[key], pct)
                if key == "tokens_per_char" and t != base and m["tokens_vs_base"] is not None:
                    cell += f" ({m['tokens_vs_base']:.2f}×)"
                cells.append(cell)
            out.append(f"| {t} | " + " | ".join(cells) + " |")
        out.append("")
    out += [
        "## Tokenizers", "",
        "| tokenizer | vocab | added vs base | added by length (1/2/3/4/5+) | `▁`-prefixed added "
        "| Han single-char pieces | jieba words as one piece | (freq-weighted) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t, f in result["tokenizers"].items():
        lengths = "/".join(str(f["added_by_length"][b]) for b in LENGTH_BUCKETS)
        out.append(
            f"| {t} | {f['vocab_size']:,} | {f['added_pieces']:,} | {lengths} | {f['added_pieces_with_space_prefix']:,} "
            f"| {f['han_single_char_pieces']:,} | {_fmt(f['jieba_words_single_piece_share'], True)} "
            f"| {_fmt(f['jieba_words_single_piece_share_freq_weighted'], True)} |"
        )
    words = next(iter(result["tokenizers"].values()))["jieba_words_tested"]
    out += ["", f"(jieba words: the {words:,} most frequent words of 2+ characters in jieba's dict.txt.)", ""]
    out += ["## Text sets", "", "| text | documents | chars | Han share | non-Chinese lines |", "|---|---|---|---|---|"]
    for s, f in result["texts"].items():
        out.append(f"| {s} | {f['documents']:,} | {f['chars']:,} | {_fmt(f['han_share'], True)} | {f['non_chinese_lines']:,} |")
    out.append("")
    return "\n".join(out)


def plot(result: dict):
    """A matplotlib Figure: tokens per character per text set (grouped bars) and added pieces by length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    toks = list(result["metrics"])
    sets = list(result["texts"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(8, 2 + 1.6 * len(sets) + 4), 4.2),
                                   gridspec_kw={"width_ratios": [max(len(sets), 2), 2]})
    width = 0.8 / len(toks)
    x = np.arange(len(sets))
    for i, t in enumerate(toks):
        vals = [result["metrics"][t][s]["tokens_per_char"] or 0.0 for s in sets]
        bars = ax1.bar(x + i * width - 0.4 + width / 2, vals, width, label=t)
        ax1.bar_label(bars, fmt="%.2f", fontsize=7)
    ax1.set_xticks(x, sets, rotation=15)
    ax1.set_ylabel("tokens per character (lower is better)")
    ax1.set_title("Compression per text set")
    ax1.legend(fontsize=8)
    xb = np.arange(len(LENGTH_BUCKETS))
    for i, t in enumerate(toks):
        vals = [result["tokenizers"][t]["added_by_length"][b] for b in LENGTH_BUCKETS]
        ax2.bar(xb + i * width - 0.4 + width / 2, vals, width, label=t)
    ax2.set_xticks(xb, LENGTH_BUCKETS)
    ax2.set_xlabel("added piece length (chars)")
    ax2.set_ylabel("pieces")
    ax2.set_title(f"Pieces added vs {result['base']}")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------
# CLI side (loaders: vocab/loaders.py)


def _unique_names(paths: list[Path], given: list[str], what: str, default) -> list[str]:
    if given and len(given) != len(paths):
        raise UserError(f"{len(given)} {what} names for {len(paths)} {what}s; give one name per {what}")
    names = list(given) if given else [default(p) for p in paths]
    if len(set(names)) != len(names):
        if given:
            raise UserError(f"duplicate {what} names: {names}")
        names = [f"{n}#{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]
    return names


def _tokenizer_name(p: Path) -> str:
    if p.is_dir() or p.name == "tokenizer.model":
        return (p if p.is_dir() else p.parent).name
    return p.stem


def run(cfg: ReportConfig) -> dict:
    """CLI: load tokenizers and texts, :func:`compare`, write report.json/.md/.png + meta.json to ``out_dir``."""
    if not cfg.tokenizer:
        raise UserError("give at least one --tokenizer (a .model file or a dir with tokenizer.model)")
    if not cfg.text and not cfg.domains_file:
        raise UserError("give at least one --text (.txt, .jsonl or SQuAD .json) or --domains_file")
    start = time.perf_counter()
    tok_names = _unique_names(cfg.tokenizer, cfg.names, "tokenizer", _tokenizer_name)
    text_names = _unique_names(cfg.text, cfg.text_names, "text", lambda p: p.stem)
    tokenizers = {n: load_tokenizer_bytes(p) for n, p in zip(tok_names, cfg.tokenizer, strict=True)}
    texts = {n: load_texts(p, cfg.max_docs_per_text) for n, p in zip(text_names, cfg.text, strict=True)}
    by_domain = domain_sets(cfg.domains_file) if cfg.domains_file else None
    if not texts:  # only a domains file: the general comparison runs on its documents
        texts = {"all domains": [t for name, ts in by_domain.items() if "/" not in name for t in ts]}
        text_names = list(texts)
    result = compare(tokenizers, texts, base=cfg.base or None, jieba_words=cfg.jieba_words)
    fig = plot(result)
    md = to_markdown(result)
    dfig = None
    if by_domain is not None:
        from vocab.domains import domain_table, domains_of
        from vocab.merge_report import domain_markdown, plot_domains

        table = domain_table(tokenizers, by_domain)
        result["domains"] = table
        md += "\n" + domain_markdown(table, None, f"By domain and script ({cfg.domains_file})")
        sets = domains_of(table[tok_names[0]]) + [s for s in ("all/simplified", "all/traditional") if s in by_domain]
        dfig = plot_domains(table, sets, "Tokens per character by domain and script")
    with atomic_dir(cfg.out_dir) as tmp:
        atomic_write_json(tmp / "report.json", result)
        atomic_write_text(tmp / "report.md", md)
        fig.savefig(tmp / "report.png", dpi=120)
        if dfig is not None:
            dfig.savefig(tmp / "domains.png", dpi=120)
        inputs = {f"tokenizer:{n}": result["tokenizers"][n]["sha256"] for n in tok_names}
        inputs.update({f"text:{n}": sha256_bytes(Path(p).read_bytes()) for n, p in zip(text_names, cfg.text, strict=False)})
        if cfg.domains_file:
            inputs["domains_file"] = sha256_bytes(Path(cfg.domains_file).read_bytes())
        write_meta(tmp, config=cfg, inputs=inputs)
    import matplotlib.pyplot as plt

    plt.close("all")
    best = {s: min(tok_names, key=lambda t: result["metrics"][t][s]["tokens_per_char"]) for s in text_names}
    print(
        f"vocab report: {len(tok_names)} tokenizer(s) x {len(text_names)} text set(s) in "
        f"{time.perf_counter() - start:.1f} s; fewest tokens/char: "
        + ", ".join(f"{s}={t}" for s, t in best.items()) + f" -> {Path(cfg.out_dir) / 'report.md'}"
    )
    return result
