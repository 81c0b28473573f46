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


def test_pmd_on_block_4_level(cli: Callable[..., Result], tmp_path: Path) -> None:
    add_dax(machine(tmp_path, kmem="on"), 1, on_memory=True, region="cxl")
    kcore = Kcore(levels=4)
    for block in DAX_BLOCKS:
        kcore.map_block_memmap(block, BLOCK, block * BLOCK, 2 * MIB)
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
    assert layout == witness.Layout(
        top_table=0xFFFF_FFFF_9A00_2000,
        page_offset=kcore.page_offset,
        vmemmap_base=kcore.vmemmap,
        levels=5,
        struct_page_size=64,
        kaslr_offset=0x1900_0000,
    )
