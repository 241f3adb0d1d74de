"""Rolling-window log-likelihood of documents under a causal LM: the pure scoring core of ``eval``.

Definitions follow lm-evaluation-harness's ``loglikelihood_rolling``: each document is scored on
its own as ``ids = [BOS] + tokens``; every token after BOS is predicted exactly once, so a document
of ``n`` tokens contributes ``n`` predictions (BOS is context, never scored).

Windows, for a window of ``L`` input tokens and a stride of ``S`` (``1 <= S <= L``): a window feeds
``ids[start:end]`` (``end - start <= L``) to the model; logit ``j`` predicts ``ids[start + j + 1]``.

- the first window feeds ``ids[0:L]`` and scores every prediction it makes (up to L tokens after BOS);
- each later window scores the next ``S`` not-yet-scored tokens, with as much left context as fits:
  the prediction of ``ids[p]`` sees ``ids[max(0, e - L):p]`` (``1 <= p - start <= L`` tokens);
- ``S == L`` gives non-overlapping windows: their inputs partition ``ids[:-1]``.

Worked example, ``len(ids) == 8`` (BOS + 7 tokens), ``L = 4``, ``S = 2``::

    >>> rolling_windows(8, window_tokens=4, stride_tokens=2)
    [(0, 4, 4), (2, 6, 2), (3, 7, 1)]

i.e. (start, end, n_scored): ids[0:4] predicts tokens 1..4; ids[2:6] scores 5..6; ids[3:7] scores 7.

Speed (:func:`score_documents`): windows of all documents are sorted by length and packed into
batches of similar length under a padded-token budget (right padding, masked), and the LM head runs
only on scored positions, so overlap context and padding cost no vocabulary projection. The
reference :func:`score_documents_simple` is the straightforward one-window-at-a-time loop; both
must give the same totals (the test and ``bench/eval.py`` check it). NLL accumulates in float64.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LN2 = math.log(2.0)


@dataclass(frozen=True)
class Window:
    """One forward pass over part of a document.

    >>> Window(doc_index=0, start=2, end=6, n_scored=2).n_input_tokens
    4
    """

    doc_index: int
    """Index of the document in the list given to :func:`plan_windows`."""
    start: int
    """First input position in ``[BOS] + tokens``."""
    end: int
    """One past the last input position; the window predicts positions ``start+1 .. end``."""
    n_scored: int
    """How many of the window's last predictions are scored (the others are context only)."""

    @property
    def n_input_tokens(self) -> int:
        """Tokens fed to the model: ``end - start``."""
        return self.end - self.start


@dataclass
class DocScore:
    """Negative log-likelihood of one document.

    >>> DocScore(n_tokens=3, nll_nats=4.5).n_tokens
    3
    """

    n_tokens: int
    """Scored tokens (document tokens after BOS)."""
    nll_nats: float
    """Sum of -log p(token | context) over the scored tokens, natural log, float64."""


def rolling_windows(n_ids: int, window_tokens: int, stride_tokens: int) -> list[tuple[int, int, int]]:
    """``(start, end, n_scored)`` windows covering positions ``1 .. n_ids - 1`` of ``[BOS] + tokens``.

    ``n_ids`` counts BOS; fewer than 2 ids (an empty document) gives no window.

    >>> rolling_windows(7, 3, 3)  # non-overlapping: inputs ids[0:3], ids[3:6]
    [(0, 3, 3), (3, 6, 3)]
    >>> rolling_windows(1, 4, 2)
    []
    """
    if not 1 <= stride_tokens <= window_tokens:
        raise ValueError(f"need 1 <= stride_tokens <= window_tokens, got stride {stride_tokens}, window {window_tokens}")
    last = n_ids - 1  # the last position to predict
    if last < 1:
        return []
    end = min(window_tokens, last)
    out = [(0, end, end)]
    scored_up_to = end  # positions 1..scored_up_to are scored
    while scored_up_to < last:
        end = min(scored_up_to + stride_tokens, last)
        start = max(0, end - window_tokens)
        out.append((start, end, end - scored_up_to))
        scored_up_to = end
    return out


def plan_windows(docs_ids: Sequence[Sequence[int]], window_tokens: int, stride_tokens: int) -> list[Window]:
    """All windows of all documents (each ``docs_ids[i]`` already starts with BOS).

    >>> [w.n_scored for w in plan_windows([[1, 5, 6], [1]], 4, 2)]
    [2]
    """
    return [
        Window(i, start, end, n)
        for i, ids in enumerate(docs_ids)
        for start, end, n in rolling_windows(len(ids), window_tokens, stride_tokens)
    ]


def batch_windows(windows: Sequence[Window], batch_tokens: int) -> list[list[Window]]:
    """Sort windows by input length (longest first) and cut batches of at most ``batch_tokens``
    padded tokens (rows x longest row); a window longer than the budget gets a batch of its own.

    Sorting keeps windows of similar length together, so right padding wastes little.

    >>> ws = [Window(0, 0, 2, 2), Window(1, 0, 4, 4), Window(2, 0, 3, 3)]
    >>> [[w.doc_index for w in b] for b in batch_windows(ws, 8)]
    [[1, 2], [0]]
    """
    order = sorted(windows, key=lambda w: (-w.n_input_tokens, w.doc_index, w.start))
    batches: list[list[Window]] = []
    for w in order:
        # Longest-first order: the first window of a batch sets its padded width.
        if batches and (len(batches[-1]) + 1) * batches[-1][0].n_input_tokens <= batch_tokens:
            batches[-1].append(w)
        else:
            batches.append([w])
    return batches


