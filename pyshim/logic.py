"""Pure logic: memmap arithmetic, the decision table, the placement check and the plan.

Nothing here touches the filesystem: kernel.py reads the machine into the plain records below,
and the CLI renders what these functions return. Arithmetic follows x86_64 (4 KiB pages, a
64-byte struct page, 2 MiB PMD and pageblock), which is what the project's VM runs.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from pyshim.parse import DaxState, GlobalMode, KmemSetting

PAGE_SIZE = 4096
STRUCT_PAGE_SIZE = 64
PMD_SIZE = 2 << 20
PAGEBLOCK_PAGES = PMD_SIZE // PAGE_SIZE  # pageblock_order 9 on x86_64

# Format version of every JSON document pyshim prints; raised on incompatible changes.
JSON_VERSION = 1


def memmap_bytes(block_size: int) -> int:
    """Bytes of struct page that one memory block of block_size needs."""
    return block_size // PAGE_SIZE * STRUCT_PAGE_SIZE


def memmap_pages(block_size: int, force: bool = False) -> int:
    """Pages of the block the memmap takes when it lives on the block itself.

    With memory_hotplug.memmap_on_memory=force the kernel pads it up to a pageblock
    (memory_block_memmap_on_memory_pages() in mm/memory_hotplug.c).
    """
    pages = -(-memmap_bytes(block_size) // PAGE_SIZE)
    if force:
        pages = -(-pages // PAGEBLOCK_PAGES) * PAGEBLOCK_PAGES
    return pages


def memmap_support(block_size: int, force: bool = False) -> str | None:
    """None when memmap can live on a block of this size, else why not.

    Mirrors mhp_supports_memmap_on_memory() and x86_64's arch_supports_memmap_on_memory():
    the memmap must fill whole pages and PMDs, start pageblock aligned (unless padded by
    force), and leave some of the block for use.
    """
    size = memmap_bytes(block_size)
    pages = memmap_pages(block_size, force)
    block_pages = block_size // PAGE_SIZE
    if size % PAGE_SIZE:
        return f"the memmap of a {block_size} byte block does not fill whole pages"
    if pages % PAGEBLOCK_PAGES:
        return (
            f"the memmap of one memory block ({size >> 10} KiB) is not a multiple of the "
            f"{PMD_SIZE >> 20} MiB pageblock"
        )
    if size % PMD_SIZE:
        return (
            f"the memmap of one memory block ({size >> 10} KiB) does not fill whole "
            f"{PMD_SIZE >> 20} MiB PMDs"
        )
    if pages >= block_pages:
        return "the memmap would fill the whole memory block"
    return None


class Decision(NamedTuple):
    """What the current settings would choose for one device, and why."""

    memmap_on_memory: bool
    reason: str


def decide(
    device_attr: bool,
    kmem: KmemSetting,
    global_mode: GlobalMode | None,
    unsupported_reason: str | None,
) -> Decision:
    """Where kmem puts the memmap of a device it hot-adds now: docs/design.md, the table in
    "Decision at each kmem hot-add".

    `global` is exactly 6.12 (daxX.Y/memmap_on_memory AND memory_hotplug.memmap_on_memory);
    `on` is every device whenever this configuration can; `off` is never. The device
    attribute counts only under `global`. unsupported_reason is None when this kernel
    configuration and block size can hold the memmap on the block, else why not.
    """
    if kmem is KmemSetting.OFF:
        return Decision(False, "kmem off: never on the hot-plugged memory")
    if unsupported_reason is not None:
        return Decision(False, f"this configuration cannot: {unsupported_reason}")
    if kmem is KmemSetting.ON:
        return Decision(True, "kmem on: on the hot-plugged memory for every device")
    global_word = global_mode.value if global_mode is not None else "absent"
    global_on = global_mode is not None and global_mode.enabled
    return Decision(
        device_attr and global_on,
        f"kmem global (the 6.12 rule): device attribute memmap_on_memory={int(device_attr)} "
        f"and memory_hotplug.memmap_on_memory={global_word}",
    )


# --- machine snapshot records (filled by kernel.py) ------------------------------------------


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


class Settings(NamedTuple):
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

    settings: Settings
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


# --- check -------------------------------------------------------------------------------------


class Status(enum.Enum):
    OK = "ok"
    STALE = "stale"
    INCONSISTENT = "inconsistent"


def reonline_command(prog: str, device: str) -> str:
    """Remove the device's memory and add it again: placement is decided at the hot-add."""
    return f"{prog} reconfigure --mode devdax {device} && {prog} online {device}"


def location(on_memory: bool) -> str:
    return "memory" if on_memory else "dram"


