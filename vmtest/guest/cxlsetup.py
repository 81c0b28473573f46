"""Guest side: turn the QEMU cxl-type3 device into a dax device.

pmem: `cxl create-region -m -t pmem` then `ndctl create-namespace -m devdax` (Debian 12's
QEMU 7.2 and ndctl 76.1 can do this).
ram: the kernel's sysfs sequence (Debian 12's `cxl` cannot create RAM regions and still exits
0), for a `volatile-memdev` device (QEMU >= 8.0): root decoder create_ram_region, region
geometry and size, endpoint decoder mode and DPA size, target, commit, bind to cxl_region.
dax_cxl then creates the dax device and kmem binds it at once (blocks come up offline).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

CXL = Path("/sys/bus/cxl/devices")


def _run(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _write(path: Path, value: str) -> None:
    with open(path, "w") as handle:
        handle.write(value)


def _read(path: Path) -> str:
    return path.read_text().strip()


def root_decoder() -> str:
    return sorted(p.name for p in CXL.glob("decoder0.*"))[0]


def memdev() -> str:
    return sorted(p.name for p in CXL.glob("mem[0-9]*"))[0]


def endpoint_decoder() -> Path:
    for endpoint in sorted(CXL.glob("endpoint*")):
        decoders = sorted(endpoint.glob("decoder*.0"))
        if decoders:
            return CXL / decoders[0].name
    raise RuntimeError("no CXL endpoint decoder")


def dax_devices() -> set[str]:
    return {p.name for p in Path("/sys/bus/dax/devices").glob("dax*")}


def create_pmem() -> dict[str, Any]:
    root, mem = root_decoder(), memdev()
    region = json.loads(
        _run(["cxl", "create-region", "-m", "-t", "pmem", "-d", root, "-w", "1", mem]) or "{}"
    )
    name = region.get("region") or sorted(p.name for p in CXL.glob("region*"))[0]
    regions = json.loads(_run(["ndctl", "list", "-R"]))
    nd_region = regions[0]["dev"] if isinstance(regions, list) else regions["dev"]
    ns = json.loads(_run(["ndctl", "create-namespace", "-m", "devdax", "-r", nd_region]))
    return {
        "region": name,
        "nd_region": nd_region,
        "device": ns["daxregion"]["devices"][0]["chardev"],
    }


def create_ram(size: int | None) -> dict[str, Any]:
    root = CXL / root_decoder()
    endpoint = endpoint_decoder()
    mem_size = size or int(_read(CXL / memdev() / "ram" / "size"), 0)
    before = dax_devices()
    name = _read(root / "create_ram_region")
    _write(root / "create_ram_region", name)
    region = CXL / name
    _write(region / "interleave_granularity", "256")
    _write(region / "interleave_ways", "1")
    _write(region / "size", str(mem_size))
    _write(endpoint / "mode", "ram")
    _write(endpoint / "dpa_size", str(mem_size))
    _write(region / "target0", endpoint.name)
    _write(region / "commit", "1")
    _write(Path("/sys/bus/cxl/drivers/cxl_region/bind"), name)
    for _ in range(100):
        new = dax_devices() - before
        if new:
            return {
                "region": name,
                "endpoint_decoder": endpoint.name,
                "size": mem_size,
                "device": sorted(new)[0],
            }
        time.sleep(0.1)
    raise RuntimeError(f"{name} committed but no dax device appeared")


def create_region(kind: str, size: int | None) -> dict[str, Any]:
    return create_pmem() if kind == "pmem" else create_ram(size)
