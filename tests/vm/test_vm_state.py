"""daxX.Y/state on 7.x: every unplugged -> online write is a hot-add that follows the kmem
setting in force at that moment; "unplugged" gives back MemTotal exactly.

One device, one boot, three hot-adds with the setting changed between them (off, on,
global with the global parameter off): each hot-add is judged per block by the page-table
witness, the per-block attribute and the node accounting; each "unplugged" must remove
every block of the device and return the system's MemTotal to its value before the first
hot-add, with no "Altmap not fully unmapped" (asserts.clean_log) after the memmap was on the
memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vmtest import asserts, placement
from vmtest import steps as s
from vmtest.harness import Harness
from vmtest.machine import Source

pytestmark = [pytest.mark.vm, pytest.mark.bases("7.3")]

STATE = "/sys/bus/dax/devices/{device}/state"
# (kmem setting, memmap on the hot-plugged memory?) for the three hot-adds, in order.
HOT_ADDS = [("off", False), ("on", True), ("global", False)]


def test_state_online_follows_the_setting_of_the_moment(
    vm: Harness, figures: Callable[[str, Any], None]
) -> None:
    steps = [s.pmem_devdax(), s.snapshot("devdax"), s.kmem_set("off"), s.online(method="daxctl")]
    for i, (setting, _) in enumerate(HOT_ADDS):
        if i:
            steps += [
                s.kmem_set(setting, label=f"kmem_{setting}"),
                s.write(STATE, b"online_movable", f"online_{i}"),
            ]
        steps += [
            s.snapshot(f"online_{setting}"),
            s.write(STATE, b"unplugged", f"unplug_{i}"),
            s.snapshot(f"unplugged_{i}"),
        ]
    result = vm.boot(steps, source=Source.PMEM)
    asserts.booted_ok(result)
    devdax = result.step("devdax")
    total_before = devdax["meminfo"]["MemTotal"]
    (device,) = [d for d in devdax["dax"] if d["driver"] == "device_dax"]
    node = device["target_node"]
    found: dict[str, Any] = {}
    for i, (setting, on_memory) in enumerate(HOT_ADDS):
        if i:
            written = result.step(f"online_{i}")
            assert written["errno"] is None, f"online_movable under {setting}: {written}"
        online = result.step(f"online_{setting}")
        (bound,) = [d for d in online["dax"] if d["name"] == device["name"]]
        assert bound["driver"] == "kmem" and bound["blocks"], bound
        p = placement.measure(
            result.step("devdax" if i == 0 else f"unplugged_{i - 1}"), online, node
        )
        assert p.blocks == bound["blocks"], (p.blocks, bound["blocks"])
        if on_memory:
            asserts.on_memory(p, result)
        else:
            asserts.in_dram(p, result)
        unplugged = result.step(f"unplugged_{i}")
        assert result.step(f"unplug_{i}")["errno"] is None, result.step(f"unplug_{i}")
        (after,) = [d for d in unplugged["dax"] if d["name"] == device["name"]]
        left = [b["id"] for b in unplugged["blocks"] if b["id"] in p.blocks]
        assert after["state"] == "unplugged" and left == [], (after, left)
        assert unplugged["meminfo"]["MemTotal"] == total_before, (
            f"after unplugging the {setting} hot-add: MemTotal "
            f"{unplugged['meminfo']['MemTotal']} kB, before the first hot-add {total_before} kB"
        )
        found[setting] = {"blocks": len(p.blocks), "node_memtotal_kb": p.memtotal_kb}
    figures("state_cycles", found)
    print(f"daxX.Y/state hot-adds: {found}; MemTotal back to {total_before} kB after each")
    asserts.clean_log(result)
