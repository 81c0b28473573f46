"""Benchmark P1/P2 (issue 3): what the memmap costs DRAM, and what placing it on the
hot-plugged memory costs in hot-add/online and offline/remove time. Not a test.

P1 - DRAM spent per GiB onlined (node 0, and summed over every node with boot memory), kmem
     `on` (patched) vs stock 6.12 with nothing set, in the same run; and the capacity the
     hot-plug node loses per GiB (target: exactly the memmap, 16 MiB per GiB; node 0: <= 1 %
     of stock).
P2 - hot-add+online and offline+remove time per GiB, memmap on the memory vs in DRAM, in the
     same VM, as a ratio. Patched kernel: kmem `on`/`off` alternated. Without a patched
     image, stock with memory_hotplug.memmap_on_memory=1 and daxX.Y/memmap_on_memory 1/0.

Memory: --size MiB of RAM on NUMA node 1 (not emulated CXL, so timing is not distorted).
P1 takes the first hot-add of a boot (legacy pmem as devdax; median of --p1-boots boots per
kernel); P2 cycles soft-reserved RAM (hmem) --reps times per mode in one boot. Every
hot-add/online and offline/remove goes straight through sysfs (no tool start-up in the timed
part). Node 0's cost is its MemFree drop with the per-CPU free lists at their minimum. Every
sample's placement is checked block by block in the page tables (the witness) first.
A hot-add also has a fixed node-0 cost that does not scale with size (memory block devices,
the node's kswapd/kcompactd, page tables): a few hundred kB, which is why P1 uses 8 GiB.

    python bench/p1_p2.py [--reps 5] [--p1-boots 3] [--size 8192] [--out bench/results/p1_p2.json]

writes the JSON and, through bench/plot.py, bench/results/p1_p2.svg.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import plot

from vmtest import placement
from vmtest import steps as s
from vmtest.machine import Source, VMSpec, VMUnavailable
from vmtest.runner import VMResult, qemu_version, run
from vmtest.settings import Settings

REPO = Path(__file__).resolve().parents[1]

GIB_KB = 1 << 20


def mode_steps(kernel: str, mode: str) -> list[dict[str, Any]]:
    """Steps that make the next hot-add put the memmap in DRAM (mode "dram") or on memory."""
    if kernel == "patched":
        return [s.kmem_set("on" if mode == "memory" else "off", f"set_{mode}", method="sysfs")]
    if kernel == "stock-global":
        return [s.dev_attr("1" if mode == "memory" else "0", f"attr_{mode}")]
    return []


def rounds_steps(
    kernel: str, modes: list[str], reps: int, settle: float = 2.0
) -> list[dict[str, Any]]:
    """Remove what hmem added at boot, then per round and mode: add+online, remove."""
    job: list[dict[str, Any]] = [s.find_dax(), s.offline("boot_remove", method="sysfs")]
    for rep in range(reps):
        for mode in modes:
            tag = f"{mode}{rep}"
            job += mode_steps(kernel, mode)
            job += [
                s.snapshot(f"before_{tag}", settle),
                s.online(f"online_{tag}", method="sysfs"),
                s.snapshot(f"after_{tag}", settle),
                s.offline(f"offline_{tag}", method="sysfs"),
                s.snapshot(f"removed_{tag}"),
            ]
    return job


def first_online_steps(kernel: str, mode: str) -> list[dict[str, Any]]:
    """P1: legacy pmem -> devdax -> the first hot-add+online of this boot, measured."""
    setup = mode_steps(kernel, mode)
    job = [s.pmem_devdax()]
    if kernel == "patched":
        job = setup + job
    else:
        job += setup
    return [
        *job,
        s.snapshot("before", 2.0),
        s.online("online", method="sysfs"),
        s.snapshot("after", 2.0),
    ]


def witnessed(p: placement.Placement, want: str, what: str) -> dict[str, int]:
    """Blocks per place the page tables put their memmap; a sample whose blocks are not all
    where the mode puts them measures something else, so the benchmark stops."""
    places: dict[str, int] = {}
    for w in p.witness.values():
        where = w["placement"] + "".join(f"@node{n}" for n in w["nodes"])
        places[where] = places.get(where, 0) + 1
    wrong = [b for b, w in p.witness.items() if w["placement"] != want]
    if p.witness_error or wrong or not p.witness:
        raise SystemExit(
            f"p1_p2: {what}: want every memmap {want!r}, the page tables say {places} "
            f"{p.witness_error or ''}"
        )
    return places


def p1_sample(result: VMResult, want: str) -> dict[str, Any]:
    p = placement.measure(result.step("before"), result.step("after"))
    gib = p.online_gib
    return {
        "online_gib": gib,
        "node0_kb_per_gib": p.node0_memfree_drop_kb / gib,
        "node0_free_incl_pcp_kb_per_gib": p.node0_free_drop_kb / gib,
        "dram_kb_per_gib": p.dram_drop_kb_per_gib,
        "dram_kb_by_node": {str(n): kb for n, kb in p.dram_free_drop_by_node_kb.items()},
        "capacity_lost_kb_per_gib": p.capacity_lost_kb / gib,
        "present_minus_managed": p.present_minus_managed,
        "block_attrs": sorted({str(a) for a in p.block_attrs}),
        "witness": witnessed(p, want, f"P1 {result.workdir.name}"),
    }


def summarize(result: VMResult, modes: list[str], reps: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in modes:
        samples = []
        for rep in range(reps):
            tag = f"{mode}{rep}"
            p = placement.measure(result.step(f"before_{tag}"), result.step(f"after_{tag}"))
            places = witnessed(p, mode, f"P2 {tag}")
            on = result.step(f"online_{tag}")
            off = result.step(f"offline_{tag}")
            gib = p.online_gib
            samples.append(
                {
                    "online_gib": gib,
                    "node0_kb_per_gib": p.node0_free_drop_kb / gib,
                    "node0_memfree_kb_per_gib": p.node0_memfree_drop_kb / gib,
                    "dram_kb_per_gib": p.dram_drop_kb_per_gib,
                    "witness": places,
                    "capacity_lost_kb_per_gib": p.capacity_lost_kb / gib,
                    "present_minus_managed": p.present_minus_managed,
                    "block_attrs": sorted({str(a) for a in p.block_attrs}),
                    "add_online_s_per_gib": (on["hot_add_seconds"] + on["online_seconds"]) / gib,
                    "offline_remove_s_per_gib": (off["offline_seconds"] + off["remove_seconds"])
                    / gib,
                }
            )
        out[mode] = {
            "median": {
                key: statistics.median(x[key] for x in samples)
                for key in samples[0]
                if isinstance(samples[0][key], float)
            },
            "samples": samples,
        }
    return out


def boot(spec: VMSpec, job: list[dict[str, Any]], workdir: Path) -> VMResult:
    result = run(spec, job, workdir, echo=True)
    if result.exit_status != 0:
        raise SystemExit(f"benchmark boot failed: {result.describe()}")
    return result


def median_of(samples: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(x[key] for x in samples))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="P2 rounds per mode (median)")
    parser.add_argument("--p1-boots", type=int, default=3, help="P1 boots per kernel (median)")
    parser.add_argument("--size", type=int, default=8192, help="hot-plug memory in MiB")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "p1_p2.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/memmap-kmem-bench"))
    parser.add_argument("--kernel", help="patched image (default as the VM tests)")
    parser.add_argument("--stock-kernel", help="stock image (default as the VM tests)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(kernel=args.kernel, stock_kernel=args.stock_kernel)
    if settings.missing(settings.stock_kernel):
        print(f"p1_p2: {settings.missing(settings.stock_kernel)}", file=sys.stderr)
        return 3
    if settings.missing(settings.kernel) is None:
        on_kernel, on_label = "patched", "patched kernel, kmem on"
        append: tuple[str, ...] = ()
        image = settings.kernel
    else:
        on_kernel = "stock-global"
        on_label = "stock 6.12, memory_hotplug.memmap_on_memory=1 + daxX.Y attribute 1"
        append = ("memory_hotplug.memmap_on_memory=1",)
        image = settings.stock_kernel
        print(f"p1_p2: no patched image; 'on' uses {on_label}", file=sys.stderr)
    size = args.size

    def spec(kernel: Path, source: Source, extra: tuple[str, ...] = ()) -> VMSpec:
        return VMSpec(kernel=kernel, source=source, hotplug_mib=size, append=extra, timeout=900)

    try:
        stock_p1 = [
            p1_sample(
                boot(
                    spec(settings.stock_kernel, Source.PMEM),
                    first_online_steps("stock", "dram"),
                    args.workdir / f"p1-stock-{i}",
                ),
                "dram",
            )
            for i in range(args.p1_boots)
        ]
        on_p1 = [
            p1_sample(
                boot(
                    spec(image, Source.PMEM, append),
                    first_online_steps(on_kernel, "memory"),
                    args.workdir / f"p1-on-{i}",
                ),
                "memory",
            )
            for i in range(args.p1_boots)
        ]
        same_vm = boot(
            spec(image, Source.HMEM, append),
            rounds_steps(on_kernel, ["dram", "memory"], args.reps),
            args.workdir / "p2-same-vm",
        )
    except VMUnavailable as exc:
        print(f"p1_p2: {exc}", file=sys.stderr)
        return 3
    both = summarize(same_vm, ["dram", "memory"], args.reps)
    on, dram = both["memory"]["median"], both["dram"]["median"]
    stock_node0 = median_of(stock_p1, "node0_kb_per_gib")
    on_node0 = median_of(on_p1, "node0_kb_per_gib")
    stock_dram = median_of(stock_p1, "dram_kb_per_gib")
    on_dram = median_of(on_p1, "dram_kb_per_gib")
    data = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "setup": {
            "p1_source": "legacy pmem (memmap=!) as devdax on NUMA node 1, first online",
            "p2_source": "hmem (soft-reserved RAM) on NUMA node 1, cycles in one boot",
            "hotplug_mib": size,
            "reps": args.reps,
            "p1_boots": args.p1_boots,
            "block_bytes": same_vm.step("before_dram0")["block_size"],
            "qemu": ".".join(map(str, qemu_version(settings.qemu))),
            "accel": "tcg",
            "stock_kernel": str(settings.stock_kernel),
            "on_kernel": str(image),
            "on_mechanism": on_label,
            "on_kernel_kind": on_kernel,
            "node0": "node-0 MemFree drop from before hot-add to after online, per-CPU "
            "free lists at their minimum (vm.percpu_pagelist_high_fraction)",
            "dram": "free memory (MemFree + per-CPU lists) dropped on every node with boot "
            "memory, summed: the memmap in DRAM goes to the hot-plug node's nearest node",
            "witness": "every sample's blocks have their memmap where its mode puts it, read "
            "from the kernel page tables (pyshim.witness); otherwise the benchmark stops",
        },
        "p1": {
            "memmap_kb_per_gib": 16384,
            "stock_node0_kb_per_gib": stock_node0,
            "on_node0_kb_per_gib": on_node0,
            "on_vs_stock_node0_ratio": on_node0 / stock_node0,
            "target_ratio": 0.01,
            "saved_node0_kb_per_gib": stock_node0 - on_node0,
            "stock_dram_kb_per_gib": stock_dram,
            "on_dram_kb_per_gib": on_dram,
            "saved_dram_kb_per_gib": stock_dram - on_dram,
            "on_capacity_lost_kb_per_gib": median_of(on_p1, "capacity_lost_kb_per_gib"),
            "stock_capacity_lost_kb_per_gib": median_of(stock_p1, "capacity_lost_kb_per_gib"),
        },
        "p2": {
            "mechanism": on_label,
            "dram": {k: dram[k] for k in ("add_online_s_per_gib", "offline_remove_s_per_gib")},
            "memory": {k: on[k] for k in ("add_online_s_per_gib", "offline_remove_s_per_gib")},
            "ratio_add_online": on["add_online_s_per_gib"] / dram["add_online_s_per_gib"],
            "ratio_offline_remove": on["offline_remove_s_per_gib"]
            / dram["offline_remove_s_per_gib"],
            "node0_kb_per_gib_in_cycles": {
                "dram": dram["node0_memfree_kb_per_gib"],
                "memory": on["node0_memfree_kb_per_gib"],
            },
            "note": "QEMU TCG on a 2-core host: absolute times are emulation times; the "
            "ratio is the figure to read",
        },
        "samples": {
            "p1_stock": stock_p1,
            "p1_on": on_p1,
            "p2": {k: v["samples"] for k, v in both.items()},
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    svg = args.out.with_suffix(".svg")
    svg.write_text(plot.render(data))
    print(json.dumps({"p1": data["p1"], "p2": data["p2"]}, indent=1))
    print(f"wrote {args.out} and {svg}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
