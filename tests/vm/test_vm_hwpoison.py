"""Memory errors in the memmap on CXL memory vs in a data page (issue 16, item 4).

The patched kernel built with memory-failure handling and the hwpoison injector (flavour
`hwpoison`: kbuild/hwpoison.config), kmem `on`, hmem on node 1 onlined: the injector
(debugfs hwpoison/corrupt-pfn, memory_failure() as a machine check would call it) poisons

- a data page: an anonymous page of the guest program on node 1, which then reads it again;
- a memmap page: the first pfn of the first hot-plugged block, which holds the struct pages
  of that block's first 64 pfns (the page-table witness shows the block's memmap there).

What this pins (observed on 6.12 with the series, bench/results/hwpoison.json):

- data page: memory_failure() recovers it like any user page ("recovery action for dirty
  LRU page: Recovered"): the page is marked poisoned and unmapped, the program's next read
  gets SIGBUS with BUS_MCEERR_AR ("MCE: Killing ..."), the kernel stays up.
- memmap page: "unhandlable page", "recovery action for get hwpoison page: Ignored"; the
  injector's write fails with EBUSY, the pfn is marked poisoned (kpageflags HWPOISON), no
  process is killed, nothing is recovered: the kernel keeps the page and keeps reading the
  struct pages in it (a software injection leaves the memory intact; a real uncorrectable
  error would be consumed by the kernel's next read of those struct pages). The node keeps
  allocating; the block goes offline, and afterwards refuses to come online again
  (memory_block_online() refuses a block whose nr_hwpoison is not 0); hot-remove of the
  whole device (every block offline, kmem unbound) still succeeds.

Opt-in (MEMMAP_KMEM_VM_HWPOISON=1, `make vm-test-hwpoison`): needs the hwpoison image
(`python -m kbuild build --flavour hwpoison`, or MEMMAP_KMEM_HWPOISON_KERNEL).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from vmtest import asserts, costs, image, placement
from vmtest.harness import Harness, unavailable
from vmtest.machine import Source

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        os.environ.get("MEMMAP_KMEM_VM_HWPOISON") != "1",
        reason="MEMMAP_KMEM_VM_HWPOISON is not 1 (the hwpoison kernel; make vm-test-hwpoison)",
    ),
]


def hwpoison_kernel() -> Path:
    return Path(
        os.environ.get("MEMMAP_KMEM_HWPOISON_KERNEL") or image.default_image("hwpoison", os.environ)
    )


def test_poison_memmap_vs_data(vm: Harness) -> None:
    kernel = hwpoison_kernel()
    if not kernel.is_file():
        unavailable(vm.settings, f"hwpoison kernel {kernel} not found")
    built = costs.build()
    hotplug_mib = 512
    first, last = costs.hotplug_blocks(hotplug_mib)
    vm.settings = dataclasses.replace(vm.settings, kernel=kernel)
    result = vm.boot(
        costs.hwpoison_job(built / "costs-guest", first, last),
        source=Source.HMEM,
        hotplug_mib=hotplug_mib,
        timeout=600,
        name="hwpoison",
    )
    asserts.booted_ok(result)
    p = placement.measure(result.step("removed"), result.step("after"))
    assert not placement.witness_on_memory(p)
    assert "corrupt-pfn" in result.step("debugfs")["stdout"]
    log = result.step("dmesg")["text"]
    lines = costs.memory_failure_lines(log)

    data = json.loads(result.step("poison_data")["stdout"])
    assert data["on_node"] == 1, data
    assert data["inject_errno"] == 0 and data["hwpoison"] == 1, data
    assert data["sigbus"] == 1 and data["bus_mceerr_ar"] == 1, data
    data_lines = [line for line in lines if f"{data['pfn']:#x}" in line]
    assert any("Recovered" in line for line in data_lines), lines
    assert any("Killing costs-guest" in line for line in lines), lines

    memmap = json.loads(result.step("poison_memmap")["stdout"])
    assert memmap["pfn"] == first * (costs.BLOCK_BYTES // costs.PAGE)
    # EBUSY: memory_failure() did not handle the page; it is marked poisoned all the same
    assert memmap["inject_errno"] == 16 and memmap["hwpoison"] == 1, memmap
    mm_lines = [line for line in lines if f"{memmap['pfn']:#x}" in line]
    assert any("unhandlable page" in line for line in mm_lines), lines
    assert any("Ignored" in line for line in mm_lines), lines
    assert not any("Recovered" in line for line in mm_lines), mm_lines
    assert result.step("read_memmap")["rc"] == 0
    churn = result.step("churn_after")
    assert churn["rc"] == 0 and "2048 of 2048 pages on node 1" in churn["stderr"], churn
    assert "rc=0" in result.step("offline_last")["stdout"]
    assert "rc=0" in result.step("offline_first")["stdout"]
    assert "rc=1" in result.step("online_first")["stdout"]
    # hot-remove still works: every block offline, kmem unbound, the node has no memory left
    removed = result.step("remove")["stdout"]
    assert "rc=0" in removed and "node1-memory-gone" in removed, removed
    assert not any(k in log for k in ("Kernel panic", "Oops", "BUG:")), lines
