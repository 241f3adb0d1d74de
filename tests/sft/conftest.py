"""Fixtures of the SFT tests: random dialogs and Meta's reference chat format, written independently.

The reference is Meta's ``chat_completion`` recipe written out again (llama/generation.py): system
merged into the first user message, ``BOS + encode("[INST] u [/INST] a ") + EOS`` per turn,
``BOS + encode("[INST] u [/INST]")`` for an open turn, contents stripped, SentencePiece ids.
"""
from __future__ import annotations

import random

import pytest
import sentencepiece as spm

WS = [" ", "  ", "\n", "\t", " \n ", "\u3000", ""]
EN = ["hello", "world", "Llama", "2023", "x=1;", "can't", "GPU", "(a, b)", "3.14", "OK!", "😀"]


def _meta_reference(sp: spm.SentencePieceProcessor, dialog: list[dict]) -> list[int]:
    """Meta's chat_completion ids, written independently of sft.chat_format."""
    if dialog[0]["role"] == "system":
        merged = "<<SYS>>\n" + dialog[0]["content"] + "\n<</SYS>>\n\n" + dialog[1]["content"]
        dialog = [{"role": dialog[1]["role"], "content": merged}] + dialog[2:]
    ids: list[int] = []
    for prompt, answer in zip(dialog[::2], dialog[1::2], strict=False):
        text = f"[INST] {prompt['content'].strip()} [/INST] {answer['content'].strip()} "
        ids += [sp.bos_id()] + sp.encode(text) + [sp.eos_id()]
    if dialog[-1]["role"] == "user":
        ids += [sp.bos_id()] + sp.encode(f"[INST] {dialog[-1]['content'].strip()} [/INST]")
    return ids


def _text(rng: random.Random, zh: list[str]) -> str:
    parts = []
    for _ in range(rng.randint(1, 5)):
        if rng.random() < 0.5:
            t = rng.choice(zh)
            s = rng.randrange(max(1, len(t) - 20))
            parts.append(t[s:s + rng.randint(1, 20)])
        else:
            parts.append(rng.choice(EN))
        parts.append(rng.choice(WS))
    text = rng.choice(WS) + "".join(parts) + rng.choice(WS)
    return text if text.strip() else "好"


def _random_dialogs(n: int, zh: list[str], seed: int = 0, end: str = "assistant") -> list[list[dict]]:
    """0/1 system message, 1-4 turns, Chinese/English, odd whitespace around and inside contents."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        d = [{"role": "system", "content": _text(rng, zh)}] if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 4)):
            d += [{"role": "user", "content": _text(rng, zh)}, {"role": "assistant", "content": _text(rng, zh)}]
        out.append(d if end == "assistant" else d[:-1])
    return out


@pytest.fixture(scope="session")
def zh_snippets(zh_sample_texts) -> list[str]:
    return [t[:400] for t in zh_sample_texts[:30]]




@pytest.fixture(scope="session")
def meta_reference():
    """``meta_reference(sp, dialog) -> ids``: Meta's construction with raw SentencePiece."""
    return _meta_reference


@pytest.fixture(scope="session")
def random_dialogs(zh_snippets):
    """``random_dialogs(n, seed=0, end="assistant") -> [dialog, ...]`` over real Chinese snippets."""
    return lambda n, seed=0, end="assistant": _random_dialogs(n, zh_snippets, seed, end)


ALPACA_PREAMBLE = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                   "the request.")


def _alpaca_reference(sp: spm.SentencePieceProcessor, dialog: list[dict]) -> list[int]:
    """Stanford Alpaca's no-input prompt, one BOS ... EOS block per turn, written independently."""
    system = dialog[0]["content"] if dialog[0]["role"] == "system" else ALPACA_PREAMBLE
    body = dialog[1:] if dialog[0]["role"] == "system" else dialog
    ids: list[int] = []
    for k in range(0, len(body), 2):
        head = (system + "\n\n" if k == 0 else "") + "### Instruction:\n" + body[k]["content"]
        text = head.strip() + "\n\n### Response:\n"
        if k + 1 < len(body):
            ids += [sp.bos_id()] + sp.encode(text + body[k + 1]["content"].strip()) + [sp.eos_id()]
        else:
            ids += [sp.bos_id()] + sp.encode(text)
    return ids


@pytest.fixture(scope="session")
def alpaca_reference():
    """``alpaca_reference(sp, dialog) -> ids``: the Alpaca comparison format with raw SentencePiece."""
    return _alpaca_reference
