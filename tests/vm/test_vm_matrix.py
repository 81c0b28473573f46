"""The patched kernel's setting matrix (issue 3, scenarios 1-6), one boot per case.

Every case asserts placement per block three ways (vmtest/placement.py): the page-table
witness (where each block's struct pages physically are), the per-block
`memoryN/memmap_on_memory` attribute and the node accounting (node MemTotal, /proc/zoneinfo
present - managed of the hot-plug node). What DRAM paid is recorded as a figure.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from vmtest import asserts, placement
from vmtest import steps as s
from vmtest.harness import Harness
from vmtest.machine import Source
from vmtest.runner import VMResult

pytestmark = pytest.mark.vm

GLOBAL_N = "memory_hotplug.memmap_on_memory=0"
GLOBAL_Y = "memory_hotplug.memmap_on_memory=1"
GLOBAL_FORCE = "memory_hotplug.memmap_on_memory=force"


def pmem_online(
    *setup: dict[str, Any], device_setup: tuple[dict[str, Any], ...] = (), method: str = "auto"
) -> list[dict[str, Any]]:
    """Settings (setup), legacy pmem -> devdax, device_setup (e.g. its attribute), then kmem
    online, measured around the online."""
    return [
        *setup,
        s.pmem_devdax(),
        *device_setup,
        s.snapshot("before"),
        s.online(method=method),
        s.snapshot("after"),
        s.read(s.KMEM_ATTR, "kmem_after"),
        s.kmemleak(),
    ]


def pmem_placement(result: VMResult) -> placement.Placement:
    asserts.booted_ok(result)
    return placement.measure(result.step("before"), result.step("after"))


def no_leak(result: VMResult) -> None:
    leak = result.step("kmemleak")
    assert not leak["report"], f"kmemleak: {leak['report'][:2000]}\n{result.describe()}"


def summary(p: placement.Placement) -> dict[str, Any]:
    return {
        "node_memtotal_kb": p.memtotal_kb,
        "present_minus_managed": p.present_minus_managed,
        "node0_free_drop_kb": p.node0_free_drop_kb,
        "node0_memfree_drop_kb": p.node0_memfree_drop_kb,
        "online_blocks": p.online_blocks,
    }


# --- 1: nothing set ---------------------------------------------------------------------------


def test_s1_nothing_set_memmap_in_dram_like_stock(
    vm: Harness, figures: Callable[[str, Any], None]
) -> None:
    """Global N, kmem `global`: memmap in node-0 DRAM, node figures equal stock 6.12."""
    steps = pmem_online(s.read(s.KMEM_ATTR, "kmem_boot"), method="daxctl")
    patched = vm.boot(steps, source=Source.PMEM, name="patched")
    stock = vm.boot(steps, kernel="stock", source=Source.PMEM, name="stock")
    p, base = pmem_placement(patched), pmem_placement(stock)
    figures("patched", summary(p))
    figures("stock", summary(base))
    assert patched.step("kmem_boot")["value"] == "global", patched.describe()
    asserts.in_dram(p, patched)
    asserts.in_dram(base, stock, attr=False)
    assert (p.memtotal_kb, p.present_minus_managed, p.online_blocks) == (
        base.memtotal_kb,
        base.present_minus_managed,
        base.online_blocks,
    ), f"patched {summary(p)} != stock {summary(base)}"
    assert abs(p.node0_free_drop_kb - base.node0_free_drop_kb) <= 2048, (
        f"node-0 cost differs from stock by more than 2 MiB: {summary(p)} vs {summary(base)}"
    )
    asserts.clean_log(patched)


def test_s1_nothing_set_hmem_at_boot_in_dram(vm: Harness) -> None:
    """Global N, kmem `global`, soft-reserved memory bound at boot: memmap in DRAM."""
    result = vm.boot(
        [
            s.find_dax(),
            s.snapshot("boot"),
            s.online("online_boot"),
            s.snapshot("online"),
            s.offline(),
            s.snapshot("removed"),
        ],
        source=Source.HMEM,
    )
    asserts.booted_ok(result)
    boot_blocks = placement.node_blocks(result.step("boot"), 1)
    assert [b["memmap_on_memory"] for b in boot_blocks] == [0] * len(boot_blocks)
    asserts.in_dram(
        placement.measure_boot_bound(result.step("online"), result.step("removed")), result
    )
    asserts.clean_log(result)


# --- 2: kmem on at run time -----------------------------------------------------------------


def test_s2_runtime_on_with_shim(vm: Harness, figures: Callable[[str, Any], None]) -> None:
    """Global N, `pyshim set --driver dax_kmem on`, then the device onlined: memmap on memory."""
    result = vm.boot(
        [
            *pmem_online(
                s.shim("set", "set", "--driver", "dax_kmem", "on"), s.read(s.KMEM_ATTR, "kmem_set")
            ),
            s.shim("check", "check", "--json", parse_json=True),
        ],
        source=Source.PMEM,
        append=[GLOBAL_N],
    )
    p = pmem_placement(result)
    figures("figures", summary(p))
    shim = result.step("set")
    assert shim["rc"] == 0, f"pyshim set: {shim['stderr']}"
    assert result.step("kmem_set")["value"] == "on"
    asserts.on_memory(p, result)
    check = result.step("check")
    assert check["rc"] == 0, f"pyshim check after onlining: {check['stdout']}{check['stderr']}"
    check_json_on_memory(check["json"], result.step("after"), p)
    no_leak(result)
    asserts.clean_log(result)


def check_json_on_memory(
    report: dict[str, Any], after: dict[str, Any], p: placement.Placement
) -> None:
    """`pyshim check --json` says, block by block, what the guest's sysfs and the node's
    accounting say: every block of the kmem device on its memory, node 1's figures exact.
    Expected values come from the guest's snapshot and the block size, not from pyshim."""
    (device,) = [d for d in after["dax"] if d["driver"] == "kmem"]
    n = len(device["blocks"])
    assert n > 0 and device["blocks"] == p.blocks, (device, p.blocks)
    memmap_bytes = p.block_bytes // placement.PAGE * placement.STRUCT_PAGE
    assert (report["version"], report["status"]) == (1, "ok"), report
    assert report["settings"]["kmem_memmap_on_memory"] == "on", report["settings"]
    (dev,) = report["devices"]
    assert (dev["chardev"], dev["mode"], dev["target_node"], dev["status"]) == (
        device["name"],
        "system-ram",
        1,
        "ok",
    ), dev
    assert (dev["expected_memmap_on_memory"], dev["total_memblocks"]) == (True, n), dev
    blocks = [
        (b["memory"], b["state"], b["memmap"], b["memmap_bytes"], b["status"])
        for b in dev["blocks"]
    ]
    assert blocks == [
        (number, "online", "memory", memmap_bytes, "ok") for number in device["blocks"]
    ], blocks
    (node1,) = [node for node in report["nodes"] if node["node"] == 1]
    assert (
        node1["status"],
        node1["online_memblocks"],
        node1["memmap_on_memory_memblocks"],
        node1["present_minus_managed_bytes"],
        node1["memtotal_bytes"],
    ) == ("ok", n, n, n * memmap_bytes, n * (p.block_bytes - memmap_bytes)), node1


