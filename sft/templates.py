"""Chat prompt formats as data (``sft/chat_formats.yaml``) and their Jinja ``chat_template``.

A :class:`ChatFormat` says how one turn is written; the tokenization around it (BOS before every
turn, EOS after every answer, as ids) is :mod:`sft.chat_format`'s. The default is Meta's Llama-2
format; ``alpaca`` is there to compare against::

    >>> fmt = ChatFormat()                                   # Llama-2
    >>> fmt.turn_text(fmt.content("hi ", "be brief"), " hello ")
    '[INST] <<SYS>>\\nbe brief\\n<</SYS>>\\n\\nhi [/INST] hello '
    >>> get_chat_format("alpaca").prompt_text("### Instruction:\\n1+1?")
    '### Instruction:\\n1+1?\\n\\n### Response:\\n'

:func:`chat_template` writes the same format as a Hugging Face Jinja template, so
``apply_chat_template`` renders exactly the text :mod:`sft.chat_format` encodes (tested per format).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from zhllama.config import from_dict

BUILTIN_CHAT_FORMATS_FILE = Path(__file__).with_name("chat_formats.yaml")
CHAT_FORMAT_FILE = "chat_format.json"
"""Written beside an exported chat model: the format it was trained in (read by chat/generate/eval)."""
_PLACEHOLDER = re.compile(r"\{(system|user|content|answer)\}")


def fill(template: str, **values: str) -> str:
    """Replace ``{name}`` placeholders in one pass (a value is never scanned again).

    >>> fill("{user}!", user="{system}", system="x")
    '{system}!'
    """
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


@dataclass(frozen=True)
class ChatFormat:
    """How a turn is written (defaults: Meta's Llama-2 chat format)."""

    system: str = "<<SYS>>\n{system}\n<</SYS>>\n\n{user}"
    """The first turn's content when the dialog has a system message (``{system}``, ``{user}``)."""
    user: str = "{user}"
    """A turn's content otherwise (``{user}``)."""
    default_system: str | None = None
    """A system text used when the dialog has none (Alpaca's preamble); null: none."""
    prompt: str = "[INST] {content} [/INST]"
    """An open turn, the generation prompt (``{content}``)."""
    answer: str = " {answer} "
    """What follows the prompt in a completed turn, before EOS (``{answer}``, stripped)."""

    def __post_init__(self) -> None:
        for name, allowed in (("system", {"system", "user"}), ("user", {"user"}), ("prompt", {"content"}),
                              ("answer", {"answer"})):
            found = set(_PLACEHOLDER.findall(getattr(self, name)))
            need = {"content"} if name == "prompt" else {"answer"} if name == "answer" else {"user"}
            if not need <= found or not found <= allowed:
                raise ValueError(f"chat format field {name!r} must contain {sorted(need)} and only {sorted(allowed)}, "
                                 f"got {getattr(self, name)!r}")

    def content(self, user: str, system: str | None, first: bool = True) -> str:
        """The text inside the prompt for a user message, stripped: on the first (kept) turn the system
        message (else ``default_system``) is merged in; later turns never carry one."""
        system = (self.default_system if system is None else system) if first else None
        if system is None:
            return fill(self.user, user=user).strip()
        return fill(self.system, system=system, user=user).strip()

    def prompt_text(self, content: str) -> str:
        """The text of an open turn (the generation prompt)."""
        return fill(self.prompt, content=content)

    def turn_text(self, content: str, answer: str) -> str:
        """The text of a completed turn (EOS follows as an id)."""
        return self.prompt_text(content) + fill(self.answer, answer=answer.strip())


LLAMA2 = ChatFormat()


def load_chat_formats(extra_file: str | Path | None = None) -> dict[str, ChatFormat]:
    """The built-in formats, overridden/extended by ``extra_file`` (same YAML shape)."""
    from sft.formats import load_named_specs

    return load_named_specs(ChatFormat, BUILTIN_CHAT_FORMATS_FILE, extra_file)


def get_chat_format(name: str, extra_file: str | Path | None = None) -> ChatFormat:
    """The format called ``name`` (a :class:`ConfigError` listing the known names otherwise)."""
    from sft.formats import pick

    return pick(load_chat_formats(extra_file), name, "chat format")


def save_chat_format(fmt: ChatFormat, model_dir: Path) -> None:
    """Record the format beside an exported model (``chat_format.json``)."""
    from zhllama.artifacts import atomic_write_json

    atomic_write_json(Path(model_dir) / CHAT_FORMAT_FILE, asdict(fmt))


def model_chat_format(model_dir: str | Path) -> ChatFormat:
    """The format a model was trained in (its ``chat_format.json``); Llama-2 when it has none."""
    path = Path(model_dir) / CHAT_FORMAT_FILE
    if not path.is_file():
        return LLAMA2
    return from_dict(ChatFormat, json.loads(path.read_text(encoding="utf-8")), source=str(path))


def resolve_chat_format(model_dir: str | Path, name: str | None = None,
                        extra_file: str | Path | None = None) -> ChatFormat:
    """``name``'s format if given, else the model's recorded one (``chat_format.json``), else Llama-2."""
    return get_chat_format(name, extra_file) if name else model_chat_format(model_dir)


def _jinja_expr(template: str, names: dict[str, str]) -> str:
    """A Jinja expression concatenating ``template``'s literal parts and variables (``~``)."""
    parts, pos = [], 0
    for m in _PLACEHOLDER.finditer(template):
        if m.start() > pos:
            parts.append(json.dumps(template[pos:m.start()], ensure_ascii=False))
        parts.append(names[m.group(1)])
        pos = m.end()
    if pos < len(template):
        parts.append(json.dumps(template[pos:], ensure_ascii=False))
    return "(" + " ~ ".join(parts or ['""']) + ")"


def chat_template(fmt: ChatFormat = LLAMA2) -> str:
    """``fmt`` as a Hugging Face ``chat_template`` (rendered text; ``<s>``/``</s>`` become the ids when
    the tokenizer reads control tokens in text, see :mod:`sft.chat_tokenizer`).

    The generation prompt needs no extra text: a dialog ending with the user already ends with its
    open turn, so ``add_generation_prompt`` changes nothing.
    """
    msg = "message['content']"
    default = "none" if fmt.default_system is None else json.dumps(fmt.default_system, ensure_ascii=False)
    first = _jinja_expr(fmt.system, {"system": "system", "user": msg})
    plain = _jinja_expr(fmt.user, {"user": msg})
    prompt = _jinja_expr(fmt.prompt, {"content": "content"})
    answer = _jinja_expr(fmt.answer, {"answer": f"({msg} | trim)"})
    return (
        "{%- if messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set messages = messages[1:] -%}"
        f"{{%- else -%}}{{%- set system = {default} -%}}{{%- endif -%}}"
        "{%- for message in messages -%}"
        "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
        "{{- raise_exception('chat format: an optional system message, then user and assistant alternating') -}}"
        "{%- endif -%}"
        "{%- if message['role'] == 'user' -%}"
        f"{{%- if loop.first and system is not none -%}}{{%- set content = {first} | trim -%}}"
        f"{{%- else -%}}{{%- set content = {plain} | trim -%}}{{%- endif -%}}"
        f"{{{{- bos_token ~ {prompt} -}}}}"
        "{%- else -%}"
        f"{{{{- {answer} ~ eos_token -}}}}"
        "{%- endif -%}"
        "{%- endfor -%}"
    )
