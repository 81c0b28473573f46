"""Placement witness: where each memory block's memmap physically is, from the page tables.

`memoryN/memmap_on_memory`, the node's MemTotal and /proc/zoneinfo present - managed all follow
from the kernel's altmap bookkeeping; a kernel that reserved the altmap but filled the memmap
from DRAM would fool all three. This module asks the hardware's view instead: the vmemmap
address of pfn N is vmemmap_base + N * sizeof(struct page); walking the kernel's own page
tables (init_top_pgt) from that address gives the physical pages that hold the struct pages.
Memmap on memory: those are the block's own first pages. In DRAM: they are in boot memory,
and /sys/devices/system/node/nodeK/memoryM says on which node.

How the kernel is read (root only, no debug information):
- /proc/kcore is an ELF core file. Its PT_LOAD headers map kernel virtual addresses to file
  offsets; its PT_NOTE holds VMCOREINFO, the kernel's own description for crash-dump tools
  (CONFIG_PROC_KCORE selects CONFIG_VMCORE_INFO since 6.9, so every kernel with /proc/kcore
  has it): SYMBOL(init_top_pgt), the top-level page table; SYMBOL(vmemmap), the value of
  vmemmap_base; NUMBER(pgtable_l5_enabled), the paging depth; SIZE(page), sizeof(struct
  page); KERNELOFFSET, the KASLR slide of the image. These are what the running kernel chose,
  so KASLR of the image and of the memory regions (CONFIG_RANDOMIZE_MEMORY) is handled by
  reading, not guessing.
- /proc/kallsyms is not used: without CONFIG_KALLSYMS_ALL (tinyconfig, the kernels here) it
  lists no data symbols, so init_top_pgt, vmemmap_base and page_offset_base are not in it.
- page_offset_base (the direct map) comes from kcore's RAM segments: fs/proc/kcore.c sets
  their p_paddr to __pa(p_vaddr), so p_vaddr - p_paddr is the direct map base; every RAM
  segment must agree.
- The top-level table is read at init_top_pgt's address (the kernel image segment), every
  lower table through the direct map (page_offset_base + physical address). 4 levels, or 5
  when the kernel enabled LA57 (TCG's -cpu max offers it to CONFIG_X86_5LEVEL kernels).
- A block's memmap is [vmemmap + first_pfn * SIZE(page), + pages * SIZE(page)), with the
  SIZE(page) the kernel reports in both (64 on these kernels; a value no x86-64 kernel has is
  refused). A block is "on the block" only when its struct pages are exactly its own first
  bytes, and placed at all only when the walk found every byte of its memmap.
- Only the levels where the hardware takes a page-size bit end a walk early (PUD: 1 GiB,
  PMD: 2 MiB); the bit above them is reserved, so a table that has it is refused.
- Every read is a bounded pread (an 8-byte table entry, the ELF headers, the notes); a
  block costs at most one walk per 4 KiB page of its memmap, one walk with a 2 MiB (PMD)
  mapping, the usual vmemmap case.

Why not drgn: drgn (PyPI) has this walker (follow_phys), but it wants the kernel's types
(DWARF or BTF), which the tinyconfig kernels here lack (no DEBUG_INFO); adding them would
change the kernel under test. The ELF and x86-64 page-table formats needed here are a few
dozen lines of stdlib Python.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
import struct
from collections.abc import Iterator
from typing import NamedTuple

from pyshim.errors import MissingPrerequisite, OperationFailed
from pyshim.kernel import Sysfs
from pyshim.snapshot import Snapshot

KCORE = "proc/kcore"
LOCKDOWN = "sys/kernel/security/lockdown"

PAGE_SHIFT = 12
ENTRIES_PER_TABLE = 512
ENTRY_SIZE = 8
ENTRY_PRESENT = 1 << 0
ENTRY_LEAF = 1 << 7  # _PAGE_PSE: a 1 GiB (PUD) or 2 MiB (PMD) page instead of a next table
# Bits 51:12: the next table or a 4 KiB frame. In a 2 MiB or 1 GiB leaf, bit 12 is the PAT
# bit and the bits up to the page size are reserved: the frame is masked to the page size.
ENTRY_ADDRESS = 0x000F_FFFF_FFFF_F000
# Index shift of each level, top first: PGD (P4D folded away with 4 levels), PUD, PMD, PTE.
LEVEL_SHIFTS = {4: (39, 30, 21, 12), 5: (48, 39, 30, 21, 12)}
# Where the hardware takes bit 7 as a page size: a PUD maps 1 GiB, a PMD 2 MiB. In a PGD or
# P4D entry the bit is reserved (a walk through it faults); in a PTE it is the PAT bit.
LARGE_LEAF_SHIFTS = (30, 21)
LEVEL_NAMES = {4: ("PGD", "PUD", "PMD", "PTE"), 5: ("PGD", "P4D", "PUD", "PMD", "PTE")}
# sizeof(struct page) on x86-64: 64 in the usual configurations (56 bytes of fields, aligned
# to 16 for the SLUB double cmpxchg), 80 with KMSAN's two metadata pointers, 72 or 80 when
# fields that do not fit in page->flags get their own words. A multiple of 8 in 56..128
# covers every kernel; anything else is not SIZE(page) of a kernel.
STRUCT_PAGE_SIZES = range(56, 129, 8)

ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")
NOTE_HEADER = struct.Struct("<III")
PT_LOAD = 1
PT_NOTE = 4
ET_CORE = 4
EM_X86_64 = 62
NO_PHYSICAL_ADDRESS = 0xFFFF_FFFF_FFFF_FFFF  # kcore's p_paddr for vmalloc/vmemmap segments
KERNEL_IMAGE_BASE = 0xFFFF_FFFF_8000_0000  # __START_KERNEL_map: text segment, not RAM
MAX_NOTES = 1 << 20  # kcore's notes are a few KiB: prstatus, prpsinfo, task, VMCOREINFO


class Placement(enum.Enum):
    ON_BLOCK = "memory"  # the block's own first pages: same word as logic.location(True)
    BOOT_MEMORY = "dram"  # memory blocks that no dax kmem device owns
    ELSEWHERE = "elsewhere"  # another hot-plugged block, or outside every memory block
    UNMAPPED = "unmapped"  # a vmemmap page of the block is not present


class Segment(NamedTuple):
    vaddr: int
    paddr: int
    offset: int
    size: int


class Translation(NamedTuple):
    phys: int
    page_size: int


class PageTableLayout(NamedTuple):
    top_table: int  # virtual address of init_top_pgt
    page_offset: int
    vmemmap_base: int
    levels: int
    struct_page_size: int
    kaslr_offset: int


class BlockWitness(NamedTuple):
    memory: int
    placement: Placement
    nodes: tuple[int, ...]  # nodes whose memory holds the memmap (BOOT_MEMORY)
    extents: tuple[tuple[int, int], ...]  # [start, end) physical ranges, merged
    page_sizes: tuple[int, ...]  # sizes of the mappings met
    detail: str


class Kcore:
    """Kernel virtual memory through /proc/kcore's PT_LOAD segments, and its VMCOREINFO."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.path = path
        self.segments: list[Segment] = []
        self.notes: list[Segment] = []
        self._read_headers()

    @classmethod
    @contextlib.contextmanager
    def open(cls, sysfs: Sysfs) -> Iterator[Kcore]:
        path = sysfs.path(KCORE)
        try:
            # Non-blocking: a FIFO planted at proc/kcore must not hang the open.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise MissingPrerequisite(_kcore_unreadable(sysfs, path, exc)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OperationFailed(f"{path} is not a regular file, so not the kernel's kcore")
            yield cls(fd, path)
        finally:
            os.close(fd)

    def _pread(self, size: int, offset: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise OperationFailed(f"{self.path}: short read of {size} bytes at offset {offset}")
        return data

    def _read_headers(self) -> None:
        fields = ELF_HEADER.unpack(self._pread(ELF_HEADER.size, 0))
        ident, e_type, machine = fields[0], fields[1], fields[2]
        phoff, phentsize, phnum = fields[5], fields[9], fields[10]
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            raise OperationFailed(f"{self.path}: not a little-endian 64-bit ELF file")
        if e_type != ET_CORE or machine != EM_X86_64:
            raise OperationFailed(
                f"{self.path}: not an x86_64 core file (type {e_type}, machine {machine})"
            )
        if phentsize != PROGRAM_HEADER.size:
            raise OperationFailed(f"{self.path}: program header size {phentsize}")
        table = self._pread(phnum * phentsize, phoff)  # phnum is 16-bit: at most 3.5 MiB
        for i in range(phnum):
            p_type, _, offset, vaddr, paddr, filesz, _, _ = PROGRAM_HEADER.unpack_from(
                table, i * phentsize
            )
            if p_type == PT_LOAD:
                self.segments.append(Segment(vaddr, paddr, offset, filesz))
            elif p_type == PT_NOTE:
                self.notes.append(Segment(vaddr, paddr, offset, filesz))

    def read(self, vaddr: int, size: int) -> bytes:
        for seg in self.segments:
            if seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.size:
                return self._pread(size, seg.offset + vaddr - seg.vaddr)
        raise OperationFailed(f"{self.path} maps no kernel memory at {vaddr:#x}")

    def u64(self, vaddr: int) -> int:
        value: int = struct.unpack("<Q", self.read(vaddr, 8))[0]
        return value

    def vmcoreinfo(self) -> dict[str, str]:
        """KEY=value lines of the VMCOREINFO note (empty when there is none)."""
        for seg in self.notes:
            data = self._pread(min(seg.size, MAX_NOTES), seg.offset)
            pos = 0
            while pos + NOTE_HEADER.size <= len(data):
                namesz, descsz, _ = NOTE_HEADER.unpack_from(data, pos)
                name_at = pos + NOTE_HEADER.size
                desc_at = name_at + _align4(namesz)
                name = data[name_at : name_at + namesz].rstrip(b"\0")
                if name == b"VMCOREINFO":
                    text = data[desc_at : desc_at + descsz].decode("ascii", "replace")
                    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
                pos = desc_at + _align4(descsz)
        return {}

    def direct_map_base(self) -> int:
        """page_offset_base, from the RAM segments (p_paddr = __pa(p_vaddr) there)."""
        bases = {
            s.vaddr - s.paddr
            for s in self.segments
            if s.paddr != NO_PHYSICAL_ADDRESS and s.vaddr < KERNEL_IMAGE_BASE
        }
        if len(bases) != 1:
            found = ", ".join(f"{b:#x}" for b in sorted(bases)) or "none"
            raise OperationFailed(
                f"{self.path}: RAM segments give no single direct map base ({found})"
            )
        return bases.pop()


def _align4(size: int) -> int:
    return (size + 3) & ~3


def _kcore_unreadable(sysfs: Sysfs, path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return f"no {path}: this kernel lacks CONFIG_PROC_KCORE, which the witness reads"
    lockdown = sysfs.read(LOCKDOWN) or ""
    if "[confidentiality]" in lockdown:
        return (
            f"cannot read {path}: the kernel is locked down (confidentiality, see "
            f"{sysfs.path(LOCKDOWN)}), which forbids reading kernel memory"
        )
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot read {path}: run as root (reading kernel page tables needs it)"
    return f"cannot read {path}: {exc.strerror}"


def read_layout(kcore: Kcore) -> PageTableLayout:
    info = kcore.vmcoreinfo()
    wanted = ("SYMBOL(init_top_pgt)", "SYMBOL(vmemmap)", "NUMBER(pgtable_l5_enabled)", "SIZE(page)")
    missing = [key for key in wanted if key not in info]
    if missing:
        raise MissingPrerequisite(
            f"{kcore.path} has no {', '.join(missing)} in its VMCOREINFO note: the witness "
            "needs an x86_64 kernel with CONFIG_SPARSEMEM_VMEMMAP"
        )
    try:
        layout = PageTableLayout(
            top_table=_vmcoreinfo_number(info["SYMBOL(init_top_pgt)"], 16),
            page_offset=kcore.direct_map_base(),
            vmemmap_base=_vmcoreinfo_number(info["SYMBOL(vmemmap)"], 16),
            levels=5 if _vmcoreinfo_number(info["NUMBER(pgtable_l5_enabled)"], 10) else 4,
            struct_page_size=_vmcoreinfo_number(info["SIZE(page)"], 10),
            kaslr_offset=_vmcoreinfo_number(info.get("KERNELOFFSET", "0"), 16),
        )
    except ValueError as exc:
        raise OperationFailed(f"{kcore.path}: bad VMCOREINFO value: {exc}") from None
    if layout.struct_page_size == 0:
        raise MissingPrerequisite(
            f"{kcore.path} says SIZE(page)=0 in its VMCOREINFO: without the size of a struct "
            "page the witness would read nothing"
        )
    if layout.struct_page_size not in STRUCT_PAGE_SIZES:
        raise OperationFailed(
            f"{kcore.path}: VMCOREINFO says SIZE(page)={layout.struct_page_size}, which no "
            f"x86-64 kernel has ({STRUCT_PAGE_SIZES.start}..{STRUCT_PAGE_SIZES.stop - 1}, a "
            "multiple of 8): not this kernel's description"
        )
    return layout


def _vmcoreinfo_number(text: str, base: int) -> int:
    """A VMCOREINFO number: at most 64 bits (16 hex or 20 decimal digits)."""
    word = text.strip()
    if not word or len(word) > (16 if base == 16 else 20):
        raise ValueError(f"{word[:40]!r} is not a 64-bit number")
    return int(word, base)


def translate(kcore: Kcore, layout: PageTableLayout, vaddr: int) -> Translation | None:
    """The physical address of a kernel virtual address, or None when not present; a walk
    the hardware would refuse (a page-size bit above the PUD) is a failure."""
    table = layout.top_table
    for level, shift in enumerate(LEVEL_SHIFTS[layout.levels]):
        index = (vaddr >> shift) & (ENTRIES_PER_TABLE - 1)
        entry = kcore.u64(table + index * ENTRY_SIZE)
        if not entry & ENTRY_PRESENT:
            return None
        large = bool(entry & ENTRY_LEAF) and shift != PAGE_SHIFT
        if large and shift not in LARGE_LEAF_SHIFTS:
            raise OperationFailed(
                f"{kcore.path}: the {LEVEL_NAMES[layout.levels][level]} entry {entry:#x} on "
                f"the way to {vaddr:#x} has the page-size bit, which x86-64 reserves at that "
                "level: not a page table the hardware walks"
            )
        if shift == PAGE_SHIFT or large:
            page_size = 1 << shift
            frame = entry & ENTRY_ADDRESS & ~(page_size - 1)
            return Translation(frame | (vaddr & (page_size - 1)), page_size)
        table = layout.page_offset + (entry & ENTRY_ADDRESS)
    raise AssertionError("the last level always maps a page")


def block_memmap(
    kcore: Kcore, layout: PageTableLayout, memory: int, block_size: int
) -> tuple[list[tuple[int, int]], set[int], int | None]:
    """Merged physical extents of a block's struct pages, mapping sizes met, and the first
    vmemmap address that is not mapped (None when all are)."""
    pfn = memory * block_size >> PAGE_SHIFT
    start = layout.vmemmap_base + pfn * layout.struct_page_size
    end = start + (block_size >> PAGE_SHIFT) * layout.struct_page_size
    extents: list[tuple[int, int]] = []
    sizes: set[int] = set()
    vaddr = start
    while vaddr < end:
        found = translate(kcore, layout, vaddr)
        if found is None:
            return extents, sizes, vaddr
        sizes.add(found.page_size)
        step = min(end, (vaddr | (found.page_size - 1)) + 1) - vaddr
        if extents and extents[-1][1] == found.phys:
            extents[-1] = (extents[-1][0], found.phys + step)
        else:
            extents.append((found.phys, found.phys + step))
        vaddr += step
    return extents, sizes, None


def classify(
    memory: int,
    block_size: int,
    memmap_size: int,
    extents: list[tuple[int, int]],
    node_of_block: dict[int, int],
    hotplugged: set[int],
) -> tuple[Placement, tuple[int, ...], str]:
    block_start = memory * block_size
    found = sum(hi - lo for lo, hi in extents)
    if found != memmap_size:
        # Only the whole memmap says where the block's struct pages are.
        return Placement.UNMAPPED, (), f"{found} of the memmap's {memmap_size} bytes found"
    if extents == [(block_start, block_start + memmap_size)]:
        return Placement.ON_BLOCK, (), "the block's own first pages"
    holders = {
        index for lo, hi in extents for index in range(lo // block_size, (hi - 1) // block_size + 1)
    }
    if memory in holders:
        return Placement.ELSEWHERE, (), "inside the block, but not its first pages"
    if holders & hotplugged:
        owners = ", ".join(f"memory{i}" for i in sorted(holders & hotplugged))
        return Placement.ELSEWHERE, (), f"on other hot-plugged memory ({owners})"
    unknown = sorted(i for i in holders if i not in node_of_block)
    if unknown:
        return Placement.ELSEWHERE, (), f"outside every node's memory (memory{unknown[0]})"
    nodes = tuple(sorted({node_of_block[i] for i in holders}))
    return Placement.BOOT_MEMORY, nodes, "boot memory on node " + ",".join(map(str, nodes))


class Witnessed(NamedTuple):
    """What witness_blocks read: the page-table layout and each block's placement."""

    layout: PageTableLayout
    blocks: dict[int, BlockWitness]  # memory block index -> where its memmap is


def witness_blocks(sysfs: Sysfs, blocks: list[int], hotplugged: set[int]) -> Witnessed:
    """Where the memmap of each of `blocks` is; `hotplugged` are the blocks dax kmem added."""
    block_size = sysfs.block_size()
    node_of_block = {i: n for n, members in sysfs.node_blocks().items() for i in members}
    result: dict[int, BlockWitness] = {}
    with Kcore.open(sysfs) as kcore:
        layout = read_layout(kcore)
        memmap_size = (block_size >> PAGE_SHIFT) * layout.struct_page_size
        for memory in blocks:
            extents, sizes, unmapped = block_memmap(kcore, layout, memory, block_size)
            nodes: tuple[int, ...] = ()
            if unmapped is not None:
                placement = Placement.UNMAPPED
                detail = f"vmemmap address {unmapped:#x} is not mapped"
            else:
                placement, nodes, detail = classify(
                    memory, block_size, memmap_size, extents, node_of_block, hotplugged
                )
            result[memory] = BlockWitness(
                memory, placement, nodes, tuple(extents), tuple(sorted(sizes)), detail
            )
    return Witnessed(layout, result)


def witness_for_check(sysfs: Sysfs, snapshot: Snapshot, only: str | None, prog: str) -> Witnessed:
    """The witness of every hot-plugged block, for check --witness. Nothing to witness, or a
    witness that could read none of the wanted blocks, proves nothing: MissingPrerequisite
    (exit 3), never "check: ok"."""
    if only is not None and only not in {d.name for d in snapshot.devices}:
        raise OperationFailed(f"no dax device {only}: see {prog} show")
    hotplugged = {b.number for blocks in snapshot.blocks.values() for b in blocks}
    wanted = {
        b.number for name, blocks in snapshot.blocks.items() if only in (None, name) for b in blocks
    }
    if not wanted:
        which = only or "any dax device"
        raise MissingPrerequisite(
            f"nothing to witness: {which} has no memory blocks in system-ram mode, so there "
            f"is no memmap to find; online one first ({prog} online daxX.Y)"
        )
    witnessed = witness_blocks(sysfs, sorted(hotplugged), hotplugged)
    if all(witnessed.blocks[i].placement is Placement.UNMAPPED for i in wanted):
        raise MissingPrerequisite(
            f"the witness read nothing: no block's memmap is mapped at vmemmap_base "
            f"{witnessed.layout.vmemmap_base:#x}, so this VMCOREINFO does not describe the "
            "page tables the kernel runs on"
        )
    return witnessed
