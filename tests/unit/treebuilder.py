"""Builds the hand-made sysfs/procfs trees under tests/unit/trees/ (one function per tree).

The trees are committed; this file documents how each was made and regenerates them:

    python tests/unit/treebuilder.py            # rewrite tests/unit/trees/*

Layouts follow what 6.12 shows (paths, file formats, relative symlinks); the patched kernel
adds sys/bus/dax/drivers/kmem/memmap_on_memory and memoryN/memmap_on_memory. The v73_* trees
add what Linux 7.3 shows besides: daxX.Y/state, one of kmem's device attributes, so only on
devices bound to kmem (drivers/dax/kmem.c, dev_dax_kmem_groups).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20
GIB = 1 << 30
PAGE = 4096

REGION_DIRS = {
    "cxl": "sys/devices/platform/ACPI0017:00/root0/decoder0.0/region{r}/dax_region{r}",
    "hmem": "sys/devices/platform/hmem.{r}",
    "pmem": "sys/devices/platform/e820_pmem/ndbus0/region{r}/dax{r}.0",
}


@dataclass
class Block:
    node: int
    state: str
    mom: bool
    zone: str


@dataclass
class Tree:
    root: Path
    block_size: int = 128 * MIB
    patched: bool = True
    kmem: str | None = "on"
    global_mode: str | None = "N"
    kmem_kind: str = "module"  # module | builtin
    release: str = "6.12.117-pyshim"
    blocks: dict[int, Block] = field(default_factory=dict)
    nodes: set[int] = field(default_factory=set)
    reserved: dict[int, int] = field(default_factory=dict)  # node -> pages reserved at boot
    accounting_override: dict[int, tuple[int, int, int]] = field(default_factory=dict)

    # --- primitives ------------------------------------------------------------------------

    def file(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def link(self, rel: str, target_rel: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(self.root / target_rel, path.parent)
        if path.is_symlink():
            path.unlink()
        path.symlink_to(target)

    # --- content ---------------------------------------------------------------------------

    @property
    def memmap_pages(self) -> int:
        return self.block_size // PAGE * 64 // PAGE

    def boot(self, node: int, first: int, count: int, reserved_pages: int = 9728) -> None:
        self.nodes.add(node)
        self.reserved[node] = reserved_pages
        for i in range(first, first + count):
            self.blocks[i] = Block(node, "online", False, "Normal")

    def dax(
        self,
        name: str,
        region: str,
        node: int,
        start: int,
        nblocks: int,
        driver: str | None = "kmem",
        attr: bool | None = None,
        moms: list[bool] | bool = True,
        state: str = "online",
        zone: str = "Movable",
        files: bool = True,
        dax_state: str | None = None,
    ) -> None:
        """One dax device; dax_state writes daxX.Y/state (7.3, kmem only), and "unplugged"
        leaves the device without memory blocks, as kmem's hot-remove does."""
        self.nodes.add(node)
        region_id = int(name[3:].split(".")[0])
        dev_dir = REGION_DIRS[region].format(r=region_id) + f"/{name}"
        self.link(f"sys/bus/dax/devices/{name}", dev_dir)
        (self.root / dev_dir).mkdir(parents=True, exist_ok=True)
        size = nblocks * self.block_size
        if attr is None:
            attr = region == "cxl"
        if files:
            self.file(f"{dev_dir}/size", f"{size}\n")
            self.file(f"{dev_dir}/target_node", f"{node}\n")
            self.file(f"{dev_dir}/numa_node", f"{node}\n")
            self.file(f"{dev_dir}/align", f"{2 * MIB}\n")
            self.file(f"{dev_dir}/resource", f"{start:#x}\n")
            self.file(f"{dev_dir}/memmap_on_memory", f"{int(attr)}\n")
            self.file(f"{dev_dir}/mapping0/start", f"{start:#x}\n")
            self.file(f"{dev_dir}/mapping0/end", f"{start + size - 1:#x}\n")
            self.file(f"{dev_dir}/mapping0/page_offset", "0x0\n")
        if driver is not None:
            self.link(f"{dev_dir}/driver", f"sys/bus/dax/drivers/{driver}")
            self.link(f"sys/bus/dax/drivers/{driver}/{name}", dev_dir)
        if driver != "kmem":
            return
        if dax_state is not None:
            self.file(f"{dev_dir}/state", f"{dax_state}\n")
        if dax_state == "unplugged":
            return
        first = start // self.block_size
        values = moms if isinstance(moms, list) else [moms] * nblocks
        for i, mom in enumerate(values):
            self.blocks[first + i] = Block(node, state, mom, zone)

    # --- output ----------------------------------------------------------------------------

    def finish(self) -> None:
        """Write everything that depends on all devices and blocks being known."""
        mem = "sys/devices/system/memory"
        self.file(f"{mem}/block_size_bytes", f"{self.block_size:x}\n")
        self.file(f"{mem}/auto_online_blocks", "offline\n")
        for drv in ("kmem", "device_dax"):
            (self.root / f"sys/bus/dax/drivers/{drv}").mkdir(parents=True, exist_ok=True)
        if self.patched and self.kmem is not None:
            self.file("sys/bus/dax/drivers/kmem/memmap_on_memory", f"{self.kmem}\n")
        if self.global_mode is not None:
            self.file(
                "sys/module/memory_hotplug/parameters/memmap_on_memory", f"{self.global_mode}\n"
            )
        (self.root / "sys/module/kmem").mkdir(parents=True, exist_ok=True)
        if self.kmem_kind == "module":
            self.file("sys/module/kmem/initstate", "live\n")
        if self.patched and self.kmem is not None:
            self.file("sys/module/kmem/parameters/memmap_on_memory", f"{self.kmem}\n")
        self.file("proc/sys/kernel/osrelease", f"{self.release}\n")
        for index, blk in sorted(self.blocks.items()):
            base = f"{mem}/memory{index}"
            self.file(f"{base}/state", f"{blk.state}\n")
            self.file(f"{base}/online", f"{int(blk.state == 'online')}\n")
            self.file(f"{base}/phys_index", f"{index:08x}\n")
            self.file(f"{base}/phys_device", "0\n")
            self.file(f"{base}/removable", "1\n")
            zones = blk.zone if blk.state == "online" else "Movable Normal"
            self.file(f"{base}/valid_zones", f"{zones}\n")
            if self.patched:
                self.file(f"{base}/memmap_on_memory", f"{int(blk.mom)}\n")
            self.link(f"{base}/node{blk.node}", f"sys/devices/system/node/node{blk.node}")
            self.link(f"sys/devices/system/node/node{blk.node}/memory{index}", base)
        nodes = sorted(self.nodes)
        self.file("sys/devices/system/node/online", ",".join(map(str, nodes)) + "\n")
        zoneinfo: list[str] = []
        total_kb = 0
        for node in nodes:
            (self.root / f"sys/devices/system/node/node{node}").mkdir(parents=True, exist_ok=True)
            zones: dict[str, list[int]] = {}
            for blk in self.blocks.values():
                if blk.node != node:
                    continue
                entry = zones.setdefault(blk.zone, [0, 0])
                if blk.state != "online":
                    continue
                entry[0] += self.block_size // PAGE
                entry[1] += self.block_size // PAGE - (self.memmap_pages if blk.mom else 0)
            if not zones:
                zones["Normal"] = [0, 0]
            reserved = self.reserved.get(node, 0)
            first_zone = sorted(zones)[-1] if "Normal" not in zones else "Normal"
            zones[first_zone][1] -= reserved
            present = sum(z[0] for z in zones.values())
            managed = sum(z[1] for z in zones.values())
            memtotal = managed * 4
            if node in self.accounting_override:
                present, managed, memtotal = self.accounting_override[node]
                zones = {first_zone: [present, managed]}
            total_kb += memtotal
            self.file(
                f"sys/devices/system/node/node{node}/meminfo",
                f"Node {node} MemTotal:       {memtotal} kB\n"
                f"Node {node} MemFree:        {memtotal // 2} kB\n"
                f"Node {node} MemUsed:        {memtotal - memtotal // 2} kB\n"
                f"Node {node} HugePages_Total:     0\n",
            )
            for zone_name in sorted(zones):
                zp, zm = zones[zone_name]
                zoneinfo.append(
                    f"Node {node}, zone {zone_name:>8}\n"
                    "  per-node stats\n"
                    "      nr_inactive_anon 0\n"
                    f"  pages free     {zm // 2}\n"
                    "        boost    0\n"
                    "        min      33\n"
                    f"        spanned  {zp}\n"
                    f"        present  {zp}\n"
                    f"        managed  {zm}\n"
                    "        cma      0\n"
                    "        protection: (0, 0, 0, 0)\n"
                    "  pagesets\n"
                    "    cpu: 0\n"
                    "              count: 0\n"
                    "  node_unreclaimable:  0\n"
                    "  start_pfn:           0\n"
                )
        self.file("proc/zoneinfo", "".join(zoneinfo))
        self.file("proc/meminfo", f"MemTotal:       {total_kb} kB\nMemFree:        0 kB\n")


