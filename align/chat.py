"""The one place where ``align`` meets the chat format: validation and token ids of conversations.

PROVISIONAL: until the ``sft`` package lands on this branch, these are minimal stand-ins with the
same contract; they will delegate to sft's validator and its Meta ``chat_completion`` encoder.

- :func:`conversation_problem` (``messages -> (reason, detail) | None``);
- :class:`ChatEncoder`: ``prompt_ids(messages)`` (the generation prompt, ending ``[/INST]``) and
  ``reply_ids(messages, reply)`` such that ``prompt_ids + reply_ids`` are the training ids of
  ``messages + [assistant reply]`` (reply text, its trailing space and EOS).
"""
from __future__ import annotations

from typing import Any

B_INST, E_INST = "[INST]", "[/INST]"
B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
_DELIMITERS = (B_INST, E_INST, "<<SYS>>", "<</SYS>>")


def conversation_problem(messages: list) -> tuple[str, str] | None:
    """Why ``messages`` is not a valid chat (roles, contents, delimiters); ``None`` if it is.

    >>> conversation_problem([{"role": "user", "content": "[INST] hi"}, {"role": "assistant", "content": "a"}])[0]
    'delimiter_in_content'
    """
    body = messages[1:] if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system" else messages
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            return "bad_message", f"message {i} is not {{role, content: str}}"
        if not m["content"].strip():
            return "empty_content", f"message {i} is empty"
        if any(d in m["content"] for d in _DELIMITERS):
            return "delimiter_in_content", f"message {i} contains a chat-format delimiter"
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m.get("role") != want:
            return "roles_out_of_order", f"turn {i} is {m.get('role')!r}, expected {want!r}"
    return None


class ChatEncoder:
    """Llama-2 chat ids of a conversation with a Hugging Face tokenizer (BOS/EOS inserted as ids)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.bos_id = int(tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.eos_token_id)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _turns(self, messages: list[dict]) -> list[dict]:
        if messages and messages[0]["role"] == "system":
            first = messages[1]
            merged = {"role": first["role"], "content": B_SYS + messages[0]["content"] + E_SYS + first["content"]}
            return [merged, *messages[2:]]
        return list(messages)

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Ids of ``messages`` (ending with a user turn) up to and including the last ``[/INST]``."""
        turns = self._turns(messages)
        ids: list[int] = []
        for user, answer in zip(turns[::2], turns[1::2], strict=False):
            ids += [self.bos_id, *self._encode(f"{B_INST} {user['content'].strip()} {E_INST} {answer['content'].strip()} "),
                    self.eos_id]
        return ids + [self.bos_id, *self._encode(f"{B_INST} {turns[-1]['content'].strip()} {E_INST}")]

    def reply_ids(self, messages: list[dict], reply: str) -> list[int]:
        """The ids the assistant's ``reply`` adds after :meth:`prompt_ids` (its text, then EOS)."""
        turns = self._turns(messages)
        last = self._encode(f"{B_INST} {turns[-1]['content'].strip()} {E_INST}")
        full = self._encode(f"{B_INST} {turns[-1]['content'].strip()} {E_INST} {reply.strip()} ")
        if full[:len(last)] != last:
            raise ValueError("the reply's ids do not extend the prompt's ids")
        return full[len(last):] + [self.eos_id]
