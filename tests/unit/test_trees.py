"""show and check on the hand-made trees: golden JSON, exit codes and messages."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from unit_helpers import Result, assert_golden, tree_path

from pyshim import kernel

ALL_TREES = [
    "patched_on",
    "stock",
    "devdax",
    "mixed",
    "mixed_device",
    "stale",
    "boot_node",
    "vanishing",
    "inconsistent",
    "off_attr_one",
    "builtin_offline",
    "v73_states",
    "v73_stock",
]
# exit code and verdict of `check` (None: exit 3, no verdict, nothing on stdout)
CHECK = {
    "patched_on": (0, "ok"),
    "stock": (3, None),
    "devdax": (0, "ok"),
    "mixed": (0, "ok"),
    "mixed_device": (1, "inconsistent"),
    "stale": (4, "stale"),
    "boot_node": (0, "ok"),
    "vanishing": (0, "ok"),
    "inconsistent": (1, "inconsistent"),
    "off_attr_one": (0, "ok"),
    "builtin_offline": (0, "ok"),
    "v73_states": (0, "ok"),
    "v73_stock": (3, None),
}


@pytest.mark.parametrize("name", ALL_TREES)
def test_show_golden(name: str, cli: Callable[..., Result]) -> None:
    r = cli(["show", "--json", "--sysroot", str(tree_path(name))])
    assert r.code == 0, r.err
    assert_golden(f"{name}.show.json", r.out)


@pytest.mark.parametrize("name", ALL_TREES)
def test_check_golden(name: str, cli: Callable[..., Result]) -> None:
    code, verdict = CHECK[name]
    r = cli(["check", "--json", "--sysroot", str(tree_path(name))])
    assert r.code == code, r.err
    if verdict is None:
        assert r.out == ""
    else:
        assert_golden(f"{name}.check.json", r.out)
        assert json.loads(r.out)["status"] == verdict
    assert "Traceback" not in r.err


@pytest.mark.parametrize("name", ALL_TREES)
def test_check_text_runs(name: str, cli: Callable[..., Result]) -> None:
    code, verdict = CHECK[name]
    r = cli(["check", "--sysroot", str(tree_path(name))])
    assert r.code == code, r.err
    if verdict is None:
        assert r.out == ""
    else:
        assert r.out.splitlines()[-1] == f"check: {verdict}"


def test_sysroot_before_command(cli: Callable[..., Result]) -> None:
    a = cli(["--sysroot", str(tree_path("patched_on")), "check", "--json"])
    b = cli(["check", "--json", "--sysroot", str(tree_path("patched_on"))])
    assert a.out == b.out and a.code == b.code == 0


def test_patched_on_blocks_on_memory(cli: Callable[..., Result]) -> None:
    r = cli(["check", "--json", "--sysroot", str(tree_path("patched_on"))])
    data = json.loads(r.out)
    dev = data["devices"][0]
    assert dev["chardev"] == "dax0.0" and dev["status"] == "ok"
    assert [b["memmap"] for b in dev["blocks"]] == ["memory"] * 4
    node1 = next(n for n in data["nodes"] if n["node"] == 1)
    assert node1["present_minus_managed_bytes"] == 8 << 20
    assert node1["expected_present_minus_managed_bytes"] == 8 << 20
    assert node1["memtotal_bytes"] == 516096 << 10
    assert data["version"] == 1


def test_stock_kernel_message(cli: Callable[..., Result]) -> None:
    r = cli(["check", "--sysroot", str(tree_path("stock"))])
    assert r.code == 3
    attribute = tree_path("stock") / "sys/bus/dax/drivers/kmem/memmap_on_memory"
    assert r.err == (
        f"pyshim: error: this kernel lacks {attribute} (the per-driver setting): boot a kernel "
        "with the kmem memmap_on_memory series (kernel-patch/ in the pyshim sources; README.md, "
        '"The kernel pyshim needs")\n'
    )
    s = cli(["set", "on", "--sysroot", str(tree_path("stock"))])
    assert s.code == 3 and s.err == r.err


def test_stale_reports_command(cli: Callable[..., Result]) -> None:
    r = cli(["check", "--sysroot", str(tree_path("stale"))])
    assert r.code == 4
    assert r.out.splitlines()[-1] == "check: stale"
    assert (
        "re-online with: pyshim reconfigure --mode devdax dax0.0 && pyshim online dax0.0" in r.out
    )


def test_allow_stale_exits_zero_with_the_same_report(cli: Callable[..., Result]) -> None:
    strict = cli(["check", "--json", "--sysroot", str(tree_path("stale"))])
    allowed = cli(["check", "--json", "--allow-stale", "--sysroot", str(tree_path("stale"))])
    assert (strict.code, allowed.code) == (4, 0)
    assert allowed.out == strict.out
    assert json.loads(allowed.out)["status"] == "stale"


def test_allow_stale_keeps_inconsistent_failing(cli: Callable[..., Result]) -> None:
    r = cli(["check", "--allow-stale", "--sysroot", str(tree_path("inconsistent"))])
    assert r.code == 1 and r.out.splitlines()[-1] == "check: inconsistent"


def test_device_attribute_ignored_under_kmem_off(cli: Callable[..., Result]) -> None:
    """Contract v2: daxX.Y/memmap_on_memory=1 under kmem off still means DRAM, not stale."""
    r = cli(["check", "--json", "--sysroot", str(tree_path("off_attr_one"))])
    dev = json.loads(r.out)["devices"][0]
    assert dev["expected_memmap_on_memory"] is False
    assert dev["status"] == "ok" and r.code == 0
    assert "attribute" not in dev["reason"]


def test_devdax_device(cli: Callable[..., Result]) -> None:
    r = cli(["check", "--json", "dax0.0", "--sysroot", str(tree_path("devdax"))])
    assert r.code == 0
    dev = json.loads(r.out)["devices"][0]
    assert dev["mode"] == "devdax" and dev["blocks"] == []


def test_boot_node_skipped(cli: Callable[..., Result]) -> None:
    data = json.loads(cli(["check", "--json", "--sysroot", str(tree_path("boot_node"))]).out)
    assert [n["status"] for n in data["nodes"]] == ["skipped"]


def test_vanished_device_listed(cli: Callable[..., Result]) -> None:
    r = cli(["check", "--json", "--sysroot", str(tree_path("vanishing"))])
    assert r.code == 0
    assert json.loads(r.out)["vanished"] == ["dax1.0"]
    assert "dax1.0 vanished during the scan" in r.err
    r = cli(["check", "dax1.0", "--sysroot", str(tree_path("vanishing"))])
    assert r.code == 1 and "vanished" in r.err


def test_block_removed_under_the_device(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    """memory34 went away (directory and node link, as a removal does) while the node's
    accounting still counts 4 blocks: the 3 blocks left cannot explain it, so inconsistent."""
    import shutil

    root = tree_copy("patched_on")
    shutil.rmtree(root / "sys/devices/system/memory/memory34")
    (root / "sys/devices/system/node/node1/memory34").unlink()
    r = cli(["check", "--json", "--sysroot", str(root)])
    data = json.loads(r.out)
    assert [b["memory"] for b in data["devices"][0]["blocks"]] == [32, 33, 35]
    assert (data["status"], r.code) == ("inconsistent", 1)


def test_device_without_mappings_spans_resource_and_size(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    """Without mappingN/ the range is [resource, resource + size): 512 MiB from 4 GiB is
    blocks 32..35, and the check agrees with the node's accounting as before."""
    import shutil

    root = tree_copy("patched_on")
    dev = root / "sys/bus/dax/devices/dax0.0"
    shutil.rmtree(dev / "mapping0")
    assert (dev / "resource").read_text() == "0x100000000\n"
    r = cli(["check", "--json", "--sysroot", str(root)])
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert [b["memory"] for b in data["devices"][0]["blocks"]] == [32, 33, 34, 35]
    assert data["status"] == "ok"


