"""zone->contiguous after hot-plug (issue 16, item 5): the series, the patch of
kernel-patch/<base>-extra/ (walk the zone once the onlined range is online) and a test-only
patch that prints zone->contiguous in /proc/zoneinfo (tests/vm/contig-kernel/<base>/;
flavour `contig`), on either base.

The hot-plug node's Movable zone must say `contiguous: 1` once every block of the device
is online (no hole), `0` while a block in its middle is offline (a hole), and `1` again
once it is back online, with the memmap on the memory (kmem `on`) and in DRAM (`off`).
Without the patch, move_pfn_range_to_zone() walks the zone before the new range is online,
the walk stops there, and the zone never says 1 after a hot-plug.

Opt-in (MEMMAP_KMEM_VM_CONTIG=1, `make vm-test-contig [BASE=7.3]`): needs the `contig` image
of MEMMAP_KMEM_BASE (`python -m kbuild --base <base> build --flavour contig`, or
MEMMAP_KMEM_CONTIG_KERNEL). `make vm-test-contig-unfixed` runs it on the series with the
test-only patch alone (flavour `contig-unfixed`), where it must fail.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import pytest

from vmtest import asserts, costs, image
from vmtest import steps as s
from vmtest.harness import Harness, unavailable
from vmtest.machine import Source

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        os.environ.get("MEMMAP_KMEM_VM_CONTIG") != "1",
        reason="MEMMAP_KMEM_VM_CONTIG is not 1 (the contig kernel; make vm-test-contig)",
    ),
]

HOTPLUG_MIB = 1024


def contig_kernel() -> Path:
    return Path(
        os.environ.get("MEMMAP_KMEM_CONTIG_KERNEL") or image.default_image("contig", os.environ)
    )


def movable_contiguous(zoneinfo: str, node: int) -> int:
    """The `contiguous:` line of the node's Movable zone in /proc/zoneinfo."""
    match = re.search(rf"Node {node}, zone\s+Movable\n(.*?)(?=\nNode |\Z)", zoneinfo, re.S)
    assert match, f"no Movable zone on node {node}"
    found = re.search(r"^\s+contiguous:\s+(\d+)", match.group(1), re.M)
    assert found, "no contiguous: line (is this the contig kernel?)"
    return int(found.group(1))


def state(block: int, value: str) -> str:
    return f"echo {value} > /sys/devices/system/memory/memory{block}/state; echo rc=$?"


def job(first: int, last: int) -> list[dict[str, Any]]:
    middle = (first + last) // 2
    out = [s.find_dax(), s.offline("boot_remove", method="sysfs")]
    for mode in ("on", "off"):
        out += [
            s.kmem_set(mode, f"set_{mode}", method="sysfs"),
            s.online(f"online_{mode}", method="sysfs"),
            s.read("/proc/zoneinfo", f"all_online_{mode}"),
            s.run(f"hole_{mode}", "sh", "-c", state(middle, "offline")),
            s.read("/proc/zoneinfo", f"hole_zoneinfo_{mode}"),
            s.run(f"refill_{mode}", "sh", "-c", state(middle, "online_movable")),
            s.read("/proc/zoneinfo", f"refilled_{mode}"),
            s.offline(f"offline_{mode}", method="sysfs"),
        ]
    return out


def test_zone_contiguous_after_hotplug(vm: Harness) -> None:
    kernel = contig_kernel()
    if not kernel.is_file():
        unavailable(vm.settings, f"contig kernel {kernel} not found")
    vm.settings = dataclasses.replace(vm.settings, kernel=kernel)
    first, last = costs.hotplug_blocks(HOTPLUG_MIB)
    result = vm.boot(
        job(first, last), source=Source.HMEM, hotplug_mib=HOTPLUG_MIB, timeout=600, name="contig"
    )
    asserts.booted_ok(result)
    for mode in ("on", "off"):

        def seen(label: str) -> int:
            return movable_contiguous(str(result.step(label)["value"]), 1)

        assert "rc=0" in result.step(f"hole_{mode}")["stdout"]
        assert "rc=0" in result.step(f"refill_{mode}")["stdout"]
        assert seen(f"all_online_{mode}") == 1, mode
        assert seen(f"hole_zoneinfo_{mode}") == 0, mode
        assert seen(f"refilled_{mode}") == 1, mode
