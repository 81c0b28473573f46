"""Races and faults on the modular debug kernel (KASAN, lockdep, kmemleak; issue 7, item 6).

The guest side is vmtest/guest/stress.py: it does the work, checks every bind, and prints its
figures and problems as JSON. Here: no problem, no splat in the log, kmemleak clean. The
global parameter is off, so memmap on memory can only come from the kmem setting.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

import pytest

from vmtest import asserts
from vmtest import steps as s
from vmtest.harness import Harness
from vmtest.machine import Source, guest_dir

# The modular debug kernel is built for the 6.12 backport only (README, "Two kernel bases").
pytestmark = [pytest.mark.vm, pytest.mark.bases("6.12")]

GLOBAL_N = "memory_hotplug.memmap_on_memory=0"
# Pressure cycles on the built-in kernel (about 4 s each under TCG); make vm-test-long sets
# MEMMAP_KMEM_PRESSURE_CYCLES=100.
PRESSURE_CYCLES = int(os.environ.get("MEMMAP_KMEM_PRESSURE_CYCLES", "30"))
STRESS = guest_dir() / "stress.py"


def stress(
    vm: Harness,
    *args: str,
    parts: int = 1,
    timeout: float = 900,
    kernel: str = "modular",
    hotplug_mib: int = 1024,
) -> dict[str, Any]:
    result = vm.boot(
        [s.run("stress", sys.executable, str(STRESS), *args, timeout=timeout), s.kmemleak()],
        kernel=kernel,
        source=Source.HMEM,
        hotplug_parts=parts,
        hotplug_mib=hotplug_mib,
        append=[GLOBAL_N],
        timeout=timeout + 300,
    )
    asserts.booted_ok(result)
    out = result.step("stress")
    try:
        figures = json.loads(out["stdout"].strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        pytest.fail(f"stress.py printed no JSON: {out['stderr'][-3000:]}\n{result.describe()}")
    assert not figures["problems"], "\n".join(figures["problems"][:30]) + result.describe()
    assert out["rc"] == 0, out["stderr"][-3000:]
    leak = result.step("kmemleak")
    assert not leak["report"], f"kmemleak: {leak['report'][:3000]}"
    asserts.clean_log(result)
    return figures


# The race and the pressure cycles are long runs (make vm-test-long, not make test): on the
# KASAN kernel under TCG the race takes about 5 minutes of a core, a pressure cycle 40 s.
@pytest.mark.long
def test_stress_race_setting_against_binds(
    vm: Harness, figures: Callable[[str, Any], None]
) -> None:
    """1000 writes of on/off race bind/unbind loops of two dax devices: every bind is whole
    (its blocks agree), each bind that no write overlapped follows the setting it read."""
    out = stress(vm, "race", "--writes", "1000", parts=2)
    figures("race", out)
    print(f"race: {out}")
    assert out["writes"] == 1000
    assert out["binds"] >= 20 and out["exact_binds"] >= 10, out
    assert 0 < out["exact_on_memory"] < out["exact_binds"], f"a setting never applied: {out}"


def test_stress_faults_in_hot_add(vm: Harness, figures: Callable[[str, Any], None]) -> None:
    """failslab and fail_page_alloc inside kmem's probe with the memmap on memory: a failed
    probe leaves nothing behind, and the device binds normally once injection stops."""
    out = stress(vm, "faults", parts=2)
    figures("faults", out)
    print(f"faults: {out}")
    assert out["injected"] >= 4 and out["failed_binds"] >= 1, f"faults did not bite: {out}"


@pytest.mark.long
@pytest.mark.parametrize(
    ("kernel", "cycles"),
    [("patched", PRESSURE_CYCLES), ("modular", 5)],
    ids=["patched", "debug-5"],
)
def test_stress_pressure_cycles(
    vm: Harness, figures: Callable[[str, Any], None], kernel: str, cycles: int
) -> None:
    """Online/offline/remove cycles with the memmap on memory while a process holds 3/4 of
    the node's 512 MiB, which offlining must migrate: PRESSURE_CYCLES on the built-in
    kernel, 5 on the KASAN one (a cycle there takes about 40 s under TCG)."""
    out = stress(
        vm, "pressure", "--cycles", str(cycles), timeout=1800, kernel=kernel, hotplug_mib=512
    )
    figures("pressure", out)
    print(f"pressure ({kernel}): {out}")
    assert out["cycles"] == cycles and out["hogged_mib"][0] > 0, out
