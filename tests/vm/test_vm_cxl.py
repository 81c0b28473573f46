"""CXL memory: a QEMU cxl-type3 device behind a host bridge with a fixed memory window.

The volatile (RAM) region is the path real CXL memory expanders take: dax_cxl creates the dax
device with memmap_on_memory=1 by default and kmem binds at once, so the memmap is placed when
the region is bound (the "before" snapshot is taken before the region exists). It needs QEMU
>= 8.0 (tests/vm/setup-backports-qemu.sh). The persistent region works with Debian 12's QEMU 7.2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vmtest import asserts, placement
from vmtest import steps as s
from vmtest.harness import Harness, unavailable
from vmtest.machine import Source
from vmtest.runner import VMResult, qemu_version

pytestmark = pytest.mark.vm

GLOBAL_N = "memory_hotplug.memmap_on_memory=0"
GLOBAL_Y = "memory_hotplug.memmap_on_memory=1"


def cxl_online(kind: str, *setup: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        *setup,
        s.snapshot("before"),
        s.cxl_region(kind),
        s.read(s.DEV_ATTR, "dev_attr"),
        s.online(),
        s.snapshot("after"),
    ]


def cxl_placement(result: VMResult) -> placement.Placement:
    asserts.booted_ok(result)
    return placement.measure(result.step("before"), result.step("after"))


def need_volatile_cxl(vm: Harness) -> None:
    major, minor = qemu_version(vm.settings.qemu)
    if major < 8:
        unavailable(
            vm.settings,
            f"QEMU {major}.{minor} has no volatile CXL memory "
            "(run tests/vm/setup-backports-qemu.sh)",
        )


@pytest.mark.parametrize(
    ("kernel", "cmdline", "kmem", "where"),
    [
        ("patched", GLOBAL_N, "on", "memory"),
        ("patched", GLOBAL_N, None, "dram"),
        ("patched", GLOBAL_Y, "off", "dram"),
        ("patched", GLOBAL_Y, None, "memory"),
        ("stock", GLOBAL_Y, None, "memory"),
    ],
    ids=["N-kmem-on", "N-nothing-set", "Y-kmem-off", "Y-kmem-global", "stock-Y"],
)
def test_cxl_ram_region(
    vm: Harness,
    figures: Callable[[str, Any], None],
    kernel: str,
    cmdline: str,
    kmem: str | None,
    where: str,
) -> None:
    need_volatile_cxl(vm)
    setup = [s.kmem_set(kmem)] if kmem else []
    result = vm.boot(
        cxl_online("ram", *setup), kernel=kernel, source=Source.CXL_RAM, append=[cmdline]
    )
    p = cxl_placement(result)
    figures("figures", p.as_dict())
    # dax_cxl devices default to memmap_on_memory=1 (the region default of the decision table)
    assert result.step("dev_attr")["value"] == "1", result.describe()
    check = asserts.on_memory if where == "memory" else asserts.in_dram
    check(p, result, attr=kernel == "patched")
    asserts.clean_log(result)


def test_cxl_pmem_region_kmem_on(vm: Harness) -> None:
    """Persistent CXL memory (works on QEMU 7.2): region -> devdax namespace -> kmem on."""
    result = vm.boot(
        cxl_online("pmem", s.kmem_set("on")), source=Source.CXL_PMEM, append=[GLOBAL_N]
    )
    asserts.on_memory(cxl_placement(result), result)
    asserts.clean_log(result)
