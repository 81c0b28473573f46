"""Output: show, check and plan as text or JSON (report.py writes metrics and the HTML report).

Every word pyshim prints about a check comes from here: check.py returns a typed result and
the fix for a device is an enum, worded below with the program's name.
"""

from __future__ import annotations

from typing import Any

from pyshim.check import CheckResult, DeviceCheck, Fix, NodeCheck, Status
from pyshim.logic import PAGE_SIZE, Plan, PlanColumn, memmap_bytes
from pyshim.parse import format_size
from pyshim.snapshot import DaxDevice, MemmapSettings, MemoryBlock, Snapshot

# Format version of every JSON document pyshim prints; raised on incompatible changes.
JSON_VERSION = 1


def _is_flat(value: object) -> bool:
    return isinstance(value, dict) and not any(isinstance(v, dict | list) for v in value.values())


def _pretty(value: object, indent: str, out: list[str], flat: Any, one_line: bool = False) -> None:
    """Indented JSON, except that the flat objects of a "blocks" list take one line each.

    json.dumps(indent=...) falls back to the pure-Python encoder, which costs more than all
    the sysfs reads of a 1 TiB machine; one C-encoded line per memory block keeps `check`
    fast and the output easy to grep.
    """
    inner = indent + "  "
    if isinstance(value, dict) and value:
        out.append("{\n")
        last = len(value) - 1
        for i, (key, item) in enumerate(value.items()):
            out.append(f"{inner}{flat.encode(key)}: ")
            _pretty(item, inner, out, flat, key == "blocks")
            out.append(",\n" if i < last else "\n")
        out.append(indent + "}")
    elif isinstance(value, list) and value:
        out.append("[\n")
        last = len(value) - 1
        encode = flat.encode
        for i, item in enumerate(value):
            out.append(inner)
            if one_line and _is_flat(item):
                out.append(encode(item))
            else:
                _pretty(item, inner, out, flat)
            out.append(",\n" if i < last else "\n")
        out.append(indent + "]")
    else:
        out.append(flat.encode(value))


def to_json(data: object) -> str:
    import json  # here, not at the top: text output never needs it (start-up time)

    out: list[str] = []
    _pretty(data, "", out, json.JSONEncoder(separators=(", ", ": ")))
    out.append("\n")
    return "".join(out)


# --- show --------------------------------------------------------------------------------------


def memmap_placement(blocks: list[MemoryBlock]) -> str | None:
    """Where the memmap of these blocks lives, read from memoryN/memmap_on_memory:
    memory, dram, mixed, or None without blocks (or on a kernel without the attribute)."""
    values = {b.memmap_on_memory for b in blocks}
    if not blocks or None in values:
        return None
    if len(values) > 1:
        return "mixed"
    return location(values.pop() is True)


def device_json(dev: DaxDevice, blocks: list[MemoryBlock], block_size: int) -> dict[str, object]:
    """One device with daxctl's key names (chardev, size, target_node, align, mode, ...),
    then where its memmap lives according to its blocks, in memory blocks and bytes."""
    online = [b for b in blocks if b.state == "online"]
    movable: bool | None = None
    if online and all(b.valid_zones is not None for b in online):
        movable = all(b.valid_zones == "Movable" for b in online)
    ram = dev.driver == "kmem"
    on_memory = sum(1 for b in blocks if b.memmap_on_memory)
    in_dram = sum(1 for b in blocks if b.memmap_on_memory is False)
    per_block = memmap_bytes(block_size)
    return {
        "chardev": dev.name,
        "size": dev.size,
        "target_node": dev.target_node,
        "align": dev.align,
        "mode": dev.mode,
        "state": "enabled" if dev.driver else "disabled",
        "driver": dev.driver,
        "region": dev.region,
        "online_memblocks": len(online) if ram else None,
        "total_memblocks": len(blocks) if ram else None,
        "movable": movable,
        "memmap": memmap_placement(blocks) if ram else None,
        "memmap_on_memory_memblocks": on_memory if ram else None,
        "memmap_in_dram_memblocks": in_dram if ram else None,
        "memmap_in_dram_bytes": in_dram * per_block if ram else None,
        "memmap_on_memory_attribute": attribute_json(dev.memmap_on_memory),
        # The kernel's word as read (null without the file): a version-1 addition, since a
        # reader that ignores unknown keys sees nothing change.
        "state_attribute": state_attribute_json(dev),
    }


