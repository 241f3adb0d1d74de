"""Deterministic dev split carved out of the corpus train split (the one shared membership rule).

Held-out is a test set nobody tunes on; choices such as the merge size are made on *dev*: the train
documents whose text hash falls in the lowest ``dev_fraction`` of the hash range. Membership depends on
the text alone (not on shard order or ids), so `vocab train` (which excludes dev) and `vocab merge`
(which measures on dev) agree without sharing state.

>>> is_dev("一篇文章", 0.0), is_dev("一篇文章", 1.0)
(False, True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# 2**64: the hash below is read as an unsigned 64-bit integer, so the bucket is uniform on [0, 1).
_HASH_RANGE = float(1 << 64)


def dev_bucket(text: str) -> float:
    """Where ``text`` falls in [0, 1): the first 8 bytes of its SHA-256 as a fraction of 2**64.

    >>> 0.0 <= dev_bucket("你好") < 1.0
    True
    """
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _HASH_RANGE


def is_dev(text: str, dev_fraction: float) -> bool:
    """True when the document ``text`` belongs to the dev split (bucket < ``dev_fraction``).

    >>> is_dev("你好", 0.0)
    False
    """
    if not 0.0 <= dev_fraction <= 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1], got {dev_fraction}")
    return dev_bucket(text) < dev_fraction


def split_dev(texts: Iterable[str], dev_fraction: float) -> tuple[list[str], list[str]]:
    """Partition ``texts`` into (train_for_vocab, dev), keeping order; every text lands in exactly one.

    >>> split_dev(["甲", "乙"], 0.0)
    (['甲', '乙'], [])
    """
    train, dev = [], []
    for text in texts:
        (dev if is_dev(text, dev_fraction) else train).append(text)
    return train, dev
