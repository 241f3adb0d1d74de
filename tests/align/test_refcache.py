"""Reference log-probs: cached once per (model, data), or live from the LoRA policy with its adapter off."""
from __future__ import annotations

import numpy as np
import torch

from align.pairs import pair_batch
from align.refcache import cache_key, live_ref_logps, load_or_compute, pair_logps


def test_cached_equals_adapter_disabled_and_is_keyed_by_model_and_data(tmp_path, tiny_llama_dir, small_encoded,
                                                                     moved_lora):
    ref, entry, hit = load_or_compute(tmp_path, tiny_llama_dir, small_encoded, pad_id=0, batch_pairs=3)
    assert not hit and (entry / "meta.json").is_file()
    again, entry2, hit2 = load_or_compute(tmp_path, tiny_llama_dir, small_encoded, pad_id=0, batch_pairs=5)
    assert hit2 and entry2 == entry and np.array_equal(again.chosen, ref.chosen)

    policy = moved_lora  # adapter and trainable embedding/head copies moved away from the base
    batch = pair_batch(small_encoded, pad_id=0)
    with torch.no_grad():
        moved_c, _ = pair_logps(policy, batch)
    live_c, live_r = live_ref_logps(policy, batch)
    np.testing.assert_allclose(live_c.double().numpy(), ref.chosen, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(live_r.double().numpy(), ref.rejected, rtol=1e-5, atol=1e-4)
    assert np.abs(moved_c.double().numpy() - ref.chosen).max() > 1e-2  # the adapter does change the policy

    # Another model or other data: another key, so a stale entry is never read.
    assert cache_key("other-model", small_encoded) != cache_key("model", small_encoded)
    assert cache_key("model", small_encoded[:-1]) != cache_key("model", small_encoded)
