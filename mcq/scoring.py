"""Log-likelihood of the four answers of many questions, batched, each context read once.

One row per question holds the shared context followed by the four continuations as **branches**
of a tree (the last token of a continuation is only predicted, never read, so a one-token answer
adds nothing to the row)::

    tokens     [BOS] c1 .. cn | a1 | b1 | ...      (branch j = continuation j without its last token)
    positions   0    1 .. n   | n+1| n+1| ...      (every branch continues from the context)
    attends     causal over the context; a branch token sees the context and its own branch only

With a 4-D attention mask and explicit position ids, one forward pass of the decoder gives exactly
the logits that four separate passes over ``context + continuation_j`` would (up to float rounding:
the tests check it against a direct computation), and rows of several questions share a batch.
The LM head runs only on the positions that predict a continuation token or a letter (about five
per question instead of every context token), log-softmax in float32, sums in float64.

:func:`score_requests_simple` is the straightforward reference: one forward pass per question and
letter over ``context + continuation`` with full logits, as a plain loop would do; ``bench/mcq.py``
compares the two.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mcq.prompt import Request
from pretrain.scoring import split_head


@dataclass
class Scores:
    """Per-choice log-likelihoods of one question (natural log).

    >>> Scores([-1.0, -0.5, -2.0, -3.0], [-1.0, -0.5, -2.0, -3.0]).predicted()
    'B'
    """

    loglik: list[float]
    """Sum of log p(continuation tokens | context) per choice A..D."""
    letter_loglik: list[float]
    """log p(letter token | context) per choice: the next-token letter-logit variant."""

    def predicted(self, method: str = "continuation") -> str:
        """The argmax letter (the first one on a tie, as ``numpy.argmax`` in lm-eval)."""
        values = self.loglik if method == "continuation" else self.letter_loglik
        return "ABCD"[max(range(4), key=lambda j: (values[j], -j))]


@dataclass(frozen=True)
class _Layout:
    """Where each needed prediction sits in a request's tree row."""

    n_tokens: int
    """Row length: context + every branch."""
    input_ids: list[int]
    position_ids: list[int]
    group_ids: list[int]
    """0 for the context, j + 1 for branch j."""
    targets: list[tuple[int, int, int]]
    """(row position, target token, choice index) per continuation token."""


def tree_layout(req: Request) -> _Layout:
    """The row of one request (see the module docstring).

    >>> lay = tree_layout(Request([1, 5], [[7], [8, 9], [3], [4]], [7, 8, 3, 4]))
    >>> lay.input_ids, lay.position_ids, lay.group_ids
    ([1, 5, 8], [0, 1, 2], [0, 0, 2])
    >>> lay.targets  # (position whose logits predict it, token, choice)
    [(1, 7, 0), (1, 8, 1), (2, 9, 1), (1, 3, 2), (1, 4, 3)]
    """
    n = len(req.context_ids)
    ids, pos, groups = list(req.context_ids), list(range(n)), [0] * n
    targets = []
    for j, cont in enumerate(req.continuations):
        # Token t of the continuation is predicted from the last context position (t = 0) or from
        # branch token t - 1; the branch feeds cont[:-1] at positions n, n+1, ...
        branch_start = len(ids)
        for t, tok in enumerate(cont):
            targets.append((n - 1 if t == 0 else branch_start + t - 1, tok, j))
        ids.extend(cont[:-1])
        pos.extend(range(n, n + len(cont) - 1))
        groups.extend([j + 1] * (len(cont) - 1))
    return _Layout(len(ids), ids, pos, groups, targets)


