"""Races and faults around kmem's hot-add, run as root in the test guest (issue 7, item 6).

    stress.py race --writes 1000       writers of the kmem setting against bind/unbind loops
    stress.py faults                   failslab / fail_page_alloc inside kmem's hot-add
    stress.py pressure --cycles 100    online/offline/remove while a process fills the node

Each prints one JSON object on stdout: the figures and a list of "problems" (empty when every
check held). The host test asserts on them and on the kernel log (no splat, kmemleak clean).
Devices are the dax devices that kmem bound at start (the hmem source, split in two ranges).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

DAX = Path("/sys/bus/dax")
KMEM = DAX / "drivers" / "kmem"
MEMORY = Path("/sys/devices/system/memory")
NODE = Path("/sys/devices/system/node")
DEBUGFS = Path("/sys/kernel/debug")
SYS_SET_MEMPOLICY = 238  # x86_64
MPOL_BIND = 2


def write(path: Path, data: str) -> int | None:
    """One write(2); the errno it failed with, or None."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return exc.errno
    try:
        os.write(fd, data.encode())
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)
    return None


def read(path: Path) -> str:
    return path.read_text().strip()


def block_bytes() -> int:
    return int(read(MEMORY / "block_size_bytes"), 16)


def device_blocks(dev: str) -> list[int]:
    """The blocks kmem adds for dev: its range aligned inward to memory blocks."""
    start = int(read(DAX / "devices" / dev / "resource"), 16)
    size = int(read(DAX / "devices" / dev / "size"))
    block = block_bytes()
    first = (start + block - 1) // block
    last = (start + size) // block - 1
    return list(range(first, last + 1))


def driver_of(dev: str) -> str:
    link = DAX / "devices" / dev / "driver"
    return os.path.basename(os.readlink(link)) if link.exists() else ""


def block_attrs(blocks: list[int]) -> list[int | None]:
    out: list[int | None] = []
    for b in blocks:
        path = MEMORY / f"memory{b}" / "memmap_on_memory"
        out.append(int(read(path)) if path.exists() else None)
    return out


def node_memtotal_kb(node: int) -> int:
    meminfo = NODE / f"node{node}" / "meminfo"
    if not meminfo.exists():
        return 0
    for line in meminfo.read_text().splitlines():
        if "MemTotal:" in line:
            return int(line.split()[3])
    return 0


