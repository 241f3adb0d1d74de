"""Encoded pairs: the manifest still adds up after fitting, and the stored ids come back exactly."""
from __future__ import annotations

from align.data import PrefDataConfig, load_encoded, load_pref_data, save_encoded


def test_fitting_rejections_are_counted_and_storage_round_trips(tmp_path, pref_train_path, chat_encoder):
    cfg = PrefDataConfig(train_files=[pref_train_path], eval_files=[], max_seq_len=48, min_reply_tokens=24)
    data = load_pref_data(cfg.train_files, cfg, chat_encoder)
    m = data.manifest
    assert m.read == 981 and m.read == m.used + sum(m.rejected.values()) and m.used == len(data.pairs)
    assert m.rejected["prompt_too_long"] > 0  # at 48 tokens some last user turns leave no room for replies
    assert m.notes["pairs_with_replies_cut"] > 0 and m.notes["turns_dropped_by_truncation"] > 0
    assert all(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) <= 48 for p in data.pairs)
    assert set(data.prompts) == {p.pair_id for p in data.pairs}
    back = load_encoded(save_encoded(tmp_path / "pairs.npz", data.pairs))
    assert back == data.pairs
    # A limit keeps the first N valid pairs and counts the rest.
    few = load_pref_data(cfg.train_files, PrefDataConfig(train_files=cfg.train_files, eval_files=[], limit=10),
                         chat_encoder)
    assert few.manifest.used == len(few.pairs) <= 10 and few.manifest.rejected["over_limit"] == 708 - 10
    assert few.manifest.read == few.manifest.used + sum(few.manifest.rejected.values())