def tree_attention_mask(group_ids: torch.Tensor, position_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Boolean ``(batch, 1, L, L)`` mask, True where query ``q`` may attend key ``k``.

    A key is visible when it is a real token, not later than the query, and either in the context
    (group 0) or in the query's own branch; a padding query sees only itself, so no softmax row is
    empty (an all-masked row gives NaN, and NaN times a zero weight is still NaN downstream).

    >>> g = torch.tensor([[0, 0, 1, 2]]); p = torch.tensor([[0, 1, 2, 2]]); v = torch.ones(1, 4, dtype=torch.bool)
    >>> tree_attention_mask(g, p, v)[0, 0].int().tolist()
    [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 1]]
    """
    gq, gk = group_ids.unsqueeze(2), group_ids.unsqueeze(1)
    pq, pk = position_ids.unsqueeze(2), position_ids.unsqueeze(1)
    allowed = (pk <= pq) & ((gk == 0) | (gk == gq)) & valid.unsqueeze(1) & valid.unsqueeze(2)
    eye = torch.eye(group_ids.shape[1], dtype=torch.bool, device=group_ids.device).unsqueeze(0)
    allowed = allowed | (eye & ~valid.unsqueeze(2))
    return allowed.unsqueeze(1)


def batch_by_length(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped longest first, each batch at most ``batch_tokens`` padded tokens (one row may exceed it).

    >>> batch_by_length([3, 8, 5, 2], 10)
    [[1], [2, 0], [3]]
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Eager attention adds the mask to the scores and SDPA accepts either form: an additive float
    # mask is read the same way by both.
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=mask.device))


def _check_attention(model: torch.nn.Module) -> None:
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl not in (None, "eager", "sdpa"):
        raise ValueError(f"tree scoring needs a 4-D attention mask (eager or sdpa attention), the model uses {impl!r}")


@torch.inference_mode()
def score_requests(model: torch.nn.Module, requests: Sequence[Request], *, batch_tokens: int = 8192,
                   pad_id: int = 0, progress: bool = False, desc: str = "questions") -> list[Scores]:
    """Scores of every request: one tree row per question, rows batched by length (see the module docstring).

    >>> # scores = score_requests(model, [fit.request for fit in fitted]); scores[0].predicted()
    """
    from tqdm.auto import tqdm

    _check_attention(model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    split = split_head(model)
    layouts = [tree_layout(r) for r in requests]
    out: list[Scores | None] = [None] * len(requests)
    bar = tqdm(total=len(requests), unit="q", desc=desc, disable=not progress, leave=False)
    for batch in batch_by_length([lay.n_tokens for lay in layouts], batch_tokens):
        width = layouts[batch[0]].n_tokens
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        pos = torch.zeros((len(batch), width), dtype=torch.long)
        groups = torch.full((len(batch), width), -1, dtype=torch.long)
        valid = torch.zeros((len(batch), width), dtype=torch.bool)
        rows, cols = [], []  # the positions whose logits are needed: targets first, then each letter row
        for r, i in enumerate(batch):
            lay = layouts[i]
            ids[r, : lay.n_tokens] = torch.as_tensor(lay.input_ids)
            pos[r, : lay.n_tokens] = torch.as_tensor(lay.position_ids)
            groups[r, : lay.n_tokens] = torch.as_tensor(lay.group_ids)
            valid[r, : lay.n_tokens] = True
            rows += [r] * len(lay.targets)
            cols += [p for p, _, _ in lay.targets]
        letter_cols = [len(requests[i].context_ids) - 1 for i in batch]
        rows += list(range(len(batch)))
        cols += letter_cols
        mask = _additive(tree_attention_mask(groups, pos, valid), dtype).to(device)
        ids, pos = ids.to(device), pos.to(device)
        sel_r, sel_c = torch.as_tensor(rows, device=device), torch.as_tensor(cols, device=device)
        if split is not None:
            decoder, head = split
            hidden = decoder(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
            logits = head(hidden[sel_r, sel_c])
        else:
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[sel_r, sel_c]
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        n_targets = len(rows) - len(batch)
        targets = [t for i in batch for _, t, _ in layouts[i].targets]
        target_lp = logprobs[torch.arange(n_targets, device=device), torch.as_tensor(targets, device=device)]
        target_lp = target_lp.double().cpu().tolist()
        letter_lp = logprobs[n_targets:].double().cpu()
        k = 0
        for r, i in enumerate(batch):
            loglik = [0.0] * 4
            for _, _, choice in layouts[i].targets:
                loglik[choice] += target_lp[k]
                k += 1
            letters = letter_lp[r, torch.as_tensor(requests[i].letter_ids)].tolist()
            out[i] = Scores(loglik, letters)
        bar.update(len(batch))
    bar.close()
    assert all(s is not None for s in out), "every request belongs to exactly one batch"
    return out  # type: ignore[return-value]


@torch.inference_mode()
def score_requests_simple(model: torch.nn.Module, requests: Sequence[Request]) -> list[Scores]:
    """The reference: for each question and letter, one forward pass over ``context + continuation``."""
    device = next(model.parameters()).device
    out = []
    for req in requests:
        loglik, letters = [], None
        n = len(req.context_ids)
        for cont in req.continuations:
            ids = torch.as_tensor([*req.context_ids, *cont[:-1]], device=device).unsqueeze(0)
            logprobs = torch.log_softmax(model(input_ids=ids, use_cache=False).logits[0].float(), dim=-1)
            target = torch.as_tensor(cont, device=device)
            loglik.append(logprobs[n - 1 :, :].gather(1, target.unsqueeze(1)).double().sum().item())
            if letters is None:
                letters = logprobs[n - 1, torch.as_tensor(req.letter_ids, device=device)].double().tolist()
        out.append(Scores(loglik, letters or []))
    return out