# --- 3: kmem on from the command line, memory bound at boot --------------------------------


def test_s3_cmdline_on_hmem_at_boot(vm: Harness, figures: Callable[[str, Any], None]) -> None:
    """`kmem.memmap_on_memory=on`, global N, hmem bound at boot: memmap on memory from boot."""
    result = vm.boot(
        [
            s.read(s.KMEM_ATTR, "kmem_boot"),
            s.find_dax(),
            s.snapshot("boot"),
            s.online("online_boot"),
            s.snapshot("online"),
            s.offline(),
            s.snapshot("removed"),
            s.online("online_again"),
            s.snapshot("again"),
        ],
        source=Source.HMEM,
        append=[GLOBAL_N, "kmem.memmap_on_memory=on"],
    )
    asserts.booted_ok(result)
    assert result.step("kmem_boot")["value"] == "on"
    boot_blocks = placement.node_blocks(result.step("boot"), 1)
    assert boot_blocks and all(b["memmap_on_memory"] == 1 for b in boot_blocks), (
        f"blocks hot-added at boot: {boot_blocks}"
    )
    first = placement.measure_boot_bound(result.step("online"), result.step("removed"))
    asserts.on_memory(first, result)
    again = placement.measure(result.step("removed"), result.step("again"))
    asserts.on_memory(again, result)
    figures("figures", summary(again))
    asserts.clean_log(result)


