#!/usr/bin/env python3
"""P3: `pyshim check` against `lsmem -a` on three machine sizes, and pyshim's start-up.

    python bench/p3_check_vs_lsmem.py [--reps 9] [--blocks 8192 32768] [--against REV]

The sizes: the tree recorded from the patched VM (31 blocks: the common case, where start-up
is everything), and recorded-style trees of 8192 and 32768 blocks of 128 MiB (1 and 4 TiB)
built in a temporary directory (node 0: 64 boot blocks; node 1: one CXL dax device, kmem,
memmap on memory, with the rest). On each, in the same run and interleaved,
`python -m pyshim check --json --sysroot T` and `lsmem -a --sysroot T` (util-linux), process
start included: median wall time, peak RSS (GNU time), and the ratios pyshim / lsmem (time
target <= 1.0).

Start-up: on the small tree the interpreter's own start (`python -c pass`, same interpreter
and environment) is the floor; `-X importtime` gives the import time of pyshim's modules and
of what they import. --against REV times pyshim as of another git revision in the same
rounds (a worktree of it), for before/after figures. Results go to stdout and
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
from collections.abc import Sequence
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


def run_once(argv: Sequence[str], env: dict[str, str]) -> float:
    """Wall time of one process, start to exit."""
    start = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()}")
    return elapsed


def peak_rss_kib(gnu_time: str, argv: Sequence[str], env: dict[str, str]) -> int:
    """Peak RSS of one process, measured by GNU time: its fork starts from GNU time's small
    image, where a child of this Python (vfork) would count this interpreter's pages."""
    with tempfile.NamedTemporaryFile("r", prefix="p3-rss-") as out:
        subprocess.run(
            [gnu_time, "-f", "%M", "-o", out.name, *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            check=True,
        )
        return int(out.read().split()[-1])


def import_times(argv: Sequence[str], env: dict[str, str]) -> dict[str, float]:
    """-X importtime of one run: pyshim's own modules, everything pyshim.cli pulls in, all."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv[1:]], capture_output=True, text=True, env=env
    )
    own = total = cli = 0
    for line in proc.stderr.splitlines():
        fields = line.removeprefix("import time:").split("|")
        if len(fields) != 3 or not fields[0].strip().isdigit():
            continue
        self_us, cumulative_us, name = int(fields[0]), int(fields[1]), fields[2].strip()
        total += self_us
        if name == "pyshim" or name.startswith("pyshim."):
            own += self_us
        if name == "pyshim.cli":
            cli = cumulative_us
    return {
        "pyshim_modules_ms": own / 1000,
        "pyshim_cli_cumulative_ms": cli / 1000,
        "all_imports_ms": total / 1000,
    }


def median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 4)


def summary(
    pyshim: list[float], lsmem: list[float], rss: tuple[list[int], list[int]]
) -> dict[str, object]:
    py_s, ls_s = statistics.median(pyshim), statistics.median(lsmem)
    py_rss, ls_rss = statistics.median(rss[0]), statistics.median(rss[1])
    return {
        "pyshim_check_s": [round(s, 4) for s in pyshim],
        "lsmem_s": [round(s, 4) for s in lsmem],
        "pyshim_check_median_s": round(py_s, 4),
        "lsmem_median_s": round(ls_s, 4),
        "time_ratio": round(py_s / ls_s, 3),
        "pyshim_peak_rss_kib": py_rss,
        "lsmem_peak_rss_kib": ls_rss,
        "rss_ratio": round(py_rss / ls_rss, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--blocks", type=int, nargs="*", default=[8192, 32768])
    parser.add_argument(
        "--against", metavar="REV", help="also time pyshim as of this git revision (A/B)"
    )
    args = parser.parse_args()
    lsmem = shutil.which("lsmem")
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    if lsmem is None or gnu_time is None:
        print("p3: lsmem or GNU time not found: apt-get install util-linux time", file=sys.stderr)
        return 3
    version = subprocess.run([lsmem, "--version"], capture_output=True, text=True).stdout.strip()
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(repo) + os.pathsep + env.get("PYTHONPATH", "")
    # an installed package has its bytecode compiled; without this, each run compiles pyshim
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with tempfile.TemporaryDirectory(prefix="p3-") as tmp:
        trees = {31: repo / "tests/unit/recorded/vm_patched_kmem_on"}
        build_s = {}
        for blocks in args.blocks:
            trees[blocks] = Path(tmp) / f"tree{blocks}"
            t0 = time.perf_counter()
            build_tree(trees[blocks], blocks)
            build_s[blocks] = round(time.perf_counter() - t0, 2)

        def pyshim(root: Path) -> list[str]:
            # -P: pyshim from PYTHONPATH, never from the current directory
            return [sys.executable, "-P", "-m", "pyshim", "check", "--json", "--sysroot", str(root)]

        def lsmem_cmd(root: Path) -> list[str]:
            return [lsmem, "-a", "--sysroot", str(root)]

        env_against = None
        if args.against:
            worktree = Path(tmp) / "against"
            git = ["git", "-C", str(repo)]
            subprocess.run([*git, "worktree", "add", "-q", "--detach", worktree, args.against],
                           check=True)  # fmt: skip
            env_against = dict(env, PYTHONPATH=str(worktree))
            for root in trees.values():
                run_once(pyshim(root), env_against)
        against: dict[int, list[float]] = {n: [] for n in trees}

        floor_cmd = [sys.executable, "-P", "-c", "pass"]
        version_cmd = [sys.executable, "-P", "-m", "pyshim", "--version"]
        # warm the page cache and the bytecode cache once, untimed
        for root in trees.values():
            run_once(pyshim(root), env)
            run_once(lsmem_cmd(root), env)
        samples: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in trees}
        rss: dict[int, tuple[list[int], list[int]]] = {n: ([], []) for n in trees}
        floor: list[float] = []
        version_only: list[float] = []
        imports: list[dict[str, float]] = []
        for _ in range(args.reps):
            floor.append(run_once(floor_cmd, env))
            version_only.append(run_once(version_cmd, env))
            imports.append(import_times(pyshim(trees[31]), env))
            for blocks, root in trees.items():
                samples[blocks][0].append(run_once(pyshim(root), env))
                samples[blocks][1].append(run_once(lsmem_cmd(root), env))
                if env_against:
                    against[blocks].append(run_once(pyshim(root), env_against))
        if args.against:
            subprocess.run([*git, "worktree", "remove", "--force", worktree], check=True)
        for _ in range(3):
            for blocks, root in trees.items():
                rss[blocks][0].append(peak_rss_kib(gnu_time, pyshim(root), env))
                rss[blocks][1].append(peak_rss_kib(gnu_time, lsmem_cmd(root), env))
    sizes = []
    for blocks in trees:
        entry: dict[str, object] = {"memory_blocks": blocks}
        entry["tree"] = "recorded VM tree" if blocks == 31 else "built, 128 MiB blocks"
        if blocks in build_s:
            entry["tree_build_s"] = build_s[blocks]
        entry.update(summary(*samples[blocks], rss[blocks]))
        if against[blocks]:
            entry[f"pyshim_check_median_s_at_{args.against}"] = median(against[blocks])
        sizes.append(entry)
    small_check = statistics.median(samples[31][0])
    floor_s = statistics.median(floor)
    result = {
        "benchmark": "P3 check vs lsmem -a, three sizes; pyshim start-up",
        "reps": args.reps,
        "sizes": sizes,
        "startup": {
            "python_c_pass_median_s": round(floor_s, 4),
            "pyshim_version_median_s": median(version_only),
            "pyshim_check_31_median_s": round(small_check, 4),
            "pyshim_over_interpreter_s": round(small_check - floor_s, 4),
            **(
                {
                    f"pyshim_over_interpreter_s_at_{args.against}": round(
                        median(against[31]) - floor_s, 4
                    )
                }
                if against[31]
                else {}
            ),
            **{k: median([i[k] for i in imports]) for k in imports[0]},
        },
        "target": "time_ratio <= 1.0",
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
