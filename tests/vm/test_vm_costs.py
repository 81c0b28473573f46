"""The struct-page traffic meter checks itself (issue 16, item 1): one boot, the memmap in
DRAM (kmem `off`) then on the memory (kmem `on`); each time the guest reads
/proc/kpageflags for the last 1000 pfns of the first hot-plugged block, and the meter must
have seen every one of their 1000 struct pages (at the physical addresses the page-table
witness gives) and at most vmtest.costs.SELF_CHECK_EXTRA others.

The struct pages asked for end exactly at the end of the block's memmap range, so a meter
whose range bound is off by one line misses the last one: `make vm-test-costs-mutant` runs
this test with bench/costs/memmeter.c built with -DMEMMETER_MUTANT and requires it to fail.

Opt-in (MEMMAP_KMEM_VM_COSTS=1, `make vm-test-costs`): about 2 minutes of TCG with a plugin
callback on every guest memory access.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from vmtest import asserts, costs, placement
from vmtest.harness import Harness
from vmtest.machine import Source

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        os.environ.get("MEMMAP_KMEM_VM_COSTS") != "1",
        reason="MEMMAP_KMEM_VM_COSTS is not 1 (a 2-minute instrumented boot; make vm-test-costs)",
    ),
]

MUTANT = os.environ.get("MEMMAP_KMEM_COSTS_MUTANT") == "1"


def test_meter_self_check(vm: Harness) -> None:
    built = costs.build()
    plugin = built / ("memmeter-mutant.so" if MUTANT else "memmeter.so")
    plan = costs.Plan(
        hotplug_mib=512, modes=("off0", "on1"), workloads=[], self_check_pages=1000, fill_file=None
    )
    name = "costs-self-check"
    share = vm.workdir / name / "share"
    share.mkdir(parents=True, exist_ok=True)
    (share / "costs-ranges.txt").write_text("")
    meter_out = vm.workdir / name / "meter.jsonl"
    plugin_arg = f"{plugin},ranges={share / 'costs-ranges.txt'},out={meter_out}"
    result = vm.boot(
        costs.job(plan, built / "costs-guest", sys.executable),
        source=Source.HMEM,
        hotplug_mib=plan.hotplug_mib,
        smp=1,
        extra_qemu_args=("-plugin", plugin_arg),
        timeout=900,
        name=name,
    )
    asserts.booted_ok(result)
    header, records = costs.read_meter(meter_out)
    assert header.get("mutant") == int(MUTANT), header
    phases = costs.by_phase(records)
    for phase, (tag, what) in plan.phases.items():
        assert what == "self_check"
        p = placement.measure(result.step("removed"), result.step(f"after_{tag}"))
        wrong = (
            placement.witness_on_memory(p) if tag.startswith("on") else placement.witness_in_dram(p)
        )
        assert not wrong, wrong[:3]
        ranges = json.loads(result.step(f"ranges_{tag}")["stdout"])["ranges"]
        check = costs.self_check(
            phases[phase], ranges, plan.self_check_first_pfn(), plan.self_check_pages
        )
        assert check.ok, f"{tag}: {check.describe()}"
        # Every struct page read at least once, and reading a pfn's flags is a few loads.
        assert check.accesses_on_expected >= plan.self_check_pages, check