def check(snapshot: Snapshot, prog: str, only: str | None = None) -> dict[str, object]:
    """Per block: where its memmap lives, what the settings would choose; per node: accounting.

    A block whose memmap is not where the current settings would put it was onlined under an
    earlier setting: "stale" (the fix is to re-online the device). A device with mixed blocks,
    or a node whose accounting disagrees with the blocks' attribute, is "inconsistent": the
    kernel and its own accounting disagree. The CLI maps the worst status to the exit code.
    """
    settings = snapshot.settings
    on_block_bytes = settings.pages_per_block * PAGE_SIZE
    in_dram_bytes = memmap_bytes(settings.block_size)
    kmem = settings.kmem or KmemSetting.GLOBAL
    devices_out: list[dict[str, object]] = []
    owned: dict[int, tuple[str, bool | None, str]] = {}  # block -> (device, on memory, state)
    worst = Status.OK
    for dev in snapshot.devices:
        blocks = snapshot.blocks.get(dev.name, [])
        for blk in blocks:
            owned[blk.number] = (dev.name, blk.memmap_on_memory, blk.state)
        if only is not None and dev.name != only:
            continue
        entry: dict[str, object] = {
            "chardev": dev.name,
            "mode": dev.mode,
            "target_node": dev.target_node,
            "region": dev.region,
            "memmap_on_memory_attribute": attribute_json(dev.memmap_on_memory),
        }
        if dev.driver != "kmem":
            entry.update(
                expected_memmap_on_memory=None,
                reason=None,
                status=dev.mode if dev.driver else "disabled",
                fix=None,
                total_memblocks=0,
                blocks=[],
            )
            devices_out.append(entry)
            continue
        decision = decide(
            bool(dev.memmap_on_memory), kmem, settings.global_mode, settings.unsupported_reason
        )
        block_out: list[dict[str, object]] = []
        values: set[bool] = set()
        stale = 0
        for blk in blocks:
            on_mem = bool(blk.memmap_on_memory)
            values.add(on_mem)
            block_status = Status.OK if on_mem == decision.memmap_on_memory else Status.STALE
            if block_status is Status.STALE:
                stale += 1
            block_out.append(
                {
                    "memory": blk.number,
                    "state": blk.state,
                    "memmap": location(on_mem),
                    "memmap_bytes": on_block_bytes if on_mem else in_dram_bytes,
                    "status": block_status.value,
                }
            )
        status = Status.OK
        fix: str | None = None
        if len(values) > 1:
            status = Status.INCONSISTENT
            fix = (
                "blocks of one device must agree (the kernel refuses to remove mixed ranges); "
                "report this kernel bug"
            )
        elif stale:
            status = Status.STALE
            fix = reonline_command(prog, dev.name)
        entry.update(
            expected_memmap_on_memory=decision.memmap_on_memory,
            reason=decision.reason,
            status=status.value,
            fix=fix,
            total_memblocks=len(blocks),
            blocks=block_out,
        )
        worst = _worse(worst, status)
        devices_out.append(entry)

    nodes_out: list[dict[str, object]] = []
    for node in sorted(snapshot.node_blocks):
        members = snapshot.node_blocks[node]
        if not members:
            continue
        if only is not None and not any(owned.get(i, ("",))[0] == only for i in members):
            continue
        node_entry = _check_node(node, members, owned, snapshot, settings.pages_per_block)
        nodes_out.append(node_entry)
        if node_entry["status"] == Status.INCONSISTENT.value:
            worst = _worse(worst, Status.INCONSISTENT)

    # Without node directories listing a device's blocks there is no accounting to compare:
    # say so instead of a silent ok.
    listed = set().union(*snapshot.node_blocks.values())
    for dev in snapshot.devices:
        blocks = snapshot.blocks.get(dev.name, [])
        wanted = only is None or dev.name == only
        if wanted and blocks and not any(blk.number in listed for blk in blocks):
            unlisted = _node_entry(dev.target_node, None)
            unlisted.update(
                status="skipped",
                reason=f"no node directory lists the memory blocks of {dev.name}",
            )
            nodes_out.append(unlisted)

    return {
        "version": JSON_VERSION,
        "settings": settings_json(settings),
        "devices": devices_out,
        "nodes": nodes_out,
        "vanished": list(snapshot.vanished),
        "status": worst.value,
    }


def _worse(a: Status, b: Status) -> Status:
    order = [Status.OK, Status.STALE, Status.INCONSISTENT]
    return a if order.index(a) >= order.index(b) else b


