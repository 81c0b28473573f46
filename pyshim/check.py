"""The placement check: per block, where its memmap is and where the settings would put it;
per node, whether the kernel's accounting agrees with the blocks.

A block whose memmap is not where the current settings would put it was onlined under an
earlier setting: STALE (re-online the device to fix it). A device with mixed blocks, a node
whose accounting disagrees with its blocks, or (with the witness) a block whose page tables
disagree with its attribute is INCONSISTENT: the kernel contradicts itself. The CLI maps the
worst status to the exit code; render.py turns a CheckResult into text, JSON and metrics.

Pure: the snapshot and the witness's findings come in, nothing is read or printed here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

from pyshim.logic import PAGE_SIZE, Decision, decide, memmap_bytes
from pyshim.parse import KmemSetting
from pyshim.snapshot import DaxDevice, MemmapSettings, MemoryBlock, Snapshot

if TYPE_CHECKING:
    # witness.py is imported where a witness is given (check --witness): not at start-up.
    from pyshim.witness import BlockWitness, PageTableLayout, Witnessed


class Status(enum.Enum):
    OK = "ok"
    STALE = "stale"
    INCONSISTENT = "inconsistent"

    def worse(self, other: Status) -> Status:
        order = [Status.OK, Status.STALE, Status.INCONSISTENT]
        return self if order.index(self) >= order.index(other) else other


class Fix(enum.Enum):
    """What to do about a device that is not OK (render.py words it)."""

    REONLINE = "re-online the device: placement is decided at the hot-add"
    MIXED_BLOCKS = "blocks of one device disagree: a kernel bug"
    PAGE_TABLES_DISAGREE = "the page tables disagree with the kernel's bookkeeping: a kernel bug"


class BlockCheck(NamedTuple):
    block: MemoryBlock
    # Where the memmap is: the block's attribute, or the witness where the kernel has none.
    on_memory: bool
    memmap_bytes: int
    status: Status
    # With the witness: what the page tables show, and the attribute it was held against.
    witness: BlockWitness | None = None


class DeviceCheck(NamedTuple):
    device: DaxDevice
    # None for a device not in system-ram mode: it has no blocks to check.
    decision: Decision | None
    status: Status | None
    fix: Fix | None
    blocks: list[BlockCheck]


class NodeCheck(NamedTuple):
    node: int
    total_memblocks: int | None
    online_memblocks: int | None = None
    memmap_on_memory_memblocks: int | None = None
    present_bytes: int | None = None
    managed_bytes: int | None = None
    expected_present_minus_managed_bytes: int | None = None
    memtotal_bytes: int | None = None
    expected_memtotal_bytes: int | None = None
    # None: skipped (reason says why).
    status: Status | None = None
    reason: str | None = None

    @property
    def present_minus_managed_bytes(self) -> int | None:
        if self.present_bytes is None or self.managed_bytes is None:
            return None
        return self.present_bytes - self.managed_bytes


class CheckResult(NamedTuple):
    settings: MemmapSettings
    devices: list[DeviceCheck]
    nodes: list[NodeCheck]
    vanished: list[str]
    status: Status
    # The page-table layout the witness read (check --witness), else None.
    layout: PageTableLayout | None = None

    def count(self, status: Status) -> int:
        """Blocks with this status, over every device."""
        return sum(1 for d in self.devices for b in d.blocks if b.status is status)


def check(
    snapshot: Snapshot, only: str | None = None, witnessed: Witnessed | None = None
) -> CheckResult:
    """Check every device (or `only`) and every node with dax blocks. With `witnessed` (the
    page tables' placement of every hot-plugged block), a block without the attribute (stock
    kernels) is placed by the witness, and a block whose attribute the page tables
    contradict makes its device and the result INCONSISTENT."""
    # The attributes as the kernel shows them, before the witness stands in for absent ones.
    attributes = {b.number: b.memmap_on_memory for bl in snapshot.blocks.values() for b in bl}
    if witnessed is not None:
        snapshot = snapshot._replace(blocks=_placed_by_witness(snapshot, witnessed))
    settings = snapshot.settings
    owned: dict[int, tuple[str, bool | None, str]] = {}  # block -> (device, on memory, state)
    for dev in snapshot.devices:
        for blk in snapshot.blocks.get(dev.name, []):
            owned[blk.number] = (dev.name, blk.memmap_on_memory, blk.state)
    devices = [
        _check_device(dev, snapshot, witnessed, attributes)
        for dev in snapshot.devices
        if only is None or dev.name == only
    ]
    worst = Status.OK
    for device in devices:
        if device.status is not None:
            worst = worst.worse(device.status)

    nodes: list[NodeCheck] = []
    for node in sorted(snapshot.node_blocks):
        members = snapshot.node_blocks[node]
        if not members:
            continue
        if only is not None and not any(owned.get(i, ("",))[0] == only for i in members):
            continue
        entry = _check_node(node, members, owned, snapshot, settings.pages_per_block)
        nodes.append(entry)
        if entry.status is Status.INCONSISTENT:
            worst = worst.worse(Status.INCONSISTENT)

    # Without node directories listing a device's blocks there is no accounting to compare:
    # say so instead of a silent ok.
    listed = set().union(*snapshot.node_blocks.values())
    for dev in snapshot.devices:
        blocks = snapshot.blocks.get(dev.name, [])
        wanted = only is None or dev.name == only
        if wanted and blocks and not any(blk.number in listed for blk in blocks):
            reason = f"no node directory lists the memory blocks of {dev.name}"
            nodes.append(NodeCheck(dev.target_node, None, reason=reason))

    layout = None if witnessed is None else witnessed.layout
    return CheckResult(settings, devices, nodes, list(snapshot.vanished), worst, layout)


def _placed_by_witness(snapshot: Snapshot, witnessed: Witnessed) -> dict[str, list[MemoryBlock]]:
    """The blocks, with the witness's placement where the kernel has no attribute."""
    from pyshim.witness import Placement

    return {
        name: [
            blk._replace(
                memmap_on_memory=witnessed.blocks[blk.number].placement is Placement.ON_BLOCK
            )
            if blk.memmap_on_memory is None
            else blk
            for blk in blocks
        ]
        for name, blocks in snapshot.blocks.items()
    }


