"""Word-frequency lists with documented provenance: candidate pieces and evidence for text we do not have.

Two lists can be used (``word_list`` in configs/vocab/train.yaml and merge.yaml):

- ``wordfreq`` (default): the ``zh`` list of the `wordfreq` package (3.1.1, Apache-2.0 code, data
  CC BY-SA 4.0), a blend of seven sources: Wikipedia, subtitles (OpenSubtitles 2018, SUBTLEX-CH),
  news (NewsCrawl 2014, GlobalVoices), Google Books, web text (OSCAR), Twitter, and jieba's word
  list. It is written in "oversimplified" Chinese (Traditional characters folded to Simplified), so
  Traditional forms come from OpenCC (:func:`with_variants`).
- ``jieba``: jieba 0.42.1's ``dict.txt`` (MIT; provenance undocumented, reportedly 1998 People's
  Daily). Kept for comparison (docs/vocab-experiments.md).
- or a path to a ``word freq [tag]`` file.

Frequencies are relative (wordfreq: occurrences per word of text). Example::

    >>> words = load_words("wordfreq", top_words=3)            # doctest: +SKIP
    >>> [w for w, _ in words]                                  # doctest: +SKIP
    ['一个', '我们', '中国']
"""
from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

from vocab.jieba_tools import has_han, load_dict_words
from zhllama.cli import UserError

WORD_LISTS = ("wordfreq", "jieba")
"""Named lists; anything else is read as a jieba-format file path."""

OPENCC_VARIANTS = ("s2t", "s2tw", "s2twp", "s2hk")
"""OpenCC conversions that give Traditional forms of Simplified words: generic (``s2t``), Taiwan
standard characters (``s2tw``), Taiwan with phrase substitution (``s2twp``: 软件 -> 軟體), Hong Kong (``s2hk``)."""


@functools.lru_cache(maxsize=2)
def _wordfreq_zh(min_chars: int) -> tuple[tuple[str, float], ...]:
    try:
        from wordfreq import get_frequency_dict
    except ImportError:  # pragma: no cover - a declared dependency
        raise UserError("word_list 'wordfreq' needs the wordfreq package (pip install wordfreq)") from None
    words = [(w, f) for w, f in get_frequency_dict("zh", "large").items()
             if len(w) >= min_chars and all(has_han(c) for c in w)]
    words.sort(key=lambda wf: (-wf[1], wf[0]))
    return tuple(words)


def load_words(source: str | Path, top_words: int = 0, min_chars: int = 2) -> list[tuple[str, float]]:
    """The ``top_words`` most frequent all-Han words (``min_chars``+ characters) of a list, most
    frequent first, as ``(word, frequency)``. ``source``: ``wordfreq``, ``jieba`` or a file path;
    ``top_words=0`` = all. Frequencies of one list are comparable with each other only."""
    if str(source) == "wordfreq":
        words: list = list(_wordfreq_zh(min_chars))
    elif str(source) == "jieba":
        words = load_dict_words(None, 0, min_chars)
    else:
        words = load_dict_words(source, 0, min_chars)
    return words[:top_words] if top_words > 0 else words


def check_variants(variants: Iterable[str], key: str = "word_list_variants") -> list[str]:
    """The OpenCC configs, or a :class:`UserError` naming ``key`` and the unknown name."""
    out = list(variants)
    bad = [v for v in out if v not in OPENCC_VARIANTS]
    if bad:
        raise UserError(f"{key}: unknown OpenCC conversion(s) {bad}; choose from {list(OPENCC_VARIANTS)}")
    return out


def with_variants(words: Iterable[tuple[str, float]], variants: Iterable[str], weight: float = 1.0
                  ) -> list[tuple[str, float]]:
    """Each ``(word, freq)`` then its OpenCC forms (``freq * weight``) that differ from it and from
    each other; a form already present keeps its first frequency.

    >>> with_variants([("软件", 2.0)], ["s2t", "s2twp"])
    [('软件', 2.0), ('軟件', 2.0), ('軟體', 2.0)]
    """
    import opencc

    converters = [opencc.OpenCC(v) for v in check_variants(variants)]
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for word, freq in words:
        forms = [(word, freq)] + [(c.convert(word), freq * weight) for c in converters]
        for form, f in forms:
            if form not in seen:
                seen.add(form)
                out.append((form, f))
    return out


def char_frequencies(words: Iterable[tuple[str, float]]) -> dict[str, float]:
    """Character frequencies implied by a word list: ``sum(freq(w) * count of c in w)``.

    >>> char_frequencies([("中国", 2.0), ("国", 1.0)])
    {'中': 2.0, '国': 3.0}
    """
    out: dict[str, float] = {}
    for word, freq in words:
        for c in word:
            out[c] = out.get(c, 0.0) + freq
    return out
