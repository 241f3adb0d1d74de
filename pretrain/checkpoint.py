"""DeepSpeed checkpoints that survive a kill during a save, keep the last K, and resume exactly.

Layout of ``run_dir/checkpoints/`` (DeepSpeed's own, plus what makes it self-describing)::

    latest                      # text: the tag of the newest *complete* checkpoint, e.g. global_step40
    global_step20/ global_step40/   # DeepSpeed's mp_rank_00_model_states.pt + zero_pp_rank_*_optim_states.pt
    global_step40/zhllama_complete.json   # written last: step, world size, each file's size and sha256
    config.json tokenizer.* meta.json     # the model config + tokenizer, so the dir alone can be consolidated
    zero_to_fp32.py                        # DeepSpeed's consolidation script (copied by DeepSpeed)

Crash safety, the invariant: ``latest`` only ever names a tag whose files were all written. A save
writes ``global_step<N>/`` with ``save_latest=False``, waits for every rank, then rank 0 writes
the completion marker and swaps ``latest`` atomically (temp file + rename), and only after that
prunes old tags. A kill at any moment leaves ``latest`` on the previous, complete checkpoint; a
half-written ``global_step<N>/`` is ignored by :func:`verify_checkpoint` and removed by the next prune.

Corruption: the marker records every file's size and sha256 (hashed by all ranks in parallel at
save time); :func:`verify_checkpoint` checks both before a resume, so a file damaged after the save,
even without a size change, is refused with its name instead of failing deep inside DeepSpeed.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from zhllama.artifacts import atomic_write_json, atomic_write_text, sha256_file
from zhllama.cli import UserError

LATEST_NAME = "latest"
COMPLETE_NAME = "zhllama_complete.json"
TAG_RE = re.compile(r"^global_step(\d+)$")


def tag_for_step(step: int) -> str:
    """DeepSpeed's default tag for a step count. ``tag_for_step(40) == "global_step40"``."""
    return f"global_step{step}"


def step_of_tag(tag: str) -> int | None:
    """Inverse of :func:`tag_for_step`; None for another name. ``step_of_tag("global_step40") == 40``."""
    m = TAG_RE.match(tag)
    return int(m.group(1)) if m else None


def read_latest(ckpt_dir: str | Path) -> str | None:
    """The tag named by ``ckpt_dir/latest``, or None when there is no such file."""
    p = Path(ckpt_dir) / LATEST_NAME
    if not p.is_file():
        return None
    return p.read_text(encoding="utf-8").strip() or None


