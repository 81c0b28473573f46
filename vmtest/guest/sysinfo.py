"""Guest-side readings of memory placement: what the host's assertions are made from.

Standard library only, except for the placement witness, which is pyshim.witness itself
(imported from the checkout; see memmap_witness). Every figure comes straight from the
kernel's files or page tables; nothing is judged here (the host does that, see
vmtest/placement.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path
from typing import Any

KMEM_ATTR = "/sys/bus/dax/drivers/kmem/memmap_on_memory"
GLOBAL_PARAM = "/sys/module/memory_hotplug/parameters/memmap_on_memory"
MEMORY = Path("/sys/devices/system/memory")
NODES = Path("/sys/devices/system/node")
DAX = Path("/sys/bus/dax/devices")


def read(path: Path | str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def write_sysfs(path: str, value: str, *, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as handle:
            handle.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise
    except OSError as exc:
        # new_id/remove_id answer EEXIST/ENODEV when the id is already (not) there.
        if not (missing_ok and exc.errno in (17, 19)):
            raise OSError(exc.errno, f"{exc.strerror} writing {value!r}", path) from None


def drop_caches() -> None:
    os.sync()
    with contextlib.suppress(OSError):
        write_sysfs("/proc/sys/vm/drop_caches", "3")


def node_meminfo(node: int) -> dict[str, int]:
    out: dict[str, int] = {}
    text = read(NODES / f"node{node}" / "meminfo") or ""
    for line in text.splitlines():
        match = re.match(r"Node \d+ (\S+):\s+(\d+)", line)
        if match:
            out[match.group(1)] = int(match.group(2))
    return out


def nodes() -> list[int]:
    return sorted(int(p.name[4:]) for p in NODES.glob("node[0-9]*"))


def zoneinfo() -> list[dict[str, Any]]:
    zones: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for line in (read("/proc/zoneinfo") or "").splitlines():
        head = re.match(r"Node (\d+), zone\s+(\S+)", line)
        if head:
            current = {"node": int(head.group(1)), "zone": head.group(2)}
            zones.append(current)
            continue
        if current is None:
            continue
        field = re.match(r"\s+(present|managed|spanned)\s+(\d+)$", line)
        if field:
            current[field.group(1)] = int(field.group(2))
        elif free := re.match(r"\s+pages free\s+(\d+)$", line):
            current["free"] = int(free.group(1))
        elif pcp := re.match(r"\s+count:\s+(\d+)$", line):
            # Free pages parked on per-CPU lists: not in MemFree, drained at odd times.
            current["pcp"] = current.get("pcp", 0) + int(pcp.group(1))
    return zones


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (read("/proc/meminfo") or "").splitlines():
        match = re.match(r"(\S+):\s+(\d+)", line)
        if match:
            out[match.group(1)] = int(match.group(2))
    return out


def vmstat() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (read("/proc/vmstat") or "").splitlines():
        name, _, value = line.partition(" ")
        if name.startswith(("nr_memmap", "nr_free_pages")):
            out[name] = int(value)
    return out


def block_size() -> int:
    return int(read(MEMORY / "block_size_bytes") or "0", 16)


def blocks() -> list[dict[str, Any]]:
    out = []
    for path in MEMORY.glob("memory[0-9]*"):
        node = next((int(p.name[4:]) for p in path.glob("node[0-9]*")), None)
        attr = read(path / "memmap_on_memory")
        out.append(
            {
                "id": int(path.name[6:]),
                "node": node,
                "state": read(path / "state"),
                "memmap_on_memory": None if attr is None else int(attr),
                "valid_zones": read(path / "valid_zones"),
            }
        )
    return sorted(out, key=lambda b: b["id"])


def dax_driver(device: str) -> str | None:
    link = DAX / device / "driver"
    return os.path.basename(os.readlink(link)) if link.is_symlink() else None


def dax_resource(device: str) -> tuple[int, int] | None:
    """(start, size) of the device's range, from its mapping files or its resource."""
    start = read(DAX / device / "resource")
    size = read(DAX / device / "size")
    if start is None or size is None:
        return None
    return int(start, 16), int(size)