def _check_device(
    dev: DaxDevice,
    snapshot: Snapshot,
    witnessed: Witnessed | None,
    attributes: Mapping[int, bool | None],
) -> DeviceCheck:
    if dev.driver != "kmem":
        return DeviceCheck(dev, None, None, None, [])
    settings = snapshot.settings
    decision = decide(
        bool(dev.memmap_on_memory),
        settings.kmem or KmemSetting.GLOBAL,
        settings.global_mode,
        settings.unsupported_reason,
    )
    on_block_bytes = settings.pages_per_block * PAGE_SIZE
    in_dram_bytes = memmap_bytes(settings.block_size)
    blocks: list[BlockCheck] = []
    for blk in snapshot.blocks.get(dev.name, []):
        on_memory = bool(blk.memmap_on_memory)
        status = Status.OK if on_memory == decision.memmap_on_memory else Status.STALE
        size = on_block_bytes if on_memory else in_dram_bytes
        seen = None
        if witnessed is not None:
            from pyshim.witness import Placement

            seen = witnessed.blocks[blk.number]
            if seen.placement is Placement.BOOT_MEMORY:
                # What the struct pages take in DRAM, at the kernel's own SIZE(page).
                size = sum(hi - lo for lo, hi in seen.extents)
            # The block as the kernel shows it: the attribute, not the witness's stand-in.
            blk = blk._replace(memmap_on_memory=attributes[blk.number])
        blocks.append(BlockCheck(blk, on_memory, size, status, seen))

    placements = {b.on_memory for b in blocks}
    status, fix = Status.OK, None
    if len(placements) > 1:
        status, fix = Status.INCONSISTENT, Fix.MIXED_BLOCKS
    elif any(b.status is Status.STALE for b in blocks):
        status, fix = Status.STALE, Fix.REONLINE
    if witnessed is not None:
        for i, b in enumerate(blocks):
            if b.witness is not None and not _witness_agrees(b.witness, b.block.memmap_on_memory):
                blocks[i] = b._replace(status=Status.INCONSISTENT)
                status, fix = Status.INCONSISTENT, Fix.PAGE_TABLES_DISAGREE
    return DeviceCheck(dev, decision, status, fix, blocks)


def _witness_agrees(seen: BlockWitness, attribute: bool | None) -> bool:
    """The page tables found the whole memmap, on the block or in boot memory, and say what
    the attribute says (a kernel without the attribute has nothing to contradict)."""
    from pyshim.witness import Placement

    if seen.placement not in (Placement.ON_BLOCK, Placement.BOOT_MEMORY):
        return False
    return attribute is None or attribute == (seen.placement is Placement.ON_BLOCK)


def _check_node(
    node: int,
    members: set[int],
    owned: dict[int, tuple[str, bool | None, str]],
    snapshot: Snapshot,
    pages_per_block: int,
) -> NodeCheck:
    block_size = snapshot.settings.block_size
    if not all(i in owned for i in members):
        return NodeCheck(
            node,
            len(members),
            reason="node has boot memory or memory not from dax kmem",
        )
    online = [owned[i] for i in members if owned[i][2] == "online"]
    on_memory = sum(1 for _, mom, _ in online if mom)
    expected_diff = on_memory * pages_per_block * PAGE_SIZE
    expected_total = len(online) * block_size - expected_diff
    acct = snapshot.accounting.get(node)
    present = managed = memtotal = None
    if acct is not None and acct.present_pages is not None and acct.managed_pages is not None:
        present = acct.present_pages * PAGE_SIZE
        managed = acct.managed_pages * PAGE_SIZE
    if acct is not None and acct.memtotal_kb is not None:
        memtotal = acct.memtotal_kb * 1024
    entry = NodeCheck(
        node,
        len(members),
        len(online),
        on_memory,
        present,
        managed,
        expected_diff,
        memtotal,
        expected_total,
    )
    diff = entry.present_minus_managed_bytes
    if diff is None and memtotal is None:
        return entry._replace(reason="no zoneinfo or meminfo for this node")
    problems: list[str] = []
    if diff is not None and diff != expected_diff:
        problems.append(
            f"zoneinfo present-managed is {diff} bytes, the blocks' memmap_on_memory "
            f"attributes say {expected_diff}"
        )
    if memtotal is not None and memtotal != expected_total:
        problems.append(f"MemTotal is {memtotal} bytes, expected {expected_total} bytes")
    if problems:
        return entry._replace(status=Status.INCONSISTENT, reason="; ".join(problems))
    return entry._replace(status=Status.OK, reason="accounting matches the blocks")
