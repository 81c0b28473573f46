"""The VM harness without a VM: settings, QEMU and kernel command lines, placement checks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from vmtest import placement
from vmtest.machine import Source, VMSpec, VMUnavailable, kernel_cmdline, qemu_argv
from vmtest.runner import VMResult, run, sparse_file
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
        "/h/.cache/memmap-kmem/images/6.12/patched/bzImage"
    )
    assert Settings.from_env({"MEMMAP_KMEM_CACHE": "/c"}).stock_kernel == Path(
        "/c/images/6.12/stock/bzImage"
    )
    assert Settings.from_env({"HOME": "/h", "MEMMAP_KMEM_BASE": "7.3"}).kernel == Path(
        "/h/.cache/memmap-kmem/images/7.3/patched/bzImage"
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


def test_second_dram_node_puts_the_hotplug_range_on_node_2_nearest_node_1() -> None:
    spec = VMSpec(kernel=KERNEL, source=Source.PMEM, dram_node_mib=1024)
    assert (spec.hotplug_node, spec.hotplug_base) == (2, 5 << 30)
    assert "memmap=1024M!0x140000000" in kernel_cmdline(spec, ["/init.sh"])
    argv = qemu_argv(spec, Path("/w"), Path("/w/serial.log"))
    assert argv[argv.index("-m") + 1] == "5120M"
    numa = [argv[i + 1] for i, a in enumerate(argv) if a == "-numa"]
    assert numa[1:3] == ["node,nodeid=1,memdev=mdram1", "node,nodeid=2,memdev=m2"]
    dist = {tuple(int(kv.split("=")[1]) for kv in d[5:].split(",")) for d in numa[3:]}
    assert dist == {(0, 1, 21), (0, 2, 31), (1, 2, 14)}
    nearest_to_2 = min((d, a if b == 2 else b) for a, b, d in dist if 2 in (a, b))
    assert nearest_to_2 == (14, 1)
    plain = qemu_argv(VMSpec(kernel=KERNEL, source=Source.PMEM), Path("/w"), Path("/w/s"))
    assert "node,nodeid=1,memdev=m1" in plain and not any(a.startswith("dist") for a in plain)
    with pytest.raises(ValueError, match="DRAM node"):
        qemu_argv(
            VMSpec(kernel=KERNEL, source=Source.CXL_RAM, dram_node_mib=1024),
            Path("/w"),
            Path("/w/s"),
        )


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


def test_scale_nvdimm_sits_in_device_memory_beside_unreserved_boot_ram() -> None:
    """63 GiB of boot RAM without reservation, a 256 GiB file-backed nvdimm on node 1 in the
    device memory that maxmem leaves above boot RAM; no memmap= range on the command line."""
    spec = VMSpec(
        kernel=KERNEL,
        source=Source.NVDIMM,
        node0_mib=63 * 1024,
        hotplug_mib=256 * 1024,
        reserve_boot_ram=False,
    )
    argv = qemu_argv(spec, Path("/w"), Path("/w/s"), Path("/t/nv.img"))
    assert argv[argv.index("-machine") + 1] == "pc,nvdimm=on"
    assert argv[argv.index("-m") + 1] == "64512M,slots=1,maxmem=326656M"
    assert "memory-backend-ram,id=m0,size=64512M,reserve=off" in argv
    assert "memory-backend-file,id=nv1,share=on,mem-path=/t/nv.img,size=262144M" in argv
    assert "nvdimm,memdev=nv1,id=nvdimm1,node=1" in argv
    assert "node,nodeid=1" in argv
    assert "memmap=" not in argv[argv.index("-append") + 1]
    with pytest.raises(ValueError):
        _ = spec.hotplug_base


def test_every_step_builder_has_a_guest_op_and_back() -> None:
    """The op names that vmtest/steps.py writes (host) and guestops.OPS (guest) are one set."""
    import re
    import sys

    from vmtest import steps
    from vmtest.machine import guest_dir

    sys.path.insert(0, str(guest_dir()))  # the guest's own import path (agent.py runs there)
    try:
        import guestops
    finally:
        sys.path.remove(str(guest_dir()))
    written = set(re.findall(r'"op": "(\w+)"', Path(steps.__file__).read_text()))
    assert written == set(guestops.OPS)


def test_tcg_runs_the_vcpus_in_one_thread() -> None:
    argv = qemu_argv(VMSpec(kernel=KERNEL), Path("/w"), Path("/w/s"))
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    assert argv[argv.index("-smp") + 1] == "2"


def test_boot_ram_is_reserved_unless_asked() -> None:
    argv = qemu_argv(VMSpec(kernel=KERNEL, source=Source.PMEM), Path("/w"), Path("/w/s"))
    assert "memory-backend-ram,id=m0,size=3072M" in argv


def test_sparse_backing_file_is_deleted_with_its_directory(tmp_path: Path) -> None:
    with sparse_file(1 << 40, tmp_path) as backing:
        assert backing.stat().st_size == 1 << 40
        assert backing.stat().st_blocks == 0
        assert backing.parent.parent == tmp_path
    assert list(tmp_path.iterdir()) == []


def test_a_boot_without_result_reports_qemu_and_the_serial_tail(tmp_path: Path) -> None:
    (tmp_path / "qemu.out").write_text("qemu-system-x86_64: cannot set up guest memory\n")
    serial = tmp_path / "serial.log"
    serial.write_text("".join(f"line {n}\n" for n in range(40)))
    vm = VMResult(VMSpec(kernel=KERNEL), tmp_path, serial, 2.3, 1, False, None, [])
    assert vm.exit_status is None
    assert "no result.json came back (QEMU exit code 1)" in vm.describe()
    tails = vm.tails(lines=3).splitlines()
    assert tails == [
        "QEMU output: qemu-system-x86_64: cannot set up guest memory",
        "last 3 serial lines:",
        "line 37",
        "line 38",
        "line 39",
    ]
    serial.write_text("")
    assert "serial log empty" in vm.tails()


FAKE_QEMU = """#!/bin/sh
# Fails to start (exit 1, nothing on serial) while $FAIL_FILE exists, removing it; then
# plays a guest that writes its serial log and result.json into the vmtest share.
if [ -e "$FAIL_FILE" ]; then rm "$FAIL_FILE"; echo "cannot set up guest memory"; exit 1; fi
for arg; do
    case "$arg" in
    file,id=serial0,path=*) echo "[    0.000000] Linux version" > "${arg#*path=}" ;;
    local,id=vmtest,path=*) share=${arg#*path=}; share=${share%%,*} ;;
    esac
done
echo '{"exit_status": 0, "steps": []}' > "$share/result.json"
"""


@pytest.mark.parametrize(("fails", "retried"), [(False, False), (True, True)])
def test_qemu_that_fails_to_start_is_run_once_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: bool, retried: bool
) -> None:
    qemu = tmp_path / "qemu"
    qemu.write_text(FAKE_QEMU)
    qemu.chmod(0o755)
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"")
    fail_file = tmp_path / "fail-once"
    if fails:
        fail_file.touch()
    monkeypatch.setenv("FAIL_FILE", str(fail_file))
    vm = run(VMSpec(kernel=kernel, qemu=str(qemu)), [], tmp_path / "work")
    assert vm.exit_status == 0
    assert vm.retried is retried
    first = tmp_path / "work" / "qemu-first.out"
    assert first.is_file() is retried
    if retried:
        assert "cannot set up guest memory" in first.read_text()
        assert "QEMU failed to start once" in vm.describe()


def test_a_guest_that_dies_silently_is_not_run_again(tmp_path: Path) -> None:
    """QEMU exits 0 with an empty serial log: the guest's fault, reported, not retried."""
    qemu = tmp_path / "qemu"
    qemu.write_text("#!/bin/sh\nexit 0\n")
    qemu.chmod(0o755)
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"")
    vm = run(VMSpec(kernel=kernel, qemu=str(qemu)), [], tmp_path / "work")
    assert vm.exit_status is None
    assert not vm.retried


