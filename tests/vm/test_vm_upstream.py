"""Upstream's own selftests, not written here, on the stock and the patched kernel.

- tools/testing/selftests/dax/dax-kmem-hotplug.sh (7.x: daxX.Y/state) on stock 7.3 and on
  patched 7.3 with kmem "global" and with kmem "on" (memmap on the hot-plugged memory, the
  global parameter off): every result the same on the three boots, none failed.
- tools/testing/selftests/memory-hotplug/mem-on-off-test.sh on both bases, stock and patched
  with kmem "on": it offlines and onlines blocks of a kmem device whose memmap is on that
  memory (patched) or in DRAM (stock), with the same outcome.

The scripts come from the tree each image was built from (kbuild copies them next to the
image, see kbuild.build()), so the stock boot runs the stock tree's copy.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from vmtest import asserts, image, ktap, placement
from vmtest import steps as s
from vmtest.harness import Harness, unavailable
from vmtest.machine import Source
from vmtest.runner import VMResult

pytestmark = pytest.mark.vm

DAX_KMEM_HOTPLUG = Path("dax/dax-kmem-hotplug.sh")
MEM_ON_OFF = Path("memory-hotplug/mem-on-off-test.sh")


def upstream_script(vm: Harness, kernel: str, relative: Path) -> Path:
    """The selftest copied next to the image of `kernel`, with kselftest/ beside it."""
    script = image.selftest(vm.kernel(kernel), str(relative))
    if script is None or not script.is_file():
        unavailable(vm.settings, f"{script} missing: rebuild the image (make kernel)")
    return script


def kmem_device(snapshot: dict[str, Any]) -> dict[str, Any]:
    (device,) = [d for d in snapshot["dax"] if d["driver"] == "kmem"]
    assert device["blocks"], f"{device['name']} has no memory blocks"
    return device


def device_witness(snapshot: dict[str, Any], device: dict[str, Any], on_memory: bool) -> list[str]:
    """Witness problems for the blocks of `device` alone (its node may hold other memory)."""
    p = placement.measure(snapshot, snapshot, node=device["target_node"])
    witness, why = placement.witness_of(snapshot, device["blocks"])
    p = dataclasses.replace(p, blocks=device["blocks"], witness=witness, witness_error=why or None)
    return placement.witness_on_memory(p) if on_memory else placement.witness_in_dram(p, None)


def run_dax_kmem_hotplug(vm: Harness, kernel: str, kmem: str | None) -> VMResult:
    steps = [s.pmem_devdax()]
    if kmem is not None:
        steps.append(s.kmem_set(kmem))
    steps += [
        s.online(method="daxctl"),
        s.snapshot("onlined"),
        s.run(
            "selftest",
            "bash",
            str(upstream_script(vm, kernel, DAX_KMEM_HOTPLUG)),
            timeout=600,
            # The VM is ours to break: opt in to the destructive unbind-while-online case too.
            env={"DAX_KMEM_TEST_DEV": "auto", "DAX_KMEM_TEST_UNBIND": "1"},
        ),
    ]
    result = vm.boot(steps, kernel=kernel, source=Source.PMEM)
    asserts.booted_ok(result)
    return result


@pytest.mark.bases("7.3")
def test_upstream_dax_kmem_hotplug_same_on_stock_and_patched(vm: Harness) -> None:
    """dax-kmem-hotplug.sh passes the same tests on stock 7.3, on patched 7.3 as it comes
    ("global") and with kmem "on", where every online/unplug cycle it makes puts the memmap
    on the device and takes it off again."""
    boots = {
        "stock": run_dax_kmem_hotplug(vm, "stock", None),
        "patched global": run_dax_kmem_hotplug(vm, "patched", None),
        "patched on": run_dax_kmem_hotplug(vm, "patched", "on"),
    }
    outcomes = {}
    for name, result in boots.items():
        out = result.step("selftest")
        report = ktap.parse(out["stdout"])
        assert report.results, f"{name}: no KTAP results\n{out['stdout']}{out['stderr']}"
        assert not report.missing(), f"{name}: missing against the plan {report.missing()}"
        failed = [r.name for r in report.failed()]
        assert out["rc"] == 0 and not failed, f"{name}: exit {out['rc']}, failed {failed}"
        outcomes[name] = [r.status for r in report.results]
        print(f"dax-kmem-hotplug.sh on {name}: {report.counts()}")
        asserts.clean_log(result)
    assert outcomes["patched global"] == outcomes["stock"], outcomes
    assert outcomes["patched on"] == outcomes["stock"], outcomes
    # The "on" boot did exercise the memmap on memory: every block of the device said so
    # before the script started cycling it.
    on = boots["patched on"]
    snapshot = on.step("onlined")
    device = kmem_device(snapshot)
    assert device_witness(snapshot, device, on_memory=True) == []
    attrs = {b["id"]: b["memmap_on_memory"] for b in snapshot["blocks"]}
    assert [attrs[n] for n in device["blocks"]] == [1] * len(device["blocks"]), attrs


OFFLINED = re.compile(r"^online->offline memory(\d+)\n-> Success$", re.M)


# The script spawns a few grep processes per memory block and pass, slow under TCG, and walks
# the blocks in glob order (memory0, memory1, memory2, ...), stopping after as many successes
# as it aims at. A small guest: 256 MiB of boot memory (memory0 keeps the kernel and refuses;
# memory1 may go), then 1 GiB of pmem right above it, the device's blocks next in that order.
MEM_ON_OFF_VM = {"source": Source.PMEM, "node0_mib": 256, "hotplug_mib": 1040}


# The ratio of online blocks that makes the script aim at as many blocks as the kmem device
# has (it offlines ceil(n * r / 100) of n), worked out in the guest once the device is online;
# the device spans whole memory blocks here (the test checks the count against the snapshot).
AIM_AT_THE_DEVICE = """
set -e
online=$(grep -lx online /sys/devices/system/memory/memory*/state | wc -l)
block=$((0x$(cat /sys/devices/system/memory/block_size_bytes)))
wanted=$(( $(cat /sys/bus/dax/devices/dax*/size) / block ))
ratio=0
until [ $(( (online * ratio + 99) / 100 )) -eq "$wanted" ]; do
	ratio=$((ratio + 1))
	[ $ratio -le 100 ] || { echo "no ratio aims at $wanted of $online blocks" >&2; exit 99; }
