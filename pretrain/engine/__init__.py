"""The training engine every stage shares: one DeepSpeed loop, a Task protocol, a launcher.

Pretraining (:class:`pretrain.train.PretrainTask`), SFT and alignment are Tasks plugged into the
same loop, so DeepSpeed setup, ZeRO-2/3, LoRA, token-weighted losses, checkpoints, exact resume,
logs, signals, the run lock and the export to ``final/`` exist once.

API (all of it)::

    EngineConfig          settings every stage shares (extend it with the stage's data keys)
    Task, CausalLMTask    what a stage implements (protocol) / defaults for a causal LM
    run_lock, preflight, launch     the launcher side (a stage's run(cfg))
    Engine                what the task's hooks receive in the workers (.forward, .all_reduce_sum, .rank...)

A complete stage, launcher and task (``python -m mystage train`` -> ``run``)::

    from dataclasses import dataclass
    from pathlib import Path

    from pretrain.engine import CausalLMTask, EngineConfig, launch, preflight, run_lock

    @dataclass
    class ToyConfig(EngineConfig):
        sequences_path: Path = Path("artifacts/toy/sequences.npy")   # int64 [n, seq]

    class ToyTask(CausalLMTask):
        config_class = ToyConfig

        def setup(self, engine, rank, world_size):
            import numpy as np
            super().setup(engine, rank, world_size)
            self.data = np.load(self.cfg.sequences_path)

        def micro_batches(self, step):          # pure function of (seed, step, rank): exact resume
            import numpy as np, torch
            rng = np.random.default_rng([self.cfg.seed, step])
            ids = rng.choice(len(self.data), self.cfg.global_batch_size, replace=False)
            mine = ids.reshape(self.cfg.grad_accum_steps, self.world_size, -1)[:, self.rank]
            return [{"input_ids": torch.from_numpy(self.data[m]), "labels": torch.from_numpy(self.data[m])}
                    for m in mine]

    def run(cfg: ToyConfig) -> int:
        with run_lock(cfg.run_dir, cfg.launch.node_rank):
            ds_config, resume = preflight(cfg)
            launch(cfg, ds_config, resume, task="mystage.train:ToyTask",
                   identity={"data": str(cfg.sequences_path)})
        return 0

The loss a task returns is a SUM over its units (tokens, pairs...); the engine makes the step's
gradient that of ``sum over the step / units of the step`` across micro-batches, accumulation
steps and ranks (:func:`pretrain.engine.loop.train_step`). ``evaluate`` (optional) runs every
``eval_every_steps``; its figures are logged as ``eval_<name>``.
"""
from pretrain.engine.config import EngineConfig, Mode, RunPaths
from pretrain.engine.launcher import check_inputs, ds_config_for, launch, preflight
from pretrain.engine.loop import Engine, lr_at, skip_cpu_shm_allreduce, train_worker
from pretrain.engine.rundir import ResumePoint, run_lock
from pretrain.engine.task import IGNORE_INDEX, CausalLMTask, Task, causal_lm_loss_sum

__all__ = [
    "IGNORE_INDEX", "CausalLMTask", "Engine", "EngineConfig", "Mode", "ResumePoint", "RunPaths", "Task",
    "causal_lm_loss_sum", "check_inputs", "ds_config_for", "launch", "lr_at", "preflight", "run_lock", "skip_cpu_shm_allreduce", "train_worker",
]
