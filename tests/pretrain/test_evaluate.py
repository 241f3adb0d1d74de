"""Evaluation (pretrain/scoring.py, pretrain/evaluate.py, pretrain/loading.py) on tiny real Llamas.

Invariants: every token after BOS is scored exactly once with 1..L tokens of context; the reported
total NLL is the sum of per-token cross-entropies computed directly from the model's logits;
padding and batching change nothing; empty documents are counted; LoRA adapter dirs and DeepSpeed
checkpoints load to the weights that were saved; bad input gives one clear line.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pretrain.evaluate import evaluate_model, parse_jsonl, parse_txt
from pretrain.loading import load_model_and_tokenizer
from pretrain.scoring import plan_windows, rolling_windows, score_documents, score_documents_simple
from zhllama import REPO_ROOT
from zhllama.cli import UserError
from zhllama.cli import main as cli_main

COMMANDS = {"eval": ("pretrain.evaluate:EvalConfig", "pretrain.evaluate:run", "eval")}


@pytest.fixture(scope="module")
def texts(zh_sample_texts, english_texts) -> list[str]:
    """Real Chinese paragraphs (cut short to keep the tests fast) and real English lines."""
    return [t[:100] for t in zh_sample_texts[:6]] + [t[:300] for t in english_texts[:6]]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_model_and_tokenizer(tiny_llama_dir)


@pytest.fixture(scope="module")
def ext_llama_dir(tmp_path_factory, extended_tokenizer_dir):
    """A tiny Llama over the extended (32k + 300 Chinese pieces) tokenizer."""
    from transformers import AutoTokenizer

    from tests.conftest import save_tiny_llama

    n = len(AutoTokenizer.from_pretrained(extended_tokenizer_dir))
    return save_tiny_llama(tmp_path_factory.mktemp("ext_llama"), extended_tokenizer_dir, vocab_size=n, seed=1)


def _ids(loaded, text: str) -> list[int]:
    return [loaded.tokenizer.bos_token_id, *loaded.tokenizer(text, add_special_tokens=False)["input_ids"]]


def _direct_nll(model, ids: list[int], start: int, end: int, n_scored: int | None = None) -> float:
    """Sum of cross-entropies of the last ``n_scored`` of ids[start+1:end+1] (default all), from one
    plain forward over ids[start:end]."""
    n_scored = end - start if n_scored is None else n_scored
    with torch.no_grad():
        logits = model(torch.tensor([ids[start:end]])).logits[0]
    targets = torch.tensor(ids[start + 1 : end + 1])
    return F.cross_entropy(logits[-n_scored:].double(), targets[-n_scored:], reduction="sum").item()


# --- window plan (pure) --------------------------------------------------------------------------


def test_rolling_windows_score_every_token_once_with_bounded_context():
    for n_ids in range(0, 30):
        for window in range(1, 9):
            for stride in range(1, window + 1):
                plan = rolling_windows(n_ids, window, stride)
                scored = []
                for start, end, n_scored in plan:
                    assert 0 <= start < end <= n_ids - 1 and end - start <= window
                    assert 1 <= n_scored <= end - start or (start == 0 and n_scored == end)
                    positions = list(range(end - n_scored + 1, end + 1))
                    # context of position p is ids[start:p]: never empty, never longer than the window
                    assert all(1 <= p - start <= window for p in positions)
                    scored += positions
                assert scored == list(range(1, n_ids)), (n_ids, window, stride, plan)
                if plan:
                    assert plan[0] == (0, min(window, n_ids - 1), min(window, n_ids - 1))  # BOS context, never scored
                if stride == window:  # non-overlapping: consecutive chunks of `window` inputs; the last,
                    # shorter chunk reaches back for a full window of context (as lm-eval does)
                    ends = [min(k * window, n_ids - 1) for k in range(1, len(plan) + 1)]
                    assert plan == [(max(0, e - window), e, e - (k - 1) * window) for k, e in enumerate(ends, 1)]
                if stride < window and len(plan) > 1:
                    # later windows reach back for as much context as the window holds
                    assert all(e - s == window for s, e, _ in plan[1:])


def test_parsers_count_documents_and_name_bad_lines():
    assert parse_txt("一\n\n  \n二 三\r\n") == ["一", "二 三"]
    assert parse_jsonl(['{"text": "a", "id": 1}', "", '{"text": ""}'], "f.jsonl") == ["a", ""]
    with pytest.raises(UserError, match=r"f.jsonl:2: not valid JSON"):
        parse_jsonl(['{"text": "a"}', "{oops"], "f.jsonl")
    with pytest.raises(UserError, match=r"f.jsonl:1: expected a JSON object with a string 'body' field, got no 'body' key .*set --text_field"):
        parse_jsonl(['{"text": "a"}'], "f.jsonl", text_field="body")


# --- scoring == direct cross-entropy -----------------------------------------------------------


def test_total_nll_equals_direct_cross_entropy(tiny, texts):
    docs = {"zh": texts[:6], "en": texts[6:]}
    ids = [_ids(tiny, t) for t in texts]
    longest = max(len(x) for x in ids)
    assert longest <= 256, "fixture texts must fit one window of the tiny model"
    result = evaluate_model(tiny.model, tiny.tokenizer, docs, window_tokens=longest, stride_tokens=longest // 2)
    direct = math.fsum(_direct_nll(tiny.model, x, 0, len(x) - 1) for x in ids)
    total = result["total"]
    assert total["tokens"] == sum(len(x) - 1 for x in ids)
    assert total["nll_nats"] == pytest.approx(direct, rel=1e-6)
    assert total["characters"] == sum(len(t) for t in texts)
    assert total["utf8_bytes"] == sum(len(t.encode()) for t in texts)
    assert total["bits_per_char"] == pytest.approx(direct / math.log(2) / total["characters"], rel=1e-6)
    assert total["bits_per_byte"] == pytest.approx(direct / math.log(2) / total["utf8_bytes"], rel=1e-6)
    assert total["token_perplexity"] == pytest.approx(math.exp(direct / total["tokens"]), rel=1e-6)
    # per-file figures add up to the total
    assert sum(f["nll_nats"] for f in result["files"].values()) == pytest.approx(total["nll_nats"], rel=1e-12)
    # Chinese has more bytes than characters, so bits/byte < bits/char there; equal for ASCII English
    zh, en = result["files"]["zh"], result["files"]["en"]
    assert zh["bits_per_byte"] < zh["bits_per_char"]
    assert all(t.isascii() for t in docs["en"])  # the fixture's English lines: 1 byte per character
    assert en["utf8_bytes"] == en["characters"] and en["bits_per_byte"] == pytest.approx(en["bits_per_char"], rel=1e-12)


def test_window_equal_to_stride_scores_non_overlapping_chunks(tiny, texts):
    window = 16
    ids = [_ids(tiny, t) for t in texts[:4]]
    scores = score_documents(tiny.model, ids, window_tokens=window, stride_tokens=window)
    for x, s in zip(ids, scores, strict=True):
        # independent reference: windows end at window, 2*window, ... (and at the last input), each
        # seeing up to `window` inputs
        ends = sorted({min(e, len(x) - 1) for e in range(window, len(x) - 1 + window, window)})
        direct = [_direct_nll(tiny.model, x, max(0, e - window), e, e - prev) for prev, e in zip([0, *ends], ends, strict=False)]
        assert s.n_tokens == len(x) - 1
        assert s.nll_nats == pytest.approx(math.fsum(direct), rel=1e-6)
    # overlapping windows give the later tokens more context, hence a different total
    overlapping = score_documents(tiny.model, ids, window_tokens=window, stride_tokens=4)
    assert [s.n_tokens for s in overlapping] == [s.n_tokens for s in scores]
    assert sum(s.nll_nats for s in overlapping) != pytest.approx(sum(s.nll_nats for s in scores), rel=1e-6)


def test_padding_and_batching_do_not_change_scores(tiny, texts):
    bos = tiny.tokenizer.bos_token_id
    lengths = [70, 50, 33, 20, 9]  # cut so windows of many different lengths get batched and padded
    ids = [_ids(tiny, t)[:n] for t, n in zip(texts[4:9], lengths, strict=True)] + [[bos], [bos, 306]]  # + empty, one-token
    window, stride = 24, 8
    one_by_one = score_documents(tiny.model, ids, window_tokens=window, stride_tokens=stride, batch_tokens=1)
    all_at_once = score_documents(tiny.model, ids, window_tokens=window, stride_tokens=stride, batch_tokens=10**6)
    pad_other = score_documents(tiny.model, ids, window_tokens=window, stride_tokens=stride, batch_tokens=96, pad_id=7)
    simple = score_documents_simple(tiny.model, ids, window_tokens=window, stride_tokens=stride)
    assert len(plan_windows(ids, window, stride)) > 2 * len(ids)  # many windows, many padded rows
    for other in (all_at_once, pad_other, simple):
        assert [s.n_tokens for s in other] == [s.n_tokens for s in one_by_one]
        for a, b in zip(one_by_one, other, strict=True):
            assert b.nll_nats == pytest.approx(a.nll_nats, rel=1e-5, abs=1e-6)
    assert one_by_one[-2].n_tokens == 0 and one_by_one[-2].nll_nats == 0.0
    assert one_by_one[-1].n_tokens == 1 and one_by_one[-1].nll_nats > 0


# --- the CLI ------------------------------------------------------------------------------------


def _write_eval_files(tmp_path: Path, texts: list[str]) -> tuple[Path, Path]:
    jsonl = tmp_path / "zh.jsonl"
    records = [{"id": i, "text": t} for i, t in enumerate(texts[:6])] + [{"id": 99, "text": ""}, {"id": 100, "text": "的"}]
    jsonl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    txt = tmp_path / "en.txt"
    txt.write_text("\n".join(texts[6:]) + "\n\n", encoding="utf-8")
    return jsonl, txt


def test_cli_compare_mode_writes_reports(tmp_path, tiny_llama_dir, ext_llama_dir, texts, capsys):
    jsonl, txt = _write_eval_files(tmp_path, texts)
    out = tmp_path / "eval"
    argv = ["eval", "--config", str(REPO_ROOT / "configs/pretrain/eval.yaml"), "--model", str(ext_llama_dir),
            "--files", str(jsonl), "--files", str(txt), "--baseline", str(tiny_llama_dir), "--out_dir", str(out),
            "--window_tokens", "64", "--batch_tokens", "512", "--progress", "false"]
    assert cli_main("pretrain", COMMANDS, argv) == 0
    printed = capsys.readouterr().out
    assert "bits/char baseline" in printed and "model:" in printed and "baseline:" in printed
    report = json.loads((out / "report.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"report.json", "report.md", "report.png", "meta.json"}
    assert (out / "report.png").read_bytes()[:4] == b"\x89PNG"
    assert report["settings"]["window_tokens"] == 64 and report["settings"]["stride_tokens"] == 32
    model, base = report["models"]["model"], report["models"]["baseline"]
    zh_m, zh_b = model["files"][str(jsonl)], base["files"][str(jsonl)]
    # the text is the same for both: documents, characters, bytes agree; the extended tokenizer needs fewer tokens
    for key in ("documents", "characters", "utf8_bytes", "unscored_documents"):
        assert zh_m[key] == zh_b[key]
    assert zh_m["documents"] == 8 and zh_m["unscored_documents"] == 1  # the empty record is counted
    assert zh_m["tokens"] < zh_b["tokens"]
    assert model["files"][str(txt)]["documents"] == 6  # blank lines are not documents
    assert model["files"][str(txt)]["tokens"] == base["files"][str(txt)]["tokens"]  # English unchanged
    md = (out / "report.md").read_text()
    assert "Side by side" in md and "bits/char" in md
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["window_tokens"] == 64 and str(jsonl) in meta["inputs_sha256"]


@pytest.mark.parametrize("case, message", [
    ("missing", "evaluation file not found"),
    ("bad_json", "bad.jsonl:2: not valid JSON"),
    ("not_utf8", "latin.txt:2: not valid UTF-8"),
    ("suffix", "unsupported evaluation file type '.csv'"),
    ("blank", "empty evaluation set"),
    ("not_model", "not a model directory"),
    ("mismatch", "model/tokenizer mismatch"),
    ("window", "exceeds a model's max_position_embeddings"),
])
def test_cli_bad_input_gives_one_clear_line(case, message, tmp_path, tiny_llama_dir, extended_tokenizer_dir, capsys):
    good = tmp_path / "ok.txt"
    good.write_text("hello world\n", encoding="utf-8")
    model, files, extra = str(tiny_llama_dir), [good], []
    if case == "missing":
        files = [tmp_path / "nope.txt"]
    elif case == "bad_json":
        files = [tmp_path / "bad.jsonl"]
        files[0].write_text('{"text": "a"}\n{"text": \n', encoding="utf-8")
    elif case == "not_utf8":
        files = [tmp_path / "latin.txt"]
        files[0].write_bytes("ok\ncaf\u00e9\n".encode("latin-1"))
    elif case == "suffix":
        files = [tmp_path / "table.csv"]
        files[0].write_text("a,b\n", encoding="utf-8")
    elif case == "blank":
        files = [tmp_path / "blank.txt"]
        files[0].write_text("\n  \n\n", encoding="utf-8")
    elif case == "not_model":
        model = str(tmp_path)
    elif case == "mismatch":
        extra = ["--tokenizer", str(extended_tokenizer_dir)]
    elif case == "window":
        extra = ["--window_tokens", "100000"]
    argv = ["eval", "--model", model, "--out_dir", str(tmp_path / "out"), *extra]
    for f in files:
        argv += ["--files", str(f)]
    assert cli_main("pretrain", COMMANDS, argv) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert not (tmp_path / "out" / "report.json").exists()


# --- loading adapters and DeepSpeed checkpoints ------------------------------------------------


def test_lora_adapter_dir_loads_with_its_base(tmp_path, tiny_llama_dir, tiny, texts):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    # init_lora_weights=False: random B, so the adapter really changes the model
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_llama_dir)

    loaded = load_model_and_tokenizer(adapter)
    assert loaded.kind == "lora" and loaded.base_path == Path(tiny_llama_dir)
    ids = [_ids(tiny, t) for t in texts[:3]]
    got = sum(s.nll_nats for s in score_documents(loaded.model, ids, window_tokens=256, stride_tokens=128))
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), adapter).eval()
    direct = math.fsum(_direct_nll(reference, x, 0, len(x) - 1) for x in ids)
    plain = sum(s.nll_nats for s in score_documents(tiny.model, ids, window_tokens=256, stride_tokens=128))
    assert got == pytest.approx(direct, rel=1e-5)
    assert got != pytest.approx(plain, rel=1e-4)


def test_a_moved_run_still_finds_the_base_of_its_lora_adapter(tmp_path, tiny_llama_dir):
    from pretrain.lora import LoraSettings, apply_lora, save_adapter
    from pretrain.model import load_llama

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_llama_dir, run_dir / "init")
    torch.manual_seed(0)
    peft_model = apply_lora(load_llama(run_dir / "init"), LoraSettings(r=4, target_modules=["q_proj"], modules_to_save=[]))
    save_adapter(peft_model, run_dir / "final" / "adapter", base_model_dir=run_dir / "init")
    assert json.loads((run_dir / "final" / "adapter" / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == "../../init"
    moved = tmp_path / "elsewhere" / "run_moved"
    moved.parent.mkdir()
    shutil.move(run_dir, moved)
    loaded = load_model_and_tokenizer(moved / "final" / "adapter")
    assert loaded.kind == "lora" and loaded.base_path == (moved / "init").resolve()
    # from another working directory too (a relative base must not be read against the cwd)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        assert load_model_and_tokenizer(moved / "final" / "adapter").base_path == (moved / "init").resolve()
    finally:
        os.chdir(cwd)


def test_eval_refuses_a_file_the_model_was_trained_on(tmp_path, tiny_llama_dir, capsys):
    """The demo's old mistake: English bits/char on the very file mixed into training."""
    from zhllama.artifacts import sha256_file

    english, held_out = REPO_ROOT / "tests" / "data" / "english.txt", REPO_ROOT / "tests" / "data" / "english_eval_pydoc.txt"
    model = tmp_path / "final"
    shutil.copytree(tiny_llama_dir, model)
    (model / "meta.json").write_text(json.dumps({"training_sources_sha256": {"mixture/english.txt": sha256_file(english)}}))
    renamed = tmp_path / "renamed.txt"
    shutil.copy(english, renamed)
    common = ["eval", "--model", str(model), "--max_documents_per_file", "2", "--progress", "false"]
    for path in (english, renamed):  # by content, whatever the name
        rc = cli_main("pretrain", _commands(), [*common, "--files", str(path), "--out_dir", str(tmp_path / "o1")])
        err = capsys.readouterr().err
        assert rc == 2 and f"{path} has the same content as mixture/english.txt, a training source of {model}" in err
    assert not (tmp_path / "o1").exists()
    assert cli_main("pretrain", _commands(), [*common, "--files", str(held_out), "--out_dir", str(tmp_path / "o2")]) == 0
    rc = cli_main("pretrain", _commands(), [*common, "--files", str(english), "--files", str(held_out),
                                            "--allow_training_text", "--out_dir", str(tmp_path / "o3")])
    assert rc == 0
    assert json.loads((tmp_path / "o3" / "report.json").read_text())["seen_in_training"] == {
        str(english): "mixture/english.txt"}