def state_attribute_json(dev: DaxDevice) -> str | None:
    """daxX.Y/state as the kernel wrote it, None where the kernel has no such file."""
    return dev.state_attribute.value if dev.state_attribute is not None else None


def show_json(snapshot: Snapshot, extra: dict[str, object]) -> dict[str, object]:
    settings = settings_json(snapshot.settings)
    settings.update(extra)
    block_size = snapshot.settings.block_size
    return {
        "version": JSON_VERSION,
        "settings": settings,
        "devices": [
            device_json(d, snapshot.blocks.get(d.name, []), block_size) for d in snapshot.devices
        ],
        "vanished": list(snapshot.vanished),
    }


def _word(value: object) -> str:
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    return str(value)


def compact_size(value: int) -> str:
    """A size as one awk field (512MiB), where format_size's "512 MiB" would be two."""
    return format_size(value).replace(" ", "")


# Column headers of `show`: MEMMAP is where the blocks' memmap lives (memoryN/memmap_on_memory);
# DAX_ATTR is the device's own memmap_on_memory attribute, which kmem consults only under
# `global` and which says nothing about where an already onlined memmap went. DAX_STATE is
# daxX.Y/state (Linux 7.3+, kmem devices): kmem's record of the last whole-device change,
# which blocks onlined one by one leave alone, so BLOCKS stays the count to trust. It is the
# last column so that scripts reading the earlier columns by position keep working.
SHOW_COLUMNS = [
    "DEVICE",
    "MODE",
    "NODE",
    "REGION",
    "SIZE",
    "BLOCKS",
    "MOVABLE",
    "MEMMAP",
    "MEMMAP_IN_DRAM",
    "DAX_ATTR",
    "DAX_STATE",
]


def show_text(data: dict[str, Any]) -> str:
    s = data["settings"]
    kmem = s["kmem_memmap_on_memory"] or "absent (stock kernel)"
    lines = [
        f"memory_hotplug.memmap_on_memory  {_word(s['global_memmap_on_memory'])}",
        f"kmem memmap_on_memory            {kmem} (kmem {s['kmem_module']})",
        f"memory block size                {format_size(s['memory_block_size_bytes'])} "
        f"(memmap {format_size(s['memmap_bytes_per_block'])} per block)",
        f"auto_online_blocks               {_word(s['auto_online_blocks'])}",
    ]
    if not s["supported"]:
        lines.append(f"memmap on memory impossible:     {s['unsupported_reason']}")
    rows: list[list[str]] = [SHOW_COLUMNS]
    for d in data["devices"]:
        ram = d["total_memblocks"] is not None
        rows.append(
            [
                d["chardev"],
                d["mode"] if d["state"] == "enabled" else "disabled",
                str(d["target_node"]),
                d["region"],
                compact_size(d["size"]),
                f"{d['online_memblocks']}/{d['total_memblocks']}" if ram else "-",
                _word(d["movable"]),
                _word(d["memmap"]),
                compact_size(d["memmap_in_dram_bytes"]) if ram else "-",
                _word(d["memmap_on_memory_attribute"]),
                _word(d["state_attribute"]),
            ]
        )
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    else:
        lines.append("no dax devices")
    return "\n".join(lines) + "\n"


# --- check -------------------------------------------------------------------------------------


def location(on_memory: bool) -> str:
    return "memory" if on_memory else "dram"


def attribute_json(value: bool | None) -> int | None:
    """A 0/1 sysfs attribute as the kernel shows it (None when the file is absent)."""
    return None if value is None else int(value)


def settings_json(settings: MemmapSettings) -> dict[str, object]:
    return {
        "kmem_memmap_on_memory": settings.kmem.value if settings.kmem else None,
        "global_memmap_on_memory": settings.global_mode.value if settings.global_mode else None,
        "memory_block_size_bytes": settings.block_size,
        "memmap_bytes_per_block": memmap_bytes(settings.block_size),
        "memmap_on_memory_bytes_per_block": settings.pages_per_block * PAGE_SIZE,
        "supported": settings.unsupported_reason is None,
        "unsupported_reason": settings.unsupported_reason,
    }


def reonline_command(prog: str, device: str) -> str:
    """Remove the device's memory and add it again: placement is decided at the hot-add."""
    return f"{prog} reconfigure --mode devdax {device} && {prog} online {device}"


def fix_text(fix: Fix | None, prog: str, device: str) -> str | None:
    if fix is Fix.REONLINE:
        return reonline_command(prog, device)
    if fix is Fix.MIXED_BLOCKS:
        return (
            "blocks of one device must agree (the kernel refuses to remove mixed ranges); "
            "report this kernel bug"
        )
    if fix is Fix.PAGE_TABLES_DISAGREE:
        return (
            "the page tables disagree with the kernel's own bookkeeping: report this "
            "kernel bug with the output of check --witness --json"
        )
    return None


