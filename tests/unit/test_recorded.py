"""pyshim on sysfs/procfs trees recorded from the patched and the stock 6.12.117 kernel in
the VM (tests/vm/record.py): 896 MiB of legacy pmem as dax0.0 on node 1, 128 MiB blocks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from unit_helpers import Result, assert_golden

RECORDED = Path(__file__).parent / "recorded"
KMEM_ATTR = "sys/bus/dax/drivers/kmem/memmap_on_memory"


def tree(name: str) -> Path:
    path = RECORDED / name
    assert path.is_dir(), f"missing recording {name}: run tests/vm/record.py"
    return path


def blocks_of(report: dict[str, object]) -> list[dict[str, object]]:
    devices = report["devices"]
    assert isinstance(devices, list) and len(devices) == 1
    blocks = devices[0]["blocks"]
    assert isinstance(blocks, list)
    return blocks


def test_kmem_on_every_block_holds_its_memmap(cli: Callable[..., Result]) -> None:
    r = cli(["check", "--json", "--sysroot", str(tree("vm_patched_kmem_on"))])
    assert r.code == 0, r.err
    report = json.loads(r.out)
    blocks = blocks_of(report)
    assert len(blocks) == 7
    assert {b["memmap"] for b in blocks} == {"memory"}
    assert {b["memmap_bytes"] for b in blocks} == {2 << 20}
    assert_golden("recorded_kmem_on_check.json", r.out)


def test_nothing_set_memmap_stays_in_dram(cli: Callable[..., Result]) -> None:
    r = cli(["check", "--json", "--sysroot", str(tree("vm_patched_nothing_set"))])
    assert r.code == 0, r.err
    blocks = blocks_of(json.loads(r.out))
    assert len(blocks) == 7
    assert {b["memmap"] for b in blocks} == {"dram"}
    assert_golden("recorded_nothing_set_check.json", r.out)


@pytest.mark.parametrize(
    ("name", "setting"), [("vm_patched_kmem_on", "on"), ("vm_patched_nothing_set", "global")]
)
def test_recorded_settings_read_back(name: str, setting: str, cli: Callable[..., Result]) -> None:
    r = cli(["show", "--json", "--sysroot", str(tree(name))])
    assert r.code == 0, r.err
    assert json.loads(r.out)["settings"]["kmem_memmap_on_memory"] == setting


def test_recorded_devdax_show(cli: Callable[..., Result]) -> None:
    r = cli(["show", "--json", "--sysroot", str(tree("vm_patched_devdax"))])
    assert r.code == 0, r.err
    assert_golden("recorded_devdax_show.json", r.out)


def test_stock_kernel_exits_3_naming_the_attribute(cli: Callable[..., Result]) -> None:
    root = tree("vm_stock")
    r = cli(["check", "--sysroot", str(root)])
    assert r.code == 3
    assert f"lacks {root / KMEM_ATTR} (the per-driver setting)" in r.err
    assert r.err.count("\n") == 1
