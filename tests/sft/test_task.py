"""SftTask without DeepSpeed: tokenized data round trip, the step's rows (pure, split over ranks), and
``sft train``'s refusals before any worker starts."""
from __future__ import annotations

import json

import pytest

from sft.data import (
    SftDataConfig,
    arrays_sha256,
    load_sft_data,
    load_tokenized,
    save_tokenized,
    tokenized_arrays,
)
from sft.task import SftTask
from sft.train import SftTrainConfig, run
from zhllama.cli import UserError
from zhllama.config import load_config


@pytest.fixture(scope="module")
def saved(tmp_path_factory, base_tokenizer_dir, random_dialogs):
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("sft_task")
    src = root / "chat.jsonl"
    src.write_text("".join(json.dumps({"id": i, "tier": "A", "messages": d}, ensure_ascii=False) + "\n"
                           for i, d in enumerate(random_dialogs(30, seed=41))), encoding="utf-8")
    data = load_sft_data([src], SftDataConfig(max_seq_len=256), AutoTokenizer.from_pretrained(str(base_tokenizer_dir)))
    path = root / "train.npz"
    digest = save_tokenized(path, data)
    return {"data": data, "path": path, "digest": digest, "src": src, "root": root}


def test_tokenized_data_round_trips_and_its_hash_is_its_content(saved):
    data = saved["data"]
    examples, rows = load_tokenized(saved["path"])
    assert rows == data.rows
    for a, b in zip(examples, data.examples, strict=True):
        assert a.input_ids.tolist() == b.input_ids and a.labels.tolist() == b.labels
        assert a.n_labels == b.n_labels and a.n_label_chars == b.n_label_chars
    assert saved["digest"] == arrays_sha256(tokenized_arrays(data))
    other = tokenized_arrays(data)
    other["labels"] = other["labels"].copy()
    other["labels"][-1] = 7
    assert arrays_sha256(other) != saved["digest"]


def _task(saved, rank, world, micro=1, accum=2):
    cfg = load_config(SftTrainConfig, None, {"micro_batch_size": micro, "grad_accum_steps": accum, "nproc": world,
                                             "data": {"max_seq_len": 256}})
    task = SftTask(cfg, {"data_path": str(saved["path"]), "pad_id": 0})
    task.setup(None, rank, world)
    return task


def test_a_step_is_split_over_ranks_and_micro_steps_and_is_a_pure_function_of_the_step(saved):
    from pretrain.train import step_blocks
    from sft.packing import row_arrays

    data = saved["data"]
    ranks = [_task(saved, r, 2) for r in range(2)]
    for step in (3, 0, 3, 7):
        expected = [row_arrays([data.examples[i] for i in data.rows[int(r)]])[0].tolist()
                    for r in step_blocks(step, len(data.rows), 4, 0)]
        got = [batch["input_ids"][0].tolist() for task in ranks for batch in task.micro_batches(step)]
        assert len(got) == 4  # 2 ranks x 2 micro-steps x 1 row
        for row in got:  # each is one of the step's rows, right-padded
            match = [e for e in expected if row[:len(e)] == e and not any(row[len(e):])]
            assert match, step
            expected.remove(match[0])
        assert expected == []  # every row of the step, once
        fresh = _task(saved, 1, 2).micro_batches(step)  # a new process would compute the same batches
        assert all(bool((a["input_ids"] == b["input_ids"]).all()) for a, b in zip(fresh, ranks[1].micro_batches(step),
                                                                                 strict=True))


def test_train_refuses_data_with_no_usable_conversation_before_any_worker(saved, tiny_llama_dir, base_tokenizer_dir):
    bad = saved["root"] / "bad.jsonl"
    bad.write_text(json.dumps({"tier": "B", "messages": [{"role": "user", "content": "x"},
                                                         {"role": "assistant", "content": "y"}]}) + "\n")
    cfg = load_config(SftTrainConfig, None, {"model_dir": str(tiny_llama_dir), "tokenizer_dir": str(base_tokenizer_dir),
                                             "run_dir": str(saved["root"] / "run"), "nproc": 1,
                                             "data": {"train_files": [str(bad)], "max_seq_len": 256}})
    with pytest.raises(UserError, match=r"no usable conversation.*read 1 = used 0 \+ rejected 1 \(tier_not_selected 1\)"):
        run(cfg)
    too_long = load_config(SftTrainConfig, None, {"model_dir": str(tiny_llama_dir), "tokenizer_dir": str(base_tokenizer_dir),
                                                  "run_dir": str(saved["root"] / "run"), "nproc": 1,
                                                  "data": {"train_files": [str(saved["src"])], "max_seq_len": 4096}})
    with pytest.raises(UserError, match="max_position_embeddings 256"):
        run(too_long)
    assert not (saved["root"] / "run" / "checkpoints").exists()
