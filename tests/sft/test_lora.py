"""LoRA on a resized base: save, reload onto the resized base, merge == the trained adapter's logits;
onto an un-resized base it is a clear error naming both sizes."""
from __future__ import annotations

import pytest
import torch

from pretrain.lora import LoraSettings, apply_lora, load_adapter, save_adapter
from tests.conftest import save_tiny_llama
from zhllama.cli import UserError


@pytest.fixture(scope="module")
def resized_base(tmp_path_factory, extended_tokenizer_dir):
    from transformers import AutoTokenizer

    n = len(AutoTokenizer.from_pretrained(str(extended_tokenizer_dir)))
    rows = -(-n // 64) * 64  # padded like `pretrain init`
    return save_tiny_llama(tmp_path_factory.mktemp("resized"), extended_tokenizer_dir, vocab_size=rows, seed=1)


def test_adapter_reloads_onto_the_resized_base_and_merges_to_the_same_logits(tmp_path, resized_base, tiny_llama_dir):
    from pretrain.model import load_llama

    torch.manual_seed(0)
    model = apply_lora(load_llama(resized_base), LoraSettings(r=4))
    with torch.no_grad():  # stand-in for training: move every trainable weight (B starts at 0)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ids = torch.tensor([[1, 100, 32010, 5, 32100, 2]])  # new (Chinese) ids included
    with torch.no_grad():
        want = model(input_ids=ids).logits
    save_adapter(model, tmp_path / "adapter", base_model_dir=resized_base)
    again = load_adapter(resized_base, tmp_path / "adapter")
    merged = again.merge_and_unload().eval()
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        base = load_llama(resized_base)(input_ids=ids).logits
    assert not torch.allclose(base, want, atol=1e-3)  # the adapter really changes the model

    with pytest.raises(UserError) as err:
        load_adapter(tiny_llama_dir, tmp_path / "adapter")
    msg = str(err.value)
    assert str(merged.config.vocab_size) in msg and "32000" in msg
