"""Output: show/check/plan as text or JSON, node_exporter metrics, and the HTML report."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from pyshim.logic import (
    JSON_VERSION,
    PAGE_SIZE,
    DaxDevice,
    MemoryBlock,
    Snapshot,
    attribute_json,
    location,
    memmap_bytes,
    memmap_pages,
    settings_json,
)
from pyshim.parse import DaxState, GlobalMode, KmemSetting, format_size

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


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


def _size(value: int | None) -> str:
    return "-" if value is None else compact_size(value)


def check_text(result: dict[str, Any], prog: str) -> str:
    lines: list[str] = []
    for d in result["devices"]:
        if d["mode"] != "system-ram":
            lines.append(
                f"{d['chardev']}  {d['status']}  node {d['target_node']}: no memory blocks "
                f"(online it with: {prog} online {d['chardev']})"
            )
            continue
        blocks = d["blocks"]
        on_mem = sum(1 for b in blocks if b["memmap"] == "memory")
        where = location(bool(d["expected_memmap_on_memory"]))
        line = (
            f"{d['chardev']}  system-ram  node {d['target_node']}  {d['region']}: "
            f"{len(blocks)} blocks, memmap on memory {on_mem}, in DRAM {len(blocks) - on_mem}; "
            f"settings choose {where} ({d['reason']}): {d['status']}"
        )
        if d["status"] == "stale":
            stale = sum(1 for b in blocks if b["status"] == "stale")
            line += (
                f"\n  {stale} blocks were onlined under an earlier setting; re-online with: "
                f"{d['fix']}"
            )
        elif d["fix"]:
            line += f"\n  {d['fix']}"
        lines.append(line)
    for n in result["nodes"]:
        if n["status"] == "skipped":
            lines.append(f"node {n['node']}: cross-check skipped ({n['reason']})")
            continue
        lines.append(
            f"node {n['node']}: present-managed {_size(n['present_minus_managed_bytes'])} "
            f"(expected {_size(n['expected_present_minus_managed_bytes'])}), MemTotal "
            f"{_size(n['memtotal_bytes'])} (expected {_size(n['expected_memtotal_bytes'])}): "
            f"{n['status']}"
        )
        if n["status"] != "ok":
            lines.append(f"  {n['reason']}")
    lines.append(f"check: {result['status']}")
    return "\n".join(lines) + "\n"


# --- plan --------------------------------------------------------------------------------------


def plan_text(p: dict[str, Any]) -> str:
    w = p["with_memmap_on_memory"]
    wo = p["without_memmap_on_memory"]
    lines = [
        f"capacity {format_size(p['capacity_bytes'])} = {p['memblocks']} memory blocks of "
        f"{format_size(p['memory_block_size_bytes'])}"
        + (
            f" ({format_size(p['unusable_tail_bytes'])} tail unusable)"
            if p["unusable_tail_bytes"]
            else ""
        ),
        f"memmap: {format_size(p['memmap_bytes_per_block'])} per block",
        f"without memmap_on_memory: DRAM {format_size(wo['dram_memmap_bytes'])}, "
        f"device 0 B, usable {format_size(wo['usable_bytes'])}",
    ]
    if w["possible"]:
        lines.append(
            f"with memmap_on_memory:    DRAM 0 B, device {format_size(w['device_memmap_bytes'])}, "
            f"usable {format_size(w['usable_bytes'])}"
        )
        lines.append(f"DRAM saved: {format_size(p['dram_saved_bytes'])}")
    else:
        lines.append(f"with memmap_on_memory:    not possible: {w['reason']}")
    return "\n".join(lines) + "\n"


# --- metrics -----------------------------------------------------------------------------------


def memmap_by_node(snapshot: Snapshot) -> dict[tuple[int, str], tuple[int, int]]:
    """{(node, memmap_node): (memory blocks, memmap bytes)} over the blocks of dax devices in
    system-ram mode; memmap_node is "unknown" when the DRAM node cannot be told."""
    settings = snapshot.settings
    on_block = memmap_pages(settings.block_size, settings.force) * PAGE_SIZE
    in_dram = memmap_bytes(settings.block_size)
    block_node = {i: n for n, members in snapshot.node_blocks.items() for i in members}
    boot = snapshot.boot_memory_nodes()
    result: dict[tuple[int, str], tuple[int, int]] = {}
    for dev in snapshot.devices:
        for blk in snapshot.blocks.get(dev.name, []):
            node = block_node.get(blk.number, dev.target_node)
            on_memory = bool(blk.memmap_on_memory)
            home = snapshot.memmap_node(node, on_memory, boot)
            key = (node, "unknown" if home is None else str(home))
            blocks, size = result.get(key, (0, 0))
            result[key] = (blocks + 1, size + (on_block if on_memory else in_dram))
    return result


def _state_gauge(
    registry: CollectorRegistry,
    name: str,
    doc: str,
    label: str,
    values: list[str],
    current: str | None,
) -> None:
    """A state set: one series per possible value, 1 for the current one, 0 for the rest."""
    from prometheus_client import Gauge  # lazy, as in write_metrics

    gauge = Gauge(name, doc, [label], registry=registry)
    for value in values:
        gauge.labels(**{label: value}).set(int(value == current))


def write_metrics(path: str, snapshot: Snapshot, check_result: dict[str, Any], now: float) -> None:
    """node_exporter textfile-collector metrics in base units, written atomically by
    prometheus_client (a temporary file next to `path`, then a rename)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    settings = snapshot.settings
    per_node = memmap_by_node(snapshot)
    memmap = Gauge(
        "pyshim_memmap_bytes",
        "Memmap (struct page) of dax kmem memory blocks on node, held by memmap_node: the "
        "same node when it lives on the blocks, else the nearest node with boot memory.",
        ["node", "memmap_node"],
        registry=registry,
    )
    blocks = Gauge(
        "pyshim_memory_blocks",
        "dax kmem memory blocks on node whose memmap memmap_node holds.",
        ["node", "memmap_node"],
        registry=registry,
    )
    for (node, home), (count, size) in sorted(per_node.items()):
        memmap.labels(node=str(node), memmap_node=home).set(size)
        blocks.labels(node=str(node), memmap_node=home).set(count)
    Gauge(
        "pyshim_memory_block_size_bytes",
        "Memory block size (/sys/devices/system/memory/block_size_bytes).",
        registry=registry,
    ).set(settings.block_size)
    _state_gauge(
        registry,
        "pyshim_kmem_memmap_on_memory",
        "1 for the current value of /sys/bus/dax/drivers/kmem/memmap_on_memory.",
        "setting",
        [s.value for s in KmemSetting],
        settings.kmem.value if settings.kmem is not None else None,
    )
    _state_gauge(
        registry,
        "pyshim_global_memmap_on_memory",
        "1 for the current value of memory_hotplug.memmap_on_memory.",
        "setting",
        [m.value for m in GlobalMode],
        settings.global_mode.value if settings.global_mode is not None else None,
    )
    _state_gauge(
        registry,
        "pyshim_check_status",
        "1 for the result of pyshim check: ok, stale (memmaps where an earlier setting put "
        "them) or inconsistent (blocks or node accounting disagree).",
        "status",
        ["ok", "stale", "inconsistent"],
        check_result["status"],
    )
    dax_state = Gauge(
        "pyshim_dax_state",
        "1 for the current word of daxX.Y/state (Linux 7.3+, devices bound to kmem): kmem's "
        "record of the last whole-device change, not the state of each block. Devices "
        "without the file have no series.",
        ["device", "state"],
        registry=registry,
    )
    for dev in snapshot.devices:
        if dev.state_attribute is None:
            continue
        for word in DaxState:
            dax_state.labels(device=dev.name, state=word.value).set(
                int(word is dev.state_attribute)
            )
    Gauge(
        "pyshim_stale_memory_blocks",
        "Memory blocks whose memmap is not where the current settings would put it.",
        registry=registry,
    ).set(sum(1 for d in check_result["devices"] for b in d["blocks"] if b["status"] == "stale"))
    Gauge(
        "pyshim_last_run_timestamp_seconds",
        "When pyshim metrics last read the machine (Unix time).",
        registry=registry,
    ).set(now)
    write_to_textfile(path, registry)