def _node_entry(node: int, total_memblocks: int | None) -> dict[str, object]:
    return {
        "node": node,
        "total_memblocks": total_memblocks,
        "online_memblocks": None,
        "memmap_on_memory_memblocks": None,
        "present_bytes": None,
        "managed_bytes": None,
        "present_minus_managed_bytes": None,
        "expected_present_minus_managed_bytes": None,
        "memtotal_bytes": None,
        "expected_memtotal_bytes": None,
        "status": None,
        "reason": None,
    }


def _check_node(
    node: int,
    members: set[int],
    owned: dict[int, tuple[str, bool | None, str]],
    snapshot: Snapshot,
    pages_per_block: int,
) -> dict[str, object]:
    block_size = snapshot.settings.block_size
    hotplugged = all(i in owned for i in members)
    online = [owned[i] for i in members if i in owned and owned[i][2] == "online"]
    on_memory = sum(1 for _, mom, _ in online if mom)
    entry = _node_entry(node, len(members))
    entry.update(
        online_memblocks=len(online) if hotplugged else None,
        memmap_on_memory_memblocks=on_memory if hotplugged else None,
    )
    acct = snapshot.accounting.get(node)
    if not hotplugged:
        entry.update(status="skipped", reason="node has boot memory or memory not from dax kmem")
        return entry
    expected_diff = on_memory * pages_per_block * PAGE_SIZE
    expected_total = len(online) * block_size - expected_diff
    diff = None
    present = managed = None
    if acct is not None and acct.present_pages is not None and acct.managed_pages is not None:
        present = acct.present_pages * PAGE_SIZE
        managed = acct.managed_pages * PAGE_SIZE
        diff = present - managed
    memtotal = (
        acct.memtotal_kb * 1024 if acct is not None and acct.memtotal_kb is not None else None
    )
    entry.update(
        present_bytes=present,
        managed_bytes=managed,
        present_minus_managed_bytes=diff,
        expected_present_minus_managed_bytes=expected_diff,
        memtotal_bytes=memtotal,
        expected_memtotal_bytes=expected_total,
    )
    problems: list[str] = []
    if diff is None and memtotal is None:
        entry.update(status="skipped", reason="no zoneinfo or meminfo for this node")
        return entry
    if diff is not None and diff != expected_diff:
        problems.append(
            f"zoneinfo present-managed is {diff} bytes, the blocks' memmap_on_memory "
            f"attributes say {expected_diff}"
        )
    if memtotal is not None and memtotal != expected_total:
        problems.append(f"MemTotal is {memtotal} bytes, expected {expected_total} bytes")
    if problems:
        entry.update(status=Status.INCONSISTENT.value, reason="; ".join(problems))
    else:
        entry.update(status=Status.OK.value, reason="accounting matches the blocks")
    return entry


def attribute_json(value: bool | None) -> int | None:
    """A 0/1 sysfs attribute as the kernel shows it (None when the file is absent)."""
    return None if value is None else int(value)


def settings_json(settings: Settings) -> dict[str, object]:
    return {
        "kmem_memmap_on_memory": settings.kmem.value if settings.kmem else None,
        "global_memmap_on_memory": settings.global_mode.value if settings.global_mode else None,
        "memory_block_size_bytes": settings.block_size,
        "memmap_bytes_per_block": memmap_bytes(settings.block_size),
        "memmap_on_memory_bytes_per_block": settings.pages_per_block * PAGE_SIZE,
        "supported": settings.unsupported_reason is None,
        "unsupported_reason": settings.unsupported_reason,
    }


# --- plan --------------------------------------------------------------------------------------


def plan(capacity: int, block_size: int, force: bool = False) -> dict[str, object]:
    """DRAM the memmap of `capacity` takes with and without memmap_on_memory."""
    blocks = capacity // block_size
    usable = blocks * block_size
    per_block_dram = memmap_bytes(block_size)
    per_block_device = memmap_pages(block_size, force) * PAGE_SIZE
    reason = memmap_support(block_size, force)
    without = {
        "dram_memmap_bytes": blocks * per_block_dram,
        "device_memmap_bytes": 0,
        "usable_bytes": usable,
    }
    with_setting: dict[str, object] = {
        "possible": reason is None,
        "reason": reason,
        "dram_memmap_bytes": 0 if reason is None else blocks * per_block_dram,
        "device_memmap_bytes": blocks * per_block_device if reason is None else 0,
        "usable_bytes": usable - blocks * per_block_device if reason is None else usable,
    }
    return {
        "version": JSON_VERSION,
        "capacity_bytes": capacity,
        "memory_block_size_bytes": block_size,
        "memblocks": blocks,
        "unusable_tail_bytes": capacity - usable,
        "memmap_bytes_per_block": per_block_dram,
        "without_memmap_on_memory": without,
        "with_memmap_on_memory": with_setting,
        "dram_saved_bytes": blocks * per_block_dram if reason is None else 0,
    }
