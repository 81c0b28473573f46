"""The scale run's checks (vmtest/scale.py) on the two boots that bench/scale.py recorded
(test_data/scale-*.json.gz: result.json without the kernel log): they pass on what the
kernels did, and fail when the page tables, the node or `pyshim plan` say otherwise."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from vmtest import scale
from vmtest.runner import VMResult

DATA = Path(__file__).resolve().parent / "test_data"


def recorded(placed: scale.Placed) -> dict[str, Any]:
    with gzip.open(DATA / f"scale-{placed.value}.json.gz") as f:
        result: dict[str, Any] = json.load(f)
    return result


def as_result(result: dict[str, Any]) -> VMResult:
    spec = scale.spec(Path("/k/bzImage"))
    return VMResult(spec, Path("/w"), Path("/w/serial.log"), 120.0, 0, False, result, [])


def step_out(result: dict[str, Any], label: str) -> dict[str, Any]:
    out: dict[str, Any] = next(s["out"] for s in result["steps"] if s["label"] == label)
    return out


@pytest.mark.parametrize("placed", list(scale.Placed), ids=lambda p: p.value)
def test_recorded_boot_passes(placed: scale.Placed) -> None:
    found = scale.figures(as_result(recorded(placed)), placed)
    assert scale.problems(found) == []
    assert found.placement.online_blocks == 125
    want = 2016.0 if placed is scale.Placed.MEMORY else 2048.0
    assert found.node_mib_per_block == want


def test_memory_boot_judged_as_dram_fails() -> None:
    found = scale.figures(as_result(recorded(scale.Placed.MEMORY)), scale.Placed.DRAM)
    problems = scale.problems(found)
    assert sum(p.startswith("witness: memory") for p in problems) == 125
    assert any(p.startswith("DRAM paid") for p in problems)


def test_one_block_in_dram_fails() -> None:
    result = recorded(scale.Placed.MEMORY)
    blocks = step_out(result, "after")["witness"]["blocks"]
    blocks["100"] = dict(blocks["100"], placement="dram", nodes=[0])
    problems = scale.problems(scale.figures(as_result(result), scale.Placed.MEMORY))
    assert [p.split(" memmap")[0] for p in problems] == ["witness: memory100"]


def test_plan_that_disagrees_with_the_node_fails() -> None:
    result = copy.deepcopy(recorded(scale.Placed.MEMORY))
    plan_step = step_out(result, "plan")
    plan = json.loads(plan_step["stdout"])
    plan["with_memmap_on_memory"]["usable_bytes"] += 1 << 21
    plan["memblocks"] += 1
    plan_step["stdout"] = json.dumps(plan)
    problems = scale.problems(scale.figures(as_result(result), scale.Placed.MEMORY))
    assert problems == [
        "pyshim plan: memblocks 126, measured 125",
        "pyshim plan: usable with the setting 264243249152, measured 264241152000",
    ]


def test_memory_blocks_other_than_2g_fail() -> None:
    result = recorded(scale.Placed.DRAM)
    for label in ("before", "after"):
        step_out(result, label)["block_size"] = 1 << 30
    problems = scale.problems(scale.figures(as_result(result), scale.Placed.DRAM))
    assert problems[0] == "memory blocks of 1024 MiB, want 2048 (RAM to 64 GiB)"
