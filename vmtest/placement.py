"""Where did the memmap go? Host-side reading of the guest's snapshots.

The placement verdict, per block and exact, from three signals:
- the witness (primary): where the block's struct pages physically are, read by the guest
  from the kernel's own page tables with pyshim.witness (vmtest/guest/sysinfo.py). On the
  memory: exactly the block's first block/64 bytes. In DRAM: inside boot memory, on which
  node. This does not follow from the kernel's altmap bookkeeping, the other two do;
- the per-block attribute `memoryN/memmap_on_memory` (patched kernels only);
- node accounting: with the memmap on the hot-plugged memory, each block's node MemTotal is
  smaller by the memmap (block/64: 2048 kB per 128 MiB block) and /proc/zoneinfo present -
  managed grows by the memmap pages (512 per 128 MiB block).
What DRAM paid (free memory dropped on every node with boot memory, not node 0 alone: the
memmap that goes to DRAM is allocated on the hot-plugged node's nearest node with memory) is
reported as figures, never judged: it moves by a few MiB with page cache, slab and per-CPU
lists, and a KASAN kernel takes shadow for hot-added memory from DRAM as well.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

PAGE = 4096
STRUCT_PAGE = 64


@dataclass(frozen=True)
class Placement:
    """The hot-plug node after onlining, compared with the snapshot before."""

    node: int
    block_bytes: int
    blocks: list[int]
    online_blocks: int
    block_attrs: list[int | None]
    memtotal_kb: int
    memtotal_before_kb: int
    present_minus_managed: int
    node0_memfree_drop_kb: int
    node0_free_drop_kb: int
    # Per block (of `blocks`) the witness record of the snapshot after; witness_error when the
    # guest could not read the page tables (or the snapshot has no witness).
    witness: dict[int, dict[str, Any]] = field(default_factory=dict)
    witness_error: str | None = None
    # Nodes with boot memory (a memory block that no dax device hot-added) and what each one's
    # free memory (MemFree + per-CPU lists) dropped, kB.
    dram_nodes: list[int] = field(default_factory=list)
    dram_free_drop_by_node_kb: dict[int, int] = field(default_factory=dict)

    @property
    def memmap_kb_per_block(self) -> int:
        return self.block_bytes // PAGE * STRUCT_PAGE // 1024

    @property
    def memmap_pages_per_block(self) -> int:
        return self.block_bytes // PAGE * STRUCT_PAGE // PAGE

    @property
    def online_gib(self) -> float:
        return self.online_blocks * self.block_bytes / (1 << 30)

    @property
    def node0_drop_kb_per_gib(self) -> float:
        """Node-0 free memory spent per GiB onlined (MemFree corrected for per-CPU lists)."""
        return self.node0_free_drop_kb / self.online_gib if self.online_gib else 0.0

    @property
    def dram_free_drop_kb(self) -> int:
        """Free memory spent on all nodes with boot memory together (kB)."""
        return sum(self.dram_free_drop_by_node_kb.values())

    @property
    def dram_drop_kb_per_gib(self) -> float:
        return self.dram_free_drop_kb / self.online_gib if self.online_gib else 0.0

    @property
    def capacity_lost_kb(self) -> int:
        """What the hot-plug node lacks against its online blocks' size."""
        return self.online_blocks * self.block_bytes // 1024 - self.memtotal_kb

    def witness_nodes(self) -> list[int]:
        """The nodes whose DRAM holds the memmap of any judged block (witness)."""
        return sorted({n for w in self.witness.values() for n in w.get("nodes", [])})

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            memmap_kb_per_block=self.memmap_kb_per_block,
            memmap_pages_per_block=self.memmap_pages_per_block,
            online_gib=self.online_gib,
            node0_drop_kb_per_gib=self.node0_drop_kb_per_gib,
            dram_free_drop_kb=self.dram_free_drop_kb,
            dram_drop_kb_per_gib=self.dram_drop_kb_per_gib,
            capacity_lost_kb=self.capacity_lost_kb,
        )
        return out


def node_memtotal(snap: dict[str, Any], node: int) -> int:
    return int(snap["nodes"].get(str(node), {}).get("MemTotal", 0))


