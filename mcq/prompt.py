"""Prompts and token requests, as lm-evaluation-harness's CMMLU / C-Eval tasks build them.

The prompt of a question with ``k`` few-shot examples (lm-eval: ``description`` + k x (``doc_to_text``
+ target delimiter " " + answer + fewshot delimiter "\\n\\n") + ``doc_to_text``)::

    以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\\n\\n        <- header (per suite)
    {question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n答案： {answer}\\n\\n       <- k dev examples
    {question}\\nA. {A}\\nB. {B}\\nC. {C}\\nD. {D}\\n答案：                    <- the scored question

``{question}`` is stripped of surrounding whitespace (lm-eval's ``question.strip()``); a passage,
when present, comes first: ``{passage}\\n{question}``. C-Eval's header is
``以下是中国关于{subject}的单项选择题，请选出其中的正确答案。\\n\\n``.

Tokens (:func:`encode_request`, lm-eval's ``_encode_pair``): trailing whitespace of the context moves
to the continuations; ``context = tok(prompt)``, and the continuation of letter L is
``tok(prompt + " L")[len(context):]``; the model reads ``[BOS] + context`` then the continuation.
The letter-logit variant reads the next-token log-probability of ``letter_token_ids`` (the last
token of ``tok("A")``, as the Chinese Llama projects do) right after the context.

Too long for the model window: few-shot examples are dropped from the left (oldest first) until it
fits; if the bare question still does not fit, its tokens are cut from the left (after BOS).
Both are counted (:class:`Fitted`).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mcq.readers import LETTERS, Question
from zhllama.cli import UserError

CMMLU_HEADER = "以下是关于{subject}的单项选择题，请直接给出正确答案的选项。\n\n"
CEVAL_HEADER = "以下是中国关于{subject}的单项选择题，请选出其中的正确答案。\n\n"


def format_question(q: Question) -> str:
    """The question block, ending in ``答案：`` (no answer).

    >>> format_question(Question("s", 0, " 1+1=? ", ("1", "2", "3", "4"), "B"))
    '1+1=?\\nA. 1\\nB. 2\\nC. 3\\nD. 4\\n答案：'
    """
    text = q.question.strip()
    if q.passage.strip():
        text = f"{q.passage.strip()}\n{text}"
    options = "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices, strict=True))
    return f"{text}{options}\n答案："


def format_example(q: Question) -> str:
    """A few-shot example: the question block, " ", its answer, a blank line.

    >>> format_example(Question("s", 0, "q", ("a", "b", "c", "d"), "D"))[-7:]
    '答案： D\\n\\n'
    """
    return f"{format_question(q)} {q.answer}\n\n"


def build_prompt(header: str, subject_name: str, shots: Sequence[Question], question: Question) -> str:
    """Header (``{subject}`` replaced), the few-shot examples in order, then the question.

    >>> build_prompt("关于{subject}：\\n\\n", "法学", [], Question("law", 0, "q", ("a", "b", "c", "d"), "A"))[:6]
    '关于法学：\\n'
    """
    return header.replace("{subject}", subject_name) + "".join(format_example(s) for s in shots) + format_question(question)


def wrap_chat(tokenizer: Any, prompt: str) -> str:
    """The prompt as one user turn of the tokenizer's chat template, ready for the assistant's reply.

    A BOS written by the template as text is removed: :func:`encode_request` adds the BOS id itself.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("chat_template is on but the tokenizer has no chat template (tokenizer_config.json "
                        "'chat_template'); score it as a base model or export the chat model with its template")
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    bos = getattr(tokenizer, "bos_token", None)
    return text[len(bos):] if bos and text.startswith(bos) else text


@dataclass(frozen=True)
class Request:
    """Token ids to score one question.

    >>> Request([1, 5, 6], [[7], [8], [9], [10]], [7, 8, 9, 10]).n_input_tokens
    3
    """

    context_ids: list[int]
    """``[BOS] + tok(context)``."""
    continuations: list[list[int]]
    """Tokens of " A", " B", " C", " D" after the context (lm-eval's convention), each non-empty."""
    letter_ids: list[int]
    """Token ids whose next-token log-probabilities the letter-logit variant compares."""

    @property
    def n_input_tokens(self) -> int:
        """Tokens the model reads for the longest choice: context + continuation - 1 (the last is only predicted)."""
        return len(self.context_ids) + max(len(c) for c in self.continuations) - 1


