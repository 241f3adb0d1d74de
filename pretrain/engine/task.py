"""What a training stage plugs into the engine: the :class:`Task` protocol and a causal-LM base.

The worker builds the task as ``TaskClass(cfg, task_spec)`` (``cfg`` parsed into
``TaskClass.config_class``, ``task_spec`` the JSON dict the stage's launcher passed), then calls::

    model = task.build_model(cfg, ds_config)        # before deepspeed.initialize
    task.setup(engine, rank, world_size)            # after it: open data, caches
    task.units(batch)                               # before any forward of the step (one all_reduce)
    loss_sum, n_units, metrics = task.loss(engine, batch)
    task.evaluate(engine)                           # every eval_every_steps (collective: every rank calls it)
    task.client_state() / task.load_client_state(d) # stored in / restored from checkpoints

Invariant a task must keep: ``micro_batches(step)`` is a pure function of (seed, step, rank), so a
resumed run sees the batches of an uninterrupted one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pretrain.engine.config import EngineConfig

if TYPE_CHECKING:
    from pretrain.engine.loop import Engine

IGNORE_INDEX = -100  # label value that torch's cross-entropy (and HF models) skip


@runtime_checkable
class Task(Protocol):
    """The stage-specific part of a training run (see the module docstring for the call order)."""

    config_class: ClassVar[type]
    """The stage's config dataclass (an :class:`EngineConfig` subclass); the worker parses the spec into it."""

    def build_model(self, cfg: Any, ds_config: dict) -> Any:
        """The model to train (a causal LM, a reward model...); called once per process before DeepSpeed."""

    def setup(self, engine: Engine, rank: int, world_size: int) -> None:
        """Open this rank's data (after ``deepspeed.initialize``)."""

    def micro_batches(self, step: int) -> list[dict]:
        """This rank's ``grad_accum_steps`` micro-batches (dicts of CPU tensors) of optimizer step ``step``."""

    def units(self, batch: dict) -> int:
        """The units the loss of ``batch`` sums over (supervised tokens, pairs, samples), known before the forward."""

    def loss(self, engine: Engine, batch: dict) -> tuple[Any, Any, dict]:
        """``(loss_sum, n_units, metrics)``: the SUM of the loss over the batch's units, their count, and
        other sums over the same units (the engine logs each as ``sum over the step / units of the step``)."""

    def evaluate(self, engine: Engine) -> dict:
        """Held-out figures (every rank calls it; collectives allowed); ``{}`` when the task has none."""

    def client_state(self) -> dict:
        """JSON-able state saved in checkpoints beside the step (e.g. a rollout buffer's position)."""

    def load_client_state(self, state: dict) -> None:
        """Restore what :meth:`client_state` returned."""


class CausalLMTask:
    """Defaults for a causal-LM task: the ``full``/``embeddings``/``lora`` model, a token-summed loss.

    A subclass only writes ``setup`` and ``micro_batches`` (batches with ``input_ids`` and
    ``labels``, ``-100`` where no loss is wanted; optional ``attention_mask``/``position_ids``).
    """

    config_class: ClassVar[type] = EngineConfig

    def __init__(self, cfg: Any, task_spec: dict) -> None:
        self.cfg = cfg
        self.task_spec = task_spec

    def build_model(self, cfg: Any, ds_config: dict) -> Any:
        from pretrain.engine.loop import prepare_model

        return prepare_model(cfg, ds_config)

    def setup(self, engine: Engine, rank: int, world_size: int) -> None:
        self.rank, self.world_size = rank, world_size

    def micro_batches(self, step: int) -> list[dict]:
        raise NotImplementedError

    def units(self, batch: dict) -> int:
        """Tokens that are predicted: labels not ``-100`` after the one-position shift."""
        return int((batch["labels"][..., 1:] != IGNORE_INDEX).sum())

    def loss(self, engine: Engine, batch: dict) -> tuple[Any, Any, dict]:
        return causal_lm_loss_sum(engine.forward, batch), self.units(batch), {}

    def evaluate(self, engine: Engine) -> dict:
        return {}

    def client_state(self) -> dict:
        return {}

    def load_client_state(self, state: dict) -> None:
        return None


def causal_lm_loss_sum(forward: Any, batch: dict) -> Any:
    """Summed next-token cross-entropy of ``batch`` (``-100`` labels skipped) through ``forward``.

    Hugging Face models sum instead of averaging when given ``num_items_in_batch`` (here 1), with
    the same shift and fp32 upcast as their mean loss; the caller divides by the step's units.
    """
    return forward(**batch, num_items_in_batch=1).loss
