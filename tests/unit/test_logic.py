"""The decision table, memmap arithmetic and plan (pure functions), and the cap on the
blocks of one device."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyshim import kernel, logic, render, snapshot
from pyshim.errors import OperationFailed
from pyshim.parse import GlobalMode, KmemSetting

MIB = 1 << 20


def test_memmap_of_128m_block() -> None:
    assert logic.memmap_bytes(128 * MIB) == 2 * MIB
    assert logic.memmap_pages(128 * MIB) == 512
    assert logic.memmap_support(128 * MIB) is None


def test_memmap_of_1g_block() -> None:
    assert logic.memmap_bytes(1 << 30) == 16 * MIB
    assert logic.memmap_support(1 << 30) is None


def test_small_block_unsupported_and_force_pads() -> None:
    assert logic.memmap_pages(64 * MIB) == 256
    assert logic.memmap_pages(64 * MIB, force=True) == 512
    assert "pageblock" in (logic.memmap_support(64 * MIB) or "")
    # force pads to a pageblock but x86_64 still wants whole PMDs of memmap
    assert "PMD" in (logic.memmap_support(64 * MIB, force=True) or "")


@given(st.integers(min_value=27, max_value=40))
def test_x86_block_sizes_support_memmap_on_memory(shift: int) -> None:
    block = 1 << shift
    assert logic.memmap_support(block) is None
    assert logic.memmap_pages(block) * 4096 == block // 64


NOT_ALIGNED = "the memmap of one memory block is not pageblock aligned"


@pytest.mark.parametrize(
    ("attr", "kmem", "global_mode", "expected"),
    [
        # kmem global: exactly 6.12, device attribute AND global parameter
        (True, KmemSetting.GLOBAL, GlobalMode.OFF, False),
        (True, KmemSetting.GLOBAL, GlobalMode.ON, True),
        (True, KmemSetting.GLOBAL, GlobalMode.FORCE, True),
        (False, KmemSetting.GLOBAL, GlobalMode.ON, False),
        (False, KmemSetting.GLOBAL, GlobalMode.FORCE, False),
        (True, KmemSetting.GLOBAL, None, False),
        # kmem on: on memory whatever the device attribute and the global parameter say
        (False, KmemSetting.ON, GlobalMode.OFF, True),
        (True, KmemSetting.ON, GlobalMode.OFF, True),
        (False, KmemSetting.ON, None, True),
        # kmem off: never, whatever the device attribute and the global parameter say
        (True, KmemSetting.OFF, GlobalMode.ON, False),
        (True, KmemSetting.OFF, GlobalMode.FORCE, False),
        (False, KmemSetting.OFF, GlobalMode.OFF, False),
    ],
)
def test_decision_table(
    attr: bool, kmem: KmemSetting, global_mode: GlobalMode | None, expected: bool
) -> None:
    assert logic.decide(attr, kmem, global_mode, None).memmap_on_memory is expected


@given(st.booleans(), st.sampled_from(list(KmemSetting)), st.sampled_from([None, *GlobalMode]))
def test_unsupported_never_on_memory(
    attr: bool, kmem: KmemSetting, global_mode: GlobalMode | None
) -> None:
    decision = logic.decide(attr, kmem, global_mode, NOT_ALIGNED)
    assert not decision.memmap_on_memory
    if kmem is not KmemSetting.OFF:
        assert NOT_ALIGNED in decision.reason


@given(st.sampled_from([None, *GlobalMode]))
def test_device_attribute_counts_only_under_global(global_mode: GlobalMode | None) -> None:
    """Contract v2: no written-attribute state; under on/off the attribute changes nothing."""
    for kmem in (KmemSetting.ON, KmemSetting.OFF):
        with_attr = logic.decide(True, kmem, global_mode, None)
        without_attr = logic.decide(False, kmem, global_mode, None)
        assert with_attr == without_attr
        assert "attribute" not in with_attr.reason


def test_global_reason_names_both_inputs() -> None:
    reason = logic.decide(True, KmemSetting.GLOBAL, GlobalMode.OFF, None).reason
    assert "memmap_on_memory=1" in reason and "memory_hotplug.memmap_on_memory=N" in reason


def test_plan_1t() -> None:
    p = logic.plan(1 << 40, 128 * MIB)
    assert p.blocks == 8192
    assert p.without_setting == logic.PlanColumn(16 << 30, 0, 1 << 40)
    assert p.with_setting == logic.PlanColumn(0, 16 << 30, (1 << 40) - (16 << 30))
    assert p.dram_saved == 16 << 30


def test_plan_tail_and_impossible() -> None:
    p = logic.plan(300 * MIB, 128 * MIB)
    assert p.blocks == 2
    assert p.unusable_tail == 44 * MIB
    q = logic.plan(1 << 30, 64 * MIB)
    assert q.dram_saved == 0
    assert q.with_setting is None and q.unsupported_reason
    # Where the setting cannot apply, JSON shows the memmap staying in DRAM.
    shown = render.plan_json(q)["with_memmap_on_memory"]
    assert shown == {
        "possible": False,
        "reason": q.unsupported_reason,
        "dram_memmap_bytes": q.without_setting.dram_memmap_bytes,
        "device_memmap_bytes": 0,
        "usable_bytes": 1 << 30,
    }


@given(st.integers(min_value=1, max_value=1 << 50), st.integers(min_value=27, max_value=34))
def test_plan_conserves_capacity(capacity: int, shift: int) -> None:
    block = 1 << shift
    p = logic.plan(capacity, block)
    w = p.with_setting
    assert w is not None
    assert w.usable_bytes + w.device_memmap_bytes + p.unusable_tail == capacity
    assert p.dram_saved == p.without_setting.dram_memmap_bytes
    assert p.dram_saved * 64 == p.blocks * block


def _snapshot(
    node_blocks: dict[int, set[int]], dax_blocks: list[int], distances: dict[int, dict[int, int]]
) -> snapshot.Snapshot:
    settings = snapshot.MemmapSettings(128 * MIB, KmemSetting.OFF, GlobalMode.OFF, True)
    blocks = [snapshot.MemoryBlock(i, "online", False) for i in dax_blocks]
    return snapshot.Snapshot(settings, [], {"dax0.0": blocks}, node_blocks, {}, [], distances)


def test_dram_memmap_goes_to_the_nearest_boot_node() -> None:
    """Two DRAM nodes, CXL node 2 behind the second socket: node 1 holds its memmap."""
    distances = {2: {0: 30, 1: 20, 2: 10}}
    snap = _snapshot({0: {0, 1}, 1: {2, 3}, 2: {32, 33}}, [32, 33], distances)
    boot = snap.boot_memory_nodes()
    assert boot == {0, 1}
    assert snap.memmap_node(2, False, boot) == 1
    assert snap.memmap_node(2, True, boot) == 2


def test_memmap_node_unknown_without_distances() -> None:
    snap = _snapshot({0: {0}, 1: {2}, 2: {32}}, [32], {})
    assert snap.memmap_node(2, False, snap.boot_memory_nodes()) is None
    single = _snapshot({0: {0}, 2: {32}}, [32], {})
    assert single.memmap_node(2, False, single.boot_memory_nodes()) == 0


BLOCK_INDICES = [
    # 512 MiB from 4 GiB: blocks 32..35, and not 36 (end is exclusive)
    (((4 << 30, (4 << 30) + 512 * MIB),), [32, 33, 34, 35]),
    # a range starting inside block 32 covers only the blocks wholly inside it
    ((((4 << 30) + MIB, (4 << 30) + 512 * MIB),), [33, 34, 35]),
    # ... and one ending inside block 35 as well
    ((((4 << 30), (4 << 30) + 511 * MIB),), [32, 33, 34]),
    # two mappings
    (((0, 128 * MIB), (1 << 30, (1 << 30) + 256 * MIB)), [0, 8, 9]),
]


@pytest.mark.parametrize(("ranges", "indices"), BLOCK_INDICES)
def test_block_indices(ranges: tuple[tuple[int, int], ...], indices: list[int]) -> None:
    dev = snapshot.DaxDevice("dax0.0", "kmem", 1, 0, ranges, None, None, "cxl")
    assert dev.block_indices(128 * MIB) == indices


@pytest.mark.parametrize(("ranges", "indices"), BLOCK_INDICES)
def test_block_cap_counts_the_blocks_it_lets_through(
    ranges: tuple[tuple[int, int], ...],
    indices: list[int],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the blocks a device is trusted with, Sysfs.device_blocks counts them against the
    memoryN directories: as many as exist are read, one block more is refused."""
    dev = snapshot.DaxDevice("dax0.0", "kmem", 1, 0, ranges, None, None, "cxl")
    sysfs = kernel.Sysfs(tmp_path)
    memory = tmp_path / kernel.MEMORY
    memory.mkdir(parents=True)
    for i in range(len(indices)):
        (memory / f"memory{i}").mkdir()
    (memory / "block_size_bytes").write_text("8000000\n")  # not a block: not counted
    monkeypatch.setattr(kernel, "TRUSTED_DEVICE_BLOCKS", 0)
    assert sysfs.device_blocks(dev, 128 * MIB) == indices
    (memory / "memory0").rmdir()
    with pytest.raises(OperationFailed, match=f"spans {len(indices)} memory blocks"):
        sysfs.device_blocks(dev, 128 * MIB)
