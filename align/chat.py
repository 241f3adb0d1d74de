"""The one place where ``align`` meets the chat format: sft's dialog rules, formats and ids.

Nothing here re-implements the format: validation is :func:`sft.dialog.validate`, ids are
:func:`sft.chat_format.encode_prompt` / :func:`~sft.chat_format.encode_dialog` in the format the
SFT model was trained in (its ``chat_format.json``; Meta's Llama-2 ``chat_completion`` by default).
What alignment adds is the split of a conversation into *prompt ids* and the *reply ids* that
follow them, so that chosen and rejected share the prompt's ids exactly::

    tokenizer, enc = chat_setup("artifacts/sft/demo/final")
    p = enc.prompt_ids(prompt)                # <s>[INST] ... [/INST]
    r = enc.reply_ids(prompt, "你好！")         # ▁你好！▁ </s>   (p + r == the training ids)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sft.chat_format import HFTextEncoder, encode_dialog, encode_prompt, fit_prompt
from sft.dialog import OnDelimiter, validate
from sft.templates import LLAMA2, ChatFormat


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
    """Prompt ids and reply ids of a chat format (Llama-2 by default) over a Hugging Face tokenizer."""

    def __init__(self, tokenizer: Any, fmt: ChatFormat = LLAMA2):
        self.tokenizer, self.fmt = tokenizer, fmt
        self.text = HFTextEncoder(tokenizer)
        self.bos_id, self.eos_id = self.text.bos_id, self.text.eos_id

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        """The generation prompt of ``messages`` (ending with a user turn): ``... [/INST]`` in Llama-2."""
        return encode_prompt(messages, self.text, self.fmt)

    def fit_prompt(self, messages: list[dict], max_tokens: int) -> tuple[list[int], int]:
        """``(prompt ids, turns dropped)`` of the newest turns that fit (sft's ``fit_prompt``)."""
        return fit_prompt(messages, self.text, max_tokens, self.fmt)

    def reply_ids(self, messages: list[dict], reply: str) -> list[int]:
        """The ids ``messages + [assistant reply]`` adds after :meth:`prompt_ids` (the reply, EOS last).

        Raises ``sft.chat_format.PromptNotPrefixError`` when the reply's first piece would merge
        with ``[/INST]`` (the generation prompt would then differ from training).
        """
        prompt = self.prompt_ids(messages)
        full = encode_dialog([*messages, {"role": "assistant", "content": reply}], self.text, fmt=self.fmt).input_ids
        if full[:len(prompt)] != prompt:
            raise ValueError("the conversation's ids do not start with its prompt's ids")
        return full[len(prompt):]


def chat_setup(model_dir: str | Path, tokenizer_dir: str | Path | None = None) -> tuple[Any, ChatEncoder]:
    """``(chat tokenizer, encoder)`` in the format ``model_dir`` was trained in (``chat_format.json``)."""
    from sft.chat_tokenizer import load_chat_tokenizer
    from sft.templates import model_chat_format

    fmt = model_chat_format(model_dir)
    tokenizer = load_chat_tokenizer(tokenizer_dir or model_dir, fmt)
    return tokenizer, ChatEncoder(tokenizer, fmt)


def add_chat_files(model_dir: str | Path, tokenizer_dir: str | Path, out_dir: Path) -> None:
    """Make ``out_dir`` a chat model like the SFT model it came from: the chat tokenizer, its template
    and ``chat_format.json`` (the SFT model's format) and an EOS-stopping ``generation_config``."""
    from sft.chat_tokenizer import generation_config, save_chat_tokenizer
    from sft.templates import model_chat_format

    tok = save_chat_tokenizer(tokenizer_dir, out_dir, model_chat_format(model_dir))
    generation_config(tok).save_pretrained(str(out_dir))


def export_chat_policy(ckpt_dir: Path, tag: str | None, out_dir: Path, cfg: Any) -> Path:
    """The engine's exporter for DPO and RL: the merged causal LM + :func:`add_chat_files`, atomically."""
    from pretrain.export import export_final

    return export_final(ckpt_dir, tag, out_dir, cfg,
                        finalize=lambda tmp: add_chat_files(cfg.model_dir, cfg.tokenizer_dir, tmp))
