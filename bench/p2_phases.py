"""Benchmark P2 explained (issue 9, item 6): where hot-add/online and offline/remove spend the
extra time when the memmap goes on the hot-plugged memory.

One boot of the patched kernel, --size MiB of soft-reserved RAM (hmem) on node 1 as in
bench/p1_p2.py, --rounds rounds; each round cycles the memmap in DRAM (kmem `off`) and on
memory (kmem `on`), in alternating order (ABBA), so that drift on a shared 2-core host
falls on both modes alike. Every cycle goes through sysfs (no tool start-up inside a timed
part) and times four phases apart: hot-add (kmem bind), online (every block), offline
(every block), remove (kmem unbind); the page tables confirm each cycle's placement. The
figure per phase is the per-round ratio memory/DRAM: median, quartiles, range.

With --trace-kernel (the patched series built with bench/trace.config; see
bench/README.md) a second boot repeats the rounds with the ftrace function profiler on the
hot-plug functions (bench/ftrace_profile.py): calls and time per function and phase,
median per mode. The traced boot explains; only the untraced one gives the ratio.

    python bench/p2_phases.py [--rounds 16] [--size 8192] [--trace-kernel IMAGE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

from vmtest import placement
from vmtest import steps as s
from vmtest.machine import Source, VMSpec, VMUnavailable
from vmtest.runner import VMResult, qemu_version, run
from vmtest.settings import bootable

REPO = Path(__file__).resolve().parents[1]

MODES = ("dram", "memory")
PHASES = ("hot_add", "online", "offline", "remove")
SUMS = ("add_online", "offline_remove")
PROFILER = str(REPO / "bench" / "ftrace_profile.py")
MIB = 1 << 20
BLOCK_BYTES = 128 * MIB  # x86_64 below 64 GiB of boot memory
# The profiler skips what this build inlined or marks notrace.
# The hot-plug path of 6.12 as kmem drives it, by the sysfs write that runs it.
TRACED: dict[str, tuple[str, ...]] = {
    # hot-add: kmem probe -> add_memory_driver_managed()
    "hot_add": (
        "dev_dax_kmem_probe",
        "add_memory_driver_managed",
        "add_memory_resource",
        "arch_add_memory",
        "init_memory_mapping",
        "__add_pages",
        "sparse_add_section",
        "__populate_section_memmap",
        "vmemmap_populate",
        "vmemmap_populate_hugepages",
        "vmemmap_set_pmd",
        "vmemmap_alloc_block_buf",
        "vmemmap_alloc_block",
        "altmap_alloc_block_buf",
        "create_memory_block_devices",
        "add_memory_block",
        "memblock_add_node",
    ),
    # in every phase: TLB flushes on every CPU (IPIs), RCU grace periods
    "shared": (
        "flush_tlb_all",
        "on_each_cpu_cond_mask",
        "synchronize_rcu",
    ),
    # online: memoryN/state -> online_pages()
    "online": (
        "memory_subsys_online",
        "mhp_init_memmap_on_memory",
        "online_pages",
        "move_pfn_range_to_zone",
        "set_zone_contiguous",
        "memmap_init_range",
        "adjust_present_page_count",
        "online_pages_range",
        "generic_online_page",
        "__free_pages_core",
        "build_all_zonelists",
        "kswapd_run",
        "kcompactd_run",
        "init_per_zone_wmark_min",
        "setup_per_zone_wmarks",
        "zone_pcp_update",
        "memory_notify",
    ),
    # offline: memoryN/state -> offline_pages()
    "offline": (
        "memory_subsys_offline",
        "offline_pages",
        "mhp_deinit_memmap_on_memory",
        "remove_pfn_range_from_zone",
        "start_isolate_page_range",
        "test_pages_isolated",
        "__offline_isolated_pages",
        "scan_movable_pages",
        "lru_add_drain_all",
        "drain_all_pages",
        "zone_pcp_disable",
        "zone_pcp_enable",
        "undo_isolate_page_range",
        "zone_pcp_reset",
    ),
    # remove: kmem unbind -> remove_memory() -> try_remove_memory()
    "remove": (
        "dev_dax_kmem_remove",
        "remove_memory",
        "try_remove_memory",
        "remove_memory_blocks_and_altmaps",
        "arch_remove_memory",
        "__remove_pages",
        "sparse_remove_section",
        "section_deactivate",
        "depopulate_section_memmap",
        "vmemmap_free",
        "remove_pagetable",
        "free_pagetable",
        "kernel_physical_mapping_remove",
        "remove_memory_block_devices",
        "memblock_remove",
        "release_mem_region_adjustable",
        "walk_memory_blocks",
    ),
}


def order(round_no: int) -> tuple[str, ...]:
    """ABBA: even rounds DRAM first, odd rounds memory first."""
    return MODES if round_no % 2 == 0 else MODES[::-1]


def cycle_steps(mode: str, tag: str, trace: bool) -> list[dict[str, Any]]:
    """One cycle in `mode`: set kmem, hot-add + online, snapshot (witness), offline + remove."""

    def profiled(step: dict[str, Any], phase: str) -> list[dict[str, Any]]:
        if not trace:
            return [step]
        return [
            s.run(f"start_{phase}_{tag}", sys.executable, PROFILER, "start"),
            step,
            s.run(f"profile_{phase}_{tag}", sys.executable, PROFILER, "stop"),
        ]

    return [
        s.kmem_set("on" if mode == "memory" else "off", f"set_{tag}", method="sysfs"),
        *profiled(s.online(f"online_{tag}", method="sysfs"), "online"),
        s.snapshot(f"after_{tag}"),
        *profiled(s.offline(f"offline_{tag}", method="sysfs"), "offline"),
    ]


def job(rounds: int, trace: bool) -> list[dict[str, Any]]:
    """Give back what hmem added at boot (a snapshot of boot memory first), then the rounds."""
    steps: list[dict[str, Any]] = [s.find_dax(), s.offline("boot_remove", method="sysfs")]
    steps.append(s.snapshot("removed"))
    if trace:
        names = [name for group in TRACED.values() for name in group]
        steps.append(s.run("profile_setup", sys.executable, PROFILER, "setup", *names))
    for r in range(rounds):
        for mode in order(r):
            steps += cycle_steps(mode, f"{mode}{r}", trace)
    return steps


def phases(result: VMResult, tag: str) -> dict[str, float]:
    """Seconds per phase of one cycle, and the sums P2 reports."""
    on, off = result.step(f"online_{tag}"), result.step(f"offline_{tag}")
    out = {
        "hot_add": float(on["hot_add_seconds"]),
        "online": float(on["online_seconds"]),
        "offline": float(off["offline_seconds"]),
        "remove": float(off["remove_seconds"]),
    }
    out["add_online"] = out["hot_add"] + out["online"]
    out["offline_remove"] = out["offline"] + out["remove"]
    return out


def check_placement(result: VMResult, mode: str, tag: str) -> int:
    """The page tables put every block of this cycle where `mode` does; returns the blocks."""
    p = placement.measure(result.step("removed"), result.step(f"after_{tag}"))
    wrong = placement.witness_on_memory(p) if mode == "memory" else placement.witness_in_dram(p)
    if wrong or not p.blocks:
        raise SystemExit(f"p2_phases: cycle {tag}: {wrong[:3] or 'no blocks'}")
    return len(p.blocks)


def median_ci(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free confidence interval of the median: the order statistics x(k) and
    x(n+1-k), k the largest with P(Binomial(n, 1/2) < k) <= (1 - level) / 2. It narrows with
    the rounds where the IQR (the rounds' own spread) does not. Below 6 values no k
    qualifies at 95 %: the whole range."""
    ordered = sorted(values)
    n = len(ordered)
    tail = (1 - level) / 2 * 2**n
    k, below = 0, 0
    while below + math.comb(n, k) <= tail:
        below += math.comb(n, k)
        k += 1
    if k == 0:
        return ordered[0], ordered[-1]
    return ordered[k - 1], ordered[n - k]