# --- report ------------------------------------------------------------------------------------


# Width in pixels of the largest node's picture; other nodes are drawn to the same scale.
REPORT_WIDTH = 900
REPORT_BAR_HEIGHT = 28


class Run(NamedTuple):
    """Consecutive memory blocks of one node that look the same in the report."""

    first: int  # block index
    blocks: int
    kind: str  # memory (memmap on the block), dram (memmap elsewhere), boot
    state: str
    device: str | None


def block_runs(snapshot: Snapshot, members: list[int]) -> list[Run]:
    owner: dict[int, tuple[str, MemoryBlock]] = {}
    for dev in snapshot.devices:
        for blk in snapshot.blocks.get(dev.name, []):
            owner[blk.number] = (dev.name, blk)
    runs: list[Run] = []
    key: tuple[str, str, str | None]
    for index in members:
        if index in owner:
            device, blk = owner[index]
            key = (location(bool(blk.memmap_on_memory)), blk.state, device)
        else:
            key = ("boot", "online", None)
        last = runs[-1] if runs else None
        if (
            last
            and last.first + last.blocks == index
            and (last.kind, last.state, last.device) == key
        ):
            runs[-1] = last._replace(blocks=last.blocks + 1)
        else:
            runs.append(Run(index, 1, *key))
    return runs


