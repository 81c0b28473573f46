"""check --witness: the placement check of logic.check, held against the page tables.

witness.py finds where each block's struct pages physically are; this module puts that next
to the kernel's own bookkeeping (memoryN/memmap_on_memory, the node accounting) and says
where they disagree. A witness that found nothing to look at proves nothing: that is exit 3,
never "check: ok".
"""

from __future__ import annotations

from typing import Any, cast

from pyshim import logic, render
from pyshim.drivers import DriverSpec
from pyshim.errors import MissingPrerequisite, OperationFailed
from pyshim.kernel import Sysfs
from pyshim.parse import format_size
from pyshim.witness import Placement, witness_blocks


def check(sysfs: Sysfs, spec: DriverSpec, only: str | None, prog: str) -> dict[str, Any]:
    """logic.check with the witness: per block, the attribute (patched kernels) must say what
    the page tables say; the node accounting is checked against the attribute, or against the
    witness where the kernel has no attribute (stock 6.12)."""
    snap = sysfs.snapshot(spec)
    if only is not None and only not in {d.name for d in snap.devices}:
        raise OperationFailed(f"no dax device {only}: see {prog} show")
    hotplugged = {b.number for blocks in snap.blocks.values() for b in blocks}
    wanted = {b.number for name, bl in snap.blocks.items() if only in (None, name) for b in bl}
    if not wanted:
        which = only or "any dax device"
        raise MissingPrerequisite(
            f"nothing to witness: {which} has no memory blocks in system-ram mode, so there "
            f"is no memmap to find; online one first ({prog} online daxX.Y)"
        )
    layout, witnesses = witness_blocks(sysfs, sorted(hotplugged), hotplugged)
    by_block = {w.memory: w for w in witnesses}
    if all(by_block[i].placement is Placement.UNMAPPED for i in wanted):
        raise MissingPrerequisite(
            f"the witness read nothing: no block's memmap is mapped at vmemmap_base "
            f"{layout.vmemmap_base:#x}, so this VMCOREINFO does not describe the page tables "
            "the kernel runs on"
        )
    attributes = {b.number: b.memmap_on_memory for bl in snap.blocks.values() for b in bl}
    effective = {
        name: [
            b._replace(memmap_on_memory=by_block[b.number].placement is Placement.ON_BLOCK)
            if b.memmap_on_memory is None
            else b
            for b in blocks
        ]
        for name, blocks in snap.blocks.items()
    }
    result = logic.check(snap._replace(blocks=effective), prog, only=only)
    inconsistent = logic.Status.INCONSISTENT.value
    devices = cast(list[dict[str, Any]], result["devices"])
    for dev in devices:
        for blk in dev["blocks"]:
            seen = by_block[blk["memory"]]
            attribute = attributes[blk["memory"]]
            blk.update(
                attribute=attribute,
                witness=seen.placement.value,
                witness_nodes=list(seen.nodes),
                memmap_phys=[f"{lo:#x}-{hi - 1:#x}" for lo, hi in seen.extents],
                mapping=[format_size(s) for s in seen.page_sizes],
                witness_detail=seen.detail,
            )
            if seen.placement is Placement.BOOT_MEMORY:
                # What the struct pages take in DRAM, at the kernel's own SIZE(page).
                blk["memmap_bytes"] = sum(hi - lo for lo, hi in seen.extents)
            agrees = seen.placement in (Placement.ON_BLOCK, Placement.BOOT_MEMORY) and (
                attribute is None or attribute == (seen.placement is Placement.ON_BLOCK)
            )
            if not agrees:
                blk["status"] = dev["status"] = result["status"] = inconsistent
                dev["fix"] = (
                    "the page tables disagree with the kernel's own bookkeeping: report this "
                    "kernel bug with the output of check --witness --json"
                )
    result["witness"] = {
        "paging_levels": layout.levels,
        "page_offset_base": f"{layout.page_offset:#x}",
        "vmemmap_base": f"{layout.vmemmap_base:#x}",
        "init_top_pgt": f"{layout.top_table:#x}",
        "kaslr_offset": f"{layout.kaslr_offset:#x}",
        "struct_page_size": layout.struct_page_size,
    }
    return result


def check_text(result: dict[str, Any], prog: str) -> str:
    w = result["witness"]
    lines = [
        f"memmap of each block from the page tables ({w['paging_levels']}-level, vmemmap_base "
        f"{w['vmemmap_base']}, page_offset_base {w['page_offset_base']}, struct page "
        f"{w['struct_page_size']} B):"
    ]
    devices = cast(list[dict[str, Any]], result["devices"])
    for dev in devices:
        for blk in dev["blocks"]:
            where = {
                Placement.ON_BLOCK.value: "on the block",
                Placement.BOOT_MEMORY.value: "in DRAM on node "
                + ",".join(map(str, blk["witness_nodes"])),
            }.get(blk["witness"], f"{blk['witness']}: {blk['witness_detail']}")
            attribute = "-" if blk["attribute"] is None else int(blk["attribute"])
            lines.append(
                f"  memory{blk['memory']}  {dev['chardev']}  {blk['state']}  "
                f"{' '.join(blk['memmap_phys']) or '-'} ({'/'.join(blk['mapping']) or '-'} "
                f"pages): {where}; attribute {attribute}: {blk['status']}"
            )
    return "\n".join(lines) + "\n" + render.check_text(result, prog)
