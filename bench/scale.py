"""Benchmark at the seed's own scale (issue 9, item 4): 256 GiB of dax memory in 2 GiB blocks,
the memmap on the memory (patched kernel, kmem `on`) against stock 6.12 with nothing set.

Two boots (vmtest/scale.py has the machine: 63 GiB of boot RAM, a 256 GiB nvdimm
on a sparse file deleted after each boot, 125 blocks of 2 GiB onlined). Per boot: what the
hot-plug node shows per block, where the page tables put every block's memmap, what DRAM
paid (all nodes with boot memory), what `pyshim plan` predicted for the device's size, and
the wall times. A boot whose figures contradict its placement stops the benchmark (the
same checks as tests/vm/test_vm_scale.py). Then (unless --once) a second round in the same
boot: offline + remove all, hot-add + online again, timed, with the witness on every block;
the first round pays the host's first touch of every page it writes (the memmap lands in
the nvdimm's sparse file with the memmap on memory, in anonymous boot RAM without), the
second does not. Not a test: the times are TCG emulation times.

    python bench/scale.py [--out bench/results/scale.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

from vmtest import scale
from vmtest.machine import VMUnavailable
from vmtest.runner import qemu_version, run
from vmtest.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scale.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/memmap-kmem-bench"))
    parser.add_argument(
        "--once", action="store_true", help="no second offline/remove + add/online round"
    )
    parser.add_argument(
        "--nvdimm-dir",
        type=Path,
        help="where the nvdimm's sparse file goes (e.g. /dev/shm: a tmpfs has no writeback)",
    )
    parser.add_argument("--kernel", help="patched image (default as the VM tests)")
    parser.add_argument("--stock-kernel", help="stock image (default as the VM tests)")
    args = parser.parse_args(argv)
    settings = Settings.from_env(kernel=args.kernel, stock_kernel=args.stock_kernel)
    kernels = {scale.Placed.MEMORY: settings.kernel, scale.Placed.DRAM: settings.stock_kernel}
    for kernel in kernels.values():
        missing = settings.missing(kernel)
        if missing:
            print(f"scale: {missing}", file=sys.stderr)
            return 3
    boots: dict[str, Any] = {}
    start = time.monotonic()
    for placed, kernel in kernels.items():
        spec = dataclasses.replace(
            scale.spec(kernel, qemu=settings.qemu), nvdimm_dir=args.nvdimm_dir
        )
        try:
            result = run(
                spec,
                scale.job(placed, spec.python, again=not args.once),
                args.workdir / f"scale-{placed.value}",
                echo=True,
            )
        except VMUnavailable as exc:
            print(f"scale: {exc}", file=sys.stderr)
            return 3
        if result.exit_status != 0:
            print(f"scale: {placed.value} boot failed: {result.describe()}", file=sys.stderr)
            return 1
        found = scale.figures(result, placed)
        problems = scale.problems(found)
        if problems:
            print(f"scale: {placed.value}: " + "; ".join(problems[:10]), file=sys.stderr)
            return 1
        boots[placed.value] = found.as_dict()
        if not args.once:
            boots[placed.value]["second_round"] = scale.second_round(result, placed)
    on, off = boots[scale.Placed.MEMORY.value], boots[scale.Placed.DRAM.value]
    data = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "setup": {
            "machine": "pc, TCG, 2 vCPUs; node 0: 63 GiB boot RAM (reserve=off, RAM to 64 GiB "
            "so 2 GiB memory blocks); node 1: 256 GiB QEMU nvdimm on a sparse file",
            "device": "ndctl create-namespace -m devdax (map=dev: the namespace keeps ~4 GiB "
            "for its own struct pages), hot-add + online through sysfs (online_movable)",
            "memory": f"patched kernel, kmem memmap_on_memory=on: {settings.kernel}",
            "dram": f"stock 6.12, nothing set: {settings.stock_kernel}",
            "qemu": ".".join(map(str, qemu_version(settings.qemu))),
            "dram_paid": "free memory (MemFree + per-CPU lists) dropped on every node with "
            "boot memory from before hot-add to after online",
            "plan": "python -m pyshim plan --capacity <daxX.Y size> --json, in the guest",
            "nvdimm_file_dir": str(args.nvdimm_dir or "the system's temporary directory"),
        },
        "summary": {
            "blocks": on["online_blocks"],
            "node_mib_per_block": {
                "memory": on["node_mib_per_block"],
                "dram": off["node_mib_per_block"],
            },
            "dram_paid_mib": {"memory": on["dram_paid_mib"], "dram": off["dram_paid_mib"]},
            "memmap_mib": on["memmap_mib"],
            "witness_blocks": {"memory": on["witness_blocks"], "dram": off["witness_blocks"]},
            "plan_dram_mib_without": on["plan"]["dram_mib_without"],
            "plan_usable_mib_with": on["plan"]["usable_mib_with"],
            "measured_usable_mib_with": on["node_memtotal_kb"] / 1024,
            "boot_wall_seconds": {
                "memory": on["seconds"]["boot_wall"],
                "dram": off["seconds"]["boot_wall"],
            },
            "online_seconds": {"memory": on["seconds"]["online"], "dram": off["seconds"]["online"]},
            "online_seconds_second_round": {
                k: b["second_round"]["seconds"]["online"]
                for k, b in boots.items()
                if "second_round" in b
            },
            "total_wall_seconds": time.monotonic() - start,
        },
        "boots": boots,
        "note": "one boot per placement: the times are single TCG samples beside whatever "
        "else the host runs; bench/p2_phases.py measures the time ratio properly",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data["summary"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
