"""Load and validate a local Hugging Face Llama checkpoint; check a tokenizer against it.

No hub here: every model is a local directory (a real Llama-2 7B/13B download, the stand-in from
``python -m pretrain standin``, or an ``init``/``final`` directory written by this project). The
functions turn "this is not what I expected" into one-line :class:`~zhllama.cli.UserError`
messages instead of deep library tracebacks::

    model = load_llama("artifacts/standin")                      # LlamaForCausalLM, fp32
    check = check_tokenizer_extends("artifacts/standin", "artifacts/tokenizer", require_fit=False)
    check.n_new_tokens                                          # pieces the merged tokenizer adds

Invariant checked by :func:`check_tokenizer_extends`: the tokenizer's first ``N`` pieces are the
model's own tokenizer's ``N`` pieces, id for id, so every old id still means the same thing and
its embedding row can be kept.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhllama.cli import UserError

#: Files one of which must exist for a directory to hold weights.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
#: Files files that make a directory a tokenizer directory (any one suffices).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


def read_llama_config(model_dir: str | Path) -> dict:
    """The ``config.json`` of a Llama checkpoint directory, validated (raises :class:`UserError`).

    >>> read_llama_config("artifacts/standin")["model_type"]   # doctest: +SKIP
    'llama'
    """
    d = Path(model_dir)
    if not d.is_dir():
        raise UserError(f"model directory not found: {d}")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise UserError(f"{d} is not a Hugging Face model directory (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path}: not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{cfg_path}: expected a JSON object")
    model_type = cfg.get("model_type")
    if model_type != "llama":
        raise UserError(f"{cfg_path}: model_type is {model_type!r}, expected 'llama' (a Llama checkpoint)")
    for key in ("vocab_size", "hidden_size", "num_hidden_layers"):
        if not isinstance(cfg.get(key), int):
            raise UserError(f"{cfg_path}: missing or non-integer {key!r}")
    if not any((d / f).is_file() for f in WEIGHT_FILES):
        raise UserError(f"{d}: no weights (expected one of {', '.join(WEIGHT_FILES)})")
    return cfg


def safetensors_header(path: Path) -> dict:
    """The JSON header of a ``.safetensors`` file (tensor name -> dtype, shape, data offsets), checked
    against the file size; a truncated or non-safetensors file is a :class:`UserError` naming it."""
    import struct

    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UserError(f"{path}: truncated ({size} bytes): not a safetensors file")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise UserError(f"{path}: truncated ({size} bytes) or not a safetensors file: its header says "
                            f"{n:,} header bytes")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UserError(f"{path}: corrupt safetensors header") from None
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    end = 8 + n + max((int(v["data_offsets"][1]) for v in tensors.values()), default=0)
    if size < end:
        raise UserError(f"{path}: truncated: {size:,} bytes, its header describes {end:,} (copy it again)")
    return tensors


def check_weights_match_config(model_dir: str | Path) -> None:
    """Every safetensors weight file complete, and the shapes ``config.json`` implies are the weights' shapes.

    Reads only the file headers (fast for any size). Raises :class:`UserError` with one line naming
    the file and the first tensor that differs, e.g. ``config.json says [32000, 4096] but the weights
    have [55296, 4096]``. ``pytorch_model.bin`` checkpoints are not checked (their shapes need unpickling).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = Path(model_dir)
    if (d / "model.safetensors.index.json").is_file():
        index = json.loads((d / "model.safetensors.index.json").read_text(encoding="utf-8"))
        files = sorted({d / f for f in index.get("weight_map", {}).values()})
    elif (d / "model.safetensors").is_file():
        files = [d / "model.safetensors"]
    else:
        return
    found: dict[str, tuple[list[int], Path]] = {}
    for f in files:
        if not f.is_file():
            raise UserError(f"{f}: missing (listed in {d / 'model.safetensors.index.json'})")
        found.update({name: (list(v["shape"]), f) for name, v in safetensors_header(f).items()})
    try:
        config = LlamaConfig.from_pretrained(str(d), local_files_only=True)
        with torch.device("meta"):
            expected = {k: list(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f"{d / 'config.json'}: not a usable Llama config: {e}") from None
    for name, shape in expected.items():
        if name not in found:
            if name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            raise UserError(f"{d}: config.json describes {name} {shape} but the weights have no such tensor "
                            "(config.json and the weights do not belong together)")
        if found[name][0] != shape:
            raise UserError(f"{found[name][1]}: {name} has shape {found[name][0]} but config.json says {shape} "
                            "(config.json and the weights do not belong together)")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise UserError(f"{found[extra[0]][1]}: tensor {extra[0]} is not part of the model config.json describes "
                        f"({len(extra)} such)")


def load_llama(model_dir: str | Path, **kwargs: Any):
    """``LlamaForCausalLM.from_pretrained(model_dir)`` for a validated local directory (fp32 by default).

    ``kwargs`` go to ``from_pretrained`` (e.g. ``dtype=torch.bfloat16``). Under ZeRO-3, create the
    ``HfDeepSpeedConfig`` before calling this, as for any ``from_pretrained``::

        model = load_llama("artifacts/pretrain/demo/init")
        model.config.vocab_size  # e.g. 50048
    """
    import torch
    from transformers import LlamaForCausalLM

    d = Path(model_dir)
    read_llama_config(d)
    kwargs.setdefault("dtype", torch.float32)
    kwargs.setdefault("local_files_only", True)
    try:
        model = LlamaForCausalLM.from_pretrained(str(d), **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{d}: cannot load as a Llama checkpoint: {first}") from None
    return model


def tokenizer_pieces(tokenizer_dir: str | Path) -> list[str]:
    """Every token string of a tokenizer directory, indexed by id (added/special tokens included).

    Read from ``tokenizer.json`` when present (what ``AutoTokenizer`` uses), else from the
    SentencePiece ``tokenizer.model``. ``len(result) == len(AutoTokenizer.from_pretrained(dir))``.

    >>> tokenizer_pieces("artifacts/standin")[:4]   # doctest: +SKIP
    ['<unk>', '<s>', '</s>', '<0x00>']
    """
    d = Path(tokenizer_dir)
    if not d.is_dir():
        raise UserError(f"tokenizer directory not found: {d}")
    if (d / "tokenizer.json").is_file():
        return _tokenizer_json_pieces(d / "tokenizer.json")
    if (d / "tokenizer.model").is_file():
        import sentencepiece as spm

        try:
            sp = spm.SentencePieceProcessor(model_file=str(d / "tokenizer.model"))
        except (OSError, RuntimeError) as e:
            raise UserError(f"{d / 'tokenizer.model'}: not a SentencePiece model: {e}") from None
        return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    raise UserError(f"{d}: no tokenizer (expected one of {', '.join(TOKENIZER_FILES)})")


def _tokenizer_json_pieces(path: Path) -> list[str]:
    # Plain JSON, not tokenizers.Tokenizer.from_file: 10x faster, and it is only a table lookup.
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
        if isinstance(vocab, list):  # Unigram: [[piece, score], ...] in id order
            vocab = {entry[0]: i for i, entry in enumerate(vocab)}
        table = dict(vocab)
        for tok in data.get("added_tokens", []):
            table[tok["content"]] = tok["id"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, IndexError) as e:
        raise UserError(f"{path}: not a tokenizer.json with a model vocabulary ({type(e).__name__}: {e})") from None
    pieces: list[str | None] = [None] * len(table)
    for piece, i in table.items():
        if not isinstance(i, int) or not 0 <= i < len(table) or pieces[i] is not None:
            raise UserError(f"{path}: token ids are not 0..{len(table) - 1} (id {i!r} of {piece!r})")
        pieces[i] = piece
    return pieces  # type: ignore[return-value]


@dataclass(frozen=True)
class TokenizerCheck:
    """What :func:`check_tokenizer_extends` found (all counts in tokens / embedding rows)."""

    n_model_tokenizer: int
    """Pieces of the model's own tokenizer (e.g. 32000 for Llama-2)."""
    n_tokenizer: int
    """Pieces of the tokenizer being checked (e.g. 55296 for a merged one)."""
    model_vocab_size: int
    """Rows of the model's embedding matrix (may exceed its tokenizer when padded)."""

    @property
    def n_new_tokens(self) -> int:
        """Pieces the tokenizer adds on top of the model's tokenizer."""
        return self.n_tokenizer - self.n_model_tokenizer

    @property
    def fits(self) -> bool:
        """True when every id of the tokenizer has an embedding row (``n_tokenizer <= model_vocab_size``)."""
        return self.n_tokenizer <= self.model_vocab_size


def first_mismatch(old: list[str], new: list[str]) -> int | None:
    """Index of the first of ``old``'s pieces that ``new`` does not repeat at the same id, or None.

    >>> first_mismatch(["a", "b"], ["a", "b", "c"]) is None, first_mismatch(["a", "b"], ["a", "x"])
    (True, 1)
    """
    for i, piece in enumerate(old):
        if i >= len(new) or new[i] != piece:
            return i
    return None


def check_tokenizer_extends(model_dir_or_model: Any, tokenizer_dir: str | Path, *, require_fit: bool = True,
                            model_tokenizer_dir: str | Path | None = None) -> TokenizerCheck:
    """Check that ``tokenizer_dir`` extends the model's own tokenizer; raise :class:`UserError` if not.

    The model's tokenizer is the one saved beside its weights (``model_tokenizer_dir`` overrides;
    for a model object, ``model.name_or_path`` is the directory it was loaded from). Checks:
    the model's pieces are a prefix of the tokenizer's (same ids, same strings), the model has a
    row for each of its own pieces, and with ``require_fit`` (training, eval) every id of the
    tokenizer has an embedding row. ``init`` passes ``require_fit=False``: it is about to add them.

        check_tokenizer_extends("artifacts/pretrain/demo/final", "artifacts/tokenizer")  # ok or UserError
    """
    if isinstance(model_dir_or_model, (str, Path)):
        model_dir = Path(model_dir_or_model)
        model_vocab_size = read_llama_config(model_dir)["vocab_size"]
    else:
        model = model_dir_or_model
        model_dir = Path(getattr(model, "name_or_path", "") or ".")
        model_vocab_size = int(model.config.vocab_size)
    own_dir = Path(model_tokenizer_dir) if model_tokenizer_dir is not None else model_dir
    if not any((own_dir / f).is_file() for f in TOKENIZER_FILES):
        raise UserError(f"{own_dir}: the model has no tokenizer beside it (expected one of "
                        f"{', '.join(TOKENIZER_FILES)}); copy the base model's tokenizer there")
    old = tokenizer_pieces(own_dir)
    new = tokenizer_pieces(tokenizer_dir)
    if len(old) > model_vocab_size:
        raise UserError(f"{own_dir}: its tokenizer has {len(old)} pieces but the model only {model_vocab_size} "
                        "embedding rows")
    bad = first_mismatch(old, new)
    if bad is not None:
        if bad >= len(new):
            raise UserError(f"{tokenizer_dir}: has {len(new)} tokens, fewer than the model's tokenizer "
                            f"({len(old)} in {own_dir}); it cannot extend it")
        raise UserError(f"{tokenizer_dir}: does not extend the model's tokenizer ({own_dir}): id {bad} is "
                        f"{new[bad]!r} there but {old[bad]!r} in the model's")
    check = TokenizerCheck(n_model_tokenizer=len(old), n_tokenizer=len(new), model_vocab_size=model_vocab_size)
    if require_fit and not check.fits:
        raise UserError(f"{tokenizer_dir}: has {len(new)} tokens but the model ({model_dir}) only "
                        f"{model_vocab_size} embedding rows; run `python -m pretrain init` first")
    return check