def spread(values: list[float]) -> dict[str, Any]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return {
        "median": q2,
        "median_ci95": list(median_ci(values)),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "min": min(values),
        "max": max(values),
    }


def ratios(result: VMResult, rounds: int) -> dict[str, Any]:
    """Per phase: each mode's seconds, and the per-round ratio memory/DRAM with its spread."""
    samples = {m: [phases(result, f"{m}{r}") for r in range(rounds)] for m in MODES}
    blocks = {m: [check_placement(result, m, f"{m}{r}") for r in range(rounds)] for m in MODES}
    out: dict[str, Any] = {"blocks_per_cycle": blocks["memory"][0]}
    for phase in samples["dram"][0]:
        dram = [x[phase] for x in samples["dram"]]
        mem = [x[phase] for x in samples["memory"]]
        out[phase] = {
            "dram_seconds": spread(dram),
            "memory_seconds": spread(mem),
            "ratio": spread([m / d for m, d in zip(mem, dram, strict=True)]),
            "ratio_of_medians": statistics.median(mem) / statistics.median(dram),
        }
    out["samples"] = samples
    return out


def profile(result: VMResult, rounds: int) -> dict[str, Any]:
    """Per phase and function: median calls and milliseconds per cycle in each mode."""
    setup = json.loads(result.step("profile_setup")["stdout"])
    out: dict[str, Any] = {"not_traceable": setup["not_traceable"]}
    for phase in ("online", "offline"):
        per_mode: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for mode in MODES:
            runs = [
                json.loads(result.step(f"profile_{phase}_{mode}{r}")["stdout"])
                for r in range(rounds)
            ]
            functions = sorted({f for run_ in runs for f in run_})
            per_mode[mode] = {
                f: [(int(x.get(f, [0, 0])[0]), float(x.get(f, [0, 0])[1])) for x in runs]
                for f in functions
            }
        table = {}
        for f in sorted(set(per_mode["dram"]) | set(per_mode["memory"])):
            row = {}
            for mode in MODES:
                got = per_mode[mode].get(f, [(0, 0.0)] * rounds)
                row[f"{mode}_calls"] = statistics.median(c for c, _ in got)
                row[f"{mode}_ms"] = statistics.median(us for _, us in got) / 1000
            row["extra_ms"] = row["memory_ms"] - row["dram_ms"]
            table[f] = row
        # The op "online" covers hot-add (kmem bind) and online; "offline" covers offline
        # and remove (kmem unbind).
        name = "hot_add+online" if phase == "online" else "offline+remove"
        out[name] = dict(sorted(table.items(), key=lambda kv: -abs(kv[1]["extra_ms"])))
    out["seconds"] = {
        m: {
            p: statistics.median(phases(result, f"{m}{r}")[p] for r in range(rounds))
            for p in PHASES
        }
        for m in MODES
    }
    return out


