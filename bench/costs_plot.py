"""The picture and the table of bench/results/costs.json: `python bench/costs_plot.py` writes
costs.svg (no dependency), costs.png (the SVG rendered by headless Chromium, from
scripts/install-deps.sh) and costs.md (the table and the method, for the cover letter and
the admin guide).

Left: struct-page accesses per 4 KiB page handled, per workload, memmap in DRAM vs on the
memory (log scale: the workloads span two orders of magnitude). Right: the modelled extra
time per page handled with the memmap on CXL memory, as a range (low: LLC-model misses x
70 ns; high: every struct-page line fetched once x 150 ns).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from html import escape
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1100, 520
TOP, BOTTOM = 90, 400
DRAM, MEMORY = "#c0392b", "#2e86c1"


def text(x: float, y: float, s: str, size: int = 13, anchor: str = "middle", **kw: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" font-family="sans-serif" '
        f'text-anchor="{anchor}"{extra}>{escape(s)}</text>'
    )


def log_y(value: float, vmin: float, vmax: float) -> float:
    value = max(value, vmin)
    frac = (math.log10(value) - math.log10(vmin)) / (math.log10(vmax) - math.log10(vmin))
    return BOTTOM - (BOTTOM - TOP) * frac


def axis(x0: float, x1: float, vmin: float, vmax: float, unit: str) -> list[str]:
    out = [f'<line x1="{x0}" y1="{BOTTOM}" x2="{x1}" y2="{BOTTOM}" stroke="#333"/>']
    decade = vmin
    while decade <= vmax * 1.0001:
        y = log_y(decade, vmin, vmax)
        out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#ddd"/>')
        label = f"{decade:g}"
        out.append(text(x0 - 6, y + 4, label, 11, "end"))
        decade *= 10
    out.append(
        text(
            x0 - 40,
            (TOP + BOTTOM) / 2,
            unit,
            12,
            "middle",
            transform=f"rotate(-90 {x0 - 40} {(TOP + BOTTOM) / 2})",
        )
    )
    return out


def svg(data: dict[str, Any]) -> str:
    table = data["table"]
    names = [n for n in table if "on" in table[n] and "off" in table[n]]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        text(
            WIDTH / 2,
            28,
            "What the memmap on CXL memory costs: struct-page traffic "
            "(QEMU TCG plugin counts + a stated latency model)",
            16,
            font_weight="bold",
        ),
        text(
            WIDTH / 2,
            50,
            f"{data['setup']['kernel']} | LLC model "
            f"{data['setup']['model']['llc_bytes'] >> 20} MiB {data['setup']['model']['ways']}"
            f"-way | extra latency {data['setup']['model']['extra_ns'][0]:g}-"
            f"{data['setup']['model']['extra_ns'][1]:g} ns",
            11,
            fill="#555",
        ),
    ]
    # left panel
    x0, x1 = 90, 520
    vmin, vmax = 1.0, 1000.0
    parts += axis(x0, x1, vmin, vmax, "struct-page accesses per 4 KiB page")
    slot = (x1 - x0) / len(names)
    for i, name in enumerate(names):
        cx = x0 + slot * (i + 0.5)
        for j, (mode, color) in enumerate((("off", DRAM), ("on", MEMORY))):
            v = table[name][mode]["accesses_per_page"]
            y = log_y(v, vmin, vmax)
            bx = cx - slot * 0.35 + j * slot * 0.35
            parts.append(
                f'<rect x="{bx:.1f}" y="{y:.1f}" width="{slot * 0.33:.1f}" '
                f'height="{BOTTOM - y:.1f}" fill="{color}"/>'
            )
            parts.append(text(bx + slot * 0.165, y - 4, f"{v:.0f}" if v >= 10 else f"{v:.1f}", 10))
        parts.append(
            text(cx, BOTTOM + 16, name, 11, "end", transform=f"rotate(-30 {cx} {BOTTOM + 16})")
        )
    parts.append(f'<rect x="{x0 + 10}" y="{TOP - 20}" width="12" height="12" fill="{DRAM}"/>')
    parts.append(text(x0 + 28, TOP - 10, "memmap in DRAM (off)", 11, "start"))
    parts.append(f'<rect x="{x0 + 180}" y="{TOP - 20}" width="12" height="12" fill="{MEMORY}"/>')
    parts.append(text(x0 + 198, TOP - 10, "memmap on the memory (on)", 11, "start"))
    # right panel
    x0, x1 = 640, 1070
    vmin, vmax = 0.1, 10000.0
    parts += axis(x0, x1, vmin, vmax, "modelled extra ns per 4 KiB page (on)")
    for i, name in enumerate(names):
        cx = x0 + slot * (i + 0.5)
        low = table[name]["on"]["extra_ns_per_page"]["low"]
        high = table[name]["on"]["extra_ns_per_page"]["high"]
        ylow, yhigh = log_y(low, vmin, vmax), log_y(high, vmin, vmax)
        parts.append(
            f'<rect x="{cx - 8:.1f}" y="{yhigh:.1f}" width="16" '
            f'height="{max(ylow - yhigh, 1):.1f}" fill="{MEMORY}" opacity="0.6"/>'
        )
        parts.append(text(cx, yhigh - 4, f"{low:.1f}-{high:.0f}", 10))
        parts.append(
            text(cx, BOTTOM + 16, name, 11, "end", transform=f"rotate(-30 {cx} {BOTTOM + 16})")
        )
    parts.append(
        text(
            x0 + 10,
            TOP - 10,
            "low: LLC-model misses x 70 ns; high: each struct-page line once x 150 ns",
            11,
            "start",
        )
    )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def png(svg_path: Path, png_path: Path) -> bool:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("costs_plot: no chromium: SVG only", file=sys.stderr)
        return False
    with tempfile.TemporaryDirectory(prefix="costs-plot-") as tmp:
        page = Path(tmp) / "plot.html"
        page.write_text("<html><body style='margin:0'>" + svg_path.read_text() + "</body></html>")
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                f"--user-data-dir={tmp}/profile",
                f"--window-size={WIDTH},{HEIGHT}",
                f"--screenshot={png_path}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return png_path.is_file()


def table(data: dict[str, Any]) -> list[str]:
    """Per workload: accesses per page in DRAM and on the memory, misses, extra time, share."""
    rows = [
        "| workload (a page handled is) | struct-page accesses per 4 KiB page, memmap in DRAM "
        "| same, memmap on CXL memory | LLC-model misses per page (on) | modelled extra time "
        "per page (on) | share of the operation (on) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in data["table"].items():
        if "on" not in row or "off" not in row:
            continue
        on, off = row["on"], row["off"]
        what = data["setup"]["workloads"][name]["page"]
        rows.append(
            f"| {name} ({what}) | {off['accesses_per_page']:.1f} | {on['accesses_per_page']:.1f} "
            f"| {on['misses_per_page']:.3f} | {on['extra_ns_per_page']['low']:.1f}-"
            f"{on['extra_ns_per_page']['high']:.0f} ns | {100 * on['extra_share']['low']:.2f}-"
            f"{100 * on['extra_share']['high']:.1f} % |"
        )
    return rows


def generated_line(data: dict[str, Any]) -> str:
    return (
        f"Generated by `make bench-costs` ({data['generated']}; {data['setup']['kernel']}, QEMU "
        f"{data['setup']['qemu']} TCG, {data['setup']['hotplug_mib']} MiB hot-plugged, cycles "
        f"{', '.join(data['setup']['order'])}; medians over the cycles of each mode). "
        "Counts plus a stated latency model, not measured time."
    )


def markdown(
    data: dict[str, Any], hwpoison: dict[str, Any] | None, other_base: dict[str, Any] | None = None
) -> str:
    """The trade-off table with its method, every figure from the JSON; other_base: the same
    run on the second kernel base (costs_7.3.json), as a table of its own."""
    m = data["setup"]["model"]
    low, high = m["extra_ns"]
    rows = table(data)
    checks = data.get("self_check", {})
    seen = ", ".join(
        f"{tag}: {c['seen_expected']}/{c['expected']} (+{c['extra']})" for tag, c in checks.items()
    )
    out = [
        "# What the memmap on CXL memory costs",
        "",
        generated_line(data),
        "",
        *rows,
        "",
        "Method, one sentence each:",
        "",
        "- Counts: a QEMU TCG plugin counts every guest load and store whose physical address "
        "lies in the memmap of the hot-plugged blocks (located by the page-table witness, on "
        "the block with kmem `on`, in DRAM with `off`), per workload phase marked by the guest "
        f"program; its self-check (every struct page of 1000 known pfns seen: {seen}) fails "
        "when its range bound is off by one line.",
        f"- Cache: the same access stream, every guest data access, runs through a "
        f"{m['llc_bytes'] >> 20} MiB {m['ways']}-way LRU last-level-cache model warm from boot; "
        "its misses on the memmap are what would reach memory.",
        f"- Time: extra = misses x {low:g} ns (Pond, ASPLOS '23: CXL adds 70-90 ns over local "
        f"DRAM) at the low end, and every distinct struct-page line fetched once x {high:g} ns "
        "(a switched CXL.mem path, ~250 vs ~100 ns) at the high end (a cold or contended "
        "cache); zero with the memmap in DRAM, which pays local DRAM latency for the same "
        "misses.",
        f"- Share: extra / (extra + the phase modelled as instructions at {m['ns_per_insn']:.2f} "
        f"ns plus every modelled miss at {m['dram_ns']:g} ns).",
        "",
        'Sources: bench/README.md, "Struct-page traffic".',
    ]
    if other_base:
        other_checks = ", ".join(
            f"{tag}: {c['seen_expected']}/{c['expected']} (+{c['extra']})"
            for tag, c in other_base.get("self_check", {}).items()
        )
        out += [
            "",
            "## The same on Linux 7.3",
            "",
            generated_line(other_base) + f" Self-check: {other_checks}.",
            "",
            *table(other_base),
        ]
    if hwpoison:
        out += ["", "## Memory errors", "", *hwpoison_summary(hwpoison)]
    p2 = p2_summary(REPO / "bench" / "results")
    if p2:
        out += ["", "## Hot-add time (P2)", "", *p2]
    return "\n".join(out) + "\n"


P2_FILES = (
    ("6.12, the series", "p2_phases_6.12.json"),
    ("6.12, the series + kernel-patch/6.12-extra (zone->contiguous)", "p2_phases_6.12_contig.json"),
    ("7.3, the series", "p2_phases_7.3.json"),
    ("7.3, the series + kernel-patch/7.3-extra (zone->contiguous)", "p2_phases_7.3_contig.json"),
)


def p2_ratio(r: dict[str, Any]) -> str:
    """median [95 % CI of the median] (IQR); files older than the CI have none."""
    ci = r.get("median_ci95")
    interval = f" [{ci[0]:.2f}-{ci[1]:.2f}]" if ci else ""
    return f"{r['median']:.2f}{interval} ({r['q1']:.2f}-{r['q3']:.2f})"


def p2_summary(results: Path) -> list[str]:
    """Hot-add + online, memory/DRAM per round, from bench/p2_phases.py's files."""
    rows = []
    for what, name in P2_FILES:
        path = results / name
        if not path.is_file():
            continue
        p2 = json.loads(path.read_text())["p2"]
        rows.append(
            f"| {what} | {len(p2['samples']['memory'])} | {p2_ratio(p2['add_online']['ratio'])} "
            f"| {p2_ratio(p2['online']['ratio'])} | {p2_ratio(p2['offline_remove']['ratio'])} |"
        )
    if not rows:
        return []
    return [
        "`bench/p2_phases.py` (`make bench-p2`): 8 GiB of hmem in 64 blocks, kmem `off`/`on` "
        "alternated ABBA in one boot under TCG, the two kernels of a base side by side; per "
        "round the time with the memmap on the memory over the time with it in DRAM: median "
        "[95 % confidence interval of the median] (interquartile range of the rounds):",
        "",
        "| kernel | rounds | hot-add + online | online | offline + remove |",
        "|---|---|---|---|---|",
        *rows,
    ]


