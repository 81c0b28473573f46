"""Files for other programs: node_exporter textfile metrics and the HTML report.

Both read a Snapshot and its CheckResult (check.py); the words and the JSON of the check
come from render.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from pyshim.check import CheckResult, Status
from pyshim.logic import PAGE_SIZE, memmap_bytes, memmap_pages
from pyshim.parse import DaxState, GlobalMode, KmemSetting, format_size
from pyshim.render import check_json, location, settings_json
from pyshim.snapshot import MemoryBlock, Snapshot
from pyshim.userfiles import write_atomic

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


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


def write_metrics(path: str, snapshot: Snapshot, result: CheckResult, now: float) -> None:
    """node_exporter textfile-collector metrics in base units, written atomically (a new
    temporary file next to `path`, then a rename: userfiles.write_atomic, which, unlike
    prometheus_client's write_to_textfile, never opens a name that is already there)."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

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
        [s.value for s in Status],
        result.status.value,
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
    ).set(result.count(Status.STALE))
    Gauge(
        "pyshim_last_run_timestamp_seconds",
        "When pyshim metrics last read the machine (Unix time).",
        registry=registry,
    ).set(now)
    write_atomic(path, generate_latest(registry).decode())


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


def report_html(snapshot: Snapshot, result: CheckResult, prog: str) -> str:
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
        check=check_json(result, prog),
        scale=format_size(int(settings.block_size / scale)),
    )
