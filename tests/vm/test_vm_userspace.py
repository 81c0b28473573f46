"""The patched daxctl and lsmem (userspace-patch/) on the patched kernel, against the witness.

One boot (legacy pmem -> devdax, `memory_hotplug.memmap_on_memory=1`) hot-adds the device
three times, once per kmem setting, with the patched `daxctl reconfigure-device
--mode=system-ram --memmap-on-memory=...` and back to devdax in between:

  kmem on,     device attribute 0 -> memmap on memory (kmem overrides the request)
  kmem off,    device attribute 1 -> memmap in DRAM   (kmem overrides the request)
  kmem global, device attribute 1 -> memmap on memory (the request, with the parameter)

After each hot-add the patched `daxctl list` and `lsmem` must agree with `pyshim check
--witness` (where the page tables put each block's struct pages) block by block: lsmem's
MEMMAP-ON-MEMORY column is "yes" exactly for the blocks whose witness is "memory", daxctl's
memmap_on_memory_memblocks counts them and its memmap_on_memory reports the request.

The tools come from userspace/build.py (the cache under ~/.cache/memmap-kmem/userspace, built
here if missing); the guest sees the host's root read-only, so their host paths work there,
and daxctl finds its libdaxctl through meson's build rpath. Without the tools the test skips,
or fails under MEMMAP_KMEM_VM=1.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vmtest import asserts
from vmtest import steps as s
from vmtest.harness import Harness, unavailable
from vmtest.machine import Source, repo_root
from vmtest.runner import VMResult
from vmtest.settings import Settings

pytestmark = pytest.mark.vm

BUILD = repo_root() / "userspace" / "build.py"
DEVICE = "dax0.0"  # the legacy pmem namespace's device (asserted)
# The guest mounts tmpfs over these: a build under them is not there.
GUEST_TMPFS = (Path("/tmp"), Path("/var/tmp"), Path("/run"))
# (kmem setting, the device attribute daxctl writes, where the memmap must go)
CASES = (("on", "no", "memory"), ("off", "yes", "dram"), ("global", "yes", "memory"))


@dataclass(frozen=True)
class Tools:
    daxctl: Path
    lsmem: Path


@pytest.fixture(scope="session")
def tools(vm_settings: Settings) -> Tools:
    """The patched executables, built (cached by content) by userspace/build.py."""
    proc = subprocess.run(
        [sys.executable, str(BUILD), "build", "ndctl", "util-linux"],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        unavailable(vm_settings, f"userspace/build.py build failed:\n{proc.stderr[-3000:]}")
    daxctl, lsmem = (Path(line) for line in proc.stdout.split())
    for tool in (daxctl, lsmem):
        if any(tool.is_relative_to(hidden) for hidden in GUEST_TMPFS):
            unavailable(vm_settings, f"{tool} is under a directory the guest mounts over")
    return Tools(daxctl, lsmem)


def steps_for(tools: Tools) -> list[dict[str, Any]]:
    daxctl, lsmem = str(tools.daxctl), str(tools.lsmem)
    steps = [s.pmem_devdax()]
    blocks = ["--all", "--raw", "-n", "-o", "BLOCK,MEMMAP-ON-MEMORY"]
    for kmem, attr, _ in CASES:
        to_ram = ["reconfigure-device", "--mode=system-ram", f"--memmap-on-memory={attr}"]
        steps += [
            s.kmem_set(kmem, label=f"kmem_{kmem}", method="sysfs"),
            s.run(f"reconfigure_{kmem}", daxctl, *to_ram, DEVICE),
            s.run(f"daxctl_list_{kmem}", daxctl, "list"),
            s.run(f"lsmem_{kmem}", lsmem, "-o", "+MEMMAP-ON-MEMORY"),
            s.run(f"lsmem_blocks_{kmem}", lsmem, *blocks),
            s.shim(f"witness_{kmem}", "check", "--witness", "--json", parse_json=True),
            s.shim(f"witness_text_{kmem}", "check", "--witness"),
            s.run(f"devdax_{kmem}", daxctl, "reconfigure-device", "-f", "--mode=devdax", DEVICE),
        ]
    return steps


def ran(result: VMResult, label: str) -> dict[str, Any]:
    step = result.step(label)
    assert step["rc"] == 0, f"{label}: exit {step['rc']}: {step['stderr']}{step['stdout']}"
    return step


def test_daxctl_and_lsmem_agree_with_the_witness(
    vm: Harness, tools: Tools, figures: Callable[[str, Any], None]
) -> None:
    result = vm.boot(
        steps_for(tools),
        source=Source.PMEM,
        append=["memory_hotplug.memmap_on_memory=1"],
        timeout=420.0,
    )
    asserts.booted_ok(result)
    assert result.step("pmem_devdax")["device"] == DEVICE
    for kmem, attr, where in CASES:
        assert result.step(f"kmem_{kmem}")["value"] == kmem
        ran(result, f"reconfigure_{kmem}")
        shim = result.step(f"witness_{kmem}")
        assert shim["rc"] == 0, f"check --witness ({kmem}): {shim['stderr']}{shim['stdout']}"
        (device,) = [d for d in shim["json"]["devices"] if d["chardev"] == DEVICE]
        witness = {b["memory"]: b["witness"] for b in device["blocks"]}
        assert witness and set(witness.values()) == {where}, (kmem, witness)

        # lsmem: block by block
        rows = ran(result, f"lsmem_blocks_{kmem}")["stdout"].split("\n")
        column = {int(r.split()[0]): r.split()[1] for r in rows if r.strip()}
        shown = {n: column.get(n) for n in witness}
        assert shown == {n: "yes" if w == "memory" else "no" for n, w in witness.items()}, (
            kmem,
            shown,
            witness,
        )

        # daxctl list: the request and the count of the blocks that hold their memmap
        listed = json.loads(ran(result, f"daxctl_list_{kmem}")["stdout"])
        devices = listed if isinstance(listed, list) else [listed]
        (dev,) = [d for d in devices if d["chardev"] == DEVICE]
        assert dev["mode"] == "system-ram", dev
        assert dev["memmap_on_memory"] is (attr == "yes"), dev
        assert dev["total_memblocks"] == len(witness), (dev, witness)
        on_block = sum(1 for w in witness.values() if w == "memory")
        assert dev["memmap_on_memory_memblocks"] == on_block, (dev, witness)

        ran(result, f"devdax_{kmem}")
        figures(
            f"kmem_{kmem}",
            {
                "daxctl_list": result.step(f"daxctl_list_{kmem}")["stdout"],
                "lsmem": result.step(f"lsmem_{kmem}")["stdout"],
                "check_witness": result.step(f"witness_text_{kmem}")["stdout"],
            },
        )
    asserts.clean_log(result)
