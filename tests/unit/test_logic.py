"""The decision table, memmap arithmetic and plan (pure functions)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyshim import logic
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


def cxl_or(region: str) -> bool:
    return logic.REGION_DEFAULTS[region]


@pytest.mark.parametrize(
    ("attr", "region", "kmem", "global_mode", "expected"),
    [
        # kmem global: exactly 6.12 (attribute AND global parameter)
        (True, "cxl", KmemSetting.GLOBAL, GlobalMode.OFF, False),
        (True, "cxl", KmemSetting.GLOBAL, GlobalMode.ON, True),
        (True, "cxl", KmemSetting.GLOBAL, GlobalMode.FORCE, True),
        (False, "hmem", KmemSetting.GLOBAL, GlobalMode.ON, False),
        (True, "hmem", KmemSetting.GLOBAL, GlobalMode.ON, True),
        (True, "cxl", KmemSetting.GLOBAL, None, False),
        # kmem on: yes unless the admin wrote 0 (seen as: differs from the region default)
        (False, "hmem", KmemSetting.ON, GlobalMode.OFF, True),
        (True, "cxl", KmemSetting.ON, GlobalMode.OFF, True),
        (False, "cxl", KmemSetting.ON, GlobalMode.OFF, False),
        (True, "pmem", KmemSetting.ON, GlobalMode.OFF, True),
        # kmem off: no unless the admin wrote 1
        (True, "cxl", KmemSetting.OFF, GlobalMode.ON, False),
        (False, "hmem", KmemSetting.OFF, GlobalMode.ON, False),
        (True, "hmem", KmemSetting.OFF, GlobalMode.OFF, True),
    ],
)
def test_decision_table(
    attr: bool, region: str, kmem: KmemSetting, global_mode: GlobalMode | None, expected: bool
) -> None:
    assert logic.decide(attr, region, kmem, global_mode, True).memmap_on_memory is expected


@given(
    st.booleans(),
    st.sampled_from(sorted(logic.REGION_DEFAULTS)),
    st.sampled_from(list(KmemSetting)),
    st.sampled_from([None, *GlobalMode]),
)
def test_unsupported_never_on_memory(
    attr: bool, region: str, kmem: KmemSetting, global_mode: GlobalMode | None
) -> None:
    assert not logic.decide(attr, region, kmem, global_mode, False).memmap_on_memory


@given(
    st.booleans(), st.sampled_from(sorted(logic.REGION_DEFAULTS)), st.sampled_from(list(GlobalMode))
)
def test_written_value_wins_under_on_and_off(attr: bool, region: str, gm: GlobalMode) -> None:
    """A value different from the region default counts as written and wins (on/off)."""
    if attr == logic.REGION_DEFAULTS[region]:
        return
    for kmem in (KmemSetting.ON, KmemSetting.OFF):
        assert logic.decide(attr, region, kmem, gm, True).memmap_on_memory is attr


def test_plan_1t() -> None:
    p = logic.plan(1 << 40, 128 * MIB)
    assert p["memblocks"] == 8192
    assert p["without_memmap_on_memory"] == {
        "dram_memmap": 16 << 30,
        "device_memmap": 0,
        "usable": 1 << 40,
    }
    with_setting = p["with_memmap_on_memory"]
    assert isinstance(with_setting, dict)
    assert with_setting["device_memmap"] == 16 << 30
    assert with_setting["dram_memmap"] == 0
    assert p["dram_saved"] == 16 << 30


def test_plan_tail_and_impossible() -> None:
    p = logic.plan(300 * MIB, 128 * MIB)
    assert p["memblocks"] == 2
    assert p["unusable_tail"] == 44 * MIB
    q = logic.plan(1 << 30, 64 * MIB)
    assert q["dram_saved"] == 0
    assert q["with_memmap_on_memory"]["possible"] is False  # type: ignore[index]


@given(st.integers(min_value=1, max_value=1 << 50), st.integers(min_value=27, max_value=34))
def test_plan_conserves_capacity(capacity: int, shift: int) -> None:
    block = 1 << shift
    p = logic.plan(capacity, block)
    w = p["with_memmap_on_memory"]
    assert isinstance(w, dict)
    assert w["usable"] + w["device_memmap"] + p["unusable_tail"] == capacity
    assert p["dram_saved"] == p["without_memmap_on_memory"]["dram_memmap"]  # type: ignore[index]
    assert p["dram_saved"] * 64 == p["memblocks"] * block