def report_html(snapshot: Snapshot, check_result: dict[str, Any]) -> str:
    """One picture per node, all to one scale: runs of equal blocks merged into one bar, the
    memmap's share of blocks that hold it drawn inside them, and for memmaps in DRAM the node
    that pays for them."""
    import jinja2  # imported here: only `report` needs it

    settings = snapshot.settings
    per_block = memmap_bytes(settings.block_size)
    share = memmap_pages(settings.block_size, settings.force) * PAGE_SIZE / settings.block_size
    spans = {
        node: max(members) - min(members) + 1
        for node, members in snapshot.node_blocks.items()
        if members
    }
    scale = REPORT_WIDTH / max(spans.values(), default=1)
    pays: dict[int, int] = {}  # DRAM node -> bytes of other nodes' memmaps it holds
    boot_nodes = snapshot.boot_memory_nodes()
    nodes = []
    saved_total = 0
    for node in sorted(spans):
        members = sorted(snapshot.node_blocks[node])
        base = members[0]
        bars = []
        on_memory = dram = boot = 0
        dram_homes: dict[str, int] = {}
        for run in block_runs(snapshot, members):
            x = (run.first - base) * scale
            width = max(run.blocks * scale, 1.0)
            last = run.first + run.blocks - 1
            size = format_size(run.blocks * settings.block_size)
            if run.kind == "boot":
                boot += run.blocks
                title = f"memory{run.first}-{last}: boot memory, {size}"
            else:
                title = (
                    f"memory{run.first}-{last} ({run.device}, {run.state}): {run.blocks} blocks, "
                    f"{size}, memmap {'on the blocks' if run.kind == 'memory' else 'in DRAM'}"
                )
                if run.kind == "memory":
                    on_memory += run.blocks
                else:
                    dram += run.blocks
                    home = snapshot.memmap_node(node, False, boot_nodes)
                    label = "an unknown node" if home is None else f"node {home}"
                    dram_homes[label] = dram_homes.get(label, 0) + run.blocks * per_block
                    if home is not None:
                        pays[home] = pays.get(home, 0) + run.blocks * per_block
            bars.append(
                {
                    "x": round(x, 2),
                    "width": round(width, 2),
                    "memmap_width": round(max(width * share, 1.0), 2),
                    "kind": run.kind,
                    "state": run.state,
                    "title": title,
                }
            )
        saved = on_memory * per_block
        saved_total += saved
        nodes.append(
            {
                "node": node,
                "bars": bars,
                "width": round(spans[node] * scale, 2),
                "height": REPORT_BAR_HEIGHT,
                "size": format_size(len(members) * settings.block_size),
                "on_memory": on_memory,
                "dram": dram,
                "boot": boot,
                "saved": format_size(saved),
                "dram_homes": [(k, format_size(v)) for k, v in sorted(dram_homes.items())],
            }
        )
    for entry in nodes:
        held = pays.get(int(str(entry["node"])), 0)
        entry["pays"] = format_size(held) if held else None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pyshim", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    template = env.get_template("report.html.j2")
    # Only devices that have daxX.Y/state: on kernels before 7.3 the report stays as it was.
    dax_states = [
        (dev.name, dev.state_attribute.value, len(snapshot.blocks.get(dev.name, [])))
        for dev in snapshot.devices
        if dev.state_attribute is not None
    ]
    return template.render(
        dax_states=dax_states,
        settings=settings_json(settings),
        block_size=format_size(settings.block_size),
        memmap_per_block=format_size(per_block),
        nodes=nodes,
        saved_total=format_size(saved_total),
        check=check_result,
        scale=format_size(int(settings.block_size / scale)),
    )
