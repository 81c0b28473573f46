"""check --witness on synthetic machines: a sysfs tree plus a /proc/kcore with page tables."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kcorebuilder import GIB, MIB, PAGE, Kcore
from treebuilder import Tree
from unit_helpers import Result

from pyshim import witness
from pyshim.kernel import Sysfs

BLOCK = 128 * MIB
MEMMAP = BLOCK // PAGE * 64  # 2 MiB
DAX_START = 4 * GIB
DAX_BLOCKS = range(DAX_START // BLOCK, DAX_START // BLOCK + 4)  # memory32..35


def machine(root: Path, boot_nodes: int = 1, **tree: Any) -> Tree:
    """Boot memory (2 GiB, split over boot_nodes) and a 4-block dax device on the next node."""
    t = Tree(root, **tree)
    per_node = 16 // boot_nodes
    for node in range(boot_nodes):
        t.boot(node, node * per_node, per_node)
    return t


def add_dax(t: Tree, node: int, on_memory: bool, region: str = "hmem") -> None:
    t.dax("dax0.0", region, node, DAX_START, len(DAX_BLOCKS), moms=on_memory)
    t.finish()


def run(cli: Callable[..., Result], root: Path, *extra: str) -> Result:
    return cli(["check", "--witness", "--sysroot", str(root), *extra])


def blocks_of(result: Result) -> dict[int, dict[str, Any]]:
    data = json.loads(result.out)
    return {b["memory"]: b for d in data["devices"] for b in d["blocks"]}


def memmaps_on_their_blocks() -> Kcore:
    """A 4-level kcore where each dax block's memmap sits on its own first pages (PMD)."""
    kcore = Kcore(levels=4)
    for block in DAX_BLOCKS:
        kcore.map_block_memmap(block, BLOCK, block * BLOCK, 2 * MIB)
    return kcore


def test_pmd_on_block_4_level(cli: Callable[..., Result], tmp_path: Path) -> None:
    add_dax(machine(tmp_path, kmem="on"), 1, on_memory=True, region="cxl")
    kcore = memmaps_on_their_blocks()
    kcore.write(tmp_path)

    r = run(cli, tmp_path, "--json")

    assert r.code == 0, r.err
    for block, b in blocks_of(r).items():
        assert (b["witness"], b["attribute"], b["status"]) == ("memory", True, "ok")
        assert b["memmap_phys"] == [f"{block * BLOCK:#x}-{block * BLOCK + MEMMAP - 1:#x}"]
        assert b["mapping"] == ["2 MiB"]
    info = json.loads(r.out)["witness"]
    assert info["paging_levels"] == 4
    assert info["vmemmap_base"] == f"{kcore.vmemmap:#x}"
    assert info["page_offset_base"] == f"{kcore.page_offset:#x}"


def test_pmd_in_dram_on_node_1_5_level(cli: Callable[..., Result], tmp_path: Path) -> None:
    """Two DRAM nodes; the memmap went to node 1 (memory8..15), not node 0."""
    add_dax(machine(tmp_path, boot_nodes=2, kmem="off"), 2, on_memory=False)
    kcore = Kcore(levels=5)
    for i, block in enumerate(DAX_BLOCKS):
        kcore.map_block_memmap(block, BLOCK, 9 * BLOCK + i * 2 * MIB, 2 * MIB)
    kcore.write(tmp_path)

    r = run(cli, tmp_path, "--json")

    assert r.code == 0, r.err
    assert {b["witness"] for b in blocks_of(r).values()} == {"dram"}
    assert all(b["witness_nodes"] == [1] for b in blocks_of(r).values())
    assert json.loads(r.out)["witness"]["paging_levels"] == 5
    text = run(cli, tmp_path)
    assert text.code == 0
    assert text.out.count("in DRAM on node 1; attribute 0: ok") == len(DAX_BLOCKS)


