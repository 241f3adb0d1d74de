"""The one place where ``align`` meets the chat format: sft's dialog rules and Meta's ids.

Nothing here re-implements the format: validation is :func:`sft.dialog.validate`, ids are
:func:`sft.chat_format.encode_prompt` / :func:`~sft.chat_format.encode_dialog` (exact to Meta's
``chat_completion``). What alignment adds is the split of a conversation into *prompt ids* and the
*reply ids* that follow them, so that chosen and rejected share the prompt's ids exactly::

    enc = ChatEncoder(load_chat_tokenizer("artifacts/sft/demo/final"))
    p = enc.prompt_ids(prompt)                # <s>[INST] ... [/INST]
    r = enc.reply_ids(prompt, "你好！")         # ▁你好！▁ </s>   (p + r == the training ids)
"""
from __future__ import annotations

from typing import Any

from sft.chat_format import HFTextEncoder, encode_dialog, encode_prompt
from sft.dialog import OnDelimiter, validate


def check_conversation(messages: list[dict], on_delimiter: OnDelimiter = "reject") -> tuple[list[dict] | None, str | None]:
    """``(messages to use, None)`` or ``(None, reason)`` for a conversation ending with the assistant.

    The reasons are sft's (``roles_out_of_order``, ``delimiter_in_message``, ``empty_content``...);
    with ``on_delimiter="escape"`` delimiters are escaped instead of rejected.

    >>> check_conversation([{"role": "user", "content": "[INST] hi"}, {"role": "assistant", "content": "a"}])
    (None, 'delimiter_in_message')
    """
    dialog, reason, _ = validate(messages, on_delimiter, end="assistant")
    return dialog, reason


class ChatEncoder:
    """Prompt ids and reply ids of the Llama-2 chat format over a Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.text = HFTextEncoder(tokenizer)
        self.bos_id, self.eos_id = self.text.bos_id, self.text.eos_id

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """Meta's generation prompt of ``messages`` (ending with a user turn): ``... [/INST]``."""
        return encode_prompt(messages, self.text)

    def reply_ids(self, messages: list[dict], reply: str) -> list[int]:
        """The ids ``messages + [assistant reply]`` adds after :meth:`prompt_ids` (the reply, EOS last).

        Raises ``sft.chat_format.PromptNotPrefixError`` when the reply's first piece would merge
        with ``[/INST]`` (the generation prompt would then differ from training).
        """
        prompt = self.prompt_ids(messages)
        full = encode_dialog([*messages, {"role": "assistant", "content": reply}], self.text).input_ids
        if full[:len(prompt)] != prompt:
            raise ValueError("the conversation's ids do not start with its prompt's ids")
        return full[len(prompt):]
