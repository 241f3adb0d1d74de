"""Small helpers around SentencePiece's ``ModelProto``: parse with clear errors, classify characters.

A SentencePiece model file is a serialized protobuf; ``parse_model(data, "base model")`` returns
the proto or raises :class:`zhllama.cli.UserError` naming what was wrong (not a protobuf, not
BPE, no pieces), so the CLI never shows a protobuf traceback::

    m = parse_model(Path("tokenizer.model").read_bytes(), "base model")
    assert m.trainer_spec.model_type == pb.TrainerSpec.BPE
"""
from __future__ import annotations

from google.protobuf.message import DecodeError
from sentencepiece import sentencepiece_model_pb2 as pb

from zhllama.cli import UserError

ModelProto = pb.ModelProto
Piece = pb.ModelProto.SentencePiece
NORMAL = Piece.NORMAL
USER_DEFINED = Piece.USER_DEFINED
BYTE = Piece.BYTE
SPIECE_UNDERLINE = "\u2581"
"""SentencePiece's visible space: every ``" "`` becomes ``"▁"`` before segmentation."""


def parse_model(data: bytes, what: str = "model", expect_bpe: bool = True) -> ModelProto:
    """Parse SentencePiece model bytes; ``what`` names the input in error messages.

    >>> parse_model(b"not a model", "zh model")
    Traceback (most recent call last):
    zhllama.cli.UserError: zh model is not a SentencePiece model (protobuf parse failed: ...)
    """
    m = ModelProto()
    try:
        m.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise UserError(f"{what} is not a SentencePiece model (protobuf parse failed: {e})") from None
    if len(m.pieces) == 0:
        raise UserError(f"{what} is not a SentencePiece model (no pieces)")
    if expect_bpe and m.trainer_spec.model_type != pb.TrainerSpec.BPE:
        kind = pb.TrainerSpec.ModelType.Name(m.trainer_spec.model_type)
        raise UserError(f"{what} is a {kind} model; a BPE model is expected (train with model_type=bpe)")
    return m


def copy_model(m: ModelProto) -> ModelProto:
    """A deep copy of ``m`` (protos are mutable; pure functions never edit their inputs)."""
    out = ModelProto()
    out.CopyFrom(m)
    return out


def mergeable_pieces(m: ModelProto) -> dict[str, int]:
    """``{piece: id}`` for the pieces BPE can produce from text (NORMAL and USER_DEFINED).

    Control (``<s>``), unknown and byte (``<0x41>``) pieces are not matched in text by
    SentencePiece, so they are left out.
    """
    return {p.piece: i for i, p in enumerate(m.pieces) if p.type in (NORMAL, USER_DEFINED)}


def is_chinese_char(ch: str) -> bool:
    """True for characters that only occur in CJK text: Han ideographs (all blocks), CJK
    punctuation (``。、「」``), full-width forms (``，：（）０Ａ``), bopomofo, kana, radicals.

    >>> [is_chinese_char(c) for c in "中，a1 ,"]
    [True, True, False, False, False, False]
    """
    cp = ord(ch)
    return (
        0x2E80 <= cp <= 0x2FDF  # CJK radicals, Kangxi radicals
        or 0x3000 <= cp <= 0x303F  # CJK symbols and punctuation (includes the ideographic space)
        or 0x3040 <= cp <= 0x31FF  # kana, bopomofo, CJK strokes
        or 0x3400 <= cp <= 0x4DBF  # extension A
        or 0x4E00 <= cp <= 0x9FFF  # unified ideographs
        or 0xF900 <= cp <= 0xFAFF  # compatibility ideographs
        or 0xFE30 <= cp <= 0xFE4F  # CJK compatibility forms (vertical punctuation)
        or 0xFF00 <= cp <= 0xFFEF  # half-width and full-width forms
        or 0x20000 <= cp <= 0x3FFFF  # extensions B..H
    )


def is_han(ch: str) -> bool:
    """True for Han ideographs (any CJK Unified/Compatibility block).

    >>> is_han("中"), is_han("，")
    (True, False)
    """
    cp = ord(ch)
    return 0x3400 <= cp <= 0x4DBF or 0x4E00 <= cp <= 0x9FFF or 0xF900 <= cp <= 0xFAFF or 0x20000 <= cp <= 0x3FFFF
