"""Where did the memmap go? Host-side reading of the guest's snapshots.

Two independent signals, as DESIGN.md requires:
- the per-block attribute `memoryN/memmap_on_memory` (patched kernels only);
- node accounting: with the memmap on the hot-plugged memory, each block's node MemTotal is
  smaller by the memmap (block/64: 2048 kB per 128 MiB block) and /proc/zoneinfo present -
  managed grows by the memmap pages (512 per 128 MiB block); with the memmap in DRAM, node 0
  pays instead (MemFree drops by ~16 MiB per GiB onlined).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

PAGE = 4096
STRUCT_PAGE = 64
# Node 0's free memory moves by a few hundred kB to a few MiB between two readings even when
# nothing hot-plugs (page cache and slab of the tools, per-CPU free lists drained when
# onlining rebuilds the zonelists). The checks therefore read MemFree plus the pages on
# per-CPU lists (from /proc/zoneinfo) and split at half the memmap: "on memory" means node 0
# paid less than half of it, "in DRAM" more than half (measured: ~0.1 vs ~14-16 MiB per GiB).
NODE0_SPLIT = 0.5


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
    def capacity_lost_kb(self) -> int:
        """What the hot-plug node lacks against its online blocks' size."""
        return self.online_blocks * self.block_bytes // 1024 - self.memtotal_kb

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            memmap_kb_per_block=self.memmap_kb_per_block,
            memmap_pages_per_block=self.memmap_pages_per_block,
            online_gib=self.online_gib,
            node0_drop_kb_per_gib=self.node0_drop_kb_per_gib,
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


def measure(before: dict[str, Any], after: dict[str, Any], node: int = 1) -> Placement:
    blocks = node_blocks(after, node)
    return Placement(
        node=node,
        block_bytes=int(after["block_size"]),
        blocks=[b["id"] for b in blocks],
        online_blocks=sum(1 for b in blocks if b["state"] == "online"),
        block_attrs=[b["memmap_on_memory"] for b in blocks],
        memtotal_kb=node_memtotal(after, node),
        memtotal_before_kb=node_memtotal(before, node),
        present_minus_managed=present_minus_managed(after, node),
        node0_memfree_drop_kb=node_memfree(before, 0) - node_memfree(after, 0),
        node0_free_drop_kb=node_free_with_pcp(before, 0) - node_free_with_pcp(after, 0),
    )


def check_on_memory(p: Placement, *, attr_expected: bool = True, node0: bool = True) -> list[str]:
    """Problems with the claim "every block's memmap lives on the block"; [] if none.
    node0=False leaves out what node 0 paid (see kasan_shadow_on_node0())."""
    problems = []
    n = p.online_blocks
    if n == 0:
        return [f"no online block on node {p.node}"]
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
    limit = NODE0_SPLIT * n * p.memmap_kb_per_block
    if node0 and p.node0_free_drop_kb > limit:
        problems.append(
            f"node 0 free memory dropped {p.node0_free_drop_kb} kB, want <= {limit:.0f} kB"
        )
    return problems


def check_in_dram(p: Placement, *, attr_expected: bool = True, node0: bool = True) -> list[str]:
    """Problems with the claim "the memmap of every block is in node-0 DRAM"; [] if none.
    node0=False leaves out what node 0 paid (see kasan_shadow_on_node0())."""
    problems = []
    n = p.online_blocks
    if n == 0:
        return [f"no online block on node {p.node}"]
    if attr_expected and p.block_attrs != [0] * len(p.block_attrs):
        problems.append(f"memoryN/memmap_on_memory on node {p.node}: {p.block_attrs}, want all 0")
    want_total = n * p.block_bytes // 1024
    if p.memtotal_kb != want_total:
        problems.append(f"node {p.node} MemTotal {p.memtotal_kb} kB, want {want_total} kB")
    if p.present_minus_managed != 0:
        problems.append(f"node {p.node} zoneinfo present-managed {p.present_minus_managed}, want 0")
    memmap_kb = n * p.memmap_kb_per_block
    floor = NODE0_SPLIT * memmap_kb
    if node0 and p.node0_free_drop_kb < floor:
        problems.append(
            f"node 0 free memory dropped {p.node0_free_drop_kb} kB, want >= {floor:.0f} kB "
            f"(memmap {memmap_kb} kB)"
        )
    return problems


def measure_boot_bound(online: dict[str, Any], removed: dict[str, Any], node: int = 1) -> Placement:
    """For memory hot-added at boot (hmem) there is no snapshot before the add: take the node
    figures from the online snapshot and the node-0 cost as what offline + remove gave back."""
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
    """A KASAN kernel allocates shadow memory (1/8 of it) for hot-added memory from node 0,
    which drowns the memmap in node 0's figures: placement is then judged by the block
    attribute and the hot-plug node alone."""
    return "KernelAddressSanitizer initialized" in log
