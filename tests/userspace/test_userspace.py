"""The patched daxctl and lsmem (userspace-patch/) on recorded sysfs trees.

The tools come from userspace/build.py (cached by content). lsmem reads a tree through
--sysroot; daxctl has no such option, so it runs in a mount namespace of its own where the
tree is mounted over /sys and a tmpfs over /dev holds the dax character devices (root only).
The recorder keeps neither /sys/dev/char nor the devices' subsystem links, which libdaxctl
resolves; the copy made here adds them as the kernel has them.

MEMMAP_KMEM_USERSPACE=1 (CI) turns a missing prerequisite into a failure instead of a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RECORDED = REPO / "tests" / "unit" / "recorded"
TREES = REPO / "tests" / "unit" / "trees"
BUILD = [sys.executable, str(REPO / "userspace" / "build.py")]
STRICT = os.environ.get("MEMMAP_KMEM_USERSPACE") == "1"
# A test of the tests: a patch applied after the series (tests/userspace/broken/*.patch),
# with which these tests must fail.
EXTRA = [
    arg
    for patch in filter(None, os.environ.get("MEMMAP_KMEM_USERSPACE_EXTRA_PATCH", "").split(":"))
    for arg in ("--extra-patch", patch)
]


def missing(reason: str) -> None:
    if STRICT:
        pytest.fail(reason)
    pytest.skip(reason)


def built(project: str) -> Path:
    extra = EXTRA if project == "util-linux" else []
    proc = subprocess.run([*BUILD, "build", project, *extra], capture_output=True, text=True)
    if proc.returncode != 0:
        missing(f"userspace/build.py build {project} failed:\n{proc.stderr[-3000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def lsmem() -> Path:
    return built("util-linux")


@pytest.fixture(scope="session")
def daxctl() -> Path:
    return built("ndctl")


def blocks(tree: Path) -> dict[int, str]:
    """memoryN -> the recorded memoryN/memmap_on_memory ("0"/"1"), where recorded."""
    out = {}
    for attr in (tree / "sys/devices/system/memory").glob("memory*/memmap_on_memory"):
        out[int(attr.parent.name[6:])] = attr.read_text().strip()
    return out


def all_trees() -> list[Path]:
    found = [*sorted(RECORDED.iterdir()), *sorted(TREES.iterdir())]
    return [t for t in found if (t / "sys/devices/system/memory/block_size_bytes").is_file()]


def run_lsmem(lsmem: Path, tree: Path, *args: str) -> str:
    proc = subprocess.run(
        [str(lsmem), "--sysroot", str(tree), *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("tree", all_trees(), ids=lambda t: t.name)
def test_lsmem_agrees_with_the_blocks(lsmem: Path, tree: Path) -> None:
    """Block by block, lsmem's column is the tree's memoryN/memmap_on_memory; without the
    attribute (stock kernels) the column is left out as before the patch."""
    recorded = blocks(tree)
    out = run_lsmem(lsmem, tree, "--all", "--raw", "-n", "-o", "BLOCK,MEMMAP-ON-MEMORY")
    rows = [line.split() for line in out.splitlines() if line.strip()]
    if not recorded:
        assert all(len(r) == 1 for r in rows), out
        return
    shown = {int(r[0]): r[1] for r in rows}
    assert shown == {n: ("yes" if v == "1" else "no") for n, v in recorded.items()}


def test_lsmem_kmem_on(lsmem: Path) -> None:
    """kmem on with memory_hotplug.memmap_on_memory off: the parameter line says "no", the
    blocks say where the memmap is."""
    out = run_lsmem(lsmem, RECORDED / "vm_patched_kmem_on", "-o", "+MEMMAP-ON-MEMORY")
    assert re.search(r"\s0-23\s+no$", out, re.M), out
    assert re.search(r"\s33-39\s+yes$", out, re.M), out
    assert re.search(r"^Memory with memmap on memory:\s+896M$", out, re.M), out
    assert re.search(r"^Memmap on memory parameter:\s+no$", out, re.M), out
    summary = run_lsmem(lsmem, RECORDED / "vm_patched_kmem_on", "--summary=only", "--bytes")
    assert re.search(r"^Memory with memmap on memory:\s+939524096$", summary, re.M)


def test_lsmem_stock_unchanged(lsmem: Path) -> None:
    out = run_lsmem(lsmem, RECORDED / "vm_stock", "-o", "+MEMMAP-ON-MEMORY")
    assert "MEMMAP-ON-MEMORY" not in out
    assert "Memory with memmap on memory" not in out


def test_lsmem_skipped_column_first(lsmem: Path) -> None:
    """The fix of patch 1: a column left out of the table no longer shifts the others."""
    out = run_lsmem(lsmem, RECORDED / "vm_stock", "-o", "CONFIGURED,RANGE")
    assert out.splitlines()[0].strip() == "RANGE"


def test_util_linux_own_lsmem_test() -> None:
    """util-linux's tests/ts/lsmem, with the dump the series adds."""
    proc = subprocess.run([*BUILD, "test-util-linux", *EXTRA], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "x86_64-dax-kmem-memmap" in proc.stdout and "FAILED" not in proc.stdout


# daxctl in a mount namespace ---------------------------------------------------------------


def namespace_tree(tree: Path, dst: Path) -> tuple[Path, list[tuple[str, str]]]:
    """A copy of tree with what libdaxctl resolves and the recorder leaves out; returns it
    and the dax character devices (name, "major:minor")."""
    shutil.copytree(tree, dst, symlinks=True)
    chars = []
    for link in sorted((dst / "sys/bus/dax/devices").iterdir()):
        dev = (link.parent / os.readlink(link)).resolve()
        rel_sys = os.path.relpath(dst / "sys", dev)
        (dev / "subsystem").symlink_to(f"{rel_sys}/bus/dax")
        majmin = (dev / "dev").read_text().strip()
        char = dst / "sys/dev/char"
        char.mkdir(parents=True, exist_ok=True)
        (char / majmin).symlink_to(os.path.relpath(dev, char))
        chars.append((link.name, majmin))
    return dst, chars


@pytest.fixture
def in_tree(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        missing("daxctl on a tree needs root and unshare (a mount namespace)")

    def run(tree: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        root, chars = namespace_tree(RECORDED / tree, tmp_path / tree)
        nodes = " && ".join(f"mknod /dev/{name} c {mm.replace(':', ' ')}" for name, mm in chars)
        script = (
            f"mount --bind {root}/sys /sys && mount -t tmpfs none /dev && "
            f'mknod /dev/null c 1 3 && {nodes} && exec "$@"'
        )
        return subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", *cmd], capture_output=True, text=True
        )

    yield run


def daxctl_list(run: Callable[..., subprocess.CompletedProcess[str]], daxctl: Path,
                tree: str) -> dict[str, object]:  # fmt: skip
    proc = run(tree, str(daxctl), "list")
    if proc.returncode != 0 and "mount" in proc.stderr:
        missing(f"no mount namespace here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    return out[0] if isinstance(out, list) else out


def test_daxctl_list_kmem_on(in_tree: Callable[..., subprocess.CompletedProcess[str]],
                             daxctl: Path) -> None:  # fmt: skip
    """The request (device attribute 0) and the placement (7 of 7 blocks) differ."""
    dev = daxctl_list(in_tree, daxctl, "vm_patched_kmem_on")
    tree = RECORDED / "vm_patched_kmem_on"
    on_blocks = sum(1 for n, v in blocks(tree).items() if v == "1")
    assert dev["mode"] == "system-ram"
    assert dev["memmap_on_memory"] is False
    assert dev["total_memblocks"] == 7
    assert dev["memmap_on_memory_memblocks"] == on_blocks == 7


def test_daxctl_list_nothing_set(in_tree: Callable[..., subprocess.CompletedProcess[str]],
                                 daxctl: Path) -> None:  # fmt: skip
    dev = daxctl_list(in_tree, daxctl, "vm_patched_nothing_set")
    assert dev["mode"] == "system-ram"
    assert dev["memmap_on_memory_memblocks"] == 0
    assert dev["total_memblocks"] == 7


def test_daxctl_list_devdax(in_tree: Callable[..., subprocess.CompletedProcess[str]],
                            daxctl: Path) -> None:  # fmt: skip
    dev = daxctl_list(in_tree, daxctl, "vm_patched_devdax")
    assert dev["mode"] == "devdax"
    assert "memmap_on_memory" in dev and "memmap_on_memory_memblocks" not in dev


def test_daxctl_reconfigure_refuses_a_bound_device(
    in_tree: Callable[..., subprocess.CompletedProcess[str]], daxctl: Path
) -> None:
    """In system-ram mode with the other value: EBUSY, said before anything is touched."""
    proc = in_tree(
        "vm_patched_kmem_on", str(daxctl), "reconfigure-device", "--mode=system-ram",
        "--memmap-on-memory=yes", "dax0.0",
    )  # fmt: skip
    assert proc.returncode != 0
    assert "memmap_on_memory cannot change while the device is in system-ram mode" in (proc.stderr)


def test_daxctl_option_needs_system_ram(daxctl: Path) -> None:
    proc = subprocess.run(
        [str(daxctl), "reconfigure-device", "--mode=devdax", "--memmap-on-memory", "dax0.0"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--memmap-on-memory requires --mode=system-ram" in proc.stderr
