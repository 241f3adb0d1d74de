"""Loading what the reports measure: tokenizer files, text files, corpus records by domain and script.

>>> docs = load_texts("tests/data/english.txt")          # doctest: +SKIP
>>> sets = domain_sets("artifacts/corpus/heldout/heldout.jsonl")   # doctest: +SKIP
"""
from __future__ import annotations

import json
from pathlib import Path

from zhllama.cli import UserError


def load_tokenizer_bytes(path: str | Path) -> bytes:
    """Bytes of a SentencePiece model given as a ``.model`` file or a dir holding ``tokenizer.model``."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.model"
    if not p.is_file():
        raise UserError(f"tokenizer not found: {path} (expected a .model file or a dir with tokenizer.model)")
    data = p.read_bytes()
    try:
        m = pb.ModelProto()
        m.ParseFromString(data)
    except Exception:
        raise UserError(f"{p}: not a SentencePiece model") from None
    if not m.pieces:
        raise UserError(f"{p}: not a SentencePiece model (no pieces)")
    return data


def load_texts(path: str | Path, max_docs: int = 0) -> list[str]:
    """Documents of a text file: ``.jsonl`` -> each line's ``text``; ``.json`` -> SQuAD paragraph
    contexts (deduplicated) or a list of strings; anything else -> one document per non-empty line."""
    from corpora.shards import iter_jsonl_texts

    p = Path(path)
    if not p.is_file():
        raise UserError(f"text file not found: {p}")
    if p.suffix == ".jsonl":
        docs = []
        for t in iter_jsonl_texts([p]):
            docs.append(t)
            if max_docs and len(docs) >= max_docs:
                break
    elif p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
        if isinstance(data, list) and all(isinstance(x, str) for x in data):
            docs = data
        elif isinstance(data, dict) and isinstance(data.get("data"), list):
            seen: dict[str, None] = {}
            for article in data["data"]:
                for para in article.get("paragraphs", []):
                    if isinstance(para.get("context"), str):
                        seen.setdefault(para["context"], None)
            docs = list(seen)
        else:
            raise UserError(f"{p}: expected a SQuAD-style object with 'data' or a JSON list of strings")
    else:
        docs = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    docs = docs[:max_docs] if max_docs else docs
    if not docs:
        raise UserError(f"{p}: no text found")
    return docs


def domain_sets(path: str | Path) -> dict[str, list[str]]:
    """Documents of a corpus-stage JSONL file grouped by domain and script (:func:`vocab.domains.group`)."""
    from corpora.shards import iter_jsonl_records
    from vocab.domains import group
    from vocab.merge_inputs import doc_of

    if not Path(path).is_file():
        raise UserError(f"domains_file not found: {path}")
    sets = group(doc_of(r) for r in iter_jsonl_records([path]))
    if not sets:
        raise UserError(f"{path}: no documents")
    return sets