def dax_blocks(device: str) -> list[int]:
    """Memory block ids that lie entirely inside the device's range (what kmem hot-adds)."""
    span = dax_resource(device)
    if span is None:
        return []
    bsize = block_size()
    first = -(-span[0] // bsize)
    last = (span[0] + span[1]) // bsize
    return [b for b in range(first, last) if (MEMORY / f"memory{b}").exists()]


def dax_devices() -> list[dict[str, Any]]:
    out = []
    for path in sorted(DAX.glob("dax*")):
        attr = read(path / "memmap_on_memory")
        span = dax_resource(path.name)
        out.append(
            {
                "name": path.name,
                "driver": dax_driver(path.name),
                "target_node": int(read(path / "target_node") or "-1"),
                "numa_node": int(read(path / "numa_node") or "-1"),
                "memmap_on_memory": None if attr is None else int(attr),
                # daxX.Y/state of a kmem-bound device (7.x); None where the kernel has none
                "state": read(path / "state"),
                "start": None if span is None else span[0],
                "size": None if span is None else span[1],
                "blocks": dax_blocks(path.name),
            }
        )
    return out


def hotplugged_blocks() -> list[int]:
    """The memory blocks that dax devices hot-added: those inside a dax device's range (kmem
    adds whole blocks of it). Every other block is boot memory."""
    return sorted({b for path in DAX.glob("dax*") for b in dax_blocks(path.name)})


def memmap_witness(repo: str | None, blocks: list[int]) -> dict[str, Any]:
    """Where the memmap of each of `blocks` physically is, from the kernel's page tables:
    pyshim.witness's own functions, imported from the checkout (`repo`, shared read-only
    from the host) as `python -m pyshim` would run it there. Never raises: a kernel without
    /proc/kcore or VMCOREINFO gives {"error": why}, which the host's placement checks
    report when they need the witness."""
    if repo is None:
        return {"error": "no repository path in the job: pyshim cannot be imported"}
    if repo not in sys.path:
        sys.path.insert(0, repo)
    try:
        from pyshim import witness
        from pyshim.kernel import Sysfs

        layout, found = witness.witness_blocks(Sysfs("/"), blocks, set(blocks))
    except Exception as exc:  # the host reports it; a snapshot must not stop the job
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "layout": {
            "levels": layout.levels,
            "vmemmap_base": layout.vmemmap_base,
            "page_offset": layout.page_offset,
            "struct_page_size": layout.struct_page_size,
        },
        "blocks": {
            str(w.memory): {
                "placement": w.placement.value,
                "nodes": list(w.nodes),
                "extents": [list(e) for e in w.extents],
                "page_sizes": list(w.page_sizes),
                "detail": w.detail,
            }
            for w in found.values()
        },
    }


def snapshot_nodes() -> dict[str, Any]:
    """The cheap part of a snapshot (per-node meminfo and zoneinfo), for loops."""
    return {
        "nodes": {str(n): node_meminfo(n) for n in nodes()},
        "zoneinfo": zoneinfo(),
    }


def snapshot_placement(repo: str | None) -> dict[str, Any]:
    """Per block: its node, state and attribute, which blocks dax hot-added, and the witness
    for each of those."""
    hotplugged = hotplugged_blocks()
    return {
        "block_size": block_size(),
        "blocks": blocks(),
        "hotplugged": hotplugged,
        "witness": memmap_witness(repo, hotplugged),
    }


def snapshot(repo: str | None = None) -> dict[str, Any]:
    snap = snapshot_nodes()
    snap.update(snapshot_placement(repo))
    snap.update(
        meminfo=meminfo(),
        vmstat=vmstat(),
        dax=dax_devices(),
        kmem_setting=read(KMEM_ATTR),
        kmem_param=read("/sys/module/kmem/parameters/memmap_on_memory"),
        global_param=read(GLOBAL_PARAM),
        auto_online=read(MEMORY / "auto_online_blocks"),
    )
    return snap


def dmesg() -> str:
    """The whole kernel log ring, read non-blockingly from /dev/kmsg."""
    lines = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # EPIPE: records overwritten while reading; go on
                continue
            if not record:
                break
            header, _, message = record.decode(errors="replace").partition(";")
            fields = header.split(",")
            stamp = int(fields[2]) / 1e6 if len(fields) > 2 else 0.0
            text = message.split("\n", 1)[0]
            lines.append(f"[{stamp:12.6f}] {text}")
    finally:
        os.close(fd)
    return "\n".join(lines)
