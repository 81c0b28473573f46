"""One SVG picture of bench/results/p1_p2.json, with no dependency: `python bench/plot.py`.

Left: node-0 DRAM that onlining 1 GiB costs, stock vs kmem `on`, next to the capacity that the
hot-plugged memory gives up for its own memmap. Right: hot-add+online and offline+remove time
per GiB, memmap in DRAM vs on the memory, with the ratio.
"""

from __future__ import annotations

import json
import sys
from html import escape
from pathlib import Path
from typing import Any

WIDTH, HEIGHT = 960, 470
TOP, BOTTOM = 110, 380  # plot area of both panels (y)
DRAM, MEMORY, DEVICE = "#c0392b", "#2e86c1", "#7f8c8d"


def _text(x: float, y: float, s: str, size: int = 13, anchor: str = "middle", **kw: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{escape(s)}</text>"
    )


def _bar(x: float, width: float, value: float, vmax: float, color: str, label: str) -> list[str]:
    height = (BOTTOM - TOP) * (value / vmax if vmax else 0)
    y = BOTTOM - height
    return [
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{max(height, 1):.1f}" '
        f'fill="{color}"/>',
        _text(x + width / 2, y - 6, label, 13, font_weight="bold"),
    ]


def _axis(x0: float, x1: float) -> str:
    return f'<line x1="{x0}" y1="{BOTTOM}" x2="{x1}" y2="{BOTTOM}" stroke="#333"/>'


def render(data: dict[str, Any]) -> str:
    p1, p2, setup = data["p1"], data["p2"], data["setup"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="DejaVu Sans, Arial, sans-serif">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        _text(
            WIDTH / 2,
            30,
            "dax kmem memmap_on_memory: where 16 MiB per GiB of memmap goes",
            18,
            font_weight="bold",
        ),
    ]

    # P1
    mib = 1024.0
    stock = p1["stock_node0_kb_per_gib"] / mib
    on = max(p1["on_node0_kb_per_gib"], 0.0) / mib
    lost = p1["on_capacity_lost_kb_per_gib"] / mib
    vmax = max(stock, lost, 1.0) * 1.15
    saved_pct = 100 * (1 - p1["on_vs_stock_node0_ratio"])
    on_name = "kmem on" if setup.get("on_kernel_kind") == "patched" else "global+attr"
    out.append(_text(235, 62, "P1: node-0 DRAM spent per GiB onlined", 15, font_weight="bold"))
    out.append(
        _text(
            235,
            82,
            f"{on_name} saves {stock - on:.1f} MiB per GiB ({saved_pct:.1f} %)",
            13,
            fill=MEMORY,
        )
    )
    out.append(_axis(40, 430))
    for i, (value, color, name, sub) in enumerate(
        [
            (stock, DRAM, "stock 6.12", "node 0 (DRAM)"),
            (on, MEMORY, on_name, "node 0 (DRAM)"),
            (lost, DEVICE, on_name, "hot-plugged memory"),
        ]
    ):
        x = 60 + i * 125
        out += _bar(x, 90, value, vmax, color, f"{value:.2f} MiB")
        out.append(_text(x + 45, BOTTOM + 20, name, 13))
        out.append(_text(x + 45, BOTTOM + 37, sub, 12, fill="#555"))

    # P2
    groups = [
        ("hot-add + online", "add_online_s_per_gib", "ratio_add_online"),
        ("offline + remove", "offline_remove_s_per_gib", "ratio_offline_remove"),
    ]
    values = [p2[m][key] * 1000 for _, key, _ in groups for m in ("dram", "memory")]
    tmax = max([*values, 1.0]) * 1.35
    out.append(_text(715, 62, "P2: time per GiB, same VM (ms)", 15, font_weight="bold"))
    out.append(_text(715, 82, "memmap in DRAM vs on the hot-plugged memory", 13, fill="#555"))
    out.append(_axis(500, 930))
    for g, (name, key, ratio) in enumerate(groups):
        x0 = 520 + g * 210
        for j, (mode, color) in enumerate((("dram", DRAM), ("memory", MEMORY))):
            value = p2[mode][key] * 1000
            out += _bar(x0 + j * 90, 80, value, tmax, color, f"{value:.0f}")
        out.append(_text(x0 + 85, BOTTOM + 20, name, 13))
        out.append(_text(x0 + 85, BOTTOM + 37, f"ratio {p2[ratio]:.2f}x", 12, fill="#555"))
    legend_y = 100
    for i, (color, name) in enumerate(((DRAM, "memmap in DRAM"), (MEMORY, "memmap on memory"))):
        out.append(
            f'<rect x="{800}" y="{legend_y + i * 18}" width="12" height="12" fill="{color}"/>'
        )
        out.append(_text(818, legend_y + 10 + i * 18, name, 12, anchor="start"))

    notes = [
        f"QEMU {setup['qemu']} ({setup['accel']}), {setup['hotplug_mib']} MiB on NUMA node 1, "
        f"{setup['block_bytes'] >> 20} MiB blocks. P1: pmem devdax, first online; "
        f"P2: soft-reserved RAM, median of {setup['reps']} cycles.",
        f"memmap on memory: {setup['on_mechanism']}",
    ]
    for i, note in enumerate(notes):
        out.append(_text(WIDTH / 2, HEIGHT - 30 + i * 15, note, 11, fill="#555"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else Path(__file__).parent / "results" / "p1_p2.json"
    dst = src.with_suffix(".svg")
    dst.write_text(render(json.loads(src.read_text())))
    print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