# --- 4: with the global parameter ------------------------------------------------------------


def test_s4_global_y_kmem_off_in_dram(vm: Harness) -> None:
    result = vm.boot(pmem_online(s.kmem_set("off")), source=Source.PMEM, append=[GLOBAL_Y])
    asserts.in_dram(pmem_placement(result), result)
    asserts.clean_log(result)


def test_s4_global_y_kmem_global_device_attr_on_memory(vm: Harness) -> None:
    """6.12 behaviour kept: global Y, kmem `global`, daxX.Y/memmap_on_memory=1 -> on memory."""
    result = vm.boot(
        pmem_online(device_setup=(s.dev_attr("1"),)), source=Source.PMEM, append=[GLOBAL_Y]
    )
    asserts.on_memory(pmem_placement(result), result)
    assert result.step("kmem_after")["value"] == "global"
    asserts.clean_log(result)


def test_s4_global_force_kmem_on_reports_padding(
    vm: Harness, figures: Callable[[str, Any], None]
) -> None:
    """Global `force`, kmem `on`: on memory. The padding (vmemmap pages beyond the memmap,
    rounded up to a pageblock) is recorded; with 128 MiB blocks the memmap is exactly one
    pageblock, so it is 0."""
    result = vm.boot(pmem_online(s.kmem_set("on")), source=Source.PMEM, append=[GLOBAL_FORCE])
    p = pmem_placement(result)
    padding = p.present_minus_managed - p.online_blocks * p.memmap_pages_per_block
    figures("padding_pages", padding)
    figures("figures", summary(p))
    print(f"force: padding {padding} pages over {p.online_blocks} blocks")
    assert padding == 0, f"padding {padding} pages with 128 MiB blocks"
    asserts.on_memory(p, result)
    asserts.clean_log(result)


# --- 5: the device attribute counts only under `global` (contract v2) ------------------------


@pytest.mark.parametrize(
    ("cmdline", "kmem", "attr", "where"),
    [
        (GLOBAL_N, "on", "0", "memory"),
        (GLOBAL_Y, "on", "0", "memory"),
        (GLOBAL_Y, "off", "1", "dram"),
        (GLOBAL_Y, "global", "0", "dram"),
    ],
    ids=["N-on-attr0", "Y-on-attr0", "Y-off-attr1", "Y-global-attr0"],
)
def test_s5_device_attr_only_under_global(
    vm: Harness, cmdline: str, kmem: str, attr: str, where: str
) -> None:
    """`on` and `off` decide alone; under `global` the device attribute AND the parameter."""
    result = vm.boot(
        pmem_online(s.kmem_set(kmem), device_setup=(s.dev_attr(attr),)),
        source=Source.PMEM,
        append=[cmdline],
    )
    p = pmem_placement(result)
    assert result.step("dev_attr")["value"] == attr, result.describe()
    (asserts.on_memory if where == "memory" else asserts.in_dram)(p, result)
    asserts.clean_log(result)


def test_s5_no_hidden_device_state(vm: Harness) -> None:
    """The v1 sequence that broke `global`: kmem `on`, write 1 to daxX.Y/memmap_on_memory,
    kmem back to `global`, bind. The device attribute is 6.12's: without the global parameter
    the write fails with EOPNOTSUPP and leaves 0, and the memmap goes to DRAM."""
    result = vm.boot(
        pmem_online(
            s.kmem_set("on"),
            device_setup=(
                s.dev_attr("1", may_fail=True),
                s.kmem_set("global", label="kmem_back"),
            ),
        ),
        source=Source.PMEM,
        append=[GLOBAL_N],
    )
    p = pmem_placement(result)
    write = result.step("dev_attr")
    assert (write["errno"], write["value"]) == (errno.EOPNOTSUPP, "0"), result.describe()
    assert result.step("kmem_after")["value"] == "global", result.describe()
    asserts.in_dram(p, result)
    asserts.clean_log(result)


