"""vmtest.costs on synthetic meter records: the self-check's arithmetic (pfn -> struct-page
line of the range that holds it), the off-by-one it must catch, and the latency model."""

from __future__ import annotations

from typing import Any

from vmtest import costs

RANGES = [
    # two blocks of 32768 pfns, memmaps of 2 MiB each, the second one split in two extents
    {"label": "a", "block": 32, "first_pfn": 0x100000, "start": 0x1000000, "end": 0x1200000},
    {"label": "b", "block": 33, "first_pfn": 0x108000, "start": 0x3000000, "end": 0x3100000},
    {"label": "c", "block": 33, "first_pfn": 0x10C000, "start": 0x5000000, "end": 0x5100000},
]


def record(runs: dict[str, list[list[int]]], loads: int = 0, misses: int = 0) -> dict[str, Any]:
    return {
        "phase": 1,
        "insns": 3000,
        "accesses": 1000,
        "misses": 10,
        "ranges": [
            {
                "label": r["label"],
                "loads": loads if r["label"] in runs else 0,
                "stores": 0,
                "load_misses": misses if r["label"] in runs else 0,
                "store_misses": 0,
                "lines": sum(n for _, n in runs.get(r["label"], [])),
                "runs": runs.get(r["label"], []),
            }
            for r in RANGES
        ],
    }


def test_self_check_exact() -> None:
    # the last 1000 pfns of block 32: lines 31768..32767 of range a
    first = 0x100000 + 32768 - 1000
    check = costs.self_check(record({"a": [[31768, 1000]]}, 5000), RANGES, first, 1000)
    assert check.ok and check.seen_expected == 1000 and check.extra == 0


def test_self_check_off_by_one_fails() -> None:
    first = 0x100000 + 32768 - 1000
    check = costs.self_check(record({"a": [[31768, 999]]}, 5000), RANGES, first, 1000)
    assert not check.ok and check.missing == [0x100000 + 32767]


def test_self_check_tolerates_a_few_extra() -> None:
    first = 0x100000 + 32768 - 1000
    runs = {"a": [[0, costs.SELF_CHECK_EXTRA], [31768, 1000]]}
    assert costs.self_check(record(runs, 5000), RANGES, first, 1000).ok
    runs = {"a": [[0, costs.SELF_CHECK_EXTRA + 1], [31768, 1000]]}
    assert not costs.self_check(record(runs, 5000), RANGES, first, 1000).ok


def test_self_check_across_extents() -> None:
    # pfns on both sides of the boundary between extents b and c
    first = 0x10C000 - 10
    runs = {"b": [[0x4000 - 10, 10]], "c": [[0, 10]]}
    check = costs.self_check(record(runs, 100), RANGES, first, 20)
    assert check.ok and check.seen_expected == 20


def test_model_extra_only_on_cxl() -> None:
    rec = record({"a": [[0, 100]]}, loads=400, misses=40)
    on = costs.model(rec, 100, memmap_on_cxl=True)
    off = costs.model(rec, 100, memmap_on_cxl=False)
    assert on["accesses_per_page"] == off["accesses_per_page"] == 4.0
    assert on["extra_ns_per_page"]["low"] == 40 * costs.EXTRA_NS_LOW / 100
    # high: every distinct line fetched once at the high latency
    assert on["extra_ns_per_page"]["high"] == 100 * costs.EXTRA_NS_HIGH / 100
    assert off["extra_ns_per_page"] == {"low": 0.0, "high": 0.0}
    assert 0 < on["extra_share"]["low"] < on["extra_share"]["high"] < 1