def test_4k_leaves_scattered_in_dram_stock(cli: Callable[..., Result], tmp_path: Path) -> None:
    """Stock kernel (no attribute), memmap from 4 KiB pages taken here and there on node 0."""
    add_dax(machine(tmp_path, patched=False, kmem=None), 1, on_memory=False)
    kcore = Kcore(levels=4)
    pages = MEMMAP // PAGE
    for i, block in enumerate(DAX_BLOCKS):
        start = kcore.memmap_vaddr(block * BLOCK // PAGE)
        for page in range(pages):
            # every other page, from the top of node 0 down: no two neighbours are contiguous
            phys = 15 * BLOCK - (i * pages + page) * 2 * PAGE
            kcore.map(start + page * PAGE, phys, PAGE)
    kcore.write(tmp_path)

    r = run(cli, tmp_path, "--json")

    assert r.code == 0, r.err
    for b in blocks_of(r).values():
        assert (b["witness"], b["witness_nodes"], b["attribute"]) == ("dram", [0], None)
        assert len(b["memmap_phys"]) == pages
        assert b["mapping"] == ["4 KiB"]


def test_1g_leaf(cli: Callable[..., Result], tmp_path: Path) -> None:
    add_dax(machine(tmp_path, kmem="off"), 1, on_memory=False)
    kcore = Kcore(levels=4)
    kcore.map(kcore.vmemmap, 1 * GIB, GIB)  # the memmap of the first 64 GiB of memory
    kcore.write(tmp_path)

    r = run(cli, tmp_path, "--json")

    assert r.code == 0, r.err
    for block, b in blocks_of(r).items():
        phys = GIB + block * MEMMAP
        assert b["memmap_phys"] == [f"{phys:#x}-{phys + MEMMAP - 1:#x}"]
        assert (b["witness"], b["mapping"]) == ("dram", ["1 GiB"])


def test_not_present_entry_is_inconsistent(cli: Callable[..., Result], tmp_path: Path) -> None:
    add_dax(machine(tmp_path, kmem="on"), 1, on_memory=True, region="cxl")
    kcore = Kcore(levels=4)
    for block in DAX_BLOCKS:
        if block != 34:
            kcore.map_block_memmap(block, BLOCK, block * BLOCK, 2 * MIB)
    kcore.write(tmp_path)

    r = run(cli, tmp_path, "--json")

    assert r.code == 1
    blocks = blocks_of(r)
    assert blocks[34]["witness"] == "unmapped"
    assert blocks[34]["status"] == "inconsistent"
    assert [blocks[b]["witness"] for b in (32, 33, 35)] == ["memory"] * 3
    assert json.loads(r.out)["status"] == "inconsistent"


def test_attribute_says_memory_but_memmap_in_dram(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    """The deliberately wrong kernel: altmap reserved (attribute 1, accounting as on memory),
    struct pages allocated from DRAM. Only the witness sees it."""
    add_dax(machine(tmp_path, kmem="on"), 1, on_memory=True, region="cxl")
    kcore = Kcore(levels=4)
    for i, block in enumerate(DAX_BLOCKS):
        kcore.map_block_memmap(block, BLOCK, 3 * BLOCK + i * 2 * MIB, 2 * MIB)
    kcore.write(tmp_path)

    assert cli(["check", "--sysroot", str(tmp_path)]).code == 0  # bookkeeping alone: fooled
    r = run(cli, tmp_path)

    assert r.code == 1
    assert r.out.count("in DRAM on node 0; attribute 1: inconsistent") == len(DAX_BLOCKS)
    assert "page tables disagree" in r.out


@pytest.mark.parametrize(("witness_on_block", "code"), [(True, 0), (False, 1)])
def test_stock_accounting_is_checked_against_the_witness(
    cli: Callable[..., Result], tmp_path: Path, witness_on_block: bool, code: int
) -> None:
    """Stock kernel, node 1 accounts the memmap on memory: the witness must agree."""
    add_dax(machine(tmp_path, patched=False, kmem=None), 1, on_memory=True)
    kcore = Kcore(levels=4)
    for i, block in enumerate(DAX_BLOCKS):
        phys = block * BLOCK if witness_on_block else 3 * BLOCK + i * 2 * MIB
        kcore.map_block_memmap(block, BLOCK, phys, 2 * MIB)
    kcore.write(tmp_path)

    # The fixture's settings (attribute 0, global N) chose DRAM: the blocks are stale, which
    # is not what this test is about.
    r = run(cli, tmp_path, "--json", "--allow-stale")

    assert r.code == code, r.out
    node1 = next(n for n in json.loads(r.out)["nodes"] if n["node"] == 1)
    assert node1["status"] == ("ok" if witness_on_block else "inconsistent")


@pytest.mark.parametrize(
    ("extent", "detail"),
    [
        ((33 * BLOCK + 2 * MIB, 33 * BLOCK + 4 * MIB), "not its first pages"),
        ((32 * BLOCK, 32 * BLOCK + 2 * MIB), "other hot-plugged memory (memory32)"),
        ((40 * BLOCK, 40 * BLOCK + 2 * MIB), "outside every node's memory (memory40)"),
    ],
)
def test_classify_elsewhere(extent: tuple[int, int], detail: str) -> None:
    node_of_block = {i: 0 for i in range(16)} | {i: 1 for i in DAX_BLOCKS}
    placement, nodes, why = witness.classify(
        33, BLOCK, MEMMAP, [extent], node_of_block, set(DAX_BLOCKS)
    )
    assert (placement, nodes) == (witness.Placement.ELSEWHERE, ())
    assert detail in why


# --- prerequisites and broken input ----------------------------------------------------------


def stock_machine(root: Path) -> None:
    add_dax(machine(root, patched=False, kmem=None), 1, on_memory=False)


def test_no_kcore_exits_3(cli: Callable[..., Result], tmp_path: Path) -> None:
    stock_machine(tmp_path)
    r = run(cli, tmp_path)
    assert r.code == 3
    assert "CONFIG_PROC_KCORE" in r.err


@pytest.mark.parametrize(
    ("err", "lockdown", "says"),
    [
        (errno.EPERM, "none integrity [confidentiality]\n", "locked down"),
        (errno.EACCES, None, "run as root"),
    ],
)
def test_unreadable_kcore_exits_3(
    cli: Callable[..., Result],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    err: int,
    lockdown: str | None,
    says: str,
) -> None:
    stock_machine(tmp_path)
    Kcore().write(tmp_path)
    if lockdown is not None:
        (tmp_path / "sys/kernel/security").mkdir(parents=True)
        (tmp_path / "sys/kernel/security/lockdown").write_text(lockdown)
    real_open = os.open

    def refuse_kcore(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith("proc/kcore"):
            raise OSError(err, os.strerror(err), path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(witness.os, "open", refuse_kcore)
    r = run(cli, tmp_path)

    assert r.code == 3
    assert says in r.err and "/proc/kcore" in r.err


@pytest.mark.parametrize("key", ["SYMBOL(init_top_pgt)", "SYMBOL(vmemmap)", "SIZE(page)"])
def test_vmcoreinfo_without_a_symbol_exits_3(
    cli: Callable[..., Result], tmp_path: Path, key: str
) -> None:
    stock_machine(tmp_path)
    Kcore(vmcoreinfo_drop=(key,)).write(tmp_path)
    r = run(cli, tmp_path)
    assert r.code == 3
    assert key in r.err


def test_not_an_elf_file_fails(cli: Callable[..., Result], tmp_path: Path) -> None:
    stock_machine(tmp_path)
    (tmp_path / "proc/kcore").write_bytes(b"\0" * 4096)
    r = run(cli, tmp_path)
    assert r.code == 1
    assert "not a little-endian 64-bit ELF" in r.err


def test_layout_read_through_kcore(tmp_path: Path) -> None:
    kcore = Kcore(levels=5)
    kcore.write(tmp_path)
    with witness.Kcore.open(Sysfs(tmp_path)) as reader:
        layout = witness.read_layout(reader)
    assert layout == witness.PageTableLayout(
        top_table=0xFFFF_FFFF_9A00_2000,
        page_offset=kcore.page_offset,
        vmemmap_base=kcore.vmemmap,
        levels=5,
        struct_page_size=64,
        kaslr_offset=0x1900_0000,
    )


# --- the judgement made exact (issue 19, item 7): each test fails when its decision changes ---


def test_memmap_on_another_hotplugged_block_is_inconsistent(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    """Attribute 0 (DRAM) but the struct pages are on the first pages of the next hot-plugged
    block: not boot memory, whatever node that block is on."""
    add_dax(machine(tmp_path, kmem="off"), 1, on_memory=False)
    kcore = Kcore(levels=4)
    blocks = list(DAX_BLOCKS)
    for block, holder in zip(blocks, blocks[1:] + blocks[:1], strict=True):
        kcore.map_block_memmap(block, BLOCK, holder * BLOCK, 2 * MIB)
    kcore.write(tmp_path)

    r = run(cli, tmp_path, "--json")

    assert r.code == 1, r.out
    for block, b in blocks_of(r).items():
        assert (b["witness"], b["attribute"], b["status"]) == ("elsewhere", False, "inconsistent")
        assert "other hot-plugged memory" in b["witness_detail"], (block, b)
    assert json.loads(r.out)["status"] == "inconsistent"


@pytest.mark.parametrize(
    ("size", "on_memory"),
    [(72, False), (80, True)],
    ids=["72-in-dram", "80-on-the-block"],
)
def test_struct_page_size_comes_from_vmcoreinfo(
    cli: Callable[..., Result], tmp_path: Path, size: int, on_memory: bool
) -> None:
    """SIZE(page) other than 64: the stride (where a block's struct pages start) and the
    memmap size (how many bytes they take) both follow it."""
    add_dax(machine(tmp_path, kmem="on" if on_memory else "off"), 1, on_memory=on_memory)
    kcore = Kcore(levels=4, struct_page_size=size)
    memmap = BLOCK // PAGE * size
    for i, block in enumerate(DAX_BLOCKS):
        phys = block * BLOCK if on_memory else 3 * BLOCK + i * memmap
        kcore.map_block_memmap(block, BLOCK, phys, PAGE)
    kcore.write(tmp_path)

    r = run(cli, tmp_path, "--json")

    assert r.code == 0, r.out + r.err
    for i, (block, b) in enumerate(blocks_of(r).items()):
        phys = block * BLOCK if on_memory else 3 * BLOCK + i * memmap
        assert b["memmap_phys"] == [f"{phys:#x}-{phys + memmap - 1:#x}"]
        assert b["witness"] == ("memory" if on_memory else "dram")
        if not on_memory:
            assert b["memmap_bytes"] == memmap
    assert json.loads(r.out)["witness"]["struct_page_size"] == size


@pytest.mark.parametrize("size", [8, 48, 63, 136, 4096, -64])
def test_struct_page_size_no_kernel_has_fails(
    cli: Callable[..., Result], tmp_path: Path, size: int
) -> None:
    stock_machine(tmp_path)
    Kcore(struct_page_size=size).write(tmp_path)
    r = run(cli, tmp_path)
    assert r.code == 1, r.err
    assert r.err.count("\n") == 1
    assert f"SIZE(page)={size}, which no x86-64 kernel has" in r.err or "64-bit number" in r.err


@pytest.mark.parametrize(("levels", "size"), [(4, 1 << 39), (5, 1 << 48), (5, 1 << 39)])
def test_page_size_bit_above_the_pud_is_invalid(
    cli: Callable[..., Result], tmp_path: Path, levels: int, size: int
) -> None:
    """A PGD or P4D entry with bit 7 set: reserved there, so no page the hardware maps."""
    add_dax(machine(tmp_path, kmem="on"), 1, on_memory=True, region="cxl")
    kcore = Kcore(levels=levels)
    kcore.map(kcore.vmemmap & ~(size - 1), 0, size)
    kcore.write(tmp_path)

    r = run(cli, tmp_path)

    assert r.code == 1, r.out
    level = {1 << 48: "PGD", 1 << 39: "PGD" if levels == 4 else "P4D"}[size]
    assert f"the {level} entry" in r.err and "has the page-size bit" in r.err, r.err
    assert r.err.count("\n") == 1


@pytest.mark.parametrize("leaf", [2 * MIB, GIB], ids=["pmd", "pud"])
def test_pat_bit_of_a_large_leaf_is_not_address(
    cli: Callable[..., Result], tmp_path: Path, leaf: int
) -> None:
    """Bit 12 of a 2 MiB or 1 GiB leaf is the PAT bit: with it set, the memmap is still
    exactly the block's first pages (4 KiB further on would be 'not its first pages')."""
    add_dax(machine(tmp_path, kmem="on"), 1, on_memory=True, region="cxl")
    kcore = Kcore(levels=4)
    pat = 1 << 12
    if leaf == GIB:
        # One 1 GiB leaf maps the memmap of 64 GiB of memory; memory32..35 sit at 4 GiB,
        # 4 GiB / 64 = 64 MiB into it. Make that the blocks' own first pages: not possible
        # for all four at once, so map it as DRAM on node 0 (phys 0) and check the address.
        kcore.map(kcore.vmemmap, 0, GIB, extra=pat)
    else:
        for block in DAX_BLOCKS:
            kcore.map_block_memmap(block, BLOCK, block * BLOCK, leaf, extra=pat)
    kcore.write(tmp_path)

    r = run(cli, tmp_path, "--json", "--allow-stale")

    for block, b in blocks_of(r).items():
        phys = block * BLOCK if leaf != GIB else block * MEMMAP
        assert b["memmap_phys"] == [f"{phys:#x}-{phys + MEMMAP - 1:#x}"], b
    if leaf != GIB:
        assert r.code == 0, r.out
        assert {b["witness"] for b in blocks_of(r).values()} == {"memory"}


def test_ram_segments_give_one_direct_map_base(cli: Callable[..., Result], tmp_path: Path) -> None:
    """Two RAM segments that put the direct map at two different bases: the tables cannot be
    read through the direct map, whichever is taken."""
    add_dax(machine(tmp_path, kmem="on"), 1, on_memory=True, region="cxl")
    kcore = memmaps_on_their_blocks()
    same = kcore.page_offset
    kcore.ram_segments = [(same + GIB, GIB, 1)]  # the same base: fine
    kcore.write(tmp_path)
    assert run(cli, tmp_path).code == 0

    kcore.ram_segments.append((same + (1 << 40) + 2 * GIB, 2 * GIB, 1))
    kcore.write(tmp_path)
    r = run(cli, tmp_path)

    assert r.code == 1
    assert "RAM segments give no single direct map base" in r.err
    assert f"{same:#x}, {same + (1 << 40):#x}" in r.err


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "stock"])
def test_on_block_while_the_settings_choose_dram_is_stale(
    cli: Callable[..., Result], tmp_path: Path, patched: bool
) -> None:
    """The memmap is on the block, as an earlier setting chose; kmem off now (patched) or
    memory_hotplug.memmap_on_memory=N (stock) chooses DRAM: stale, exit 4."""
    tree = {"kmem": "off"} if patched else {"patched": False, "kmem": None}
    add_dax(machine(tmp_path, **tree), 1, on_memory=True, region="cxl")
    memmaps_on_their_blocks().write(tmp_path)

    r = run(cli, tmp_path, "--json")

    assert r.code == 4, r.out
    data = json.loads(r.out)
    assert data["status"] == "stale"
    assert {(b["witness"], b["status"]) for b in blocks_of(r).values()} == {("memory", "stale")}
    assert run(cli, tmp_path, "--allow-stale").code == 0


def test_nothing_to_witness_exits_3(cli: Callable[..., Result], tmp_path: Path) -> None:
    """No dax memory in system-ram mode: the witness looked at nothing, so it proves nothing."""
    t = machine(tmp_path, kmem="on")
    t.dax("dax0.0", "hmem", 1, DAX_START, len(DAX_BLOCKS), driver="device_dax")
    t.finish()
    Kcore(levels=4).write(tmp_path)

    r = run(cli, tmp_path)

    assert r.code == 3, r.out
    assert r.out == "" and "check: ok" not in r.err
    assert "nothing to witness" in r.err and r.err.count("\n") == 1
    assert "online daxX.Y" in r.err
    only = run(cli, tmp_path, "dax0.0")
    assert only.code == 3 and "nothing to witness: dax0.0 has no memory blocks" in only.err


def test_witness_that_finds_no_memmap_mapped_exits_3(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    """Page tables that map nothing at vmemmap_base: the layout does not describe them."""
    add_dax(machine(tmp_path, kmem="on"), 1, on_memory=True, region="cxl")
    Kcore(levels=4).write(tmp_path)

    r = run(cli, tmp_path)

    assert r.code == 3, r.out
    assert "the witness read nothing" in r.err and r.out == ""


def test_struct_page_size_0_reads_nothing_exits_3(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    stock_machine(tmp_path)
    Kcore(struct_page_size=0).write(tmp_path)
    r = run(cli, tmp_path)
    assert r.code == 3 and r.out == ""
    assert "SIZE(page)=0" in r.err and r.err.count("\n") == 1


@pytest.mark.parametrize(
    "extents",
    [
        [(3 * BLOCK, 3 * BLOCK + MEMMAP // 2)],  # half of it, in boot memory
        [(33 * BLOCK, 33 * BLOCK + MEMMAP // 2)],  # the first half of the block's own pages
        [],  # none of it
    ],
    ids=["half-in-dram", "half-on-block", "none"],
)
def test_classify_needs_the_whole_memmap(extents: list[tuple[int, int]]) -> None:
    node_of_block = {i: 0 for i in range(16)} | {i: 1 for i in DAX_BLOCKS}
    placement, nodes, why = witness.classify(
        33, BLOCK, MEMMAP, extents, node_of_block, set(DAX_BLOCKS)
    )
    assert (placement, nodes) == (witness.Placement.UNMAPPED, ())
    assert f"of the memmap's {MEMMAP} bytes found" in why
