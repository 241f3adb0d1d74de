"""``python -m sft chat --model DIR``: an interactive, multi-turn, streamed chat that stops at EOS.

Each user line is appended to the history; the prompt is Meta's format of the whole history
(:func:`sft.chat_format.fit_prompt`: the oldest turns are dropped when it outgrows the model's
context, the system message stays), and the answer is streamed token by token
(``TextIteratorStreamer``, generation in a background thread) until EOS or ``max_new_tokens``.
Commands: ``/reset`` (forget the history), ``/exit`` (or end of input).

The loop is :func:`chat_session`, which takes the input and output functions, so it runs the same
in a terminal and in a test::

    chat_session(model, tokenizer, ChatConfig(), read_line=input, write=print_no_newline)
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sft.dialog import OnDelimiter
from sft.generate import GenerationSettings
from sft.templates import LLAMA2, ChatFormat

PROMPT_MARK = "\n>>> "


@dataclass
class ChatConfig:
    """``python -m sft chat``: talk to a chat model in the terminal."""

    model: Path = Path("artifacts/sft/demo/final")
    """A chat model directory (``sft train`` output), a LoRA adapter or a DeepSpeed checkpoint."""
    system: str | None = None
    """An optional system prompt, kept for the whole session."""
    on_delimiter: OnDelimiter = "reject"
    """A message with ``[INST]``/``<<SYS>>``... : ``reject`` (ask again, as Meta's reference) or ``escape``."""
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=256))
    """Decoding options (greedy by default; ``--generation.do_sample true`` samples)."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``."""
    chat_format: str | None = None
    """null: the format the model was trained in (its ``chat_format.json``; Llama-2 if absent); or a name."""
    chat_formats_file: Path | None = None
    """Extra chat formats (YAML)."""


def _context_tokens(model: Any) -> int:
    return int(getattr(model.config, "max_position_embeddings", 4096) or 4096)


def stream_answer(model: Any, tokenizer: Any, prompt_ids: list[int], settings: GenerationSettings,
                  write: Callable[[str], None]) -> tuple[str, int]:
    """Generate for one prompt, writing text pieces as they come; returns ``(answer, new tokens)``."""
    import torch
    from transformers import TextIteratorStreamer

    device = next(model.parameters()).device
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    ids = torch.tensor([prompt_ids], device=device)
    sampling = {"do_sample": True, "temperature": settings.temperature, "top_p": settings.top_p} \
        if settings.do_sample else {"do_sample": False}
    result: dict[str, Any] = {}

    def work() -> None:
        torch.manual_seed(settings.seed)
        with torch.no_grad():
            result["seq"] = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                                           max_new_tokens=settings.max_new_tokens,
                                           eos_token_id=tokenizer.eos_token_id,
                                           pad_token_id=tokenizer.pad_token_id or 0, **sampling)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        write(piece)
    thread.join()
    return "".join(pieces).strip(), int(result["seq"].shape[1] - len(prompt_ids))


def chat_session(model: Any, tokenizer: Any, cfg: ChatConfig, read_line: Callable[[], str | None],
                 write: Callable[[str], None], fmt: ChatFormat = LLAMA2) -> list[dict]:
    """Run the chat until ``/exit`` or end of input; returns the final history (messages)."""
    from sft.chat_format import HFTextEncoder, TooLongError, fit_prompt
    from sft.dialog import validate

    enc = HFTextEncoder(tokenizer)
    start = [{"role": "system", "content": cfg.system}] if cfg.system else []
    history = list(start)
    room = _context_tokens(model) - cfg.generation.max_new_tokens
    while True:
        write(PROMPT_MARK)
        line = read_line()
        if line is None or line.strip() == "/exit":
            return history
        if line.strip() == "/reset":
            history = list(start)
            write("(history cleared)")
            continue
        if not line.strip():
            continue
        dialog, reason, _ = validate(history + [{"role": "user", "content": line}], cfg.on_delimiter, end="user")
        if dialog is None:
            why = " ([INST], [/INST], <<SYS>>, <</SYS>>, <s>, </s> are not allowed in a message)" \
                if reason == "delimiter_in_message" else ""
            write(f"error: {reason}{why}")
            continue
        try:
            ids, dropped = fit_prompt(dialog, enc, room, fmt)
        except TooLongError as e:
            write(f"error: {e}")
            continue
        if dropped:
            write(f"(oldest {dropped} turn(s) left out: context is {_context_tokens(model)} tokens)\n")
        answer, _ = stream_answer(model, tokenizer, ids, cfg.generation, write)
        if not answer:  # a blank answer cannot be a turn of the format: forget the question too
            write("(empty answer: this turn is not kept)")
            continue
        history = dialog + [{"role": "assistant", "content": answer}]


def run(cfg: ChatConfig) -> int:
    """CLI: load the model, then chat on stdin/stdout."""
    from sft.generate import load_chat_model
    from sft.templates import resolve_chat_format

    model, tokenizer = load_chat_model(cfg.model, cfg.device)
    fmt = resolve_chat_format(cfg.model, cfg.chat_format, cfg.chat_formats_file)
    print(f"chatting with {cfg.model} (/reset clears the history, /exit or Ctrl-D quits)"
          + (f"; system: {cfg.system!r}" if cfg.system else ""))

    def read_line() -> str | None:
        try:
            return input()
        except EOFError:
            return None

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    history = chat_session(model, tokenizer, cfg, read_line, write, fmt)
    print(f"\n{sum(m['role'] == 'assistant' for m in history)} answers")
    return 0