def node_memfree(snap: dict[str, Any], node: int) -> int:
    return int(snap["nodes"].get(str(node), {}).get("MemFree", 0))


def node_free_with_pcp(snap: dict[str, Any], node: int) -> int:
    """MemFree plus the free pages parked on per-CPU lists (kB): steadier than MemFree."""
    pcp = sum(int(z.get("pcp", 0)) for z in snap["zoneinfo"] if z["node"] == node)
    return node_memfree(snap, node) + pcp * PAGE // 1024


def present_minus_managed(snap: dict[str, Any], node: int) -> int:
    return sum(
        int(z.get("present", 0)) - int(z.get("managed", 0))
        for z in snap["zoneinfo"]
        if z["node"] == node
    )


def node_blocks(snap: dict[str, Any], node: int) -> list[dict[str, Any]]:
    return [b for b in snap["blocks"] if b["node"] == node]


def boot_memory_nodes(snap: dict[str, Any]) -> list[int]:
    """Nodes with at least one memory block that no dax device hot-added."""
    hotplugged = set(snap.get("hotplugged", []))
    return sorted(
        {
            int(b["node"])
            for b in snap["blocks"]
            if b["node"] is not None and b["id"] not in hotplugged
        }
    )


def witness_of(snap: dict[str, Any], blocks: list[int]) -> tuple[dict[int, dict[str, Any]], str]:
    """The snapshot's witness records of `blocks`, and why any is missing ("" if none is)."""
    record = snap.get("witness")
    if not isinstance(record, dict):
        return {}, "the snapshot has no witness"
    if record.get("error"):
        return {}, f"the guest could not read the page tables: {record['error']}"
    found = {int(k): v for k, v in record.get("blocks", {}).items() if int(k) in blocks}
    missing = [b for b in blocks if b not in found]
    why = f"no witness for memory{missing[0]} (not hot-added by dax?)" if missing else ""
    return found, why


def measure(before: dict[str, Any], after: dict[str, Any], node: int = 1) -> Placement:
    blocks = node_blocks(after, node)
    ids = [b["id"] for b in blocks]
    witness, why = witness_of(after, ids)
    dram = boot_memory_nodes(after)
    return Placement(
        node=node,
        block_bytes=int(after["block_size"]),
        blocks=ids,
        online_blocks=sum(1 for b in blocks if b["state"] == "online"),
        block_attrs=[b["memmap_on_memory"] for b in blocks],
        memtotal_kb=node_memtotal(after, node),
        memtotal_before_kb=node_memtotal(before, node),
        present_minus_managed=present_minus_managed(after, node),
        node0_memfree_drop_kb=node_memfree(before, 0) - node_memfree(after, 0),
        node0_free_drop_kb=node_free_with_pcp(before, 0) - node_free_with_pcp(after, 0),
        witness=witness,
        witness_error=why or None,
        dram_nodes=dram,
        dram_free_drop_by_node_kb={
            n: node_free_with_pcp(before, n) - node_free_with_pcp(after, n) for n in dram
        },
    )


def witness_on_memory(p: Placement) -> list[str]:
    """Problems with "the page tables put every block's struct pages on its first pages"."""
    if p.witness_error:
        return [f"witness: {p.witness_error}"]
    problems = []
    memmap = p.block_bytes // PAGE * STRUCT_PAGE
    for block in p.blocks:
        w = p.witness[block]
        start = block * p.block_bytes
        if w["placement"] != "memory" or w["extents"] != [[start, start + memmap]]:
            problems.append(
                f"witness: memory{block} memmap at {extents_text(w)} ({w['placement']}: "
                f"{w['detail']}), want {start:#x}-{start + memmap - 1:#x} (its first pages)"
            )
    return problems


def witness_in_dram(p: Placement, nodes: list[int] | None = None) -> list[str]:
    """Problems with "the page tables put every block's struct pages in boot memory on
    `nodes`" (default: exactly the nodes with boot memory, when there is one such node)."""
    if p.witness_error:
        return [f"witness: {p.witness_error}"]
    want = nodes if nodes is not None else p.dram_nodes
    problems = []
    for block in p.blocks:
        w = p.witness[block]
        if w["placement"] != "dram" or not w["nodes"] or not set(w["nodes"]) <= set(want):
            problems.append(
                f"witness: memory{block} memmap at {extents_text(w)} ({w['placement']}: "
                f"{w['detail']}), want DRAM on node {','.join(map(str, want))}"
            )
    return problems