def test_whitespace_in_a_path_is_refused() -> None:
    with pytest.raises(VMUnavailable, match="whitespace"):
        kernel_cmdline(VMSpec(kernel=KERNEL), ["/a b/init.sh"])


BLOCK = 128 << 20
MEMMAP = BLOCK // 64


def on_block(block: int) -> dict[str, Any]:
    start = block * BLOCK
    return {"placement": "memory", "nodes": [], "extents": [[start, start + MEMMAP]]}


def in_node(node: int, at: int) -> dict[str, Any]:
    return {"placement": "dram", "nodes": [node], "extents": [[at, at + MEMMAP]]}


def snap(
    memtotal: int,
    memfree0: int,
    pm: int,
    attrs: Sequence[int | None],
    witness: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Node 0 (boot memory, blocks 0-1), node 1: len(attrs) hot-plugged blocks from 32."""
    ids = [32 + i for i in range(len(attrs))]
    return {
        "block_size": BLOCK,
        "nodes": {"0": {"MemFree": memfree0}, "1": {"MemTotal": memtotal}},
        "zoneinfo": [
            {"node": 0, "zone": "DMA32", "present": 10, "managed": 10},
            {"node": 1, "zone": "Movable", "present": 4096, "managed": 4096 - pm},
        ],
        "blocks": [{"id": i, "node": 0, "state": "online", "memmap_on_memory": 0} for i in (0, 1)]
        + [
            {"id": i, "node": 1, "state": "online", "memmap_on_memory": a}
            for i, a in zip(ids, attrs, strict=True)
        ],
        "hotplugged": ids,
        "witness": {
            "blocks": {str(i): dict(w, detail="") for i, w in zip(ids, witness, strict=False)}
        },
    }


def test_placement_on_memory_and_in_dram() -> None:
    before = snap(0, 3_000_000, 0, [])
    on_w = [on_block(32 + i) for i in range(8)]
    on = placement.measure(before, snap(8 * (131072 - 2048), 3_000_000 - 100, 4096, [1] * 8, on_w))
    assert placement.check_on_memory(on) == []
    assert placement.check_in_dram(on)
    assert on.capacity_lost_kb == 16384
    dram_w = [in_node(0, i * MEMMAP) for i in range(8)]
    dram = placement.measure(before, snap(8 * 131072, 3_000_000 - 16500, 0, [0] * 8, dram_w))
    assert dram.dram_nodes == [0]
    assert placement.check_in_dram(dram) == []
    assert placement.check_on_memory(dram)
    mixed_attrs: list[int | None] = [1, 1, 1, 1, 1, 1, 1, 0]
    mixed = placement.measure(before, snap(8 * (131072 - 2048), 2_999_900, 4096, mixed_attrs, on_w))
    assert any("memmap_on_memory" in p for p in placement.check_on_memory(mixed))


def test_one_block_misplaced_by_the_page_tables_fails() -> None:
    """Attribute, MemTotal and zoneinfo all say "on memory" (the wrong kernel's case): one
    block whose struct pages the page tables put in DRAM is enough to fail, and the
    message names it."""
    before = snap(0, 3_000_000, 0, [])
    witness = [on_block(32 + i) for i in range(7)] + [in_node(0, 0x1000000)]
    p = placement.measure(before, snap(8 * (131072 - 2048), 3_000_000, 4096, [1] * 8, witness))
    assert placement.check_on_memory(p) == [
        "witness: memory39 memmap at 0x1000000-0x11fffff (dram: ), want "
        "0x138000000-0x1381fffff (its first pages)"
    ]
    shifted = [on_block(32 + i) for i in range(8)]
    shifted[3] = {"placement": "memory", "nodes": [], "extents": [[35 * BLOCK, 35 * BLOCK + 4096]]}
    p = placement.measure(before, snap(8 * (131072 - 2048), 3_000_000, 4096, [1] * 8, shifted))
    assert [x.split(" memmap")[0] for x in placement.check_on_memory(p)] == ["witness: memory35"]


def test_dram_on_the_wrong_node_or_no_witness_fails() -> None:
    before = snap(0, 3_000_000, 0, [])
    dram_w = [in_node(0, i * MEMMAP) for i in range(2)]
    after = snap(2 * 131072, 3_000_000, 0, [0] * 2, dram_w)
    assert placement.check_in_dram(placement.measure(before, after)) == []
    problems = placement.check_in_dram(placement.measure(before, after), nodes=[1])
    assert len(problems) == 2 and all("want DRAM on node 1" in x for x in problems)
    after["witness"] = {"error": "MissingPrerequisite: no /proc/kcore"}
    problems = placement.check_in_dram(placement.measure(before, after))
    assert problems == [
        "witness: the guest could not read the page tables: MissingPrerequisite: no /proc/kcore"
    ]
    del after["witness"]
    assert placement.check_on_memory(placement.measure(before, after)) != []


def test_dram_cost_is_summed_over_every_node_with_boot_memory() -> None:
    """Node 0 paid nothing, node 1 (boot memory too) paid the memmap: node-0 accounting sees
    0, the sum sees it. A KASAN-sized drop does not change the verdict: it is a figure."""

    def two_dram(free0: int, free1: int, memtotal2: int, n: int) -> dict[str, Any]:
        ids = [40 + i for i in range(n)]
        return {
            "block_size": BLOCK,
            "nodes": {
                "0": {"MemFree": free0},
                "1": {"MemFree": free1},
                "2": {"MemTotal": memtotal2},
            },
            "zoneinfo": [{"node": 2, "zone": "Movable", "present": 4096, "managed": 4096}],
            "blocks": [{"id": 0, "node": 0, "state": "online", "memmap_on_memory": 0}]
            + [{"id": 20, "node": 1, "state": "online", "memmap_on_memory": 0}]
            + [{"id": i, "node": 2, "state": "online", "memmap_on_memory": 0} for i in ids],
            "hotplugged": ids,
            "witness": {"blocks": {str(i): dict(in_node(1, 20 * BLOCK), detail="") for i in ids}},
        }

    before = two_dram(3_000_000, 1_000_000, 0, 0)
    p = placement.measure(
        before, two_dram(3_000_000 - 40_000, 1_000_000 - 16_384, 8 * 131072, 8), 2
    )
    assert p.dram_nodes == [0, 1]
    assert p.dram_free_drop_by_node_kb == {0: 40_000, 1: 16_384}
    assert p.dram_free_drop_kb == 56_384
    assert p.node0_free_drop_kb == 40_000
    assert p.witness_nodes() == [1]
    assert placement.check_in_dram(p, nodes=[1]) == []
    assert placement.check_in_dram(p, nodes=[0])


def test_bad_log_lines() -> None:
    log = (
        "[ 1.0] ok\n[ 2.0] WARNING: CPU: 0 PID: 1 at mm/memory_hotplug.c\n"
        "[ 3.0] Altmap not fully unmapped"
    )
    assert len(placement.bad_log_lines(log)) == 2