done
echo "aiming at $wanted of $online online blocks: -r $ratio"
exec bash "$1" -r $ratio
"""


def run_mem_on_off(vm: Harness, kernel: str) -> tuple[VMResult, list[int]]:
    """Boot with a kmem device online (kmem "on" on the patched kernel), then run the test
    aimed at as many blocks as the device has."""
    append = ["kmem.memmap_on_memory=on"] if kernel == "patched" else []
    script = upstream_script(vm, kernel, MEM_ON_OFF)
    result = vm.boot(
        [
            s.pmem_devdax(),
            s.online(method="daxctl"),
            s.snapshot("onlined"),
            s.run("selftest", "sh", "-c", AIM_AT_THE_DEVICE, "sh", str(script), timeout=600),
            s.snapshot("after"),
        ],
        kernel=kernel,
        append=append,
        **MEM_ON_OFF_VM,
    )
    asserts.booted_ok(result)
    return result, kmem_device(result.step("onlined"))["blocks"]


def test_upstream_mem_on_off_with_memmap_on_the_blocks(vm: Harness) -> None:
    """mem-on-off-test.sh offlines and onlines blocks of a kmem device: on the patched
    kernel their memmap is on the blocks themselves, on stock it is in DRAM. Both runs pass,
    offline device blocks, and leave every block online with the same memmap placement."""
    outcomes = {}
    # Stock has no memoryX/memmap_on_memory (None); its memmap is in DRAM.
    for kernel, attr, on_memory in (("stock", None, False), ("patched", 1, True)):
        result, device_blocks = run_mem_on_off(vm, kernel)
        out = result.step("selftest")
        text = out["stdout"]
        assert out["rc"] == 0, f"{kernel}: exit {out['rc']}\n{text}{out['stderr']}"
        aim = re.search(r"^aiming at (\d+) of \d+ online blocks", text, re.M)
        assert aim and int(aim.group(1)) == len(device_blocks), f"{kernel}: {text[:300]}"
        cycled = sorted(int(n) for n in OFFLINED.findall(text) if int(n) in device_blocks)
        assert cycled, f"{kernel}: no block of the kmem device went offline\n{text}"
        before = {b["id"]: b for b in result.step("onlined")["blocks"]}
        after = {b["id"]: b for b in result.step("after")["blocks"]}
        assert [before[n]["memmap_on_memory"] for n in cycled] == [attr] * len(cycled)
        assert all(after[n]["state"] == "online" for n in device_blocks), after
        assert [after[n]["memmap_on_memory"] for n in device_blocks] == [attr] * len(device_blocks)
        after_snapshot = result.step("after")
        problems = device_witness(after_snapshot, kmem_device(after_snapshot), on_memory)
        assert problems == [], f"{kernel}: {problems}"
        asserts.clean_log(result)
        outcomes[kernel] = ("FAILED" in text, "SKIPPED" in text)
        print(f"mem-on-off-test.sh on {kernel}: device blocks cycled {cycled}")
    assert outcomes["patched"] == outcomes["stock"], outcomes
