"""Memory errors in the memmap on CXL memory vs in a data page (issue 16, item 4): one boot
of the `hwpoison` flavour (the series + MEMORY_FAILURE + HWPOISON_INJECT), kmem `on`; the
job of vmtest.costs.hwpoison_job; results/hwpoison.json gets each injection's outcome, what
followed (struct pages read back, allocation on the node, offline of the poisoned block and
of another one) and the kernel's lines about it. tests/vm/test_vm_hwpoison.py pins it.

    python bench/hwpoison.py [--kernel IMAGE]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

from vmtest import costs, image
from vmtest.machine import Source, VMSpec, VMUnavailable
from vmtest.runner import run

REPO = Path(__file__).resolve().parents[1]
HOTPLUG_MIB = 512


def outcome(result: Any) -> dict[str, Any]:
    """Everything the job measured, plus the kernel's memory-failure lines."""
    out: dict[str, Any] = {}
    for label in ("poison_data", "poison_memmap"):
        step = result.step(label)
        out[label] = json.loads(step["stdout"]) if step["rc"] == 0 else step
    for label in (
        "debugfs",
        "read_memmap",
        "churn_after",
        "offline_last",
        "offline_first",
        "online_first",
        "offline_first_again",
        "remove",
    ):
        step = result.step(label)
        out[label] = {"rc": step["rc"], "stdout": step["stdout"][-400:], "stderr": step["stderr"]}
    log = result.step("dmesg")["text"]
    out["kernel_lines"] = costs.memory_failure_lines(log)
    out["panic_or_oops"] = any(k in log for k in ("Kernel panic", "Oops", "BUG:"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kernel", type=Path, help="default: images/<base>/hwpoison/bzImage")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "hwpoison.json")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/memmap-kmem-bench/hwpoison"))
    args = parser.parse_args(argv)
    kernel = args.kernel or Path(image.default_image("hwpoison", os.environ))
    built = costs.build()
    first, last = costs.hotplug_blocks(HOTPLUG_MIB)
    spec = VMSpec(kernel=kernel, source=Source.HMEM, hotplug_mib=HOTPLUG_MIB, timeout=900)
    try:
        result = run(spec, costs.hwpoison_job(built / "costs-guest", first, last), args.workdir)
    except VMUnavailable as exc:
        print(f"hwpoison: {exc}", file=sys.stderr)
        return 3
    if result.exit_status != 0:
        raise SystemExit(f"hwpoison: boot failed: {result.describe()}")
    data = {
        "generated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "kernel": str(kernel),
        "hotplug_mib": HOTPLUG_MIB,
        "blocks": [first, last],
        "memmap_pfn": first * costs.BLOCK_BYTES // costs.PAGE,
        **outcome(result),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
