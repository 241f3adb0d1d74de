"""Dialogs as plain data, and the rules a dialog must follow to be trained on or served.

A dialog is a list of ``{"role": "system" | "user" | "assistant", "content": str}`` dicts (the
messages JSONL schema, the shape ``tokenizer.apply_chat_template`` takes): an optional system
message first, then user and assistant strictly alternating. A *training* dialog ends with the
assistant; a *prompt* ends with the user.

:func:`check_dialog` returns the reason a dialog breaks a rule (``None`` if it is fine); the reasons
are the keys of the manifest's ``rejected`` table. Delimiters of the chat format written inside a
message (``[INST]``, ``[/INST]``, ``<<SYS>>``, ``<</SYS>>``) tokenize exactly like the real ones and
forge turns; control tokens written as text (``<s>``, ``</s>``, ``<unk>``) become the control ids
once a serving stack renders the chat template to text. Both are rejected, or escaped with
:func:`escape_delimiters` by option::

    >>> check_dialog([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    >>> check_dialog([{"role": "user", "content": "hi"}])
    'not_ending_with_assistant'
    >>> escape_delimiters("say [INST] twice </s>")
    'say [ INST] twice < /s>'
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

Message = dict
"""``{"role": str, "content": str}``."""
Dialog = list[Message]

ROLES = ("system", "user", "assistant")
#: The Llama-2 chat format's own markers (Meta's ``SPECIAL_TAGS``).
FORMAT_DELIMITERS: tuple[str, ...] = ("[INST]", "[/INST]", "<<SYS>>", "<</SYS>>")
#: Control tokens of the Llama tokenizer written as text (``<s>`` typed in a message).
CONTROL_TOKEN_TEXTS: tuple[str, ...] = ("<s>", "</s>", "<unk>")
DEFAULT_DELIMITERS: tuple[str, ...] = FORMAT_DELIMITERS + CONTROL_TOKEN_TEXTS

OnDelimiter = Literal["reject", "escape"]

#: Every reason :func:`check_dialog` can return, in the order the rules are checked.
REASONS = (
    "empty_dialog", "unknown_role", "non_string_content", "empty_content", "roles_out_of_order",
    "not_ending_with_assistant", "not_ending_with_user", "delimiter_in_message",
)


def find_delimiter(text: str, delimiters: Sequence[str] = DEFAULT_DELIMITERS) -> str | None:
    """The first of ``delimiters`` that occurs in ``text`` (in ``delimiters`` order), else None.

    >>> find_delimiter("a <<SYS>> b"), find_delimiter("a [INST b")
    ('<<SYS>>', None)
    """
    return next((d for d in delimiters if d in text), None)


def escape_delimiters(text: str, delimiters: Sequence[str] = DEFAULT_DELIMITERS) -> str:
    """Break every delimiter in ``text`` by a space after its first character (``[INST]`` -> ``[ INST]``).

    Invariant: the result contains none of ``delimiters``. Inserting a space can never create a new
    occurrence (no delimiter holds whitespace, so any occurrence after the insertion lies wholly on
    one side of the space, where it already was); the loop removes overlapping leftovers.

    >>> escape_delimiters("<<SYS>>x<</SYS>>")
    '< <SYS>>x< </SYS>>'
    """
    for d in delimiters:
        if not d or any(c.isspace() for c in d):
            raise ValueError(f"a delimiter must be non-empty and hold no whitespace, got {d!r}")
    while (d := find_delimiter(text, delimiters)) is not None:
        text = text.replace(d, d[0] + " " + d[1:])
    return text


def check_dialog(dialog: Sequence[Message], *, end: Literal["assistant", "user"] = "assistant",
                 delimiters: Sequence[str] = DEFAULT_DELIMITERS) -> str | None:
    """Why ``dialog`` cannot be used (a :data:`REASONS` key), or None when it follows every rule.

    Rules: at least one message; roles from :data:`ROLES`; string, non-blank contents; an optional
    system message first, then user/assistant alternating from the user; the last message from
    ``end``; no delimiter inside a message.

    >>> check_dialog([{"role": "assistant", "content": "hi"}])
    'roles_out_of_order'
    >>> check_dialog([{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}])
    'empty_content'
    """
    if not dialog:
        return "empty_dialog"
    for m in dialog:
        if m.get("role") not in ROLES:
            return "unknown_role"
        if not isinstance(m.get("content"), str):
            return "non_string_content"
        if not m["content"].strip():
            return "empty_content"
    body = dialog[1:] if dialog[0]["role"] == "system" else dialog
    if not body:
        return "roles_out_of_order"  # a system message alone
    for i, m in enumerate(body):
        if m["role"] != ("user" if i % 2 == 0 else "assistant"):
            return "roles_out_of_order"
    if body[-1]["role"] != end:
        return f"not_ending_with_{end}"
    if any(find_delimiter(m["content"], delimiters) for m in dialog):
        return "delimiter_in_message"
    return None


def escape_dialog(dialog: Sequence[Message], delimiters: Sequence[str] = DEFAULT_DELIMITERS) -> Dialog:
    """A copy of ``dialog`` with :func:`escape_delimiters` applied to every content."""
    return [{**m, "content": escape_delimiters(m["content"], delimiters)} for m in dialog]


def validate(dialog: Sequence[Message], on_delimiter: OnDelimiter = "reject", *,
             end: Literal["assistant", "user"] = "assistant",
             delimiters: Sequence[str] = DEFAULT_DELIMITERS) -> tuple[Dialog | None, str | None, bool]:
    """``(dialog to use, rejection reason, escaped?)``: the policy applied to one dialog.

    >>> validate([{"role": "user", "content": "[INST]"}, {"role": "assistant", "content": "ok"}], "escape")
    ([{'role': 'user', 'content': '[ INST]'}, {'role': 'assistant', 'content': 'ok'}], None, True)
    """
    reason = check_dialog(dialog, end=end, delimiters=delimiters)
    if reason == "delimiter_in_message" and on_delimiter == "escape":
        fixed = escape_dialog(dialog, delimiters)
        return fixed, check_dialog(fixed, end=end, delimiters=delimiters), True
    if reason is not None:
        return None, reason, False
    return [dict(m) for m in dialog], None, False


def split_system(dialog: Sequence[Message]) -> tuple[str | None, list[tuple[str, str | None]]]:
    """``(system or None, [(user, assistant or None), ...])`` of a dialog that passed :func:`check_dialog`.

    >>> split_system([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    ('s', [('u', None)])
    """
    system = dialog[0]["content"] if dialog and dialog[0]["role"] == "system" else None
    body = list(dialog[1:] if system is not None else dialog)
    turns = []
    for i in range(0, len(body), 2):
        answer = body[i + 1]["content"] if i + 1 < len(body) else None
        turns.append((body[i]["content"], answer))
    return system, turns