def letter_token_ids(tokenizer: Any) -> list[int]:
    """The last token of ``tok(letter)`` per letter ("▁A" for Llama's SentencePiece tokenizer)."""
    ids = [tokenizer(letter, add_special_tokens=False)["input_ids"][-1] for letter in LETTERS]
    if len(set(ids)) != len(LETTERS):
        raise UserError(f"the tokenizer maps the letters A-D to non-distinct tokens {ids}")
    return ids


def encode_request(tokenizer: Any, bos_id: int, context: str, letter_ids: list[int]) -> Request:
    """lm-eval's ``_encode_pair`` for the four continuations " A".." D" (see the module docstring)."""
    stripped = context.rstrip()
    moved = context[len(stripped):]  # trailing whitespace belongs to the continuation, as in lm-eval
    texts = [stripped] + [f"{stripped}{moved} {letter}" for letter in LETTERS]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    ctx = list(encoded[0])
    conts = [list(whole[len(ctx):]) for whole in encoded[1:]]
    if any(not c for c in conts):
        raise UserError(f"the tokenizer produced an empty continuation after the context ending {stripped[-20:]!r}")
    return Request([bos_id, *ctx], conts, letter_ids)


@dataclass(frozen=True)
class Fitted:
    """A request that fits the window, with the prompt text it came from and what was cut."""

    request: Request
    prompt: str
    """The scored prompt text (after dropping examples; chat-wrapped when asked)."""
    shots_used: int
    shots_dropped: int
    tokens_cut: int
    """Context tokens cut from the left when even the bare question was too long (0 normally)."""


def shot_token_counts(tokenizer: Any, shots: Sequence[Question]) -> list[int]:
    """Tokens of each few-shot example on its own: computed once per subject, used to pick how many fit."""
    if not shots:
        return []
    return [len(ids) for ids in tokenizer([format_example(s) for s in shots], add_special_tokens=False)["input_ids"]]


def fit_request(tokenizer: Any, bos_id: int, letter_ids: list[int], *, header: str, subject_name: str,
                shots: Sequence[Question], question: Question, window_tokens: int, chat: bool = False,
                shot_tokens: Sequence[int] | None = None) -> Fitted:
    """Build and encode the prompt with as many of ``shots`` as fit ``window_tokens`` (dropped from the left).

    ``shot_tokens`` (:func:`shot_token_counts`) lets a long prompt skip straight to the number of
    examples that should fit instead of re-encoding once per dropped example; every candidate is
    still checked by encoding it, so the result never exceeds the window.
    """
    prompt = _prompt(tokenizer, header, subject_name, shots, question, chat)
    request = encode_request(tokenizer, bos_id, prompt, letter_ids)
    if request.n_input_tokens <= window_tokens:
        return Fitted(request, prompt, len(shots), 0, 0)
    start = len(shots) - 1
    if shot_tokens is not None:
        # Token counts are close to additive over the example blocks: drop the oldest examples
        # until the estimate fits, then check by encoding (one more example first, in case the
        # estimate was pessimistic at a block boundary).
        excess, k = request.n_input_tokens - window_tokens, len(shots)
        while k > 0 and excess > 0:
            excess -= shot_tokens[len(shots) - k]
            k -= 1
        start = min(start, k + 1)
    for k in range(start, -1, -1):
        prompt = _prompt(tokenizer, header, subject_name, shots[len(shots) - k:], question, chat)
        request = encode_request(tokenizer, bos_id, prompt, letter_ids)
        if request.n_input_tokens <= window_tokens:
            return Fitted(request, prompt, k, len(shots) - k, 0)
    # Even the bare question is too long: keep BOS and the context's last tokens (lm-eval cuts left too).
    keep = window_tokens - (request.n_input_tokens - len(request.context_ids)) - 1
    if keep < 1:
        raise UserError(f"window_tokens={window_tokens} cannot hold BOS, one context token and the answer")
    body = request.context_ids[1:]
    cut = Request([bos_id, *body[len(body) - keep:]], request.continuations, letter_ids)
    return Fitted(cut, prompt, 0, len(shots), len(body) - keep)


def _prompt(tokenizer: Any, header: str, subject_name: str, shots: Sequence[Question], question: Question,
            chat: bool) -> str:
    prompt = build_prompt(header, subject_name, shots, question)
    return wrap_chat(tokenizer, prompt) if chat else prompt
