"""make demo: boot the patched kernel in QEMU and show, in numbers, the DRAM the setting saves.

Two boots of the same patched kernel, each onlining a 1 GiB legacy pmem range (RAM-backed, on
its own NUMA node; the namespace keeps one block for itself) through the shim:

1. nothing set (kmem `global`, memory_hotplug.memmap_on_memory off): the 6.12 behaviour;
2. `python -m pyshim set --driver dax_kmem on` first: the memmap goes on the new memory.

It prints what each DRAM node paid in each boot and which one paid, where the page tables put
each block's memmap (the witness), what the new node gave up, the per-block attribute, and
the shim's own `show`, `check --witness` and `plan` output from the second boot.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vmtest import placement
from vmtest import steps as s
from vmtest.machine import Source, VMSpec
from vmtest.runner import VMResult, run
from vmtest.settings import Settings

HOTPLUG_MIB = 1024


def boot(kernel: Path, label: str, setup: list[dict[str, object]]) -> VMResult:
    print(f"demo: booting the patched kernel ({label}) ...", flush=True)
    spec = VMSpec(kernel=kernel, source=Source.PMEM, hotplug_mib=HOTPLUG_MIB)
    result = run(
        spec,
        [
            *setup,
            s.read(s.KMEM_ATTR, "kmem"),
            s.pmem_devdax(),
            s.snapshot("before"),
            s.online(method="shim"),
            s.snapshot("after"),
            s.shim("show", "show"),
            s.shim("check", "check", "--witness"),
            s.shim("plan", "plan", "--capacity", "1T"),
        ],
    )
    if result.exit_status != 0:
        raise SystemExit(f"demo: the guest failed; serial log: {result.serial_log}")
    return result


def describe(result: VMResult) -> placement.Placement:
    p = placement.measure(result.step("before"), result.step("after"))
    blocks = placement.node_blocks(result.step("after"), 1)
    on_memory = sum(1 for b in blocks if b["memmap_on_memory"] == 1)
    print(f"  kmem memmap_on_memory:           {result.step('kmem')['value']}")
    print(f"  memory blocks onlined on node 1: {p.online_blocks}, memmap on the block: {on_memory}")
    print(f"  page tables (witness):           {witness_summary(p)}")
    for node, kb in sorted(p.dram_free_drop_by_node_kb.items()):
        print(f"  node {node} (DRAM) spent:             {kb / 1024:6.1f} MiB")
    print(f"  node 1 MemTotal:                 {p.memtotal_kb / 1024:6.1f} MiB")
    return p


def witness_summary(p: placement.Placement) -> str:
    """Where the page tables put the blocks' struct pages, counted per place."""
    if p.witness_error:
        return f"unavailable ({p.witness_error})"
    places: dict[str, int] = {}
    for w in p.witness.values():
        if w["placement"] == "memory":
            where = "on the block itself"
        elif w["placement"] == "dram":
            where = "in DRAM on node " + ",".join(map(str, w["nodes"]))
        else:
            where = w["placement"]
        places[where] = places.get(where, 0) + 1
    return "; ".join(f"{n} blocks {where}" for where, n in places.items()) or "no blocks"


def who_paid(p: placement.Placement) -> str:
    paid = {n: kb for n, kb in p.dram_free_drop_by_node_kb.items() if kb > 0}
    if not paid:
        return "no DRAM node"
    node, kb = max(paid.items(), key=lambda item: item[1])
    return f"node {node} ({kb / 1024:.1f} MiB)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kernel", type=Path, help="patched bzImage (default: make kernel's)")
    args = parser.parse_args(argv)
    kernel = args.kernel or Settings.from_env(os.environ).kernel
    if not kernel.is_file():
        print(f"demo: no kernel at {kernel}: run make kernel", file=sys.stderr)
        return 3

    stock_like = boot(kernel, "nothing set", [])
    print("\n1) Nothing set: Linux 6.12 behaviour")
    before = describe(stock_like)

    with_setting = boot(
        kernel, "kmem memmap_on_memory=on", [s.shim("set", "set", "--driver", "dax_kmem", "on")]
    )
    print("\n2) python -m pyshim set --driver dax_kmem on")
    after = describe(with_setting)

    saved_kb = before.dram_free_drop_kb - after.dram_free_drop_kb
    onlined_mib = after.online_blocks * after.block_bytes // (1 << 20)
    memmap_kb = after.online_blocks * after.memmap_kb_per_block
    nodes = ", ".join(map(str, before.dram_nodes))
    print(f"\nDRAM nodes (boot memory): {nodes}. Nothing set: {who_paid(before)} paid the most.")
    print(
        f"DRAM saved: {saved_kb / 1024:.1f} MiB for {onlined_mib} MiB onlined; the memmap of "
        f"those {after.online_blocks} blocks is {memmap_kb / 1024:.1f} MiB "
        f"({memmap_kb // onlined_mib} MiB per GiB, {memmap_kb // onlined_mib} GiB per TiB)."
    )
    print(
        f"The new memory holds its own memmap instead: node 1 shows "
        f"{(before.memtotal_kb - after.memtotal_kb) / 1024:.1f} MiB less MemTotal."
    )
    for label in ("show", "check", "plan"):
        out = with_setting.step(label)
        args = " ".join(out.get("argv", [])[3:]) or label
        print(f"\n$ python -m pyshim {args}  (in the VM, exit {out.get('rc')})")
        print(str(out.get("stdout", "")).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
