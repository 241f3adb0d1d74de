"""jieba helpers for vocabulary training and reporting: word-boundary marking and the word-frequency dictionary.

Two uses of jieba when training the Chinese BPE (see ``vocab/train.py`` and docs/vocab-experiments.md):

- **Word-boundary-aware training**: :func:`mark_word_boundaries` joins jieba's words with an invisible
  delimiter that SentencePiece's trainer splits on (``pretokenization_delimiter``) and drops, so a BPE
  merge never crosses a word boundary. The delimiter is never placed right after whitespace, so
  Latin words keep their ``▁word`` pieces; it is placed before a sentence-initial Han word so the
  dummy-prefix ``▁`` is not glued to Chinese words::

      >>> mark_word_boundaries("数学是科学", delimiter="|")
      '|数学|是|科学'

- **Dictionary as weighted input**: :func:`load_dict_words` reads jieba's ``dict.txt``
  (``word freq [pos]`` per line) and :func:`dict_training_lines` turns the top words into
  ``"<delim>word\\tfreq"`` lines for SentencePiece's ``input_format="tsv"``, scaled to a chosen share of
  the corpus.
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from zhllama.cli import UserError

#: Han ideographs (CJK Unified Ideographs + Extension A), as the project counts "Han" everywhere.
HAN_RE = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")

#: U+2063 INVISIBLE SEPARATOR: never meaningful in Chinese/English prose; used only inside training input.
DEFAULT_DELIMITER = "\u2063"


def _jieba():
    """Import jieba with its start-up chatter ("Building prefix dict...") silenced."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def default_dict_path() -> Path:
    """Path of the word-frequency dictionary shipped inside the jieba package (``jieba/dict.txt``)."""
    return Path(_jieba().__file__).parent / "dict.txt"


def has_han(text: str) -> bool:
    """True if ``text`` contains a Han ideograph: ``has_han("abc中") -> True``."""
    return HAN_RE.search(text) is not None


def mark_word_boundaries(sentence: str, delimiter: str = DEFAULT_DELIMITER, hmm: bool = False) -> str:
    """Insert ``delimiter`` between jieba words (not after whitespace), e.g. ``'|数学|是|科学'`` for "数学是科学".

    Invariant: removing every ``delimiter`` gives back ``sentence`` exactly (the caller must strip the
    delimiter from raw text first). ``hmm=True`` lets jieba guess out-of-dictionary words (names).
    """
    out: list[str] = []
    prev_is_space = True  # sentence start behaves like "after whitespace" ...
    for i, word in enumerate(_jieba().cut(sentence, HMM=hmm)):
        # ... except that a sentence-initial Han word is split from the dummy-prefix "▁".
        if (not prev_is_space) or (i == 0 and has_han(word[:1])):
            out.append(delimiter)
        out.append(word)
        prev_is_space = word.isspace()
    return "".join(out)


def load_dict_words(path: str | Path | None = None, top_words: int = 0, min_chars: int = 2) -> list[tuple[str, int]]:
    """The ``top_words`` most frequent Han words of a jieba dictionary as ``(word, freq)``, most frequent first.

    ``path=None`` reads jieba's bundled ``dict.txt``; ``top_words=0`` keeps every word. Only words of at
    least ``min_chars`` characters containing Han are kept (single characters are covered by the
    character vocabulary anyway). Example: ``load_dict_words(top_words=2) == [("一个", 142747), ("中国", 129470)]``.
    """
    p = Path(path) if path else default_dict_path()
    if not p.is_file():
        raise UserError(f"jieba dictionary not found: {p}")
    words = _read_dict(str(p.resolve()), p.stat().st_mtime_ns, min_chars)
    return list(words[:top_words] if top_words > 0 else words)


@functools.lru_cache(maxsize=4)
def _read_dict(path: str, mtime_ns: int, min_chars: int) -> tuple[tuple[str, int], ...]:
    # Cached: parsing jieba's 349k-line dict.txt takes ~1 s and train + report both read it.
    words: list[tuple[str, int]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[1].isdigit():
                raise UserError(f"{path}:{lineno}: expected 'word freq [tag]', got {line.strip()!r}")
            word, freq = parts[0], int(parts[1])
            if freq > 0 and len(word) >= min_chars and has_han(word):
                words.append((word, freq))
    words.sort(key=lambda wf: (-wf[1], wf[0]))
    return tuple(words)


def dict_training_lines(
    words: Iterable[tuple[str, int]], corpus_chars: int, weight: float, delimiter: str = DEFAULT_DELIMITER
) -> Iterator[str]:
    """TSV lines ``"<delim>word\\tcount"`` whose character mass is about ``weight * corpus_chars``.

    Counts are the dictionary frequencies scaled by one common factor; words whose scaled count
    rounds to 0 are dropped (no rare word is inflated to 1). The leading delimiter keeps the
    dummy-prefix ``▁`` off the word, so the pieces learned from it are the bare word's.
    Example: with ``[("中国", 100), ("我们", 50)]``, 300 corpus chars and weight 1.0 the counts are 100 and 50.
    """
    words = list(words)
    mass = sum(freq * len(word) for word, freq in words)
    if not words or mass == 0 or weight <= 0:
        return
    scale = weight * corpus_chars / mass
    for word, freq in words:
        count = round(freq * scale)
        if count >= 1:
            yield f"{delimiter}{word}\t{count}"
