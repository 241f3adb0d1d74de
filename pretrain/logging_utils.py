"""Training logs: JSON lines + TensorBoard while training, a loss-curve PNG at the end.

Only global rank 0 writes. ``metrics.jsonl`` holds one record per logged step::

    {"step": 12, "loss": 6.91, "lr": 0.0003, "grad_norm": 1.2, "tokens_seen": 12288,
     "tokens_per_second": 1450.3, "elapsed_s": 8.5}

Invariant after a resume from step N: the file holds no record with ``step > N`` from the
interrupted run (they are dropped before new ones are appended), so steps stay unique and
increasing, and the curve is the one an uninterrupted run would have drawn.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from zhllama.artifacts import atomic_write_bytes, atomic_write_text

METRICS_NAME = "metrics.jsonl"
LOSS_PNG_NAME = "loss.png"


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` (``[]`` when the file is absent); a torn last line is skipped."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a process killed mid-write leaves at most one torn line, always the last
    return out


def truncate_metrics(path: str | Path, keep_through_step: int) -> int:
    """Drop records with ``step > keep_through_step`` (atomic rewrite); return how many remain."""
    p = Path(path)
    kept = [r for r in read_metrics(p) if r.get("step", 0) <= keep_through_step]
    if p.exists():
        atomic_write_text(p, "".join(json.dumps(r) + "\n" for r in kept))
    return len(kept)


def truncate_tensorboard(logs_dir: str | Path, keep_through_step: int) -> int:
    """Drop TensorBoard events with ``step > keep_through_step`` from every event file (atomic rewrite).

    After a resume from step N the redone steps are logged again; without this, TensorBoard would
    show them twice. Event files are TFRecord streams (length, CRC, bytes, CRC per record): kept
    records are copied byte for byte. Returns the number of events dropped.
    """
    import struct

    from tensorboard.compat.proto.event_pb2 import Event

    dropped = 0
    for f in sorted(Path(logs_dir).glob("events.out.tfevents.*")):
        data, pos, kept = f.read_bytes(), 0, bytearray()
        while pos + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, pos)
            end = pos + 12 + length + 4
            if end > len(data):
                break  # a torn last record (killed mid-write): drop it
            event = Event.FromString(data[pos + 12: pos + 12 + length])
            if event.step <= keep_through_step or not event.HasField("summary"):
                kept += data[pos:end]
            else:
                dropped += 1
            pos = end
        if len(kept) != len(data):
            atomic_write_bytes(f, bytes(kept))
    return dropped


def truncate_logs(logs_dir: str | Path, keep_through_step: int) -> None:
    """Before a resume from step N: drop what the interrupted run logged after N (JSON lines and TensorBoard)."""
    truncate_metrics(Path(logs_dir) / METRICS_NAME, keep_through_step)
    truncate_tensorboard(logs_dir, keep_through_step)


class MetricsLogger:
    """Append step records to ``logs/metrics.jsonl`` and TensorBoard scalars to ``logs/``.

    ``MetricsLogger(logs_dir, enabled=rank == 0)``; a disabled logger does nothing, so every rank
    can call ``log`` unconditionally. Example::

        logger = MetricsLogger(tmp_path, enabled=True)
        logger.log({"step": 1, "loss": 7.0})
        logger.close()
    """

    def __init__(self, logs_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.dir = Path(logs_dir)
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.dir / METRICS_NAME, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.dir))

    def log(self, record: dict[str, Any]) -> None:
        """Write one record (must hold ``step``); numbers other than ``step`` also go to TensorBoard."""
        if not self.enabled:
            return
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a kill loses at most the line being written
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    tag = f"eval/{key[len('eval_'):]}" if key.startswith("eval_") else f"train/{key}"
                    self._tb.add_scalar(tag, value, record["step"])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
            self._tb = None


def plot_loss(records: list[dict], out_png: str | Path, title: str = "training loss") -> Path:
    """Draw the training loss, the held-out loss when evaluated (``eval_loss``) and the learning rate
    (second axis) against the step into ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records if "loss" in r]
    losses = [r["loss"] for r in records if "loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, losses, color="tab:blue", label="train loss")
    held_out = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if held_out:
        ax.plot([s for s, _ in held_out], [v for _, v in held_out], "o-", color="tab:green", label="held-out loss")
        ax.legend(loc="upper right")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    lr = [(r["step"], r["lr"]) for r in records if "lr" in r]
    if lr:
        ax2 = ax.twinx()
        ax2.plot([s for s, _ in lr], [v for _, v in lr], color="tab:orange", alpha=0.6, label="lr")
        ax2.set_ylabel("learning rate")
    from zhllama.artifacts import save_figure

    return save_figure(fig, out_png, dpi=100)