@pytest.mark.parametrize(
    ("text", "size"),
    [("1000000", 16 << 20), ("800000", None), ("10000000000", 1 << 40), ("20000000000", None)],
)
def test_block_size_bounds_are_inclusive(
    text: str, size: int | None, cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    """16 MiB and 1 TiB, the smallest and largest block any kernel uses, are read; the
    powers of two just outside them are refused, naming the file."""
    root = tree_copy("patched_on")
    path = root / "sys/devices/system/memory/block_size_bytes"
    path.write_text(f"{text}\n")
    r = cli(["show", "--json", "--sysroot", str(root)])
    if size is None:
        assert (r.code, r.out) == (1, "")
        assert r.err.startswith(f"pyshim: error: {path} says ") and r.err.count("\n") == 1
        assert "outside the 16 MiB to 1 TiB any kernel uses" in r.err
    else:
        assert r.code == 0, r.err
        assert json.loads(r.out)["settings"]["memory_block_size_bytes"] == size


def test_without_node_directories_the_cross_check_says_skipped(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    import shutil

    root = tree_copy("patched_on")
    shutil.rmtree(root / "sys/devices/system/node")
    r = cli(["check", "--json", "--sysroot", str(root)])
    nodes = json.loads(r.out)["nodes"]
    assert [(n["node"], n["status"]) for n in nodes] == [(1, "skipped")]
    assert nodes[0]["reason"] == "no node directory lists the memory blocks of dax0.0"
    text = cli(["check", "--sysroot", str(root)]).out
    assert "node 1: cross-check skipped (no node directory lists" in text


def test_block_without_state_names_the_file(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    root = tree_copy("patched_on")
    (root / "sys/devices/system/memory/memory34/state").unlink()
    r = cli(["check", "--sysroot", str(root)])
    assert r.code == 1
    assert r.err == (
        f"pyshim: error: {root}/sys/devices/system/memory/memory34/ has no state file: "
        "not a complete memory block\n"
    )


def test_device_vanishing_mid_scan(
    cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The device's directory disappears after the listing: skipped, not a traceback."""
    real = kernel.Sysfs.read

    def read(self: kernel.Sysfs, rel: str, limit: int = kernel.ATTRIBUTE_LIMIT) -> str | None:
        if rel.startswith("sys/bus/dax/devices/dax0.0/"):
            return None
        return real(self, rel, limit)

    monkeypatch.setattr(kernel.Sysfs, "read", read)
    r = cli(["check", "--json", "--sysroot", str(tree_path("patched_on"))])
    assert r.code == 0, r.err
    assert json.loads(r.out)["vanished"] == ["dax0.0"]


def test_unknown_device(cli: Callable[..., Result]) -> None:
    r = cli(["check", "dax7.0", "--sysroot", str(tree_path("patched_on"))])
    assert r.code == 1 and "no dax device dax7.0" in r.err


@pytest.mark.parametrize("bad", ["../dax0.0", "dax0", "dax0.0/../../x", "DAX0.0", "dax0.0 "])
def test_device_name_validated(bad: str, cli: Callable[..., Result]) -> None:
    r = cli(["check", "--sysroot", str(tree_path("patched_on")), "--", bad])
    assert r.code == 2 and "invalid device name" in r.err


def test_show_text(cli: Callable[..., Result]) -> None:
    r = cli(["show", "--sysroot", str(tree_path("patched_on"))])
    assert r.code == 0
    table = [line.split() for line in r.out.splitlines() if line.startswith(("DEVICE", "dax"))]
    header = "DEVICE MODE NODE REGION SIZE BLOCKS MOVABLE MEMMAP MEMMAP_IN_DRAM DAX_ATTR DAX_STATE"
    row = "dax0.0 system-ram 1 cxl 512MiB 4/4 yes memory 0B 1 -"
    assert table == [header.split(), row.split()]


def test_show_placement_comes_from_the_blocks(cli: Callable[..., Result]) -> None:
    """MEMMAP is read from the blocks, never from the device attribute: mixed blocks stay
    mixed, attribute 1 with blocks in DRAM is dram, attribute 0 with blocks on memory is memory.
    """
    data = json.loads(cli(["show", "--json", "--sysroot", str(tree_path("mixed_device"))]).out)
    assert data["devices"][0]["memmap"] == "mixed"
    data = json.loads(cli(["show", "--json", "--sysroot", str(tree_path("off_attr_one"))]).out)
    dev = data["devices"][0]
    assert (dev["memmap"], dev["memmap_on_memory_attribute"]) == ("dram", 1)
    assert (dev["memmap_in_dram_memblocks"], dev["memmap_in_dram_bytes"]) == (4, 8 << 20)
    data = json.loads(cli(["show", "--json", "--sysroot", str(tree_path("boot_node"))]).out)
    dev = data["devices"][0]
    assert (dev["memmap"], dev["memmap_on_memory_attribute"]) == ("memory", 0)
    assert dev["memmap_on_memory_memblocks"] == 4


def test_show_stock_notes_missing_setting(cli: Callable[..., Result]) -> None:
    r = cli(["show", "--json", "--sysroot", str(tree_path("stock"))])
    assert r.code == 0
    assert json.loads(r.out)["settings"]["kmem_memmap_on_memory"] is None
    assert "kernel-patch/" in r.err and "make kernel" not in r.err
