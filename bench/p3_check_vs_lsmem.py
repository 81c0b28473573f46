#!/usr/bin/env python3
"""P3: `pyshim check` over 8192 memory blocks (1 TiB at 128 MiB) against `lsmem -a`.

    python bench/p3_check_vs_lsmem.py [--reps 7] [--blocks 8192] [--keep DIR]

Builds a recorded-style tree in a temporary directory: node 0 has 64 boot blocks, node 1 a
CXL dax device (kmem, memmap on memory) with the rest, as the patched kernel shows it. Then
times, in the same run and interleaved, `python -m pyshim check --json --sysroot T` and
`lsmem -a --sysroot T` (util-linux), each process start included, and reports the median
wall times and their ratio (pyshim / lsmem; the target is <= 1.0) as JSON on stdout and in
bench/results/p3.json. Not a test: it fails only when a tool is missing or exits non-zero.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BLOCK = 128 << 20
PAGES_PER_BLOCK = BLOCK // 4096
MEMMAP_PAGES = BLOCK // 4096 * 64 // 4096
BOOT_BLOCKS = 64


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def link(root: Path, rel: str, target: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def build_tree(root: Path, nblocks: int) -> None:
    """The files the patched kernel shows for nblocks blocks (BOOT_BLOCKS of them boot)."""
    mem = "sys/devices/system/memory"
    write(root, f"{mem}/block_size_bytes", f"{BLOCK:x}\n")
    write(root, f"{mem}/auto_online_blocks", "offline\n")
    write(root, "sys/module/memory_hotplug/parameters/memmap_on_memory", "N\n")
    write(root, "sys/module/kmem/initstate", "live\n")
    write(root, "sys/module/kmem/parameters/memmap_on_memory", "on\n")
    write(root, "sys/bus/dax/drivers/kmem/memmap_on_memory", "on\n")
    (root / "sys/bus/dax/drivers/device_dax").mkdir(parents=True)
    write(root, "proc/sys/kernel/osrelease", "6.12.117-pyshim\n")
    dev_blocks = nblocks - BOOT_BLOCKS
    start = BOOT_BLOCKS * BLOCK
    dev_dir = "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region0/dax_region0/dax0.0"
    for name, value in (
        ("size", f"{dev_blocks * BLOCK}"),
        ("target_node", "1"),
        ("numa_node", "1"),
        ("align", f"{2 << 20}"),
        ("resource", f"{start:#x}"),
        ("memmap_on_memory", "1"),
        ("mapping0/start", f"{start:#x}"),
        ("mapping0/end", f"{start + dev_blocks * BLOCK - 1:#x}"),
    ):
        write(root, f"{dev_dir}/{name}", value + "\n")
    link(root, f"{dev_dir}/driver", "../../../../../../../../bus/dax/drivers/kmem")
    link(root, "sys/bus/dax/devices/dax0.0", f"../../../{dev_dir[4:]}")
    link(root, "sys/bus/dax/drivers/kmem/dax0.0", f"../../../../{dev_dir[4:]}")
    for index in range(nblocks):
        node = 0 if index < BOOT_BLOCKS else 1
        base = root / mem / f"memory{index}"
        base.mkdir(parents=True)
        for name, value in (
            ("state", "online"),
            ("online", "1"),
            ("phys_index", f"{index:08x}"),
            ("phys_device", "0"),
            ("removable", "1"),
            ("valid_zones", "Normal" if node == 0 else "Movable"),
            ("memmap_on_memory", "0" if node == 0 else "1"),
        ):
            (base / name).write_text(value + "\n")
        (base / f"node{node}").symlink_to(f"../../node/node{node}")
        link(
            root, f"sys/devices/system/node/node{node}/memory{index}", f"../../memory/memory{index}"
        )
    zoneinfo = []
    for node, count, memmap in ((0, BOOT_BLOCKS, 0), (1, dev_blocks, MEMMAP_PAGES)):
        present = count * PAGES_PER_BLOCK
        managed = present - count * memmap - (9728 if node == 0 else 0)
        write(
            root,
            f"sys/devices/system/node/node{node}/meminfo",
            f"Node {node} MemTotal:       {managed * 4} kB\n",
        )
        zone = "Normal" if node == 0 else "Movable"
        zoneinfo.append(
            f"Node {node}, zone {zone:>8}\n  pages free     0\n        present  {present}\n"
            f"        managed  {managed}\n"
        )
    write(root, "proc/zoneinfo", "".join(zoneinfo))
    write(root, "sys/devices/system/node/online", "0-1\n")


def time_once(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--blocks", type=int, default=8192)
    parser.add_argument("--keep", help="build the tree here and keep it")
    args = parser.parse_args()
    lsmem = shutil.which("lsmem")
    if lsmem is None:
        print("p3: lsmem not found: apt-get install util-linux", file=sys.stderr)
        return 3
    version = subprocess.run([lsmem, "--version"], capture_output=True, text=True).stdout.strip()
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    with tempfile.TemporaryDirectory(prefix="p3-") as tmp:
        root = Path(args.keep) if args.keep else Path(tmp) / "tree"
        if root.exists():
            shutil.rmtree(root)
        t0 = time.perf_counter()
        build_tree(root, args.blocks)
        build_s = time.perf_counter() - t0
        pyshim = [sys.executable, "-m", "pyshim", "check", "--json", "--sysroot", str(root)]
        lsmem_cmd = [lsmem, "-a", "--sysroot", str(root)]
        # warm the page cache and the interpreter's bytecode cache once, untimed
        time_once(pyshim, env)
        time_once(lsmem_cmd, env)
        py_times, ls_times = [], []
        for _ in range(args.reps):
            py_times.append(time_once(pyshim, env))
            ls_times.append(time_once(lsmem_cmd, env))
    py_med = statistics.median(py_times)
    ls_med = statistics.median(ls_times)
    result = {
        "benchmark": "P3 check vs lsmem -a",
        "memory_blocks": args.blocks,
        "block_size": BLOCK,
        "reps": args.reps,
        "pyshim_check_s": [round(t, 4) for t in py_times],
        "lsmem_s": [round(t, 4) for t in ls_times],
        "pyshim_check_median_s": round(py_med, 4),
        "lsmem_median_s": round(ls_med, 4),
        "ratio": round(py_med / ls_med, 3),
        "target": "<= 1.0",
        "tree_build_s": round(build_s, 2),
        "lsmem_version": version,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
    }
    text = json.dumps(result, indent=2) + "\n"
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    (results / "p3.json").write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
