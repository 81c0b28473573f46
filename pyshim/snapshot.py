"""What pyshim reads from the machine: memory blocks, dax devices, node accounting, settings.

kernel.py fills these records in one pass (Sysfs.snapshot); everything after that (the check,
the renderers) works on the records alone.
"""

from __future__ import annotations

from typing import NamedTuple

from pyshim.logic import memmap_pages, memmap_support
from pyshim.parse import DaxState, GlobalMode, KmemSetting


class MemoryBlock(NamedTuple):
    number: int  # N of memoryN (the block id: physical address / block size)
    state: str
    memmap_on_memory: bool | None
    valid_zones: str | None = None


class DaxDevice(NamedTuple):
    name: str
    driver: str | None
    target_node: int
    size: int
    ranges: tuple[tuple[int, int], ...]  # [start, end) physical ranges
    align: int | None
    memmap_on_memory: bool | None
    region: str
    # daxX.Y/state: None where the file is absent (kernels before 7.3, or not bound to kmem).
    state_attribute: DaxState | None = None

    @property
    def mode(self) -> str:
        return "system-ram" if self.driver == "kmem" else "devdax"

    def block_indices(self, block_size: int) -> list[int]:
        """Memory blocks whose whole range lies inside one of the device's ranges."""
        result: list[int] = []
        for start, end in self.ranges:
            first = -(-start // block_size)
            last = end // block_size
            result.extend(range(first, last))
        return result


class NodeAccounting(NamedTuple):
    node: int
    memtotal_kb: int | None
    present_pages: int | None
    managed_pages: int | None


class MemmapSettings(NamedTuple):
    """The settings that decide placement, and the block size they apply to."""

    block_size: int
    kmem: KmemSetting | None
    global_mode: GlobalMode | None
    hotplug_memmap_config: bool  # memory_hotplug.memmap_on_memory exists: CONFIG_MHP_MEMMAP...

    @property
    def force(self) -> bool:
        return self.global_mode is GlobalMode.FORCE

    @property
    def unsupported_reason(self) -> str | None:
        if not self.hotplug_memmap_config:
            return "this kernel lacks CONFIG_MHP_MEMMAP_ON_MEMORY"
        return memmap_support(self.block_size, self.force)

    @property
    def pages_per_block(self) -> int:
        return memmap_pages(self.block_size, self.force)


class Snapshot(NamedTuple):
    """Everything check/show/report/metrics need, read once from the machine."""

    settings: MemmapSettings
    devices: list[DaxDevice]
    blocks: dict[str, list[MemoryBlock]]  # device name -> its blocks present in sysfs
    node_blocks: dict[int, set[int]]  # node -> memory block indices on it
    accounting: dict[int, NodeAccounting]
    vanished: list[str]
    distances: dict[int, dict[int, int]]  # node -> {other node: nodeN/distance}

    def boot_memory_nodes(self) -> set[int]:
        """Nodes with memory blocks that no dax device added: the machine's own memory."""
        dax = {blk.number for blocks in self.blocks.values() for blk in blocks}
        return {node for node, members in self.node_blocks.items() if members - dax}

    def memmap_node(self, node: int, on_memory: bool, boot: set[int]) -> int | None:
        """The node whose memory holds the memmap of a dax block on `node`: the block's own
        node when it is on memory, else the nearest node with boot memory (where the kernel
        falls back when the new node has no memory yet; docs/design.md, "What userspace can
        observe"), None if unknown.
        `boot` is boot_memory_nodes(), computed once by the caller: it walks every block."""
        if on_memory or node in boot:
            return node
        if len(boot) == 1:
            return next(iter(boot))
        row = self.distances.get(node, {})
        if not boot or any(other not in row for other in boot):
            return None
        return min(sorted(boot), key=lambda other: row[other])
