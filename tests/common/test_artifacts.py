"""Atomic writes leave the old or the new artifact, never a torn one; meta.json describes it."""
from __future__ import annotations

import json

import pytest

from zhllama.artifacts import atomic_dir, atomic_write_json, read_meta, sha256_file, sha256_tree, write_meta


def test_atomic_dir_swaps_in_complete_directories_only(tmp_path):
    out = tmp_path / "tok"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as d:
            (d / "a.txt").write_text("half-new")
            raise RuntimeError("crash mid-write")
    assert (out / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"], "no temp directory left behind"
    with atomic_dir(out) as d:
        (d / "b.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]


def test_atomic_write_json_and_meta(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"汉字": 1})
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == {"汉字": 1}
    write_meta(tmp_path, config={"a": 1}, inputs={"x": sha256_file(tmp_path / "x.json")})
    meta = read_meta(tmp_path)
    assert meta["inputs_sha256"]["x"] == sha256_file(tmp_path / "x.json")
    assert "torch" in meta["versions"] and "python" in meta["versions"]


def test_tree_hash_changes_with_content_and_ignores_meta(tmp_path):
    (tmp_path / "a").write_text("1")
    h1 = sha256_tree(tmp_path)
    write_meta(tmp_path)
    assert sha256_tree(tmp_path) == h1
    (tmp_path / "a").write_text("2")
    assert sha256_tree(tmp_path) != h1


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_dir_gives_files_umask_modes_even_when_a_library_writes_them_0600(tmp_path, umask):
    import os
    import stat

    import torch
    from safetensors.torch import save_file

    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "model") as d:
            save_file({"w": torch.zeros(2)}, d / "model.safetensors")  # safetensors writes 0600
            (d / "sub").mkdir()
            (d / "sub" / "config.json").write_text("{}")
            (d / "run.sh").write_text("#!/bin/sh\n")
            os.chmod(d / "run.sh", 0o755)
    finally:
        os.umask(old)
    mode = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
            for p in [tmp_path / "model", *(tmp_path / "model").rglob("*")]}
    assert mode == {"model": 0o777 & ~umask, "model/model.safetensors": 0o666 & ~umask,
                    "model/sub": 0o777 & ~umask, "model/sub/config.json": 0o666 & ~umask,
                    "model/run.sh": 0o777 & ~umask}
