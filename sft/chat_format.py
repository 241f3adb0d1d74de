"""The Llama-2 chat format, id for id as Meta's reference ``chat_completion``, with labels and truncation.

Meta's construction (``llama/generation.py``): a system message is merged into the first user
message as ``"<<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user}"``; every (user, answer) turn is
``BOS + encode(f"[INST] {user.strip()} [/INST] {answer.strip()} ") + EOS`` and a final open user
turn is ``BOS + encode(f"[INST] {user.strip()} [/INST]")``, BOS/EOS inserted as **ids**, ``encode``
being SentencePiece without control tokens (``<s>`` written as text is three ordinary pieces)::

    <s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user_1} [/INST] {answer_1} </s><s>[INST] {user_2} [/INST]

How a turn is *written* is data (:class:`sft.templates.ChatFormat`, ``sft/chat_formats.yaml``: Llama-2
by default, Alpaca for comparison); this module does the tokenization around it, the same for every
format: BOS before each turn, EOS after each answer, as ids. Its functions are pure (an encoder in,
ids out) so the alignment stage can reuse them:

- :func:`encode_prompt` - the generation prompt of a dialog ending with the user;
- :func:`encode_dialog` - training ids + labels of a dialog ending with the assistant, truncated by
  whole turns (oldest first, the system message kept) to ``max_seq_len``;
- :func:`fit_prompt` - the generation prompt of the newest turns that fit a context;
- :data:`LLAMA2_CHAT_TEMPLATE` - the format as a Jinja ``chat_template`` for the exported tokenizer
  (``sft.chat_tokenizer``), so ``apply_chat_template(messages, add_generation_prompt=True)`` gives
  the ids of :func:`encode_prompt`.

Invariants (tested against an independent SentencePiece construction on random dialogs):
``encode_prompt(d[:2k-1]) == encode_dialog(d[:2k]).input_ids[:len(prompt)]`` and the labelled ids
decode to the answers, each followed by EOS. Example::

    enc = HFTextEncoder(AutoTokenizer.from_pretrained("artifacts/tokenizer"))
    ex = encode_dialog([{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}], enc)
    ex.input_ids[0] == enc.bos_id and ex.input_ids[-1] == enc.eos_id and ex.labels[-1] == enc.eos_id
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sft.dialog import Message, split_system
from sft.templates import LLAMA2, ChatFormat, chat_template

IGNORE_INDEX = -100
"""Label of a position that is not trained (PyTorch cross-entropy's ``ignore_index``)."""

LabelMode = Literal["all_turns", "last_turn", "prompt_and_answers"]
"""Which tokens carry a loss: every answer + its EOS (default), only the last answer + EOS, or every
token of the kept turns (prompts too). The first token of a row is never a label (nothing precedes it)."""

LLAMA2_CHAT_TEMPLATE = chat_template(LLAMA2)
"""Meta's format as a Hugging Face ``chat_template``: rendered to text, then tokenized by a tokenizer
that reads ``<s>``/``</s>`` in text as the control tokens (``split_special_tokens=False``). The
tokenizer prepends ``▁`` to each text segment between control tokens, exactly as each separate
SentencePiece ``encode`` of Meta's turns does."""


class TextEncoder(Protocol):
    """What the chat format needs from a tokenizer: plain-text encoding (no control tokens) + ids."""

    bos_id: int
    eos_id: int

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """SentencePiece-style ids of each text: dummy prefix, ``<s>`` in text as ordinary pieces."""
        ...


class HFTextEncoder:
    """A :class:`TextEncoder` over a Hugging Face tokenizer (the project's exported ones).

    Control-token text is always encoded as text (``split_special_tokens=True`` per call), whatever
    the tokenizer's default: the chat tokenizer exported by SFT reads ``<s>`` as BOS, Meta's
    reference never does.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        out = self.tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)
        return [list(ids) for ids in out["input_ids"]]


class PromptNotPrefixError(ValueError):
    """The tokens of ``[INST] u [/INST]`` are not a prefix of those of ``[INST] u [/INST] a ``: the
    answer's first piece merged across the boundary, so the generation prompt would differ from training."""


@dataclass(frozen=True)
class EncodedTurn:
    """One turn's ids: ``BOS ... [/INST]`` (+ ``answer EOS`` when answered)."""

    ids: list[int]
    n_prompt: int
    """Tokens up to and including ``[/INST]`` (BOS included); the answer is ``ids[n_prompt:]``."""
    answer_chars: int = 0
    """Characters of the stripped answer (for bits per character)."""


def encode_turns(turns: Sequence[tuple[str, str | None]], enc: TextEncoder, fmt: ChatFormat = LLAMA2) -> list[EncodedTurn]:
    """Encode ``(content, answer or None)`` turns independently (``content`` from :meth:`ChatFormat.content`).

    Raises :class:`PromptNotPrefixError` if an answered turn's prompt ids are not a prefix of its ids.
    """
    texts: list[str] = []
    for content, answer in turns:
        texts.append(fmt.prompt_text(content))
        if answer is not None:
            texts.append(fmt.turn_text(content, answer))
    encoded = iter(enc.encode_many(texts))
    out = []
    for content, answer in turns:
        prompt = [enc.bos_id] + next(encoded)
        if answer is None:
            out.append(EncodedTurn(prompt, len(prompt)))
            continue
        full = [enc.bos_id] + next(encoded) + [enc.eos_id]
        if full[:len(prompt)] != prompt:
            raise PromptNotPrefixError(f"the answer's first piece merges with the prompt's end in turn {content[:30]!r}")
        out.append(EncodedTurn(full, len(prompt), len(answer.strip())))
    return out


def _contents(turns: Sequence[tuple[str, str | None]], system: str | None, fmt: ChatFormat,
              first_is_first: bool = True) -> list[tuple[str, str | None]]:
    """``(content, answer)`` of ``turns``; the system message goes into ``turns[0]`` if it opens the row."""
    return [(fmt.content(user, system, first=first_is_first and k == 0), answer) for k, (user, answer) in enumerate(turns)]


def encode_prompt(dialog: Sequence[Message], enc: TextEncoder, fmt: ChatFormat = LLAMA2) -> list[int]:
    """The generation prompt of a dialog ending with the user (Meta's ``chat_completion`` ids for Llama-2).

    ``dialog`` must pass ``check_dialog(dialog, end="user")``.
    """
    system, turns = split_system(dialog)
    if not turns or turns[-1][1] is not None:
        raise ValueError("a generation prompt needs a dialog ending with a user message")
    return [i for t in encode_turns(_contents(turns, system, fmt), enc, fmt) for i in t.ids]


@dataclass(frozen=True)
class EncodedDialog:
    """Training ids and labels of one dialog (``labels[i]`` is the target *at* position ``i``; the
    model shifts, so ``labels[0]`` is always ignored)."""

    input_ids: list[int]
    labels: list[int]
    turn_starts: list[int]
    """Offset of each kept turn's BOS in ``input_ids``."""
    n_turns_dropped: int = 0
    """Oldest turns dropped to fit ``max_seq_len``."""
    n_label_chars: int = 0
    """Characters of the answers whose tokens are labelled (bits per character)."""

    @property
    def n_labels(self) -> int:
        return sum(1 for x in self.labels[1:] if x != IGNORE_INDEX)


class TooLongError(ValueError):
    """Even the last turn (with the system message) is longer than ``max_seq_len``."""


def _fit_start(n_turns: int, rest: list[EncodedTurn], first_turn: Any,
               max_seq_len: int | None) -> tuple[int, EncodedTurn]:
    """Smallest ``s`` such that turn ``s`` (carrying the system message) + turns ``s+1..`` fit.

    ``rest[j - 1]`` is turn ``j >= 1`` without the system message; ``first_turn(s)`` encodes turn
    ``s`` as the first kept one.
    """
    suffix = [0] * (n_turns + 1)
    for j in range(n_turns - 1, 0, -1):
        suffix[j] = suffix[j + 1] + len(rest[j - 1].ids)
    for s in range(n_turns):
        first = first_turn(s)
        if max_seq_len is None or len(first.ids) + suffix[s + 1] <= max_seq_len:
            return s, first
    raise TooLongError(f"the last turn alone is {len(first.ids)} tokens > max_seq_len {max_seq_len}")


def encode_dialog(dialog: Sequence[Message], enc: TextEncoder, label_mode: LabelMode = "all_turns",
                  max_seq_len: int | None = None, fmt: ChatFormat = LLAMA2) -> EncodedDialog:
    """Ids and labels of a dialog ending with the assistant, keeping the newest turns that fit.

    Truncation is by whole turns, oldest first; the system message moves to the first kept turn
    (so a kept turn is never cut: every ``[/INST]`` and EOS stays whole). Raises
    :class:`TooLongError` if the last turn alone does not fit and :class:`PromptNotPrefixError` for a
    tokenization that would make the generation prompt differ from training.

    >>> # [user "1+1?", assistant "2"] -> ids <s>[INST] 1+1? [/INST] 2 </s>, labels only on "▁2 ▁ </s>"
    """
    system, turns = split_system(dialog)
    if not turns or turns[-1][1] is None:
        raise ValueError("a training dialog must end with an assistant message")
    rest = encode_turns(_contents(turns[1:], system, fmt, first_is_first=False), enc, fmt)  # turns 1.. when not first
    carries_system = system is not None or fmt.default_system is not None

    def first_turn(k: int) -> EncodedTurn:
        if k > 0 and not carries_system:
            return rest[k - 1]
        return encode_turns([(fmt.content(turns[k][0], system, first=True), turns[k][1])], enc, fmt)[0]

    start, first = _fit_start(len(turns), rest, first_turn, max_seq_len)
    kept = [first] + rest[start:]
    ids: list[int] = []
    labels: list[int] = []
    starts: list[int] = []
    chars = 0
    for k, t in enumerate(kept):
        starts.append(len(ids))
        ids += t.ids
        if label_mode == "prompt_and_answers":
            labels += t.ids
        elif label_mode == "all_turns" or k == len(kept) - 1:
            labels += [IGNORE_INDEX] * t.n_prompt + t.ids[t.n_prompt:]
        else:
            labels += [IGNORE_INDEX] * len(t.ids)
        if label_mode != "last_turn" or k == len(kept) - 1:
            chars += t.answer_chars
    labels[0] = IGNORE_INDEX  # nothing precedes the first token: never a target, packed or not
    return EncodedDialog(ids, labels, starts, n_turns_dropped=start, n_label_chars=chars)



def fit_prompt(dialog: Sequence[Message], enc: TextEncoder, max_tokens: int,
               fmt: ChatFormat = LLAMA2) -> tuple[list[int], int]:
    """``(prompt ids, turns dropped)``: :func:`encode_prompt` of the newest turns that fit ``max_tokens``.

    Whole turns go, oldest first; the system message stays. For a chat whose history outgrows the
    model's context. Raises :class:`TooLongError` if the last user message alone does not fit.
    """
    system = [dict(dialog[0])] if dialog and dialog[0]["role"] == "system" else []
    body = list(dialog[len(system):])
    for dropped in range(0, len(body) // 2 + 1):
        ids = encode_prompt(system + body[2 * dropped:], enc, fmt)
        if len(ids) <= max_tokens:
            return ids, dropped
    raise TooLongError(f"the last message alone is {len(ids)} tokens > {max_tokens} (the context left for it)")