# --- the trees -------------------------------------------------------------------------------


def patched_on(root: Path) -> Tree:
    """Patched kernel, kmem on, a CXL device whose 4 blocks have their memmap on memory."""
    t = Tree(root, kmem="on", global_mode="N")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "cxl", 1, 4 * GIB, 4)
    return t


def stock(root: Path) -> Tree:
    """Stock 6.12: neither the kmem attribute nor memoryN/memmap_on_memory."""
    t = Tree(root, patched=False, kmem=None, global_mode="N")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "hmem", 1, 4 * GIB, 4, moms=False)
    return t


def devdax(root: Path) -> Tree:
    """A device bound to device_dax (no memory blocks) and a node without memory."""
    t = Tree(root, kmem="on")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "hmem", 1, 4 * GIB, 4, driver="device_dax")
    return t


def mixed(root: Path) -> Tree:
    """kmem global + global Y: a CXL device on memory and an hmem device in DRAM, one node."""
    t = Tree(root, kmem="global", global_mode="Y")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "cxl", 1, 4 * GIB, 4, moms=True)
    t.dax("dax1.0", "hmem", 1, 5 * GIB, 4, moms=False)
    return t


def mixed_device(root: Path) -> Tree:
    """One device whose blocks disagree: inconsistent."""
    t = Tree(root, kmem="on")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "cxl", 1, 4 * GIB, 4, moms=[True, True, False, False])
    return t