# --- 6: hot-remove cycles in one boot: 5 in make test, 20 in make vm-test-long -------------


def expected_blocks(device: dict[str, Any], block_size: int) -> list[int]:
    """The memory blocks that kmem adds for a dax device: those wholly inside its range,
    from its start and size alone (a snapshot before the add has none of them yet)."""
    first = -(-int(device["start"]) // block_size)
    return list(range(first, (int(device["start"]) + int(device["size"])) // block_size))


@pytest.mark.parametrize("count", [5, pytest.param(20, marks=pytest.mark.long)])
def test_s6_hot_remove_cycles(vm: Harness, figures: Callable[[str, Any], None], count: int) -> None:
    """Global N, kmem `on`: count x online -> offline -> remove. Each cycle: every block of
    the device online with attribute 1 and its memmap on its first pages (witness), node 1's
    MemTotal = blocks x (block - memmap) with the blocks taken from the device's range;
    after removal MemTotal is back at the baseline. Node 0 may lose less than 4 MiB over
    all cycles (a leak of a memmap's size per cycle would show in 5)."""
    result = vm.boot(
        [
            s.kmem_set("on"),
            s.pmem_devdax(),
            s.snapshot("baseline"),
            s.cycles(count),
            s.snapshot("end"),
            s.kmemleak(),
        ],
        source=Source.PMEM,
        append=[GLOBAL_N],
        timeout=100 + 15 * count,
    )
    asserts.booted_ok(result)
    baseline = result.step("baseline")
    rounds = result.step("cycles")["rounds"]
    assert len(rounds) == count
    block_size = int(baseline["block_size"])
    (device,) = baseline["dax"]
    want_blocks = expected_blocks(device, block_size)
    assert want_blocks, f"no whole block in {device}"
    block_kb = block_size // 1024
    want_online_total = len(want_blocks) * (block_kb - block_kb // 64)
    base_total = placement.node_memtotal(baseline, 1)
    for i, r in enumerate(rounds):
        online = r["online"]
        p = placement.measure(r["offline"], online)
        assert (p.blocks, p.online_blocks) == (want_blocks, len(want_blocks)), (
            f"cycle {i}: node 1 blocks {p.blocks}, {p.online_blocks} online; want {want_blocks}"
        )
        # attribute, witness, MemTotal and present - managed, all per block and exact
        asserts.on_memory(p, result)
        assert p.memtotal_kb == want_online_total, (
            f"cycle {i}: node 1 MemTotal {p.memtotal_kb} kB, want {want_online_total} kB"
        )
        # A node left without memory may go offline and vanish from sysfs: MemTotal 0.
        removed_total = placement.node_memtotal(r["offline"], 1)
        assert removed_total == base_total, (
            f"cycle {i}: node 1 MemTotal {removed_total} kB after remove, baseline {base_total}"
        )
        assert r["driver_after"] == "device_dax", f"cycle {i}: device left on {r['driver_after']}"
    drift = placement.node_free_with_pcp(baseline, 0) - placement.node_free_with_pcp(
        result.step("end"), 0
    )
    figures("blocks_per_cycle", len(want_blocks))
    figures("node0_free_drift_kb", drift)
    figures(
        "cycle_seconds",
        [round(r["online_seconds"] + r["offline_seconds"], 3) for r in rounds],
    )
    # KASAN parks freed objects in its quarantine (up to 1/32 of memory) and allocates shadow
    # for each hot-add: node 0's free memory says nothing there, kmemleak says it instead.
    if not placement.kasan_shadow_on_node0(asserts.kernel_log(result)):
        assert drift < 4096, f"node 0 lost {drift} kB over {count} cycles"
    no_leak(result)
    asserts.clean_log(result)