def device_check_json(d: DeviceCheck, prog: str) -> dict[str, object]:
    dev = d.device
    entry: dict[str, object] = {
        "chardev": dev.name,
        "mode": dev.mode,
        "target_node": dev.target_node,
        "region": dev.region,
        "memmap_on_memory_attribute": attribute_json(dev.memmap_on_memory),
    }
    if d.decision is None or d.status is None:
        entry.update(
            expected_memmap_on_memory=None,
            reason=None,
            status=dev.mode if dev.driver else "disabled",
            fix=None,
            total_memblocks=0,
            blocks=[],
        )
        return entry
    blocks: list[dict[str, object]] = []
    for b in d.blocks:
        block: dict[str, object] = {
            "memory": b.block.number,
            "state": b.block.state,
            "memmap": location(b.on_memory),
            "memmap_bytes": b.memmap_bytes,
            "status": b.status.value,
        }
        if b.witness is not None:
            block.update(
                attribute=b.block.memmap_on_memory,
                witness=b.witness.placement.value,
                witness_nodes=list(b.witness.nodes),
                memmap_phys=[f"{lo:#x}-{hi - 1:#x}" for lo, hi in b.witness.extents],
                mapping=[format_size(s) for s in b.witness.page_sizes],
                witness_detail=b.witness.detail,
            )
        blocks.append(block)
    entry.update(
        expected_memmap_on_memory=d.decision.memmap_on_memory,
        reason=d.decision.reason,
        status=d.status.value,
        fix=fix_text(d.fix, prog, dev.name),
        total_memblocks=len(d.blocks),
        blocks=blocks,
    )
    return entry


def node_check_json(n: NodeCheck) -> dict[str, object]:
    return {
        "node": n.node,
        "total_memblocks": n.total_memblocks,
        "online_memblocks": n.online_memblocks,
        "memmap_on_memory_memblocks": n.memmap_on_memory_memblocks,
        "present_bytes": n.present_bytes,
        "managed_bytes": n.managed_bytes,
        "present_minus_managed_bytes": n.present_minus_managed_bytes,
        "expected_present_minus_managed_bytes": n.expected_present_minus_managed_bytes,
        "memtotal_bytes": n.memtotal_bytes,
        "expected_memtotal_bytes": n.expected_memtotal_bytes,
        "status": "skipped" if n.status is None else n.status.value,
        "reason": n.reason,
    }


def check_json(result: CheckResult, prog: str) -> dict[str, object]:
    data: dict[str, object] = {
        "version": JSON_VERSION,
        "settings": settings_json(result.settings),
        "devices": [device_check_json(d, prog) for d in result.devices],
        "nodes": [node_check_json(n) for n in result.nodes],
        "vanished": list(result.vanished),
        "status": result.status.value,
    }
    if result.layout is not None:
        layout = result.layout
        data["witness"] = {
            "paging_levels": layout.levels,
            "page_offset_base": f"{layout.page_offset:#x}",
            "vmemmap_base": f"{layout.vmemmap_base:#x}",
            "init_top_pgt": f"{layout.top_table:#x}",
            "kaslr_offset": f"{layout.kaslr_offset:#x}",
            "struct_page_size": layout.struct_page_size,
        }
    return data


def _size(value: int | None) -> str:
    return "-" if value is None else compact_size(value)


def witness_text(result: CheckResult) -> list[str]:
    """check --witness: each block's memmap as the page tables show it, one line a block."""
    layout = result.layout
    if layout is None:
        return []
    from pyshim.witness import Placement  # only check --witness has imported it

    lines = [
        f"memmap of each block from the page tables ({layout.levels}-level, vmemmap_base "
        f"{layout.vmemmap_base:#x}, page_offset_base {layout.page_offset:#x}, struct page "
        f"{layout.struct_page_size} B):"
    ]
    for d in result.devices:
        for b in d.blocks:
            seen = b.witness
            if seen is None:
                continue
            if seen.placement is Placement.ON_BLOCK:
                where = "on the block"
            elif seen.placement is Placement.BOOT_MEMORY:
                where = "in DRAM on node " + ",".join(map(str, seen.nodes))
            else:
                where = f"{seen.placement.value}: {seen.detail}"
            attribute = "-" if b.block.memmap_on_memory is None else int(b.block.memmap_on_memory)
            phys = " ".join(f"{lo:#x}-{hi - 1:#x}" for lo, hi in seen.extents) or "-"
            mapping = "/".join(format_size(s) for s in seen.page_sizes) or "-"
            lines.append(
                f"  memory{b.block.number}  {d.device.name}  {b.block.state}  "
                f"{phys} ({mapping} pages): {where}; attribute {attribute}: {b.status.value}"
            )
    return lines


