"""One training process: ``python -m pretrain.worker SPEC.json``, started by the launcher.

``python -m pretrain train`` writes ``SPEC.json`` (the resolved config, the DeepSpeed config dict,
the packed-blocks cache path, the checkpoint tag to resume from) and starts one of these per GPU
(or per CPU process) with ``deepspeed`` or ``torchrun``; rank and world size come from the
environment the launcher sets (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...).
The spec names the stage's Task (``"module:Class"``); the loop is :func:`pretrain.engine.loop.train_worker`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Read the spec named on the command line and run the training loop."""
    args = list(sys.argv[1:] if argv is None else argv)
    args = [a for a in args if not a.startswith("--local_rank")]  # if launched without --no_local_rank
    if len(args) != 1:
        print("usage: python -m pretrain.worker SPEC.json (written by `python -m pretrain train`)", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    from pretrain.engine.loop import train_worker

    train_worker(spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