def list_tags(ckpt_dir: str | Path) -> list[tuple[int, str]]:
    """``(step, tag)`` of every ``global_step*`` folder, complete or not, sorted by step."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    found = [(step_of_tag(p.name), p.name) for p in d.iterdir() if p.is_dir()]
    return sorted((s, t) for s, t in found if s is not None)


def is_complete(ckpt_dir: str | Path, tag: str) -> bool:
    """True when ``tag`` carries the completion marker written after every rank finished saving."""
    return (Path(ckpt_dir) / tag / COMPLETE_NAME).is_file()


def verify_checkpoint(ckpt_dir: str | Path, world_size: int | None = None) -> tuple[str, dict]:
    """Check the checkpoint ``latest`` names before resuming; return ``(tag, completion record)``.

    Raises :class:`UserError` (naming the path) when there is no checkpoint, ``latest`` names a
    missing or incomplete folder, a DeepSpeed file is missing, has another size or another sha256
    than at save time, or (ZeRO states are per rank) ``world_size`` differs from the one that saved it.
    """
    import json
    from concurrent.futures import ThreadPoolExecutor

    d = Path(ckpt_dir)
    tag = read_latest(d)
    if tag is None:
        tags = [t for _, t in list_tags(d)]
        hint = f" (found {tags}, none finished)" if tags else ""
        raise UserError(f"cannot resume: no checkpoint in {d} (no '{LATEST_NAME}' file){hint}")
    tag_dir = d / tag
    if not tag_dir.is_dir():
        raise UserError(f"cannot resume: {d / LATEST_NAME} names {tag!r} but {tag_dir} does not exist")
    marker = tag_dir / COMPLETE_NAME
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise UserError(f"cannot resume: checkpoint {tag_dir} is incomplete or corrupt (no valid {COMPLETE_NAME})") from None
    older = [t for s, t in list_tags(d) if is_complete(d, t) and t != tag and s < (step_of_tag(tag) or 0)]
    way_out = (f"; point {d / LATEST_NAME} at an older complete checkpoint ({', '.join(older)})" if older
               else "; start again with --overwrite")
    for name, size in record.get("files_bytes", {}).items():
        f = tag_dir / name
        if not f.is_file():
            raise UserError(f"cannot resume: checkpoint file missing: {f}{way_out}")
        if f.stat().st_size != size:
            raise UserError(f"cannot resume: checkpoint file {f} has {f.stat().st_size} bytes, expected {size} "
                            f"(corrupt){way_out}")
    expected = record.get("files_sha256", {})
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(expected)))) as pool:  # hashlib releases the GIL
        actual = dict(zip(expected, pool.map(lambda n: sha256_file(tag_dir / n), expected), strict=True))
    for name, digest in expected.items():
        if actual[name] != digest:
            raise UserError(f"cannot resume: checkpoint file {tag_dir / name} is corrupt (its sha256 differs from the "
                            f"one recorded when it was saved){way_out}")
    if world_size is not None and record.get("world_size") not in (None, world_size):
        raise UserError(
            f"cannot resume: {tag_dir} was saved by {record['world_size']} processes, this run has {world_size}; "
            "ZeRO optimizer states are sharded per process"
        )
    return tag, record


def newer_incomplete(ckpt_dir: str | Path, tag: str) -> list[tuple[str, str]]:
    """``(tag, why)`` of every ``global_step*`` newer than ``tag``: what a resume from ``tag`` skips.

    >>> newer_incomplete("run/checkpoints", "global_step3")   # doctest: +SKIP
    [('global_step6', 'no zhllama_complete.json: its save never finished (killed mid-save?)')]
    """
    d = Path(ckpt_dir)
    step = step_of_tag(tag) or 0
    out = []
    for s, t in list_tags(d):
        if s <= step:
            continue
        if is_complete(d, t):
            out.append((t, f"complete, but `{LATEST_NAME}` names {tag} (a later step of a run resumed from an "
                           "earlier checkpoint?); it is removed at the next save"))
        else:
            out.append((t, f"no {COMPLETE_NAME}: its save never finished (killed mid-save?)"))
    return out


def save_checkpoint(engine: Any, ckpt_dir: str | Path, step: int, client_state: dict, keep_last: int,
                    data: dict | None = None) -> str:
    """Collective: every rank calls it. Save ``global_step<step>``, then publish it as ``latest``.

    ``client_state`` (step, tokens seen) is stored by DeepSpeed inside the checkpoint and comes
    back from :func:`load_checkpoint`; ``data`` (what decides the data order) goes into the
    completion marker, where the launcher can check it without loading tensors. Returns the tag.
    """
    import torch.distributed as dist

    d = Path(ckpt_dir)
    tag = tag_for_step(step)
    engine.save_checkpoint(str(d), tag=tag, client_state=client_state, save_latest=False)
    dist.barrier()  # every rank's shard is on disk before anyone hashes or publishes the tag
    tag_dir = d / tag
    rank, world = dist.get_rank(), dist.get_world_size()
    names = sorted(p.name for p in tag_dir.iterdir() if p.is_file() and p.name != COMPLETE_NAME)
    mine = {n: sha256_file(tag_dir / n) for i, n in enumerate(names) if i % world == rank}  # hash in parallel
    gathered: list[dict | None] = [None] * world
    dist.all_gather_object(gathered, mine)
    if rank == 0:
        digests = {k: v for part in gathered for k, v in (part or {}).items()}
        atomic_write_json(tag_dir / COMPLETE_NAME, {
            "step": step, "world_size": world, "data": data or {},
            "files_bytes": {n: (tag_dir / n).stat().st_size for n in names},
            "files_sha256": {n: digests[n] for n in names}})
        atomic_write_text(d / LATEST_NAME, tag)
        prune_checkpoints(d, keep_last)
    dist.barrier()
    return tag


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int) -> list[str]:
    """Delete every ``global_step*`` folder but the newest ``keep_last`` complete ones up to ``latest``.

    Incomplete folders (a save killed midway, or a later step of a run that was then resumed from
    an earlier one) are always removed. Returns the removed tags.
    """
    d = Path(ckpt_dir)
    latest = read_latest(d)
    latest_step = step_of_tag(latest) if latest else None
    complete = [(s, t) for s, t in list_tags(d) if is_complete(d, t) and (latest_step is None or s <= latest_step)]
    keep = {t for _, t in complete[-max(keep_last, 1):]}
    if latest:
        keep.add(latest)
    removed = []
    for _, tag in list_tags(d):
        if tag not in keep:
            shutil.rmtree(d / tag, ignore_errors=True)
            removed.append(tag)
    return removed


def load_checkpoint(engine: Any, ckpt_dir: str | Path, tag: str) -> dict:
    """Collective: load model, optimizer and ZeRO states of ``tag``; return the saved client state."""
    path, client_state = engine.load_checkpoint(
        str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=False
    )
    if path is None:
        raise UserError(f"DeepSpeed could not load checkpoint {Path(ckpt_dir) / tag}")
    return client_state or {}