def extents_text(w: dict[str, Any]) -> str:
    return " ".join(f"{lo:#x}-{hi - 1:#x}" for lo, hi in w.get("extents", [])) or "-"


def check_on_memory(p: Placement, *, attr_expected: bool = True) -> list[str]:
    """Problems with the claim "every block's memmap lives on the block"; [] if none."""
    n = p.online_blocks
    if n == 0:
        return [f"no online block on node {p.node}"]
    problems = witness_on_memory(p)
    if attr_expected and p.block_attrs != [1] * len(p.block_attrs):
        problems.append(f"memoryN/memmap_on_memory on node {p.node}: {p.block_attrs}, want all 1")
    want_total = n * (p.block_bytes // 1024 - p.memmap_kb_per_block)
    if p.memtotal_kb != want_total:
        problems.append(f"node {p.node} MemTotal {p.memtotal_kb} kB, want {want_total} kB")
    want_pages = n * p.memmap_pages_per_block
    if p.present_minus_managed != want_pages:
        problems.append(
            f"node {p.node} zoneinfo present-managed {p.present_minus_managed}, want {want_pages}"
        )
    return problems


def check_in_dram(
    p: Placement, *, attr_expected: bool = True, nodes: list[int] | None = None
) -> list[str]:
    """Problems with the claim "the memmap of every block is in DRAM" (on `nodes`, default
    the nodes with boot memory); [] if none."""
    n = p.online_blocks
    if n == 0:
        return [f"no online block on node {p.node}"]
    problems = witness_in_dram(p, nodes)
    if attr_expected and p.block_attrs != [0] * len(p.block_attrs):
        problems.append(f"memoryN/memmap_on_memory on node {p.node}: {p.block_attrs}, want all 0")
    want_total = n * p.block_bytes // 1024
    if p.memtotal_kb != want_total:
        problems.append(f"node {p.node} MemTotal {p.memtotal_kb} kB, want {want_total} kB")
    if p.present_minus_managed != 0:
        problems.append(f"node {p.node} zoneinfo present-managed {p.present_minus_managed}, want 0")
    return problems


def measure_boot_bound(online: dict[str, Any], removed: dict[str, Any], node: int = 1) -> Placement:
    """For memory hot-added at boot (hmem) there is no snapshot before the add: take the node
    figures and the witness from the online snapshot and the DRAM cost as what offline +
    remove gave back."""
    return measure(removed, online, node)


def measure_removal(online: dict[str, Any], removed: dict[str, Any]) -> dict[str, int]:
    """What offline + remove gave back: node-0 free memory (kB) and the node's MemTotal."""
    return {
        "node0_free_rise_kb": node_free_with_pcp(removed, 0) - node_free_with_pcp(online, 0),
        "node0_memfree_rise_kb": node_memfree(removed, 0) - node_memfree(online, 0),
    }


BAD_LOG = re.compile(
    r"WARNING:|BUG:|Oops|Altmap not fully unmapped|KASAN|UBSAN|kernel BUG|"
    r"possible (circular|recursive) locking|inconsistent lock state|suspicious RCU usage|"
    r"Call Trace|unreferenced object|Kernel panic"
)


def bad_log_lines(text: str) -> list[str]:
    """Kernel log lines that mean a warning, bug, leak or lockdep/KASAN report."""
    return [line for line in text.splitlines() if BAD_LOG.search(line)]


def kasan_shadow_on_node0(log: str) -> bool:
    """A KASAN kernel allocates shadow memory (1/8 of it) for hot-added memory from node 0
    and parks freed objects in its quarantine, which drowns the memmap in node 0's figures.
    Placement never depends on it (the witness decides); scenario 6 uses it to leave out its
    node-0 drift bound over many cycles, where kmemleak speaks instead."""
    return "KernelAddressSanitizer initialized" in log
