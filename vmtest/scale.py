"""The seed's own scale (issue 9, item 4): 256 GiB of dax memory in 2 GiB memory blocks.

One boot per placement, shared by tests/vm/test_vm_scale.py and bench/scale.py:
- 63 GiB of boot RAM on node 0 (`reserve=off`: the host pays only what the guest touches).
  The pc machine puts 3 GiB below 4 GiB and 60 GiB above, so boot memory ends at 64 GiB and
  x86_64 picks 2 GiB memory blocks (a 32 MiB memmap per block, 2048 -> 2016 MiB);
- a 256 GiB QEMU nvdimm on node 1, backed by a sparse file the runner deletes after the
  boot; `ndctl create-namespace -m devdax` keeps the namespace's own struct pages on the
  nvdimm (map=dev, ~4 GiB), so about 252 GiB are left: 125 blocks once kmem aligns the
  range to 2 GiB.
In the guest: (kmem `on` on the patched kernel), devdax, snapshot, hot-add + online through
sysfs, snapshot (with the page-table witness of every block), `pyshim plan` for the dax
device's size, and on the patched kernel `pyshim check --witness`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import placement
from . import steps as s
from .machine import Accel, Source, VMSpec
from .runner import VMResult

MIB = 1 << 20
GIB = 1 << 30
BOOT_RAM_MIB = 63 * 1024
NVDIMM_MIB = 256 * 1024
BLOCK_BYTES = 2 * GIB
# One boot under TCG measured 145 s (namespace 40 s, online 68 s) beside a kernel build.
TIMEOUT_S = 900.0
# The memmap in DRAM: what DRAM paid may fall short of it by this fraction (pages that
# other code frees in the same window); test_vm_witness measured 0.2 % on 14 MiB.
DRAM_SLACK = 0.02
# The memmap on memory: DRAM may pay at most this fraction of the memmap (P1's target).
ON_MEMORY_DRAM_LIMIT = 0.01
PLAN = 'exec "$0" -m pyshim plan --json --capacity "$(cat /sys/bus/dax/devices/$1/size)"'


class Placed(enum.Enum):
    """Where a scale boot puts the memmap, and on which kernel."""

    MEMORY = "memory"  # patched kernel, kmem memmap_on_memory=on
    DRAM = "dram"  # stock 6.12, nothing set: what an operator pays today


# The VMSpec fields of a scale boot besides the kernel, accelerator and timeout.
SHAPE: dict[str, Any] = {
    "source": Source.NVDIMM,
    "node0_mib": BOOT_RAM_MIB,
    "hotplug_mib": NVDIMM_MIB,
    "reserve_boot_ram": False,
}


def spec(kernel: Path, *, accel: Accel = Accel.TCG, qemu: str = "qemu-system-x86_64") -> VMSpec:
    return VMSpec(kernel=kernel, accel=accel, qemu=qemu, timeout=TIMEOUT_S, **SHAPE)


def job(placed: Placed, python: str, *, again: bool = False) -> list[dict[str, Any]]:
    """The guest's steps; python is the interpreter that runs pyshim in the guest. again:
    then offline + remove everything and hot-add + online it a second time, when the host
    already backs every page the first round wrote (the nvdimm's file blocks, the boot
    RAM's anonymous pages), to tell the host's first-touch cost from the guest's."""
    setup = [s.kmem_set("on", method="sysfs")] if placed is Placed.MEMORY else []
    steps = [
        *setup,
        s.pmem_devdax(),
        s.snapshot("before", 2.0),
        s.online("online", method="sysfs"),
        s.snapshot("after", 2.0),
        s.run("plan", "sh", "-c", PLAN, python, "dax0.0"),
    ]
    if placed is Placed.MEMORY:
        # Stock 6.12 has no memoryN/memmap_on_memory: check exits 3 there.
        steps.append(s.shim("witness", "check", "--witness", "--json", parse_json=True))
    if again:
        steps += [
            s.offline("offline", method="sysfs"),
            s.snapshot("removed", 2.0),
            s.online("online_again", method="sysfs"),
            s.snapshot("after_again", 2.0),
        ]
    return steps


def second_round(result: VMResult, placed: Placed) -> dict[str, Any]:
    """The job(again=True) round: its times, and where the page tables put every block."""
    p = placement.measure(result.step("removed"), result.step("after_again"))
    wrong = (
        placement.witness_on_memory(p) if placed is Placed.MEMORY else placement.witness_in_dram(p)
    )
    if wrong or p.online_blocks != len(p.blocks) or not p.blocks:
        raise AssertionError(f"second round, {placed.value}: {wrong[:3] or 'blocks offline'}")
    off, on = result.step("offline"), result.step("online_again")
    return {
        "online_blocks": p.online_blocks,
        "dram_paid_mib": p.dram_free_drop_kb / 1024,
        "seconds": {
            "offline": off["offline_seconds"],
            "remove": off["remove_seconds"],
            "hot_add": on["hot_add_seconds"],
            "online": on["online_seconds"],
        },
    }


@dataclass(frozen=True)
class Figures:
    """What one scale boot measured."""

    placed: Placed
    placement: placement.Placement
    plan: dict[str, Any]
    device_bytes: int
    boot_seconds: float
    namespace_seconds: float
    hot_add_seconds: float
    online_seconds: float
    check_status: str | None

    @property
    def node_mib_per_block(self) -> float:
        """The hot-plug node's MemTotal per online block (2048 MiB minus its memmap)."""
        p = self.placement
        return p.memtotal_kb / p.online_blocks / 1024 if p.online_blocks else 0.0

    @property
    def memmap_mib(self) -> float:
        """The memmap of the online blocks (32 MiB each for 2 GiB blocks)."""
        p = self.placement
        return p.online_blocks * p.memmap_kb_per_block / 1024

    def as_dict(self) -> dict[str, Any]:
        p = self.placement
        places: dict[str, int] = {}
        for w in p.witness.values():
            where = w["placement"] + "".join(f"@node{n}" for n in w["nodes"])
            places[where] = places.get(where, 0) + 1
        return {
            "placed": self.placed.value,
            "block_mib": p.block_bytes // MIB,
            "online_blocks": p.online_blocks,
            "device_bytes": self.device_bytes,
            "node_memtotal_kb": p.memtotal_kb,
            "node_mib_per_block": self.node_mib_per_block,
            "present_minus_managed_pages": p.present_minus_managed,
            "memmap_mib": self.memmap_mib,
            "capacity_lost_mib": p.capacity_lost_kb / 1024,
            "dram_paid_mib": p.dram_free_drop_kb / 1024,
            "dram_paid_mib_by_node": {
                str(n): kb / 1024 for n, kb in p.dram_free_drop_by_node_kb.items()
            },
            "witness_blocks": places,
            "block_attrs": sorted({str(a) for a in p.block_attrs}),
            "check_witness_status": self.check_status,
            "plan": {
                "memblocks": self.plan["memblocks"],
                "memmap_mib_per_block": self.plan["memmap_bytes_per_block"] / MIB,
                "dram_mib_without": self.plan["without_memmap_on_memory"]["dram_memmap_bytes"]
                / MIB,
                "device_mib_with": self.plan["with_memmap_on_memory"]["device_memmap_bytes"] / MIB,
                "usable_mib_with": self.plan["with_memmap_on_memory"]["usable_bytes"] / MIB,
            },
            "seconds": {
                "boot_wall": self.boot_seconds,
                "create_namespace": self.namespace_seconds,
                "hot_add": self.hot_add_seconds,
                "online": self.online_seconds,
            },
        }


def figures(result: VMResult, placed: Placed) -> Figures:
    """Read one scale boot (its job must have succeeded)."""
    after = result.step("after")
    plan_out = result.step("plan")
    if plan_out["rc"] != 0:
        raise AssertionError(f"pyshim plan exit {plan_out['rc']}: {plan_out['stderr']}")
    (device,) = [d for d in after["dax"] if d["name"] == "dax0.0"]
    online = result.step("online")
    check = result.step("witness")["json"]["status"] if placed is Placed.MEMORY else None
    return Figures(
        placed=placed,
        placement=placement.measure(result.step("before"), after),
        plan=json.loads(plan_out["stdout"]),
        device_bytes=int(device["size"]),
        boot_seconds=result.seconds,
        namespace_seconds=float(result.step("pmem_devdax")["seconds"]),
        hot_add_seconds=float(online["hot_add_seconds"]),
        online_seconds=float(online["online_seconds"]),
        check_status=check,
    )


def problems(f: Figures) -> list[str]:
    """Everything that contradicts "every block's memmap is where `placed` puts it, and
    `pyshim plan` predicted what the node shows"; [] if nothing does."""
    p = f.placement
    found: list[str] = []
    if p.block_bytes != BLOCK_BYTES:
        found.append(f"memory blocks of {p.block_bytes // MIB} MiB, want 2048 (RAM to 64 GiB)")
    if p.online_blocks != len(p.blocks) or not p.blocks:
        found.append(f"{p.online_blocks} of {len(p.blocks)} blocks on node {p.node} online")
    memmap_kb = p.online_blocks * p.memmap_kb_per_block
    if f.placed is Placed.MEMORY:
        found += placement.check_on_memory(p)
        if f.check_status != "ok":
            found.append(f"pyshim check --witness status {f.check_status}, want ok")
        if p.dram_free_drop_kb > memmap_kb * ON_MEMORY_DRAM_LIMIT:
            found.append(
                f"DRAM paid {p.dram_free_drop_kb} kB with the memmap on memory, more than "
                f"{ON_MEMORY_DRAM_LIMIT:.0%} of the {memmap_kb} kB memmap"
            )
    else:
        # Stock 6.12 has no per-block attribute (None): the witness and the node speak.
        found += placement.check_in_dram(p, attr_expected=False)
        if p.dram_free_drop_kb < memmap_kb * (1 - DRAM_SLACK):
            found.append(f"DRAM paid {p.dram_free_drop_kb} kB, less than the {memmap_kb} kB memmap")
    plan, per_block = f.plan, p.memmap_kb_per_block * 1024
    with_setting = plan["with_memmap_on_memory"]
    predicted = {
        "memblocks": (plan["memblocks"], p.online_blocks),
        "memmap bytes per block": (plan["memmap_bytes_per_block"], per_block),
        "DRAM memmap without the setting": (
            plan["without_memmap_on_memory"]["dram_memmap_bytes"],
            p.online_blocks * per_block,
        ),
    }
    if f.placed is Placed.MEMORY:
        predicted["memmap on the device"] = (
            with_setting["device_memmap_bytes"],
            p.capacity_lost_kb * 1024,
        )
        predicted["usable with the setting"] = (with_setting["usable_bytes"], p.memtotal_kb * 1024)
    else:
        predicted["usable without the setting"] = (
            plan["without_memmap_on_memory"]["usable_bytes"],
            p.memtotal_kb * 1024,
        )
    for what, (said, measured) in predicted.items():
        if said != measured:
            found.append(f"pyshim plan: {what} {said}, measured {measured}")
    return found