def kernel_in_range(result: VMResult) -> bool:
    """The kernel took so much of the range that kmem had no whole block left to add (the
    first step, giving back what hmem added at boot, then fails: kmem never bound)."""
    return "rejecting DAX region without any memory after alignment" in result.serial_text()


def blocks_at_boot(result: VMResult) -> int:
    return len(placement.node_blocks(result.step(f"after_{MODES[0]}0"), 1))


def boot(
    spec: VMSpec, steps: list[dict[str, Any]], workdir: Path, tries: int = 8
) -> tuple[VMResult, int]:
    """Boot until the hmem device spans the whole hot-plug range; the result and how many
    boots were discarded. Physical KASLR can load the kernel inside it: the decompressor
    reads `memmap=nn%ss` as `mem=nn` (arch/x86/boot/compressed/kaslr.c parse_memmap() knows
    only # $ ! @), so with 8 GiB at 4 GiB it may pick an address between 4 and 8 GiB, and
    hmem then gets a part of the range (one boot: 26 of 64 blocks; 6.12 once missed it three
    boots in a row). Such a boot measures a smaller device. `nokaslr` is no way out here:
    the kernel proper does not know it on x86 and hands it to init (/bin/sh) as a script to
    run."""
    want = spec.hotplug_mib * MIB // BLOCK_BYTES
    for discarded in range(tries):
        result = run(spec, steps, workdir, echo=True)
        if result.exit_status != 0 and not kernel_in_range(result):
            raise SystemExit(f"p2_phases: boot failed: {result.describe()}")
        got = 0 if result.exit_status != 0 else blocks_at_boot(result)
        if got == want:
            return result, discarded
        print(
            f"p2_phases: {got} of {want} blocks (kernel inside the range?), again", file=sys.stderr
        )
    raise SystemExit(f"p2_phases: {tries} boots without the whole range")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=16, help="cycles per mode, interleaved")
    parser.add_argument("--size", type=int, default=8192, help="hot-plug memory in MiB")
    parser.add_argument("--trace-kernel", type=Path, help="a tracing build of the series")
    parser.add_argument("--trace-rounds", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "p2_phases.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/memmap-kmem-bench"))
    parser.add_argument("--kernel", help="patched image (default as the VM tests)")
    parser.add_argument("--skip-untraced", action="store_true", help="only the traced boot")
    args = parser.parse_args(argv)
    settings = bootable("p2_phases", args.kernel)
    if settings is None:
        return 3

    def spec(kernel: Path) -> VMSpec:
        return VMSpec(kernel=kernel, source=Source.HMEM, hotplug_mib=args.size, timeout=1800)

    data: dict[str, Any] = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "setup": {
            "source": "hmem (soft-reserved RAM) on NUMA node 1, cycles in one boot",
            "hotplug_mib": args.size,
            "rounds": args.rounds,
            "order": "ABBA: even rounds DRAM then memory, odd rounds memory then DRAM",
            "kernel": str(settings.kernel),
            "mechanism": "patched kernel, kmem memmap_on_memory off (dram) / on (memory)",
            "qemu": ".".join(map(str, qemu_version(settings.qemu))),
            "accel": "tcg",
            "ratio": "per round: memory seconds / DRAM seconds; median, 95% CI of the median, "
            "quartiles, range",
        },
    }
    if args.out.is_file() and args.skip_untraced:
        kept = json.loads(args.out.read_text())
        data["p2"] = kept["p2"]
        data["setup"]["rounds"] = kept["setup"]["rounds"]
    try:
        if not args.skip_untraced:
            plain, discarded = boot(
                spec(settings.kernel), job(args.rounds, False), args.workdir / "p2-phases"
            )
            data["setup"]["boots_discarded"] = discarded
            data["p2"] = ratios(plain, args.rounds)
        if args.trace_kernel:
            traced, _ = boot(
                spec(args.trace_kernel),
                job(args.trace_rounds, True),
                args.workdir / "p2-traced",
            )
            data["setup"]["trace_kernel"] = str(args.trace_kernel)
            data["setup"]["trace_rounds"] = args.trace_rounds
            data["trace"] = profile(traced, args.trace_rounds)
    except VMUnavailable as exc:
        print(f"p2_phases: {exc}", file=sys.stderr)
        return 3
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    if "p2" in data:
        print(
            json.dumps(
                {k: v["ratio"] for k, v in data["p2"].items() if k in PHASES + SUMS}, indent=1
            )
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