def expected_memtotal_kb(blocks: int, on_memory: bool) -> int:
    """Blocks x block size, less the memmap (1/64 of the block) when it lives on the block."""
    block_kb = block_bytes() // 1024
    return blocks * (block_kb - block_kb // 64 if on_memory else block_kb)


def online(blocks: list[int]) -> list[str]:
    problems = []
    for b in blocks:
        err = write(MEMORY / f"memory{b}" / "state", "online_movable")
        if err is not None:
            problems.append(f"online memory{b}: {errno.errorcode.get(err, err)}")
    return problems


def release(dev: str) -> list[str]:
    """Offline dev's memory and unbind it from kmem, which removes the memory."""
    problems = []
    for b in device_blocks(dev):
        state = MEMORY / f"memory{b}" / "state"
        if state.exists() and read(state) != "offline":
            err = write(state, "offline")
            if err is not None:
                problems.append(f"offline memory{b}: {errno.errorcode.get(err, err)}")
    if driver_of(dev) == "kmem":
        err = write(KMEM / "unbind", dev)
        if err is not None:
            problems.append(f"unbind {dev}: {errno.errorcode.get(err, err)}")
    left = [b for b in device_blocks(dev) if (MEMORY / f"memory{b}").exists()]
    if left:
        problems.append(f"{dev}: blocks {left} still present after unbind")
    return problems


def kmem_devices() -> list[str]:
    return sorted(d.name for d in (DAX / "devices").iterdir() if driver_of(d.name) == "kmem")


def race(args: argparse.Namespace) -> dict[str, Any]:
    devices = kmem_devices()
    problems: list[str] = []
    if len(devices) < 2:
        problems.append(f"need two dax devices bound to kmem, found {devices}")
        return {"problems": problems}
    for dev in devices:
        problems += release(dev)
    baseline = node_memtotal_kb(args.node)
    # The writer holds the lock across each write(2): a binder's two snapshots with the same
    # count prove that no write happened in between, so the setting its probe read is known.
    lock = threading.Lock()
    state = {"writes": 0, "value": read(KMEM / "memmap_on_memory"), "done": False}
    binds: list[dict[str, Any]] = []

    def writer() -> None:
        for i in range(args.writes):
            value = "on" if i % 2 == 0 else "off"
            with lock:
                err = write(KMEM / "memmap_on_memory", value)
                if err is not None:
                    problems.append(f"write {value}: {errno.errorcode.get(err, err)}")
                else:
                    state["value"] = value
                    state["writes"] += 1
            # Bursts of writes with quiet gaps: binds inside a gap read a known setting.
            time.sleep(args.gap if i % args.burst == args.burst - 1 else args.pause)
        state["done"] = True

    def binder(dev: str) -> None:
        blocks = device_blocks(dev)
        while not state["done"]:
            with lock:
                before = (state["writes"], state["value"])
            err = write(KMEM / "bind", dev)
            with lock:
                after = state["writes"]
            record: dict[str, Any] = {"dev": dev, "err": err, "attrs": block_attrs(blocks)}
            record["exact"] = before[0] == after
            record["setting"] = before[1] if record["exact"] else None
            binds.append(record)
            problems.extend(release(dev))

    threads = [threading.Thread(target=writer)]
    threads += [threading.Thread(target=binder, args=(dev,)) for dev in devices]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - start
    for b in binds:
        attrs = b["attrs"]
        if b["err"] is not None:
            problems.append(f"bind {b['dev']}: {errno.errorcode.get(b['err'], b['err'])}")
        elif None in attrs or len(set(attrs)) != 1:
            problems.append(f"bind {b['dev']}: blocks disagree {attrs}")
        elif b["exact"] and attrs[0] != (1 if b["setting"] == "on" else 0):
            problems.append(f"bind {b['dev']} under {b['setting']}: blocks say {attrs[0]}")
    # Node accounting once both are bound and online, under a known setting.
    write(KMEM / "memmap_on_memory", "on")
    blocks = 0
    for dev in devices:
        if write(KMEM / "bind", dev) is not None:
            problems.append(f"final bind {dev} failed")
        problems += online(device_blocks(dev))
        blocks += len(device_blocks(dev))
    total = node_memtotal_kb(args.node) - baseline
    if total != expected_memtotal_kb(blocks, True):
        problems.append(f"node {args.node} MemTotal +{total} kB for {blocks} blocks on memory")
    for dev in devices:
        problems += release(dev)
    if node_memtotal_kb(args.node) != baseline:
        problems.append(f"node {args.node} MemTotal {node_memtotal_kb(args.node)} != {baseline}")
    return {
        "writes": state["writes"],
        "binds": len(binds),
        "exact_binds": sum(1 for b in binds if b["exact"]),
        "binds_on_memory": sum(1 for b in binds if b["attrs"] and b["attrs"][0] == 1),
        "exact_on_memory": sum(1 for b in binds if b["exact"] and b["setting"] == "on"),
        "seconds": round(seconds, 1),
        "problems": problems,
    }


def configure_fault(name: str, space: int) -> None:
    """Fail the first allocation after `space` bytes, once, only in tasks marked make-it-fail."""
    base = DEBUGFS / name
    settings = {
        "task-filter": "Y",
        "probability": "100",
        "interval": "1",
        "times": "1",
        "space": str(space),
        "verbose": "0",
        "ignore-gfp-wait": "N",
    }
    if name == "fail_page_alloc":
        settings.update({"ignore-gfp-highmem": "N", "min-order": "0"})
    for key, value in settings.items():
        write(base / key, value)


def disarm_fault(name: str) -> None:
    write(DEBUGFS / name / "probability", "0")
    write(DEBUGFS / name / "times", "0")


def bind_with_fault(dev: str) -> int | None:
    """Bind dev to kmem with this thread marked make-it-fail only around the write(2), so
    that injected failures land in the probe and its hot-add, not in opening files."""
    bind_fd = os.open(KMEM / "bind", os.O_WRONLY)
    mark_fd = os.open("/proc/thread-self/make-it-fail", os.O_WRONLY)
    try:
        os.write(mark_fd, b"1")
        try:
            os.write(bind_fd, dev.encode())
            err = None
        except OSError as exc:
            err = exc.errno
        os.lseek(mark_fd, 0, os.SEEK_SET)
        os.write(mark_fd, b"0")
    finally:
        os.close(mark_fd)
        os.close(bind_fd)
    return err


def faults(args: argparse.Namespace) -> dict[str, Any]:
    """Inject into the probe of the second device while the first stays bound: the direct
    map of the shared 1 GiB range then needs no new page table. (On x86, a failed page
    table allocation for the direct map is a NULL dereference in phys_pmd_init() since
    long before this series: kernel_physical_mapping_init() does not check
    alloc_low_page() after boot.)"""
    problems: list[str] = []
    devices = kmem_devices()
    if len(devices) < 2:
        return {"problems": [f"need two dax devices bound to kmem, found {devices}"]}
    anchor, dev = devices
    problems += release(dev)
    blocks = device_blocks(dev)
    baseline = node_memtotal_kb(args.node)
    write(KMEM / "memmap_on_memory", "on")
    attempts = injected = failed_binds = 0
    for name in ("failslab", "fail_page_alloc"):
        if not (DEBUGFS / name).is_dir():
            problems.append(f"{DEBUGFS / name} missing (CONFIG_FAULT_INJECTION_DEBUG_FS)")
            continue
        for space in args.spaces:
            configure_fault(name, space)
            err = bind_with_fault(dev)
            hit = read(DEBUGFS / name / "times") == "0"
            disarm_fault(name)
            attempts += 1
            injected += hit
            if err is not None:
                failed_binds += 1
                if driver_of(dev) == "kmem":
                    problems.append(f"{name} space {space}: bind failed but {dev} is on kmem")
                left = [b for b in blocks if (MEMORY / f"memory{b}").exists()]
                if left:
                    problems.append(f"{name} space {space}: failed probe left blocks {left}")
            else:
                attrs = block_attrs(blocks)
                if attrs != [1] * len(blocks):
                    problems.append(f"{name} space {space}: bound with blocks {attrs}")
                problems += release(dev)
            if node_memtotal_kb(args.node) != baseline:
                problems.append(f"{name} space {space}: node MemTotal changed")
    # Injection stopped: the device binds normally, memmap on its memory.
    if write(KMEM / "bind", dev) is not None:
        problems.append("bind after the faults failed")
    problems += online(blocks)
    if block_attrs(blocks) != [1] * len(blocks):
        problems.append(f"after the faults: blocks {block_attrs(blocks)}")
    total = node_memtotal_kb(args.node) - baseline
    if total != expected_memtotal_kb(len(blocks), True):
        problems.append(f"after the faults: node MemTotal +{total} kB for {len(blocks)} blocks")
    problems += release(dev)
    problems += release(anchor)
    return {
        "attempts": attempts,
        "injected": injected,
        "failed_binds": failed_binds,
        "problems": problems,
    }


def hog(node: int, size: int, ready: int) -> None:
    """Child: bind to node, fault in size bytes, tell the parent, wait to be killed."""
    mask = ctypes.c_ulong(1 << node)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(SYS_SET_MEMPOLICY, MPOL_BIND, ctypes.byref(mask), 64) != 0:
        os.write(ready, b"E")
        os._exit(1)
    area = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        area[offset] = 1
    os.write(ready, b"R")
    signal.pause()


def pressure(args: argparse.Namespace) -> dict[str, Any]:
    problems: list[str] = []
    devices = kmem_devices()
    if not devices:
        return {"problems": ["no dax device bound to kmem"]}
    dev = devices[0]
    for d in devices:
        problems += release(d)
    blocks = device_blocks(dev)
    baseline = node_memtotal_kb(args.node)
    write(KMEM / "memmap_on_memory", "on")
    expected = expected_memtotal_kb(len(blocks), True)
    hogged: list[int] = []
    start = time.monotonic()
    for cycle in range(args.cycles):
        if write(KMEM / "bind", dev) is not None:
            problems.append(f"cycle {cycle}: bind failed")
            break
        problems += online(blocks)
        if block_attrs(blocks) != [1] * len(blocks):
            problems.append(f"cycle {cycle}: blocks {block_attrs(blocks)}")
        total = node_memtotal_kb(args.node) - baseline
        if total != expected:
            problems.append(f"cycle {cycle}: node MemTotal +{total} kB, expected {expected}")
        size = int(total * 1024 * args.fill) & ~(mmap.PAGESIZE - 1)
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(ready_r)
            hog(args.node, size, ready_w)
        os.close(ready_w)
        status = os.read(ready_r, 1)
        os.close(ready_r)
        if status != b"R":
            problems.append(f"cycle {cycle}: the memory hog could not bind to node {args.node}")
        hogged.append(size // (1 << 20))
        problems += release(dev)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        left = node_memtotal_kb(args.node)
        if left != baseline:
            problems.append(f"cycle {cycle}: node MemTotal {left} kB after remove, not {baseline}")
        if problems:
            break
    return {
        "cycles": args.cycles,
        "hogged_mib": hogged[:1] + hogged[-1:],
        "seconds": round(time.monotonic() - start, 1),
        "problems": problems,
    }


def mount_debugfs() -> None:
    if not (DEBUGFS / "failslab").exists() and not os.path.ismount(DEBUGFS):
        subprocess.run(["mount", "-t", "debugfs", "debugfs", str(DEBUGFS)], check=False)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node", type=int, default=1, help="the hot-plug node")
    sub = parser.add_subparsers(dest="command", required=True)
    race_p = sub.add_parser("race")
    race_p.add_argument("--writes", type=int, default=1000)
    race_p.add_argument("--pause", type=float, default=0.005, help="seconds between writes")
    # An odd burst ends on "on" and "off" in turn, so the gaps see both settings.
    race_p.add_argument("--burst", type=int, default=5, help="writes between quiet gaps")
    race_p.add_argument("--gap", type=float, default=0.5, help="seconds of each quiet gap")
    faults_p = sub.add_parser("faults")
    faults_p.add_argument(
        "--spaces",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[0, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536],
        help="allocation budgets before the injected failure (bytes)",
    )
    pressure_p = sub.add_parser("pressure")
    pressure_p.add_argument("--cycles", type=int, default=100)
    pressure_p.add_argument("--fill", type=float, default=0.75, help="share of the node to use")
    args = parser.parse_args(argv)
    if args.command == "race":
        out = race(args)
    elif args.command == "faults":
        mount_debugfs()
        out = faults(args)
    else:
        out = pressure(args)
    print(json.dumps(out))
    return 1 if out["problems"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
