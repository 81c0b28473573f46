"""Guest side of bench/costs.py: where the memmap of the hot-plugged blocks is (the
page-table witness, pyshim.witness), written as the memmeter plugin's ranges file in the
9p share, then the plugin told to re-read it (phase marker RELOAD). Prints one JSON line:
per block its first pfn, pages and memmap extents, and per range its label.

    python guest_ranges.py REPO COSTS_GUEST RANGES_FILE
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RELOAD = "0xffffffff"


def main(argv: list[str]) -> int:
    repo, guest, ranges_file = argv
    sys.path.insert(0, str(Path(repo) / "vmtest" / "guest"))
    import sysinfo  # type: ignore[import-not-found]

    blocks = sysinfo.hotplugged_blocks()
    found = sysinfo.memmap_witness(repo, blocks)
    if "error" in found:
        print(json.dumps({"error": found["error"]}))
        return 1
    block_pages = sysinfo.block_size() // 4096
    lines = []
    ranges = []
    out_blocks = {}
    for block, info in sorted(found["blocks"].items(), key=lambda kv: int(kv[0])):
        first_pfn = int(block) * block_pages
        pfn = first_pfn
        for start, end in info["extents"]:
            label = f"b{block}:pfn{pfn:x}"
            lines.append(f"{label} {start:x} {end:x}\n")
            ranges.append(
                {"label": label, "block": int(block), "first_pfn": pfn, "start": start, "end": end}
            )
            pfn += (end - start) // found["layout"]["struct_page_size"]
        out_blocks[block] = {"first_pfn": first_pfn, "pages": block_pages, **info}
    Path(ranges_file).write_text("".join(lines))
    subprocess.run([guest, "mark", RELOAD], check=True)
    subprocess.run([guest, "mark", "0"], check=True)
    print(json.dumps({"blocks": out_blocks, "ranges": ranges, "layout": found["layout"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
