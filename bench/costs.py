"""What the memmap on CXL memory costs in struct-page traffic (issue 16, items 1-3).

One boot of the patched kernel under TCG with the memmeter plugin (bench/costs/memmeter.c,
built against qemu-plugin.h of the installed QEMU by bench/costs/build.sh): hmem on NUMA
node 1 is given back, then hot-added and onlined once per mode, kmem `off` (memmap in
DRAM) and `on` (memmap on the block), in the order --order gives (default off, on, on, off:
two cycles each, ABBA). Per cycle the page-table witness gives the plugin the memmap's
physical ranges; the meter's self-check runs (/proc/kpageflags of known pfns: every one of
their struct pages must be seen, at most a few others); then each workload runs between two
phase markers. Per workload and mode: struct-page accesses per 4 KiB page handled, the
accesses a last-level-cache model (--llc-mib, --ways) misses, and the extra time those
misses cost at the published CXL-over-DRAM latency range (vmtest/costs.py).

    python bench/costs.py [--hotplug-mib 512] [--order off,on,on,off] [--scale 1]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from vmtest import costs, placement
from vmtest.machine import VMUnavailable
from vmtest.runner import qemu_version, run
from vmtest.settings import bootable

REPO = Path(__file__).resolve().parents[1]


def check_placement(result: Any, tag: str) -> None:
    p = placement.measure(result.step("removed"), result.step(f"after_{tag}"))
    on = tag.startswith("on")
    wrong = placement.witness_on_memory(p) if on else placement.witness_in_dram(p)
    if wrong or not p.blocks:
        raise SystemExit(f"costs: cycle {tag}: {wrong[:3] or 'no blocks'}")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Median over the cycles of one mode (each cycle one sample)."""
    keys = ("accesses_per_page", "misses_per_page", "lines_per_page")
    out: dict[str, Any] = {k: statistics.median(r[k] for r in rows) for k in keys}
    out["extra_ns_per_page"] = {
        b: statistics.median(r["extra_ns_per_page"][b] for r in rows) for b in ("low", "high")
    }
    out["extra_share"] = {
        b: statistics.median(r["extra_share"][b] for r in rows) for b in ("low", "high")
    }
    out["samples"] = rows
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--hotplug-mib", type=int, default=512)
    parser.add_argument("--order", default="off,on,on,off", help="modes, one cycle each")
    parser.add_argument("--scale", type=int, default=1, help="multiply workload sizes")
    parser.add_argument("--self-check-pages", type=int, default=1000)
    parser.add_argument("--llc-mib", type=int, default=32)
    parser.add_argument("--ways", type=int, default=16)
    parser.add_argument("--no-reclaim", action="store_true")
    parser.add_argument("--mutant", action="store_true", help="the off-by-one meter")
    parser.add_argument("--kernel", help="patched image (default as the VM tests)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "costs.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/memmap-kmem-bench/costs"))
    args = parser.parse_args(argv)
    settings = bootable("costs", args.kernel)
    if settings is None:
        return 3
    built = costs.build()
    guest = built / "costs-guest"
    plugin = built / ("memmeter-mutant.so" if args.mutant else "memmeter.so")
    modes = tuple(args.order.split(","))
    tags = []
    for i, mode in enumerate(modes):
        if mode not in ("on", "off"):
            parser.error(f"--order: {mode} is neither on nor off")
        tags.append(f"{mode}{i}")
    fill = None
    if not args.no_reclaim:
        # Page cache that fills most of the node, then anon memory that needs the room back.
        fill = costs.fill_file(built, args.hotplug_mib * 7 // 8)
    plan = costs.Plan(
        hotplug_mib=args.hotplug_mib,
        modes=tuple(tags),
        workloads=[],
        self_check_pages=args.self_check_pages,
        fill_file=fill,
    )
    plan.workloads = costs.default_workloads(1, fill, plan.blocks()[-1], args.scale)
    if fill is not None:
        # Anon pages: half the node, on top of the page cache.
        plan.workloads[-1] = costs.Workload(
            "reclaim",
            ("reclaim", "1", str(fill), str(args.hotplug_mib * costs.MIB // costs.PAGE // 2)),
            "anon page allocated under reclaim",
        )
    workdir = args.workdir
    share = workdir / "share"
    share.mkdir(parents=True, exist_ok=True)
    (share / "costs-ranges.txt").write_text("")
    meter_out = workdir / "meter.jsonl"
    plugin_arg = (
        f"{plugin},ranges={share / 'costs-ranges.txt'},out={meter_out},"
        f"llc={args.llc_mib * costs.MIB},ways={args.ways}"
    )
    steps = costs.job(plan, guest, sys.executable)
    try:
        result = run(plan.spec_for(settings.kernel, plugin_arg), steps, workdir, echo=True)
    except VMUnavailable as exc:
        print(f"costs: {exc}", file=sys.stderr)
        return 3
    if result.exit_status != 0:
        raise SystemExit(f"costs: boot failed: {result.describe()}")
    header, records = costs.read_meter(meter_out)
    phases = costs.by_phase(records)
    data: dict[str, Any] = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "setup": {
            "kernel": str(settings.kernel),
            "qemu": ".".join(map(str, qemu_version(settings.qemu))),
            "accel": "tcg, 1 vCPU",
            "hotplug_mib": args.hotplug_mib,
            "order": list(tags),
            "meter": header,
            "model": {
                "llc_bytes": header.get("llc_bytes"),
                "ways": header.get("ways"),
                "extra_ns": [costs.EXTRA_NS_LOW, costs.EXTRA_NS_HIGH],
                "ns_per_insn": costs.NS_PER_INSN,
                "dram_ns": costs.DRAM_NS,
            },
            "workloads": {w.name: {"args": list(w.args), "page": w.what} for w in plan.workloads},
        },
        "self_check": {},
        "cycles": {},
    }
    per_mode: dict[str, dict[str, list[dict[str, Any]]]] = {"on": {}, "off": {}}
    failed = []
    for tag in tags:
        check_placement(result, tag)
        ranges = json.loads(result.step(f"ranges_{tag}")["stdout"])["ranges"]
        cycle: dict[str, Any] = {"ranges": ranges}
        for phase, (ptag, name) in plan.phases.items():
            if ptag != tag:
                continue
            record = phases.get(phase)
            if record is None:
                raise SystemExit(f"costs: no meter record for phase {phase} ({tag} {name})")
            out = result.step(f"{name}_{tag}")
            if name == "self_check":
                check = costs.self_check(
                    record, ranges, plan.self_check_first_pfn(), plan.self_check_pages
                )
                data["self_check"][tag] = {**check.__dict__, "ok": check.ok}
                if not check.ok:
                    failed.append(f"{tag}: {check.describe()}")
                continue
            if out["rc"] != 0:
                raise SystemExit(f"costs: {name} in {tag} exited {out['rc']}: {out['stderr']}")
            guest_out = costs.guest_json(out)
            row = costs.model(record, int(guest_out["pages"]), tag.startswith("on"))
            row["vmstat"] = guest_out["vmstat"]
            row["guest_stderr"] = out["stderr"].strip()
            cycle[name] = row
            per_mode[tag.rstrip("0123456789")].setdefault(name, []).append(row)
        data["cycles"][tag] = cycle
    data["table"] = {
        name: {
            mode: summarise(per_mode[mode][name])
            for mode in ("off", "on")
            if name in per_mode[mode]
        }
        for name in [w.name for w in plan.workloads]
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out}")
    for name, row in data["table"].items():
        cells = [
            f"{m}: {r['accesses_per_page']:.2f} acc/page, {r['misses_per_page']:.3f} miss/page"
            for m, r in row.items()
        ]
        print(f"{name:16} " + "; ".join(cells))
    if failed:
        print("costs: the meter's self-check failed: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
