"""``python -m sft train``: supervised fine-tuning on chat data with the shared engine.

::

    python -m sft train --config configs/sft/train.yaml --model_dir artifacts/pretrain/demo/final \\
        --tokenizer_dir artifacts/tokenizer --run_dir artifacts/sft/demo --nproc 2 [--mode lora]

What happens, in order (nothing is written before every check passed):

1. the run lock, the engine's checks (a Llama checkpoint, a tokenizer that extends it and fits its
   rows, a valid DeepSpeed config, a verified checkpoint when resuming);
2. the chat files are read, validated and tokenized once here (:func:`sft.data.load_sft_data`);
   ``run_dir/data_manifest.json`` counts every record (read = used + rejected, by reason) and a
   file with no usable conversation stops the run with that count;
3. the workers (:class:`sft.task.SftTask`) train; the data's content hash is part of the run's
   identity, so a resume with other data or options is refused;
4. ``final/``: the merged Hugging Face model (LoRA merged; the adapter in ``final/adapter/``) with
   the chat tokenizer (the format's ``chat_template``, control tokens read in text, pad = ``<unk>``),
   ``chat_format.json`` (the format, read back by chat/generate/eval) and a ``generation_config.json``
   that stops at EOS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pretrain.engine import EngineConfig, launch, preflight, run_lock
from sft.data import SftDataConfig
from zhllama.cli import UserError

TASK = "sft.task:SftTask"
DATA_MANIFEST = "data_manifest.json"


@dataclass
class SftTrainConfig(EngineConfig):
    """The engine's settings (``--lr``, ``--max_steps``, ``--mode lora``, ``--deepspeed_config``...) plus
    the chat data (``--data.KEY``). ``micro_batch_size`` counts rows: packed rows of
    ``data.max_seq_len`` tokens, or single conversations when ``data.packing`` is false."""

    model_dir: Path = Path("artifacts/pretrain/demo/final")
    """The continued-pretrained model (its tokenizer beside it)."""
    run_dir: Path = Path("artifacts/sft/demo")
    """Where ``checkpoints/``, ``final/``, ``logs/`` and ``data_manifest.json`` go."""
    data: SftDataConfig = field(default_factory=SftDataConfig)
    """Chat files, format, tier filter, delimiter policy, ``max_seq_len``, labels, packing."""


def _max_positions(model_dir: Path) -> int | None:
    from pretrain.model import read_llama_config

    return read_llama_config(model_dir).get("max_position_embeddings")


def export_chat_model(ckpt_dir: Path, tag: str | None, out_dir: Path, cfg: SftTrainConfig) -> Path:
    """The engine's exporter for SFT: the merged causal LM (:func:`pretrain.export.export_final`) plus,
    inside the same atomic directory, the chat tokenizer, ``chat_format.json`` and the generation config."""
    from pretrain.export import export_final

    def add_chat_files(tmp_dir: Path) -> None:
        from sft.chat_tokenizer import generation_config, save_chat_tokenizer
        from sft.templates import get_chat_format

        tok = save_chat_tokenizer(cfg.tokenizer_dir, tmp_dir, get_chat_format(cfg.data.chat_format,
                                                                               cfg.data.chat_formats_file))
        generation_config(tok).save_pretrained(str(tmp_dir))

    return export_final(ckpt_dir, tag, out_dir, cfg, finalize=add_chat_files)


def run(cfg: SftTrainConfig) -> int:
    """CLI: lock, check, tokenize the chat data once, launch the workers, export the chat model."""
    from transformers import AutoTokenizer

    from pretrain.data import tokenizer_sha256
    from pretrain.engine.rundir import check_identity
    from sft.data import arrays_sha256, load_sft_data, save_tokenized, tokenized_arrays
    from zhllama.artifacts import atomic_write_json, sha256_file
    from zhllama.cli import existing_file

    with run_lock(cfg.run_dir, cfg.launch.node_rank):
        ds_config, resume = preflight(cfg)
        positions = _max_positions(Path(cfg.model_dir))
        if positions is not None and cfg.data.max_seq_len > positions:
            raise UserError(f"data.max_seq_len {cfg.data.max_seq_len} exceeds the model's max_position_embeddings "
                            f"{positions} ({cfg.model_dir}/config.json)")
        train_files = [existing_file(f, "chat training file") for f in cfg.data.train_files]
        eval_files = [existing_file(f, "held-out chat file") for f in cfg.data.eval_files] if cfg.eval_every_steps else []
        tokenizer = AutoTokenizer.from_pretrained(str(cfg.tokenizer_dir))
        train = load_sft_data(train_files, cfg.data, tokenizer)
        print(f"sft data: {train.manifest.summary()}; {len(train.examples)} conversations -> {len(train.rows)} rows, "
              f"{train.n_supervised_tokens:,} supervised of {train.n_tokens:,} tokens", flush=True)
        if not train.examples:
            raise UserError(f"no usable conversation in {', '.join(map(str, train_files))}: {train.manifest.summary()}")
        launch_dir = Path(cfg.run_dir) / ".launch"
        node = cfg.launch.node_rank
        held = load_sft_data(eval_files, cfg.data, tokenizer) if eval_files else None
        identity = {"sft_data": arrays_sha256(tokenized_arrays(train))[:16]}
        if resume is not None:  # refuse other data before writing anything (launch checks it again)
            check_identity(Path(cfg.run_dir) / "checkpoints", resume,
                           {"seed": cfg.seed, "global_batch_size": cfg.global_batch_size, **identity})
        save_tokenized(launch_dir / f"sft_train.node{node}.npz", train)
        task_spec = {"data_path": str(launch_dir / f"sft_train.node{node}.npz"), "eval_data_path": None,
                     "pad_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0}
        manifests = {"train": train.manifest.to_dict()}
        if held is not None:
            manifests["eval"] = held.manifest.to_dict()
            if held.examples:
                save_tokenized(launch_dir / f"sft_eval.node{node}.npz", held)
                task_spec["eval_data_path"] = str(launch_dir / f"sft_eval.node{node}.npz")
        if node == 0:
            atomic_write_json(Path(cfg.run_dir) / DATA_MANIFEST, manifests)
        inputs = {"tokenizer": tokenizer_sha256(cfg.tokenizer_dir),
                  **{f"data:{f}": sha256_file(f) for f in train_files + eval_files}}
        launch(cfg, ds_config, resume, task=TASK, task_spec=task_spec, identity=identity,
               meta={"inputs": inputs, "data_manifest": manifests}, exporter="sft.train:export_chat_model")
    return 0
