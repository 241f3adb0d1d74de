"""SentencePiece model proto -> Hugging Face tokenizer directory with id-for-id parity.

First version (to be hardened by the merge work): let transformers convert the BPE model, then
replace its Metaspace pre-tokenizer by a normaliser that does exactly what SentencePiece does
(prepend U+2581, replace every space by U+2581, no pre-splitting), because Metaspace treats runs
of spaces differently from SentencePiece.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

SPIECE_UNDERLINE = "\u2581"


def build_hf_tokenizer(model_bytes: bytes):
    """Return a ``PreTrainedTokenizerFast`` equivalent to the SentencePiece model ``model_bytes``."""
    from tokenizers import decoders, normalizers
    from transformers import LlamaTokenizer, PreTrainedTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "tokenizer.model").write_bytes(model_bytes)
        converted = LlamaTokenizer.from_pretrained(tmp, add_bos_token=True)
        backend = converted.backend_tokenizer
    backend.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPIECE_UNDERLINE), normalizers.Replace(" ", SPIECE_UNDERLINE)]
    )
    backend.pre_tokenizer = None
    backend.decoder = decoders.Sequence(
        [decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        add_bos_token=True, add_eos_token=False, clean_up_tokenization_spaces=False,
    )
    return tok


def export_hf(model_bytes: bytes, out_dir: str | Path) -> Path:
    """Write ``tokenizer.model`` + HF files (``tokenizer.json``, config) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_hf_tokenizer(model_bytes)
    tok.save_pretrained(out)
    (out / "tokenizer.model").write_bytes(model_bytes)
    return out
