"""pyshim report opened in a real browser: headless Chromium renders it to a PNG, and the
picture is checked the way a person would look at it (one bar per node, widths to scale)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from unit_helpers import Result, tree_path

BOOT = (0x9E, 0x9E, 0x9E)
MEMORY = (0x2E, 0x7D, 0x32)
MEMMAP = (0x1B, 0x3D, 0x1D)
DRAM = (0xEF, 0x6C, 0x00)


def read_png(path: Path) -> list[list[tuple[int, int, int]]]:
    """RGB rows of an 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and color in (2, 6) and interlace == 0
    channels = 3 if color == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows: list[list[tuple[int, int, int]]] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                near = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + near) & 0xFF
        rows.append([tuple(line[x : x + 3]) for x in range(0, stride, channels)])  # type: ignore[misc]
        previous = line
    return rows


def bars(rows: list[list[tuple[int, int, int]]]) -> list[list[tuple[tuple[int, int, int], int]]]:
    """Each band of rows that holds bar colours, as [(colour, width in pixels), ...] left to
    right (the middle row of the band; other colours end a run)."""
    colours = {BOOT, MEMORY, MEMMAP, DRAM}
    bands: list[list[int]] = []
    for y, row in enumerate(rows):
        if sum(1 for pixel in row if pixel in colours) > 150:  # not the legend squares
            if bands and bands[-1][-1] == y - 1:
                bands[-1].append(y)
            else:
                bands.append([y])
    result = []
    for band in bands:
        row = rows[band[len(band) // 2]]
        runs: list[tuple[tuple[int, int, int], int]] = []
        for pixel in row:
            if pixel not in colours:
                continue
            if runs and runs[-1][0] == pixel:
                runs[-1] = (pixel, runs[-1][1] + 1)
            else:
                runs.append((pixel, 1))
        result.append(runs)
    return result


def test_report_renders_one_bar_per_node_to_scale(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/install-deps.sh installs it)")
    html = tmp_path / "report.html"
    assert cli(["report", "--html", str(html), "--sysroot", str(tree_path("mixed"))]).code == 0
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # root in a container has no user namespace for the sandbox
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,900",
            f"--screenshot={shot}",
            html.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    # the mixed tree: node 0 has 16 boot blocks (900 px, the scale); node 1 spans 12 blocks,
    # 4 with memmap on the blocks (225 px, the memmap's 1.5625 % darker at the start), a hole
    # of 4, and 4 with memmap in DRAM (225 px)
    node0, node1 = bars(read_png(shot))
    assert node0 == [(BOOT, 900)]
    colours = [colour for colour, _ in node1]
    assert colours == [MEMMAP, MEMORY, DRAM]
    widths = dict((colour, width) for colour, width in node1)
    # the 3.52 px memmap stripe ends in one blended pixel, counted as neither colour
    assert 224 <= widths[MEMMAP] + widths[MEMORY] <= 225
    assert 3 <= widths[MEMMAP] <= 4
    assert widths[DRAM] == 225
