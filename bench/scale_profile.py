"""Where the scale run's online time goes (issue 9, items 4 and 6): the 256 GiB / 2 GiB-block
machine of vmtest/scale.py booted with a tracing build of the series
(bench/trace-kernel.sh), once with kmem `off` (memmap in DRAM) and once with `on`, the
ftrace function profiler (bench/ftrace_profile.py) running only around the online step.

Per mode, two rounds in the same boot (online; offline + remove; online again, when the host
already backs every page the first round wrote): calls and milliseconds of each profiled
function (times include nested calls), the online step's seconds, and the witness on every
block. The two modes are separate boots: compare calls exactly, and times as shares of
each round's own online step or between the rounds of one boot.

    python bench/scale_profile.py --trace-kernel IMAGE [--out bench/results/scale_profile.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
from pathlib import Path
from typing import Any

from vmtest import placement, scale
from vmtest import steps as s
from vmtest.machine import VMUnavailable
from vmtest.runner import VMResult, run

REPO = Path(__file__).resolve().parents[1]

PROFILER = str(REPO / "bench" / "ftrace_profile.py")
# The online path per memory block (memoryN/state): online_pages() and, with the memmap on
# memory, mhp_init_memmap_on_memory() first; each calls move_pfn_range_to_zone(), which
# initializes the struct pages (memmap_init_range) and then re-checks that the whole zone
# has no hole (set_zone_contiguous).
FUNCTIONS = (
    "memory_subsys_online",
    "mhp_init_memmap_on_memory",
    "online_pages",
    "move_pfn_range_to_zone",
    "memmap_init_range",
    "set_zone_contiguous",
    "generic_online_page",
)


def job(mode: str, python: str) -> list[dict[str, Any]]:
    return [
        s.kmem_set("on" if mode == "memory" else "off", method="sysfs"),
        s.pmem_devdax(),
        s.snapshot("before", 2.0),
        s.run("profile_setup", python, PROFILER, "setup", *FUNCTIONS),
        s.run("profile_start", python, PROFILER, "start"),
        s.online("online", method="sysfs"),
        s.run("profile_stop", python, PROFILER, "stop"),
        s.snapshot("after", 2.0),
        # Round 2: the host already backs every page round 1 wrote.
        s.offline("offline", method="sysfs"),
        s.snapshot("removed", 2.0),
        s.run("profile_start_again", python, PROFILER, "start"),
        s.online("online_again", method="sysfs"),
        s.run("profile_stop_again", python, PROFILER, "stop"),
        s.snapshot("after_again", 2.0),
    ]


def round_figures(result: VMResult, mode: str, again: bool) -> dict[str, Any]:
    """One profiled online round: seconds, and calls/ms/share of each function."""
    suffix = "_again" if again else ""
    before = result.step("removed" if again else "before")
    p = placement.measure(before, result.step(f"after{suffix}"))
    wrong = placement.witness_on_memory(p) if mode == "memory" else placement.witness_in_dram(p)
    if wrong or p.online_blocks != 125:
        raise SystemExit(f"scale_profile: {mode}{suffix}: {wrong[:3]} {p.online_blocks} blocks")
    online = result.step(f"online{suffix}")
    seconds = float(online["online_seconds"])
    profile = json.loads(result.step(f"profile_stop{suffix}")["stdout"])
    return {
        "online_blocks": p.online_blocks,
        "online_seconds": seconds,
        "hot_add_seconds": float(online["hot_add_seconds"]),
        "functions": {
            f: {
                "calls": int(profile[f][0]),
                "ms": profile[f][1] / 1000,
                "share_of_online": profile[f][1] / 1e6 / seconds,
            }
            for f in FUNCTIONS
            if f in profile
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trace-kernel", type=Path, required=True)
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench" / "results" / "scale_profile.json"
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/memmap-kmem-bench"))
    parser.add_argument(
        "--modes", nargs="+", choices=("dram", "memory"), default=["dram", "memory"]
    )
    parser.add_argument(
        "--nvdimm-dir",
        type=Path,
        help="where the nvdimm's sparse file goes (e.g. /dev/shm: a tmpfs has no writeback)",
    )
    args = parser.parse_args(argv)
    modes: dict[str, Any] = {}
    for mode in args.modes:
        spec = dataclasses.replace(scale.spec(args.trace_kernel), nvdimm_dir=args.nvdimm_dir)
        try:
            result = run(spec, job(mode, spec.python), args.workdir / f"scale-profile-{mode}")
        except VMUnavailable as exc:
            print(f"scale_profile: {exc}", file=sys.stderr)
            return 3
        if result.exit_status != 0:
            print(f"scale_profile: {mode}: {result.describe()}", file=sys.stderr)
            return 1
        modes[mode] = {
            "boot_wall_seconds": result.seconds,
            "first_round": round_figures(result, mode, again=False),
            "second_round": round_figures(result, mode, again=True),
            "not_traceable": json.loads(result.step("profile_setup")["stdout"])["not_traceable"],
        }
    data = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "setup": {
            "machine": "vmtest/scale.py: 63 GiB boot RAM, 256 GiB nvdimm devdax, "
            "125 blocks of 2 GiB, TCG",
            "kernel": f"tracing build of the series (bench/trace.config): {args.trace_kernel}",
            "modes": "kmem memmap_on_memory off (dram) / on (memory), one boot each",
            "nvdimm_file_dir": str(args.nvdimm_dir or "the system's temporary directory"),
            "profiler": "ftrace function profiler around the online step; times include "
            "nested calls",
        },
        "modes": modes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    for mode, m in modes.items():
        for which in ("first_round", "second_round"):
            r = m[which]
            print(mode, which, f"online {r['online_seconds']:.1f} s")
            for f, v in r["functions"].items():
                print(f"  {f:28s} {v['calls']:7d} {v['ms']:10.1f} ms {v['share_of_online']:6.1%}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