def split_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(decoder, lm_head) when logits are exactly ``lm_head(decoder(...).last_hidden_state)``, else None.

    True for Llama-family models; models that scale or soft-cap logits use the plain forward.
    """
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    get_decoder = getattr(model, "get_decoder", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head


def _token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token -log p(target) in float32 (logits upcast first, as bf16 softmax loses digits)."""
    return F.cross_entropy(logits.float(), targets, reduction="none")


def _padded_batch(docs_ids: Sequence[Sequence[int]], batch: Sequence[Window], pad_id: int):
    """(input_ids, attention_mask, targets) for a batch, right-padded; targets are -100 where unscored."""
    width = max(w.n_input_tokens for w in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    targets = torch.full((len(batch), width), -100, dtype=torch.long)
    for r, w in enumerate(batch):
        ids = docs_ids[w.doc_index]
        n = w.n_input_tokens
        input_ids[r, :n] = torch.as_tensor(ids[w.start : w.end])
        attention_mask[r, :n] = 1
        # Logit j predicts ids[start + j + 1]; the scored ones are the window's last n_scored.
        targets[r, n - w.n_scored : n] = torch.as_tensor(ids[w.end - w.n_scored + 1 : w.end + 1])
    return input_ids, attention_mask, targets


@torch.inference_mode()
def score_documents(
    model: torch.nn.Module,
    docs_ids: Sequence[Sequence[int]],
    *,
    window_tokens: int,
    stride_tokens: int,
    batch_tokens: int = 8192,
    head_chunk_tokens: int | None = None,
    pad_id: int = 0,
    progress: bool = False,
    desc: str = "scoring",
) -> list[DocScore]:
    """Rolling-window NLL of every document, batched; ``docs_ids[i]`` must start with BOS.

    ``head_chunk_tokens`` bounds the (tokens x vocabulary) logits held at once; None = 256 on CPU
    (measured fastest there: the logits stay in cache), 8192 on a GPU. Documents with no
    token after BOS get ``DocScore(0, 0.0)``. Result order matches ``docs_ids``.

    >>> # scores = score_documents(model, [[1, 306, 763], [1]], window_tokens=512, stride_tokens=256)
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    split = split_head(model)
    if head_chunk_tokens is None:
        head_chunk_tokens = 256 if device.type == "cpu" else 8192
    windows = plan_windows(docs_ids, window_tokens, stride_tokens)
    batches = batch_windows(windows, batch_tokens)
    nll = torch.zeros(len(docs_ids), dtype=torch.float64)
    n_tokens = [0] * len(docs_ids)
    bar = tqdm(total=sum(w.n_scored for w in windows), unit="tok", desc=desc, disable=not progress, leave=False)
    for batch in batches:
        input_ids, attention_mask, targets = _padded_batch(docs_ids, batch, pad_id)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        scored = targets != -100
        # Row of every scored position, in the row-major order boolean indexing uses below.
        rows = torch.arange(len(batch)).unsqueeze(1).expand_as(targets)[scored].to(device)
        flat_targets = targets[scored].to(device)
        if split is not None:
            decoder, head = split
            hidden = decoder(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            hidden = hidden[scored.to(device)]
            token_nll = torch.cat([
                _token_nll(head(hidden[i : i + head_chunk_tokens]), flat_targets[i : i + head_chunk_tokens])
                for i in range(0, hidden.shape[0], head_chunk_tokens)
            ])
        else:
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            token_nll = _token_nll(logits[scored.to(device)], flat_targets)
        per_row = torch.zeros(len(batch), dtype=torch.float64, device=device)
        per_row.index_add_(0, rows, token_nll.double())
        for w, value in zip(batch, per_row.cpu().tolist(), strict=True):
            nll[w.doc_index] += value
            n_tokens[w.doc_index] += w.n_scored
        bar.update(sum(w.n_scored for w in batch))
    bar.close()
    return [DocScore(n, v) for n, v in zip(n_tokens, nll.tolist(), strict=True)]


@torch.inference_mode()
def score_documents_simple(
    model: torch.nn.Module, docs_ids: Sequence[Sequence[int]], *, window_tokens: int, stride_tokens: int
) -> list[DocScore]:
    """The straightforward reference: one window at a time, full logits, no batching, no padding.

    Same windows and definitions as :func:`score_documents`; used by tests and ``bench/eval.py``.
    """
    device = next(model.parameters()).device
    out = []
    for ids in docs_ids:
        total, n_scored_total = 0.0, 0
        for start, end, n_scored in rolling_windows(len(ids), window_tokens, stride_tokens):
            x = torch.as_tensor(ids[start:end], device=device).unsqueeze(0)
            logits = model(input_ids=x, use_cache=False).logits[0]
            target = torch.as_tensor(ids[start + 1 : end + 1], device=device)
            total += _token_nll(logits[-n_scored:], target[-n_scored:]).double().sum().item()
            n_scored_total += n_scored
        out.append(DocScore(n_scored_total, total))
    return out
