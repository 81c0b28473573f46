"""tests/record_tree.py replays: recording a tree gives the same pyshim output."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from unit_helpers import Result, tree_path


def _load() -> ModuleType:
    path = Path(__file__).parents[1] / "record_tree.py"
    spec = importlib.util.spec_from_file_location("record_tree", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["record_tree"] = module
    spec.loader.exec_module(module)
    return module


record_tree = _load()


@pytest.mark.parametrize("name", ["patched_on", "mixed", "stale", "devdax", "stock", "v73_states"])
def test_recorded_tree_replays(name: str, cli: Callable[..., Result], tmp_path: Path) -> None:
    target = tmp_path / "rec"
    assert record_tree.main([str(target), "--root", str(tree_path(name))]) == 0
    for argv in (["show", "--json"], ["check", "--json"]):
        a = cli([*argv, "--sysroot", str(tree_path(name))])
        b = cli([*argv, "--sysroot", str(target)])
        assert (a.code, a.out) == (b.code, b.out)


def test_symlinks_stay_relative(tmp_path: Path) -> None:
    target = tmp_path / "rec"
    record_tree.main([str(target), "--root", str(tree_path("patched_on"))])
    links = [p for p in target.rglob("*") if p.is_symlink()]
    assert links
    for link in links:
        assert not os.path.isabs(os.readlink(link))
        assert link.resolve().is_relative_to(target.resolve())


def test_unreadable_and_vanished_files_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(tree_path("patched_on"), root, symlinks=True)
    state = root / "sys/devices/system/memory/memory33/state"
    state.unlink()
    state.mkdir()  # reading a directory fails with EISDIR: like an unreadable attribute
    (root / "sys/devices/system/memory/memory34/node1").unlink()
    (root / "sys/devices/system/memory/memory34/node1").symlink_to("../../node/node9")
    (root / "sys/bus/dax/devices/dax5.0").symlink_to("../../../devices/platform/gone/dax5.0")
    target = tmp_path / "rec"
    recorder = record_tree.Recorder(str(root), str(target))
    recorder.record()
    # only memory33/state: the dangling node9 and dax5.0 links are recorded as links
    assert recorder.skipped == 1
    assert not (target / "sys/devices/system/memory/memory33/state").exists()
    assert (target / "sys/devices/system/memory/memory33/memmap_on_memory").exists()


def test_absolute_links_become_relative(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sys/devices/system/node/node0").mkdir(parents=True)
    (root / "sys/devices/system/memory/memory0").mkdir(parents=True)
    (root / "sys/devices/system/memory/memory0/state").write_text("online\n")
    (root / "sys/devices/system/memory/memory0/node0").symlink_to("/sys/devices/system/node/node0")
    target = tmp_path / "rec"
    record_tree.Recorder(str(root), str(target)).record()
    link = target / "sys/devices/system/memory/memory0/node0"
    assert os.readlink(link) == "../../node/node0"