def check_text(result: CheckResult, prog: str) -> str:
    lines = witness_text(result)
    for d in result.devices:
        dev = d.device
        if d.decision is None or d.status is None:
            status = dev.mode if dev.driver else "disabled"
            lines.append(
                f"{dev.name}  {status}  node {dev.target_node}: no memory blocks "
                f"(online it with: {prog} online {dev.name})"
            )
            continue
        on_mem = sum(1 for b in d.blocks if b.on_memory)
        where = location(d.decision.memmap_on_memory)
        line = (
            f"{dev.name}  system-ram  node {dev.target_node}  {dev.region}: "
            f"{len(d.blocks)} blocks, memmap on memory {on_mem}, in DRAM {len(d.blocks) - on_mem}; "
            f"settings choose {where} ({d.decision.reason}): {d.status.value}"
        )
        fix = fix_text(d.fix, prog, dev.name)
        if d.fix is Fix.REONLINE:
            stale = sum(1 for b in d.blocks if b.status is Status.STALE)
            line += (
                f"\n  {stale} blocks were onlined under an earlier setting; re-online with: {fix}"
            )
        elif fix:
            line += f"\n  {fix}"
        lines.append(line)
    for n in result.nodes:
        if n.status is None:
            lines.append(f"node {n.node}: cross-check skipped ({n.reason})")
            continue
        lines.append(
            f"node {n.node}: present-managed {_size(n.present_minus_managed_bytes)} "
            f"(expected {_size(n.expected_present_minus_managed_bytes)}), MemTotal "
            f"{_size(n.memtotal_bytes)} (expected {_size(n.expected_memtotal_bytes)}): "
            f"{n.status.value}"
        )
        if n.status is not Status.OK:
            lines.append(f"  {n.reason}")
    lines.append(f"check: {result.status.value}")
    return "\n".join(lines) + "\n"


# --- plan --------------------------------------------------------------------------------------


def _plan_column_json(column: PlanColumn) -> dict[str, object]:
    return {
        "dram_memmap_bytes": column.dram_memmap_bytes,
        "device_memmap_bytes": column.device_memmap_bytes,
        "usable_bytes": column.usable_bytes,
    }


def plan_json(p: Plan) -> dict[str, object]:
    with_setting: dict[str, object] = {
        "possible": p.with_setting is not None,
        "reason": p.unsupported_reason,
    }
    # Where the setting cannot apply, the memmap stays in DRAM: the column without it.
    with_setting.update(_plan_column_json(p.with_setting or p.without_setting))
    return {
        "version": JSON_VERSION,
        "capacity_bytes": p.capacity,
        "memory_block_size_bytes": p.block_size,
        "memblocks": p.blocks,
        "unusable_tail_bytes": p.unusable_tail,
        "memmap_bytes_per_block": p.memmap_per_block,
        "without_memmap_on_memory": _plan_column_json(p.without_setting),
        "with_memmap_on_memory": with_setting,
        "dram_saved_bytes": p.dram_saved,
    }


def plan_text(p: Plan) -> str:
    wo = p.without_setting
    lines = [
        f"capacity {format_size(p.capacity)} = {p.blocks} memory blocks of "
        f"{format_size(p.block_size)}"
        + (f" ({format_size(p.unusable_tail)} tail unusable)" if p.unusable_tail else ""),
        f"memmap: {format_size(p.memmap_per_block)} per block",
        f"without memmap_on_memory: DRAM {format_size(wo.dram_memmap_bytes)}, "
        f"device 0 B, usable {format_size(wo.usable_bytes)}",
    ]
    if p.with_setting is not None:
        w = p.with_setting
        lines.append(
            f"with memmap_on_memory:    DRAM 0 B, device {format_size(w.device_memmap_bytes)}, "
            f"usable {format_size(w.usable_bytes)}"
        )
        lines.append(f"DRAM saved: {format_size(p.dram_saved)}")
    else:
        lines.append(f"with memmap_on_memory:    not possible: {p.unsupported_reason}")
    return "\n".join(lines) + "\n"
