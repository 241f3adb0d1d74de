"""Settings of the datatrove engine (kept apart so that ``corpora.build`` imports no datatrove)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass
class DatatroveConfig:
    """How ``engine: datatrove`` runs (YAML ``datatrove:``).

    Example (YAML)::

        engine: datatrove
        datatrove: {executor: slurm, work_dir: /scratch/corpus-work, tasks: 512, slurm: {partition: cpu}}
    """

    executor: Literal["local", "slurm"] = "local"
    """``local`` (this machine, ``workers`` processes) or ``slurm`` (one job array per stage)."""
    work_dir: Path = Path("artifacts/corpus-work")
    """Intermediate files (cleaned shards, MinHash signatures, buckets, clusters, logs); a shared
    filesystem path on a cluster. Kept after the build: completed stages are skipped on a rerun."""
    tasks: int = 0
    """Read/clean/filter tasks (0 = one per input file); each task takes every ``tasks``-th file."""
    workers: int = 0
    """Local executor: processes at once (0 = all cores)."""
    minhash_buckets: int = 0
    """LSH bands (0 = chosen from ``dedup.near_threshold`` and ``dedup.num_perm``)."""
    slurm: dict[str, str] = field(default_factory=dict)
    """Extra SlurmPipelineExecutor arguments (``partition``, ``time``, ``cpus_per_task``, ``mem_per_cpu_gb``...)."""

    def __post_init__(self) -> None:
        if self.tasks < 0 or self.workers < 0 or self.minhash_buckets < 0:
            raise ValueError("datatrove.tasks, workers and minhash_buckets must be >= 0")
