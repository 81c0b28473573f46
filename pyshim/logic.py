"""Pure logic: memmap arithmetic, the decision table and the plan.

Nothing here touches the filesystem. Arithmetic follows x86_64 (4 KiB pages, a 64-byte
struct page, 2 MiB PMD and pageblock), which is what the project's VM runs.
"""

from __future__ import annotations

from typing import NamedTuple

from pyshim.parse import GlobalMode, KmemSetting

PAGE_SIZE = 4096
STRUCT_PAGE_SIZE = 64
PMD_SIZE = 2 << 20
PAGEBLOCK_PAGES = PMD_SIZE // PAGE_SIZE  # pageblock_order 9 on x86_64


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


# --- plan --------------------------------------------------------------------------------------


class PlanColumn(NamedTuple):
    """Where the memmap of the planned capacity goes under one choice, and what is left."""

    dram_memmap_bytes: int
    device_memmap_bytes: int
    usable_bytes: int


class Plan(NamedTuple):
    """DRAM the memmap of a capacity takes with and without memmap_on_memory."""

    capacity: int
    block_size: int
    blocks: int
    memmap_per_block: int
    without_setting: PlanColumn
    # None when the memmap cannot live on blocks of this size (the reason says why).
    with_setting: PlanColumn | None
    unsupported_reason: str | None

    @property
    def unusable_tail(self) -> int:
        return self.capacity - self.blocks * self.block_size

    @property
    def dram_saved(self) -> int:
        return 0 if self.with_setting is None else self.blocks * self.memmap_per_block


def plan(capacity: int, block_size: int, force: bool = False) -> Plan:
    """The memmap of `capacity` in blocks of `block_size`, in DRAM and on the device."""
    blocks = capacity // block_size
    usable = blocks * block_size
    per_block_dram = memmap_bytes(block_size)
    per_block_device = memmap_pages(block_size, force) * PAGE_SIZE
    reason = memmap_support(block_size, force)
    with_setting = None
    if reason is None:
        device = blocks * per_block_device
        with_setting = PlanColumn(0, device, usable - device)
    return Plan(
        capacity,
        block_size,
        blocks,
        per_block_dram,
        PlanColumn(blocks * per_block_dram, 0, usable),
        with_setting,
        reason,
    )
