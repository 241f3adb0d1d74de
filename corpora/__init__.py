"""zhllama stage: corpora. Read, clean, convert, deduplicate and shard Chinese corpora, by domain and script.

Modules: ``sources`` (what each source is: format, domain, script, conversion), ``inputs`` +
``readers`` + ``wiki_readers`` (one streaming reader per format; compressed and UTF-16 inputs),
``wikitext`` (zhwiki markup to text), ``clean`` + ``scripts`` (cleaning, OpenCC / MediaWiki
conversion, script detection), ``dedup`` (exact + MinHash/LSH), ``domains`` (domain weights for
consumers, the per-domain held-out split), ``build`` (``python -m corpora build``), ``output`` +
``manifest`` (shards, counts, report), ``engine_datatrove`` (the scale path), ``shards`` (how later
stages read the corpus and any JSONL file back)::

    from corpora import iter_corpus_records, weighted_sample
    for record in weighted_sample(iter_corpus_records("artifacts/corpus", "train"), {"dialogue": 2.0}, seed=0):
        ...  # record: {"id", "source", "domain", "script", "text"}
"""
from corpora.domains import check_weights, repeat_count, weighted_sample, weights_for_shares
from corpora.shards import (
           iter_corpus_records,
           iter_corpus_texts,
           iter_jsonl_records,
           iter_jsonl_texts,
           load_manifest,
)

__all__ = ["check_weights", "iter_corpus_records", "iter_corpus_texts", "iter_jsonl_records", "iter_jsonl_texts",
           "load_manifest", "repeat_count", "weighted_sample", "weights_for_shares"]
