"""A synthetic /proc/kcore: x86-64 page tables in an ELF64 core file, for tests of the witness.

The file has what fs/proc/kcore.c writes and pyshim.witness reads: a PT_NOTE with a
VMCOREINFO note (after a CORE note, as the kernel puts prstatus first), a PT_LOAD for the
kernel image (holding init_top_pgt), a PT_LOAD for the direct map of the RAM that holds the
lower tables (p_paddr = __pa(p_vaddr)), and a vmemmap PT_LOAD with p_paddr -1. Table entries
carry the NX bit (63) and the accessed/dirty bits, so that masking mistakes show.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

PAGE = 4096
MIB = 1 << 20
GIB = 1 << 30
NX = 1 << 63
TABLE_FLAGS = 0x63  # present, writable, accessed, dirty
LEAF = 0x80
ADDRESS = 0x000F_FFFF_FFFF_F000
SHIFTS = {4: (39, 30, 21, 12), 5: (48, 39, 30, 21, 12)}

# Values a KASLR kernel could choose (1 GiB aligned, as arch/x86/mm/kaslr.c aligns them).
LAYOUTS = {
    4: {"page_offset": 0xFFFF_9A5A_4000_0000, "vmemmap": 0xFFFF_F3C6_C000_0000},
    5: {"page_offset": 0xFF11_0000_0000_0000, "vmemmap": 0xFFD4_0000_0000_0000},
}
TEXT_VADDR = 0xFFFF_FFFF_9A00_0000
TEXT_PADDR = 0x1A00_0000
TOP_TABLE_OFFSET = 0x2000
TABLES_PADDR = 0x7000_0000  # lower tables live here, in node 0's boot memory
TABLES_PAGES = 64


@dataclass
class Kcore:
    levels: int = 4
    struct_page_size: int = 64
    vmcoreinfo_drop: tuple[str, ...] = ()
    # More RAM segments (vaddr, paddr, pages) beside the one that holds the lower tables.
    ram_segments: list[tuple[int, int, int]] = field(default_factory=list)
    pages: dict[int, bytearray] = field(default_factory=dict)
    next_table: int = TABLES_PADDR

    def __post_init__(self) -> None:
        self.page_offset = LAYOUTS[self.levels]["page_offset"]
        self.vmemmap = LAYOUTS[self.levels]["vmemmap"]
        self.top = TEXT_PADDR + TOP_TABLE_OFFSET
        self.pages[self.top] = bytearray(PAGE)

    def _table(self) -> int:
        phys = self.next_table
        assert phys < TABLES_PADDR + TABLES_PAGES * PAGE, "raise TABLES_PAGES"
        self.next_table += PAGE
        self.pages[phys] = bytearray(PAGE)
        return phys

    def map(self, vaddr: int, phys: int, size: int, extra: int = 0) -> None:
        """Map [vaddr, vaddr + size) to phys with one leaf entry of that size (at whatever
        level maps that size, valid or not), with `extra` bits set in the leaf."""
        table = self.top
        for shift in SHIFTS[self.levels]:
            index = (vaddr >> shift) & 511
            if size == 1 << shift:
                flags = TABLE_FLAGS | (LEAF if size > PAGE else 0)
                leaf = NX | phys | flags | extra
                struct.pack_into("<Q", self.pages[table], index * 8, leaf)
                return
            (entry,) = struct.unpack_from("<Q", self.pages[table], index * 8)
            if not entry & 1:
                entry = NX | self._table() | TABLE_FLAGS
                struct.pack_into("<Q", self.pages[table], index * 8, entry)
            table = entry & ADDRESS
        raise AssertionError(f"no level maps {size} bytes")

    def memmap_vaddr(self, pfn: int) -> int:
        return self.vmemmap + pfn * self.struct_page_size

    def map_block_memmap(
        self, block: int, block_size: int, phys: int, size: int, extra: int = 0
    ) -> None:
        """Map a block's struct pages to phys, in leaves of `size` bytes."""
        start = self.memmap_vaddr(block * block_size // PAGE)
        length = block_size // PAGE * self.struct_page_size
        for offset in range(0, length, size):
            self.map(start + offset, phys + offset, size, extra)

    def vmcoreinfo(self) -> bytes:
        lines = {
            "OSRELEASE": "6.12.117",
            "PAGESIZE": "4096",
            "SYMBOL(init_top_pgt)": f"{TEXT_VADDR + TOP_TABLE_OFFSET:x}",
            "SYMBOL(vmemmap)": f"{self.vmemmap:x}",
            "SIZE(page)": str(self.struct_page_size),
            "NUMBER(pgtable_l5_enabled)": str(int(self.levels == 5)),
            "KERNELOFFSET": "19000000",
        }
        text = "".join(f"{k}={v}\n" for k, v in lines.items() if k not in self.vmcoreinfo_drop)
        return text.encode()

    def segment_bytes(self, paddr: int, npages: int) -> bytes:
        empty = bytes(PAGE)
        return b"".join(bytes(self.pages.get(paddr + i * PAGE, empty)) for i in range(npages))

    def elf(self) -> bytes:
        notes = _note(b"CORE", 1, bytes(336)) + _note(b"VMCOREINFO", 0, self.vmcoreinfo())
        loads = [
            (TEXT_VADDR, TEXT_PADDR, self.segment_bytes(TEXT_PADDR, 4)),
            (
                self.page_offset + TABLES_PADDR,
                TABLES_PADDR,
                self.segment_bytes(TABLES_PADDR, TABLES_PAGES),
            ),
            (self.vmemmap, 0xFFFF_FFFF_FFFF_FFFF, bytes(PAGE)),
        ]
        loads += [(v, p, self.segment_bytes(p, n)) for v, p, n in self.ram_segments]
        phnum = 1 + len(loads)
        offset = 64 + 56 * phnum
        headers = [struct.pack("<IIQQQQQQ", 4, 0, offset, 0, 0, len(notes), 0, 4)]
        body = [notes]
        offset += len(notes)
        for vaddr, paddr, data in loads:
            headers.append(
                struct.pack("<IIQQQQQQ", 1, 7, offset, vaddr, paddr, *[len(data)] * 2, PAGE)
            )
            body.append(data)
            offset += len(data)
        ident = b"\x7fELF\x02\x01\x01" + bytes(9)
        elf_header = struct.pack(
            "<16sHHIQQQIHHHHHH", ident, 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 64, 0, 0
        )
        return elf_header + b"".join(headers) + b"".join(body)

    def write(self, root: Path) -> None:
        (root / "proc").mkdir(parents=True, exist_ok=True)
        (root / "proc/kcore").write_bytes(self.elf())


def _note(name: bytes, note_type: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    return (
        struct.pack("<III", len(name_z), len(desc), note_type)
        + name_z.ljust((len(name_z) + 3) & ~3, b"\0")
        + desc.ljust((len(desc) + 3) & ~3, b"\0")
    )