def _commands() -> dict:
    from pretrain.__main__ import COMMANDS

    return COMMANDS


_DS_SCRIPT = textwrap.dedent("""
    import os, shutil, sys
    from pathlib import Path
    import torch, deepspeed
    from transformers import AutoModelForCausalLM
    from pretrain.engine.loop import skip_cpu_shm_allreduce
    skip_cpu_shm_allreduce()  # no shared-memory op: no C++ compile, no /dev/shm file left
    src, ckpt, expected = map(Path, sys.argv[1:4])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(src)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = {"train_batch_size": 1, "zero_optimization": {"stage": 2}, "zero_allow_untested_optimizer": True}
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=cfg)
    x = torch.randint(3, 1000, (1, 16))
    engine.backward(engine(input_ids=x, labels=x).loss)
    engine.step()
    engine.save_checkpoint(str(ckpt), tag="global_step1")
    for f in src.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, ckpt / f.name)  # config.json + tokenizer files beside the checkpoint
    engine.module.save_pretrained(expected)
    deepspeed.comm.destroy_process_group()
""")


@pytest.mark.deepspeed
def test_deepspeed_checkpoint_dir_loads_the_trained_weights(tmp_path, tiny_llama_dir):
    ckpt, expected = tmp_path / "checkpoints", tmp_path / "expected"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517", "RANK": "0",
           "LOCAL_RANK": "0", "WORLD_SIZE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    script = tmp_path / "make_ckpt.py"
    script.write_text(_DS_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tiny_llama_dir), str(ckpt), str(expected)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (ckpt / "latest").read_text().strip() == "global_step1"

    from transformers import AutoModelForCausalLM

    want = AutoModelForCausalLM.from_pretrained(expected).state_dict()
    before = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).state_dict()
    for path in (ckpt, ckpt / "global_step1"):  # the checkpoints dir, or one step folder in it
        loaded = load_model_and_tokenizer(path)
        assert loaded.kind == "deepspeed"
        got = loaded.model.state_dict()
        assert set(got) == set(want)
        assert all(torch.equal(got[k], want[k]) for k in want)
    assert not torch.equal(want["model.layers.0.self_attn.q_proj.weight"], before["model.layers.0.self_attn.q_proj.weight"])
    shutil.rmtree(ckpt)


@pytest.mark.parametrize("n_items,n", [(0, 3), (2, 5), (10, 3), (254, 100), (1000, 7), (7, 7)])
def test_max_documents_samples_evenly_through_the_file(n_items, n):
    """Invariant: min(n, len) distinct documents in file order, the first included, no gap between
    picks (or after the last) longer than ceil(len / n): a file sorted by domain keeps every domain."""
    from pretrain.evaluate import evenly_spaced

    items = list(range(n_items))
    got = evenly_spaced(items, n)
    assert len(got) == min(n, n_items) and got == sorted(set(got)) and set(got) <= set(items)
    if items:
        assert got[0] == 0
        gaps = [b - a for a, b in zip(got, got[1:] + [n_items], strict=True)]
        assert max(gaps) <= -(-n_items // n)