def stale(root: Path) -> Tree:
    """kmem on now, but the hmem device was onlined before: memmap in DRAM (stale)."""
    t = Tree(root, kmem="on")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "hmem", 1, 4 * GIB, 4, moms=False)
    return t


def boot_node(root: Path) -> Tree:
    """Device memory on node 0, which also has boot memory: no node cross-check there."""
    t = Tree(root, kmem="on")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "hmem", 0, 4 * GIB, 4, moms=True, zone="Normal")
    return t


def vanishing(root: Path) -> Tree:
    """dax1.0 is listed but its files are gone (unbound mid-scan)."""
    t = Tree(root, kmem="on")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "cxl", 1, 4 * GIB, 4)
    t.dax("dax1.0", "cxl", 2, 8 * GIB, 2, driver=None, files=False)
    return t


def inconsistent(root: Path) -> Tree:
    """Blocks say memmap on memory, node accounting says no memmap on the node."""
    t = Tree(root, kmem="on")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "cxl", 1, 4 * GIB, 4)
    pages = 4 * t.block_size // PAGE
    t.accounting_override[1] = (pages, pages, pages * 4)
    return t


def off_attr_one(root: Path) -> Tree:
    """kmem off, an hmem device whose attribute is 1, memmap in DRAM: ok under contract v2
    (under `off` the device attribute does not count; v1 called this stale)."""
    t = Tree(root, kmem="off", global_mode="Y")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "hmem", 1, 4 * GIB, 4, attr=True, moms=False)
    return t


def builtin_offline(root: Path) -> Tree:
    """kmem built in (no initstate); the device's blocks are offline."""
    t = Tree(root, kmem="on", kmem_kind="builtin")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "cxl", 1, 4 * GIB, 4, state="offline")
    return t


def v73_states(root: Path) -> Tree:
    """Linux 7.3 with the series, kmem on: one device per daxX.Y/state the kernel shows.
    dax0.0 onlined through state (online_movable); dax1.0 unplugged (bound to kmem, no
    blocks); dax2.0 added at probe under auto_online_blocks=offline, then onlined block by
    block, so state still says offline while its blocks are online (kmem's word is its last
    whole-device change); dax3.0 bound to device_dax, so it has no state file at all."""
    t = Tree(root, kmem="on", release="7.3.4-pyshim")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "cxl", 1, 4 * GIB, 4, dax_state="online_movable")
    t.dax("dax1.0", "hmem", 2, 5 * GIB, 4, dax_state="unplugged")
    t.dax("dax2.0", "hmem", 3, 6 * GIB, 2, dax_state="offline")
    t.dax("dax3.0", "hmem", 4, 7 * GIB, 2, driver="device_dax")
    return t


def v73_stock(root: Path) -> Tree:
    """Stock Linux 7.3 (no series): daxX.Y/state, but neither kmem attribute."""
    t = Tree(root, patched=False, kmem=None, release="7.3.4")
    t.boot(0, 0, 16)
    t.dax("dax0.0", "hmem", 1, 4 * GIB, 4, moms=False, dax_state="online_movable")
    return t


TREES = {
    f.__name__: f
    for f in (
        patched_on,
        stock,
        devdax,
        mixed,
        mixed_device,
        stale,
        boot_node,
        vanishing,
        inconsistent,
        off_attr_one,
        builtin_offline,
        v73_states,
        v73_stock,
    )
}


def build(name: str, root: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    TREES[name](root).finish()
    return root


def main() -> None:
    base = Path(__file__).parent / "trees"
    for name in TREES:
        build(name, base / name)
        print(f"wrote {base / name}", file=sys.stderr)


if __name__ == "__main__":
    main()
