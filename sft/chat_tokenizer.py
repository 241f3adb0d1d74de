"""The chat model's tokenizer: the merged tokenizer + the Llama-2 ``chat_template``, ready for serving.

Serving stacks (``apply_chat_template``, vLLM, TGI, llama.cpp converters) render the template to
text and tokenize that text, so the template's ``<s>`` and ``</s>`` must *become* the BOS/EOS ids.
The tokenizer exported by the vocab stage mirrors SentencePiece, where ``<s>`` in text is three
ordinary pieces (``split_special_tokens=True``); rendering the template through it would yield no
BOS and no EOS at all. The chat tokenizer therefore sets ``split_special_tokens=False``:

- ``tok.apply_chat_template(messages, add_generation_prompt=True)`` == Meta's ``chat_completion``
  ids == :func:`sft.chat_format.encode_prompt` (tested on random dialogs, base and merged tokenizers);
- what a user who types ``<s>`` in a message gets: through ``apply_chat_template`` (or any stack that
  renders the template to text) the BOS *control token*, like every Hugging Face Llama-2-chat
  tokenizer; through ``python -m sft chat|generate`` (which use :func:`sft.chat_format.encode_prompt`)
  the text ``<s>`` as ordinary pieces, as in Meta's reference. Training data never contains either:
  :mod:`sft.dialog` rejects (or escapes) control-token text, so training ids == template ids for
  every trained record.

Example::

    tok = load_chat_tokenizer("artifacts/tokenizer")
    tok.apply_chat_template([{"role": "user", "content": "你好"}], add_generation_prompt=True)["input_ids"]
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sft.templates import LLAMA2, ChatFormat, chat_template, save_chat_format

SENTENCEPIECE_FILE = "tokenizer.model"


def load_chat_tokenizer(tokenizer_dir: str | Path, fmt: ChatFormat = LLAMA2) -> Any:
    """The tokenizer of ``tokenizer_dir`` with control tokens read in text, ``fmt``'s chat template and a pad token.

    The pad token is ``<unk>`` (Llama-2 has none; padding positions are masked, so any id works,
    and ``<unk>`` never ends a generation the way reusing EOS would suggest).
    """
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir), split_special_tokens=False)
    tok.chat_template = chat_template(fmt)
    if tok.pad_token is None and tok.unk_token is not None:
        tok.pad_token = tok.unk_token
    return tok


def save_chat_tokenizer(tokenizer_dir: str | Path, out_dir: str | Path, fmt: ChatFormat = LLAMA2) -> Any:
    """Write the chat tokenizer (``tokenizer.json`` + config + ``chat_template.jinja`` + the
    SentencePiece ``tokenizer.model``) and ``chat_format.json`` into ``out_dir``; returns it."""
    tok = load_chat_tokenizer(tokenizer_dir, fmt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    save_chat_format(fmt, out)
    src = Path(tokenizer_dir) / SENTENCEPIECE_FILE
    if src.is_file():
        shutil.copy2(src, out / SENTENCEPIECE_FILE)
    return tok


def generation_config(tokenizer: Any) -> Any:
    """A ``GenerationConfig`` that stops at EOS (BOS/EOS/pad ids from the tokenizer), greedy by default."""
    from transformers import GenerationConfig

    return GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, do_sample=False)