def hwpoison_summary(hw: dict[str, Any]) -> list[str]:
    """What bench/hwpoison.py observed, from its JSON (tests/vm/test_vm_hwpoison.py pins it)."""
    data, mm = hw["poison_data"], hw["poison_memmap"]

    def said(pfn: int) -> str:
        found = [
            line.split("] ", 1)[-1]
            for line in hw["kernel_lines"]
            if f"Memory failure: {pfn:#x}:" in line
        ]
        return "; ".join(f"`{line}`" for line in found) or "nothing"

    def rc(label: str) -> str:
        return "refused" if "rc=0" not in hw[label]["stdout"] else "done"

    return [
        f"Patched 6.12 with CONFIG_MEMORY_FAILURE and the hwpoison injector, kmem `on`, "
        f"{hw['hotplug_mib']} MiB on node 1; the injector (debugfs `hwpoison/corrupt-pfn`, "
        "memory_failure() as a machine check calls it) on two pfns of the node's first block "
        f"(`make vm-test-hwpoison` pins this; {hw['generated']}):",
        "",
        "| pfn | kernel | outcome |",
        "|---|---|---|",
        f"| {data['pfn']:#x}, an anonymous data page of a process | {said(data['pfn'])} | "
        f"recovered: page poisoned and unmapped, the process's next read got SIGBUS "
        f"(si_code {data['si_code']}, BUS_MCEERR_AR); kernel up |",
        f"| {mm['pfn']:#x}, the block's first page: struct pages of its first 64 pfns "
        f"| {said(mm['pfn'])} | not recovered: the injector's write fails "
        f"({mm['inject_error'] or 'ok'}), the pfn is marked HWPoison, nobody is killed, the "
        "kernel keeps the page and keeps reading its struct pages (a software injection "
        "leaves the memory intact; with a real uncorrectable error that next read by the "
        "kernel is where the error is consumed); kernel up |",
        "",
        f"Afterwards: the node still allocates; the poisoned block goes offline "
        f"({rc('offline_first')}) but online again is {rc('online_first')} "
        "(memory_block_online() refuses a block with poisoned pages); hot-remove of the whole "
        f"device is {'done' if 'memory-gone' in hw['remove']['stdout'] else 'refused'}. "
        f"Panic or oops: {'yes' if hw['panic_or_oops'] else 'none'}.",
    ]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    src = Path(args[0]) if args else REPO / "bench" / "results" / "costs.json"
    data = json.loads(src.read_text())
    svg_path = src.with_suffix(".svg")
    svg_path.write_text(svg(data))
    print(f"wrote {svg_path}")
    if png(svg_path, src.with_suffix(".png")):
        print(f"wrote {src.with_suffix('.png')}")
    hw_path = src.parent / "hwpoison.json"
    hwpoison = json.loads(hw_path.read_text()) if hw_path.is_file() else None
    other_path = src.with_name(src.stem + "_7.3.json")
    other = json.loads(other_path.read_text()) if other_path.is_file() else None
    src.with_suffix(".md").write_text(markdown(data, hwpoison, other))
    print(f"wrote {src.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
