"""The VM harness without a VM: settings, QEMU and kernel command lines, placement checks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from vmtest import placement
from vmtest.runner import Source, VMSpec, VMUnavailable, kernel_cmdline, qemu_argv
from vmtest.settings import Mode, Settings

KERNEL = Path("/k/bzImage")


@pytest.mark.parametrize(
    ("value", "mode"), [("", Mode.AUTO), ("1", Mode.REQUIRED), ("0", Mode.OFF)]
)
def test_three_way_switch(value: str, mode: Mode) -> None:
    env = {"HOME": "/h"} | ({"MEMMAP_KMEM_VM": value} if value else {})
    assert Settings.from_env(env).mode is mode


def test_switch_rejects_other_values() -> None:
    with pytest.raises(ValueError, match="MEMMAP_KMEM_VM"):
        Settings.from_env({"MEMMAP_KMEM_VM": "yes"})


def test_kernel_paths_options_then_env_then_cache() -> None:
    env = {"HOME": "/h", "MEMMAP_KMEM_STOCK_KERNEL": "/env/stock"}
    settings = Settings.from_env(env, kernel="/opt/patched")
    assert settings.kernel == Path("/opt/patched")
    assert settings.stock_kernel == Path("/env/stock")
    assert Settings.from_env({"HOME": "/h"}).kernel == Path(
        "/h/.cache/memmap-kmem/images/patched/bzImage"
    )
    assert Settings.from_env({"MEMMAP_KMEM_CACHE": "/c"}).stock_kernel == Path(
        "/c/images/stock/bzImage"
    )


def test_hmem_and_pmem_ranges_sit_on_node_1_at_4g() -> None:
    hmem = VMSpec(kernel=KERNEL, source=Source.HMEM, append=("kmem.memmap_on_memory=on",))
    line = kernel_cmdline(hmem, ["/init.sh"])
    assert "memmap=1024M%0x100000000-1+0xefffffff" in line
    assert line.endswith("kmem.memmap_on_memory=on -- /init.sh")
    pmem = VMSpec(kernel=KERNEL, source=Source.PMEM, hotplug_mib=2048)
    assert "memmap=2048M!0x100000000" in kernel_cmdline(pmem, ["/init.sh"])
    argv = qemu_argv(hmem, Path("/w"), Path("/w/serial.log"))
    assert argv[argv.index("-m") + 1] == "4096M"
    assert "node,nodeid=1,memdev=m1" in argv
    assert any("readonly=on" in a and "path=/," in a for a in argv)


def test_hmem_in_two_parts_leaves_a_reserved_gap() -> None:
    """Two soft-reserved ranges that e820 cannot merge: 384 MiB, 128 MiB reserved, 512 MiB."""
    line = kernel_cmdline(VMSpec(kernel=KERNEL, source=Source.HMEM, hotplug_parts=2), ["/init.sh"])
    assert "memmap=384M%0x100000000-1+0xefffffff" in line
    assert "memmap=128M$0x118000000" in line
    assert "memmap=512M%0x120000000-1+0xefffffff" in line


def test_kasan_images_route_pci_irqs_without_aml(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    (tmp_path / "config").write_text("CONFIG_KASAN=y\n")
    pmem = VMSpec(kernel=kernel, source=Source.PMEM)
    assert "pci=noacpi" in kernel_cmdline(pmem, ["/init.sh"]).split()
    # CXL host bridges are ACPI devices: never there.
    cxl = VMSpec(kernel=kernel, source=Source.CXL_RAM)
    assert "pci=noacpi" not in kernel_cmdline(cxl, ["/init.sh"]).split()
    (tmp_path / "config").write_text("# CONFIG_KASAN is not set\n")
    assert "pci=noacpi" not in kernel_cmdline(pmem, ["/init.sh"]).split()


def test_small_guest_keeps_the_range_below_4g() -> None:
    spec = VMSpec(kernel=KERNEL, source=Source.PMEM, node0_mib=1024, hotplug_mib=1024)
    assert spec.hotplug_base == 1 << 30
    with pytest.raises(ValueError):
        _ = VMSpec(kernel=KERNEL, source=Source.PMEM, node0_mib=2048, hotplug_mib=2048).hotplug_base


def test_cxl_uses_q35_with_a_window_and_the_shares_on_pcie0() -> None:
    spec = VMSpec(kernel=KERNEL, source=Source.CXL_RAM)
    argv = qemu_argv(spec, Path("/w"), Path("/w/serial.log"))
    assert "q35,cxl=on" in argv
    assert any("volatile-memdev=cxl-vmem0" in a for a in argv)
    assert any(a.startswith("cxl-fmw.0.targets.0=cxl.1") for a in argv)
    assert all("bus=pcie.0" in a for a in argv if a.startswith("virtio-9p-pci"))


def test_whitespace_in_a_path_is_refused() -> None:
    with pytest.raises(VMUnavailable, match="whitespace"):
        kernel_cmdline(VMSpec(kernel=KERNEL), ["/a b/init.sh"])


def snap(memtotal: int, memfree0: int, pm: int, attrs: Sequence[int | None]) -> dict[str, Any]:
    return {
        "block_size": 128 << 20,
        "nodes": {"0": {"MemFree": memfree0}, "1": {"MemTotal": memtotal}},
        "zoneinfo": [
            {"node": 0, "zone": "DMA32", "present": 10, "managed": 10},
            {"node": 1, "zone": "Movable", "present": 4096, "managed": 4096 - pm},
        ],
        "blocks": [
            {"id": 32 + i, "node": 1, "state": "online", "memmap_on_memory": a}
            for i, a in enumerate(attrs)
        ],
    }


def test_placement_on_memory_and_in_dram() -> None:
    before = snap(0, 3_000_000, 0, [])
    on = placement.measure(before, snap(8 * (131072 - 2048), 3_000_000 - 100, 4096, [1] * 8))
    assert placement.check_on_memory(on) == []
    assert placement.check_in_dram(on)
    assert on.capacity_lost_kb == 16384
    dram = placement.measure(before, snap(8 * 131072, 3_000_000 - 16500, 0, [0] * 8))
    assert placement.check_in_dram(dram) == []
    assert placement.check_on_memory(dram)
    mixed_attrs: list[int | None] = [1, 1, 1, 1, 1, 1, 1, 0]
    mixed = placement.measure(before, snap(8 * (131072 - 2048), 2_999_900, 4096, mixed_attrs))
    assert any("memmap_on_memory" in p for p in placement.check_on_memory(mixed))


def test_bad_log_lines() -> None:
    log = (
        "[ 1.0] ok\n[ 2.0] WARNING: CPU: 0 PID: 1 at mm/memory_hotplug.c\n"
        "[ 3.0] Altmap not fully unmapped"
    )
    assert len(placement.bad_log_lines(log)) == 2


def test_kasan_kernel_is_judged_without_node0() -> None:
    """KASAN takes shadow for hot-added memory from node 0: only then is node 0 left out."""
    from vmtest.placement import Placement, check_on_memory, kasan_shadow_on_node0

    p = Placement(
        node=1,
        block_bytes=128 << 20,
        blocks=[32, 33],
        online_blocks=2,
        block_attrs=[1, 1],
        memtotal_kb=2 * (131072 - 2048),
        memtotal_before_kb=0,
        present_minus_managed=1024,
        node0_memfree_drop_kb=40000,
        node0_free_drop_kb=40000,
    )
    assert kasan_shadow_on_node0("[0.0] kasan: KernelAddressSanitizer initialized\n")
    assert not kasan_shadow_on_node0("[0.0] Linux version 6.12.117\n")
    assert any("node 0" in problem for problem in check_on_memory(p))
    assert check_on_memory(p, node0=False) == []
