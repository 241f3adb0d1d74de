"""The reference model's reply log-probabilities, computed once and cached (or live, LoRA disabled).

DPO compares the policy to a frozen reference on every pair at every step. The reference never
changes, so its log-probabilities are computed once per (reference model, encoded data) and
stored under ``cache_root/ref-<key>/`` with ``meta.json``; the key is
``sha256(reference weights hash, pairs hash)`` so a new SFT model or a different tokenizer,
``max_seq_len`` or data file gets a new entry, and a stale one is never read::

    ref = load_or_compute(Path("artifacts/cache"), "artifacts/sft/demo/final", encoded, pad_id=0)
    ref.chosen[i], ref.rejected[i]          # float64 sums over the reply tokens of pair i

In LoRA mode the reference is also available for free: the policy with its adapter disabled *is*
the SFT model. :func:`live_ref_logps` computes it that way; both give the same numbers (tested).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from align.pairs import EncodedPair, pair_batch, pairs_sha256

CACHE_FILE = "ref_logps.npz"


@dataclass
class RefLogps:
    """Summed reply log-probs of the reference, one entry per encoded pair (same order)."""

    chosen: np.ndarray
    rejected: np.ndarray

    def take(self, index: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(index, dtype=np.int64)
        return self.chosen[idx], self.rejected[idx]


def pair_logps(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """``(chosen logps [B], rejected logps [B])`` of a :func:`~align.pairs.pair_batch` under ``model``."""
    from align.dpo import split_pair_batch
    from align.logprobs import score_replies

    return split_pair_batch(score_replies(model, batch).logps)


@contextlib.contextmanager
def adapter_disabled(model: Any):
    """Run ``model`` (a peft model, possibly inside a DeepSpeed engine) as its base model."""
    inner = getattr(model, "module", model)
    if not hasattr(inner, "disable_adapter"):
        raise TypeError("the reference can be the policy with its adapter disabled only in LoRA mode")
    with inner.disable_adapter():
        yield


def compute_ref_logps(model: Any, pairs: Sequence[EncodedPair], pad_id: int, batch_pairs: int = 8,
                      device: Any = "cpu", progress: bool = False) -> RefLogps:
    """Reference log-probs of every pair (no grad, eval mode), in ``batch_pairs`` pairs per forward."""
    import torch

    chosen, rejected = np.zeros(len(pairs)), np.zeros(len(pairs))
    starts = range(0, len(pairs), batch_pairs)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="reference log-probs", unit="batch")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for s in starts:
            batch = {k: v.to(device) for k, v in pair_batch(pairs[s:s + batch_pairs], pad_id).items()}
            c, r = pair_logps(model, batch)
            chosen[s:s + len(c)] = c.double().cpu().numpy()
            rejected[s:s + len(r)] = r.double().cpu().numpy()
    model.train(was_training)
    return RefLogps(chosen, rejected)


def live_ref_logps(policy: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Reference log-probs of a batch from a LoRA policy with its adapter disabled (no grad)."""
    import torch

    with torch.no_grad(), adapter_disabled(policy):
        return pair_logps(policy, batch)


def cache_key(model_sha256: str, pairs: Sequence[EncodedPair]) -> str:
    """``sha256(model hash, pairs hash)``, hex; the cache entry's name is its first 16 characters."""
    import hashlib

    return hashlib.sha256(f"{model_sha256}\0{pairs_sha256(pairs)}".encode()).hexdigest()


def load_or_compute(cache_root: str | Path, model_dir: str | Path, pairs: Sequence[EncodedPair], pad_id: int,
                    batch_pairs: int = 8, device: str = "auto") -> tuple[RefLogps, Path, bool]:
    """The cached reference log-probs of ``pairs`` under ``model_dir``; computed and stored on a miss.

    Computed in one process (``device="auto"``: the GPU if there is one) before the workers start.
    Returns ``(ref, entry_dir, hit)``.
    """
    from pretrain.model import load_llama
    from zhllama.artifacts import atomic_dir, sha256_tree, write_meta

    model_sha = sha256_tree(model_dir)
    key = cache_key(model_sha, pairs)
    entry = Path(cache_root) / f"ref-{key[:16]}"
    path = entry / CACHE_FILE
    if path.is_file():
        data = np.load(path)
        if len(data["chosen"]) == len(pairs):
            return RefLogps(data["chosen"], data["rejected"]), entry, True
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_llama(model_dir).to(device)
    ref = compute_ref_logps(model, pairs, pad_id, batch_pairs, device, progress=True)
    with atomic_dir(entry) as tmp:
        np.savez(tmp / CACHE_FILE, chosen=ref.chosen, rejected=ref.rejected)
        write_meta(tmp, inputs={"reference_model": model_sha, "pairs": pairs_sha256(pairs)},
                   key=key, n_pairs=len(pairs), pad_id=pad_id,
                   note="summed reply log-probs of the reference model, one per pair, in pair order")
    return ref, entry, False
