"""Stock (unpatched) 6.12: the baseline the patched kernel is compared with (scenario 8).

These run on the stock image only, so the harness and its accounting assertions are proven
on a kernel whose behaviour is known: with `memory_hotplug.memmap_on_memory=1` and a device's
`memmap_on_memory` set to 1 before kmem binds, 6.12 already puts the memmap on the memory.
"""

from __future__ import annotations

import pytest

from vmtest import asserts, placement
from vmtest import steps as s
from vmtest.harness import Harness
from vmtest.machine import Source

pytestmark = pytest.mark.vm


def test_s8_stock_shim_exits_3_and_memmap_in_dram(vm: Harness) -> None:
    """Scenario 8: the shim exits 3 naming the missing attribute; stock figures for pmem."""
    result = vm.boot(
        [
            s.shim("set", "set", "--driver", "dax_kmem", "on"),
            s.read(s.KMEM_ATTR, "kmem_attr"),
            s.pmem_devdax(),
            s.snapshot("before"),
            s.online(method="daxctl"),
            s.snapshot("after"),
        ],
        kernel="stock",
        source=Source.PMEM,
    )
    asserts.booted_ok(result)
    shim = result.step("set")
    stderr_lines = shim["stderr"].strip().splitlines()
    assert shim["rc"] == 3, f"pyshim set on stock: exit {shim['rc']}, stderr {shim['stderr']!r}"
    assert len(stderr_lines) == 1, f"want a one-line error, got {stderr_lines}"
    assert "memmap_on_memory" in stderr_lines[0], stderr_lines[0]
    assert result.step("kmem_attr")["value"] is None
    after = result.step("after")
    assert all(b["memmap_on_memory"] is None for b in after["blocks"]), (
        "stock has no per-block attr"
    )
    p = placement.measure(result.step("before"), after)
    asserts.in_dram(p, result, attr=False)
    asserts.clean_log(result)


def test_stock_global_y_device_attr_puts_memmap_on_memory(vm: Harness) -> None:
    """6.12 behaviour (scenario 4, second row, on stock): global Y + daxX.Y attr 1 -> on memory.

    hmem is hot-added at boot with the memmap in DRAM; offline + remove gives that back, then
    the attribute is set and the device onlined again with the memmap on the memory.
    """
    result = vm.boot(
        [
            s.find_dax(),
            s.online("online_boot", method="daxctl"),
            s.snapshot("dram"),
            s.offline(method="daxctl"),
            s.snapshot("removed"),
            s.dev_attr("1"),
            s.online("online_attr", method="daxctl"),
            s.snapshot("onmem"),
        ],
        kernel="stock",
        source=Source.HMEM,
        append=["memory_hotplug.memmap_on_memory=1"],
    )
    asserts.booted_ok(result)
    dram = placement.measure_boot_bound(result.step("dram"), result.step("removed"))
    asserts.in_dram(dram, result, attr=False)
    onmem = placement.measure(result.step("removed"), result.step("onmem"))
    asserts.on_memory(onmem, result, attr=False)
    asserts.clean_log(result)
