"""zhllama stage: corpora. Read, clean, deduplicate and shard Chinese corpora.

Modules: ``readers`` (one streaming generator per input format), ``clean`` (wikitext, NFC, markup,
OpenCC t2s, filters), ``dedup`` (exact + MinHash/LSH), ``build`` (``python -m corpora build``:
sources -> ``train/`` shards, ``heldout/heldout.jsonl``, manifest.json, report.md, meta.json),
``shards`` (how later stages read the corpus back)::

    from corpora import iter_corpus_texts
    for text in iter_corpus_texts("artifacts/corpus", split="train"):
        ...
"""
from corpora.shards import iter_corpus_records, iter_corpus_texts, load_manifest

__all__ = ["iter_corpus_records", "iter_corpus_texts", "load_manifest"]
