"""The struct-page traffic meter (issue 16): the guest job, the meter's output, the
self-check and the latency model. The bench (bench/costs.py) and the VM test
(tests/vm/test_vm_costs.py) share it.

The meter is a QEMU TCG plugin (bench/costs/memmeter.c) that counts guest loads and stores
whose guest-physical address falls in the memmap of the hot-plugged blocks (from the
page-table witness: on each block's own first pages with kmem `on`, in boot memory with
`off`), per workload phase (a marker the guest program writes), and runs every guest data
access through a last-level-cache model (size and associativity are plugin arguments).
Its output (one JSON line per phase) is read here.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import steps as s
from .machine import MIB, Source, VMSpec, repo_root

BLOCK_BYTES = 128 * MIB
PAGE = 4096
LINE = 64
RELOAD = 0xFFFF_FFFF
RANGES_IN_GUEST = "/run/vmtest/costs-ranges.txt"
# The self-check's tolerance: every expected struct page must be seen, and at most this
# many others (what the kernel itself touches on the node's memmap in the same phase).
SELF_CHECK_EXTRA = 8


def costs_dir() -> Path:
    """Where bench/costs/build.sh puts the plugin and the guest program."""
    cache = os.environ.get("MEMMAP_KMEM_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "memmap-kmem"
    )
    return Path(cache) / "costs"


def build() -> Path:
    """Build (or rebuild) the plugin, its mutant and the guest program; their directory."""
    out = subprocess.run(
        ["sh", str(repo_root() / "bench" / "costs" / "build.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class Workload:
    """One measured operation: its guest command (after the phase) and what a page is."""

    name: str
    args: tuple[str, ...]
    what: str  # what "a 4 KiB page handled" counts


@dataclass
class Plan:
    """One boot: modes in order, the workloads of each, their phase ids."""

    hotplug_mib: int
    modes: tuple[str, ...]
    workloads: list[Workload]
    self_check_pages: int
    fill_file: Path | None
    phases: dict[int, tuple[str, str]] = field(default_factory=dict)  # id -> (tag, workload)

    @property
    def hotplug_base(self) -> int:
        return self.spec_for(Path("/"), "").hotplug_base

    def spec_for(self, kernel: Path, plugin: str, timeout: float = 2400) -> VMSpec:
        return VMSpec(
            kernel=kernel,
            source=Source.HMEM,
            hotplug_mib=self.hotplug_mib,
            smp=1,
            timeout=timeout,
            extra_qemu_args=("-plugin", plugin) if plugin else (),
        )

    def blocks(self) -> list[int]:
        base = self.hotplug_base
        return list(range(base // BLOCK_BYTES, (base + self.hotplug_mib * MIB) // BLOCK_BYTES))

    def self_check_first_pfn(self) -> int:
        """The last self_check_pages pfns of the first block: their struct pages end at the
        end of that block's memmap, where an off-by-one range bound shows."""
        return (self.blocks()[0] + 1) * (BLOCK_BYTES // PAGE) - self.self_check_pages


def default_workloads(node: int, fill: Path | None, block: int, scale: int = 1) -> list[Workload]:
    n = 2048 * scale
    out = [
        Workload("kpageflags", ("kpageflags",), "pfn read from /proc/kpageflags"),
        Workload("churn", ("churn", str(node), str(n), "4"), "page allocated, touched, freed"),
        Workload("faults", ("faults", str(node), str(n), "4"), "page read-faulted (shmem)"),
        Workload("migrate", ("migrate", "0", str(node), str(n), "2"), "page moved (move_pages)"),
        Workload(
            "migrate_all", ("migrate-all", "0", str(node), str(n)), "page moved (migrate_pages)"
        ),
        Workload("compact", ("compact", str(node), str(4 * n)), "page of the node (scanned)"),
        Workload("offline_online", ("offline-online", str(block)), "page offlined or onlined"),
    ]
    if fill is not None:
        out.append(Workload("reclaim", ("reclaim", str(node), str(fill), str(32 * n)), "anon page"))
    return out


def job(plan: Plan, guest: Path, python: str) -> list[dict[str, Any]]:
    """find_dax, give back what hmem added at boot, then per mode: set kmem, online, witness,
    ranges to the plugin, the self-check and the workloads, offline."""
    repo = str(repo_root())
    ranges_py = str(repo_root() / "bench" / "costs" / "guest_ranges.py")
    out: list[dict[str, Any]] = [s.find_dax(), s.offline("boot_remove", method="sysfs")]
    out.append(s.snapshot("removed"))
    phase = 1
    node_pages = plan.hotplug_mib * MIB // PAGE
    first_node_pfn = plan.blocks()[0] * (BLOCK_BYTES // PAGE)
    for tag in plan.modes:
        kmem = "on" if tag.startswith("on") else "off"
        out += [
            s.kmem_set(kmem, f"set_{tag}", method="sysfs"),
            s.online(f"online_{tag}", method="sysfs"),
            s.snapshot(f"after_{tag}"),
            s.run(f"ranges_{tag}", python, ranges_py, repo, str(guest), RANGES_IN_GUEST),
        ]
        plan.phases[phase] = (tag, "self_check")
        first = plan.self_check_first_pfn()
        out.append(
            s.run(
                f"self_check_{tag}",
                str(guest),
                "kpageflags",
                str(phase),
                str(first),
                str(plan.self_check_pages),
            )
        )
        phase += 1
        for w in plan.workloads:
            plan.phases[phase] = (tag, w.name)
            args = list(w.args)
            if w.name == "kpageflags":
                args += [str(first_node_pfn), str(node_pages)]
            out.append(s.run(f"{w.name}_{tag}", str(guest), args[0], str(phase), *args[1:]))
            phase += 1
        out.append(s.offline(f"offline_{tag}", method="sysfs"))
    return out


def read_meter(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The plugin's header line and its phase records, in order."""
    header: dict[str, Any] = {}
    phases = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if "memmeter" in rec:
            header = rec
        else:
            phases.append(rec)
    return header, phases


def by_phase(records: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The last record of each phase id (a phase id is used once per boot)."""
    return {int(r["phase"]): r for r in records if int(r["phase"]) not in (0, RELOAD)}


def totals(record: dict[str, Any]) -> dict[str, int]:
    """Memmap loads, stores, modelled misses and lines touched over every range."""
    keys = ("loads", "stores", "load_misses", "store_misses", "lines")
    out = {k: sum(int(r[k]) for r in record["ranges"]) for k in keys}
    out["accesses"] = out["loads"] + out["stores"]
    out["misses"] = out["load_misses"] + out["store_misses"]
    return out


@dataclass(frozen=True)
class SelfCheck:
    expected: int
    seen_expected: int
    missing: list[int]  # pfns whose struct page was not seen
    extra: int  # struct pages seen that were not asked for
    accesses_on_expected: int

    @property
    def ok(self) -> bool:
        return not self.missing and self.extra <= SELF_CHECK_EXTRA

    def describe(self) -> str:
        return (
            f"{self.seen_expected}/{self.expected} struct pages seen, "
            f"{len(self.missing)} missing (first {self.missing[:4]}), {self.extra} extra "
            f"(tolerance: 0 missing, <= {SELF_CHECK_EXTRA} extra)"
        )


def touched_lines(rng: dict[str, Any]) -> set[int]:
    if rng["runs"] is None:
        raise ValueError(f"range {rng['label']}: too many runs to list")
    return {off + i for off, n in rng["runs"] for i in range(n)}


def self_check(
    record: dict[str, Any], ranges: list[dict[str, Any]], first_pfn: int, count: int
) -> SelfCheck:
    """Which struct pages the phase touched against the pfns the guest read: each pfn's
    struct page is the line (pfn - range first pfn) of the range that holds it."""
    by_label = {r["label"]: r for r in ranges}
    want: dict[str, set[int]] = {}
    missing_pfns = []
    for pfn in range(first_pfn, first_pfn + count):
        for r in ranges:
            lines = (r["end"] - r["start"]) // LINE
            if r["first_pfn"] <= pfn < r["first_pfn"] + lines:
                want.setdefault(r["label"], set()).add(pfn - r["first_pfn"])
                break
        else:
            missing_pfns.append(pfn)  # no range holds it: the witness and plan disagree
    seen_expected = 0
    extra = 0
    for rng in record["ranges"]:
        if rng["label"] not in by_label:
            continue
        touched = touched_lines(rng)
        expected = want.get(rng["label"], set())
        seen_expected += len(touched & expected)
        extra += len(touched - expected)
        first = by_label[rng["label"]]["first_pfn"]
        missing_pfns += [first + line for line in sorted(expected - touched)]
    return SelfCheck(
        expected=count,
        seen_expected=seen_expected,
        missing=sorted(missing_pfns),
        extra=extra,
        accesses_on_expected=sum(int(r["loads"]) + int(r["stores"]) for r in record["ranges"]),
    )


# --- counts -> time --------------------------------------------------------------------------

# Published extra load latency of CXL-attached memory over local DRAM, ns (see
# bench/README.md, "Struct-page traffic", for each source and its figure).
EXTRA_NS_LOW = 70.0  # Pond (ASPLOS'23): CXL adds 70-90 ns over local DRAM
EXTRA_NS_HIGH = 150.0  # a CXL.mem path breakdown with a switch: ~250 ns vs ~100 ns DRAM
# The crude cost of a phase with everything in DRAM, for "share of the operation": one
# instruction per cycle at 3 GHz plus each modelled miss at a local DRAM latency.
NS_PER_INSN = 1 / 3.0
DRAM_NS = 100.0


def model(record: dict[str, Any], pages: int, memmap_on_cxl: bool) -> dict[str, Any]:
    """Per 4 KiB page handled: memmap accesses, the accesses the cache model missed, and the
    distinct struct-page lines touched. The extra time, only when the memmap is on CXL
    memory (0 in DRAM): low = modelled misses x EXTRA_NS_LOW (a warm last-level cache);
    high = every distinct line fetched once x EXTRA_NS_HIGH (a cold or contended one). Also
    as a share of the modelled phase time (instructions and all misses, memmap in DRAM)."""
    t = totals(record)
    base_ns = int(record["insns"]) * NS_PER_INSN + int(record["misses"]) * DRAM_NS
    extra = {
        "low": t["misses"] * EXTRA_NS_LOW if memmap_on_cxl else 0.0,
        "high": max(t["misses"], t["lines"]) * EXTRA_NS_HIGH if memmap_on_cxl else 0.0,
    }

    def per(v: float) -> float | None:
        return v / pages if pages else None

    return {
        **t,
        "pages": pages,
        "insns": int(record["insns"]),
        "all_accesses": int(record["accesses"]),
        "all_misses": int(record["misses"]),
        "accesses_per_page": per(t["accesses"]),
        "misses_per_page": per(t["misses"]),
        "lines_per_page": per(t["lines"]),
        "extra_ns_per_page": {k: per(v) for k, v in extra.items()},
        "modelled_phase_ns": base_ns,
        "extra_share": {k: v / (base_ns + v) if base_ns else None for k, v in extra.items()},
    }


def workload_pages(out: dict[str, Any]) -> int:
    """The pages a workload handled, from the guest program's JSON line."""
    line = out["stdout"].strip().splitlines()[0]
    return int(json.loads(line)["pages"])


def guest_json(out: dict[str, Any]) -> dict[str, Any]:
    return dict(json.loads(out["stdout"].strip().splitlines()[0]))


def fill_file(directory: Path, mib: int) -> Path:
    """A sparse file for the reclaim workload's page cache (read through the 9p root)."""
    path = directory / f"fill-{mib}M.dat"
    if not path.is_file() or path.stat().st_size != mib * MIB:
        with open(path, "wb") as f:
            f.truncate(mib * MIB)
    return path


# --- memory errors (item 4) ------------------------------------------------------------------


def hwpoison_job(guest: Path, first_block: int, last_block: int) -> list[dict[str, Any]]:
    """kmem `on`, online; then the hwpoison injector (debugfs corrupt-pfn) on a page of our
    own on node 1 (touched again afterwards: SIGBUS or not), and on the first pfn of the first
    block, which holds struct pages (the block's own memmap). Afterwards: can the struct pages
    still be read, can the node still allocate, can the blocks go offline, and the log."""
    pages = BLOCK_BYTES // PAGE
    memmap_pfn = first_block * pages

    def offline(block: int) -> str:
        return f"echo offline > /sys/devices/system/memory/memory{block}/state; echo rc=$?"

    def online(block: int) -> str:
        return f"echo online_movable > /sys/devices/system/memory/memory{block}/state; echo rc=$?"

    return [
        s.find_dax(),
        s.offline("boot_remove", method="sysfs"),
        s.snapshot("removed"),
        s.kmem_set("on", "set_on", method="sysfs"),
        s.online("online", method="sysfs"),
        s.snapshot("after"),
        s.run(
            "debugfs",
            "sh",
            "-c",
            "mountpoint -q /sys/kernel/debug || "
            "mount -t debugfs debugfs /sys/kernel/debug; ls /sys/kernel/debug/hwpoison",
        ),
        s.run("poison_data", str(guest), "poison-data", "0", "1"),
        s.run("poison_memmap", str(guest), "poison-pfn", "0", str(memmap_pfn)),
        # the struct pages in the poisoned page, read back (kpageflags of the pfns they describe)
        s.run("read_memmap", str(guest), "kpageflags", "0", str(memmap_pfn), "64"),
        s.run("churn_after", str(guest), "churn", "0", "1", "2048", "1"),
        s.run("offline_last", "sh", "-c", offline(last_block)),
        s.run("offline_first", "sh", "-c", offline(first_block)),
        s.run("online_first", "sh", "-c", online(first_block)),
        s.run("offline_first_again", "sh", "-c", offline(first_block)),
        # hot-remove: kmem unbinds the device, the altmaps (and the poisoned page) go with it
        s.run(
            "remove",
            "sh",
            "-c",
            f"for b in $(seq {first_block} {last_block}); do "
            "echo offline > /sys/devices/system/memory/memory$b/state 2>/dev/null; done; "
            "for d in /sys/bus/dax/drivers/kmem/dax*; do "
            "echo ${d##*/} > /sys/bus/dax/drivers/kmem/unbind; echo rc=$?; done; "
            "grep MemTotal /sys/devices/system/node/node1/meminfo 2>/dev/null "
            "|| echo node1-memory-gone",
        ),
        s.dmesg(),
    ]


def memory_failure_lines(log: str) -> list[str]:
    """The kernel's lines about memory failure and what it did."""
    keys = (
        "Memory failure",
        "hwpoison",
        "HWPoison",
        "Injecting memory failure",
        "MCE:",
        "memory corruption",
        "Killing",
        "BUG:",
        "Oops",
        "Kernel panic",
        "WARNING",
        "Altmap",
    )
    return [line for line in log.splitlines() if any(k in line for k in keys)]


def hotplug_blocks(hotplug_mib: int) -> tuple[int, int]:
    """First and last block of hmem's hot-plug range (pc machine, node 0 of 3 GiB)."""
    base = VMSpec(kernel=Path("/"), source=Source.HMEM, hotplug_mib=hotplug_mib).hotplug_base
    return base // BLOCK_BYTES, (base + hotplug_mib * MIB) // BLOCK_BYTES - 1
