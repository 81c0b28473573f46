"""Builders for the guest's job steps (see guest/agent.py for what each op does)."""

from __future__ import annotations

import base64
from typing import Any

Step = dict[str, Any]

KMEM_ATTR = "/sys/bus/dax/drivers/kmem/memmap_on_memory"
KMEM_PARAM = "/sys/module/kmem/parameters/memmap_on_memory"
DEV_ATTR = "/sys/bus/dax/devices/{device}/memmap_on_memory"


def snapshot(label: str, settle: float = 0.0) -> Step:
    """Everything about memory placement, after dropping caches and waiting settle seconds."""
    return {"op": "snapshot", "label": label, "settle": settle}


def pmem_devdax() -> Step:
    """Legacy pmem namespace -> devdax; later steps use its device."""
    return {"op": "pmem_devdax", "label": "pmem_devdax"}


def find_dax(node: int = 1) -> Step:
    return {"op": "find_dax", "node": node, "label": "find_dax"}


def online(label: str = "online", method: str = "auto", movable: bool = True) -> Step:
    return {"op": "online", "label": label, "method": method, "movable": movable}


def offline(label: str = "offline", method: str = "auto") -> Step:
    return {"op": "offline", "label": label, "method": method}


def kmem_set(value: str, label: str = "kmem_set", method: str = "auto") -> Step:
    return {"op": "kmem_set", "value": value, "label": label, "method": method}


def dev_attr(value: str, label: str = "dev_attr", may_fail: bool = False) -> Step:
    return {"op": "dev_attr", "value": value, "label": label, "may_fail": may_fail}


def shim(label: str, *args: str, parse_json: bool = False) -> Step:
    """Run `python -m pyshim ARGS` in the guest; its exit status is recorded, not checked."""
    return {"op": "shim", "args": list(args), "label": label, "may_fail": True, "json": parse_json}


def run(label: str, *argv: str, timeout: float = 300.0, env: dict[str, str] | None = None) -> Step:
    """Run a guest command; its exit status and output are recorded, not checked."""
    return {
        "op": "run",
        "argv": list(argv),
        "label": label,
        "may_fail": True,
        "timeout": timeout,
        "env": env or {},
    }


def read(path: str, label: str) -> Step:
    return {"op": "read", "path": path, "label": label}


def write(path: str, data: bytes, label: str) -> Step:
    return {
        "op": "write",
        "path": path,
        "data_b64": base64.b64encode(data).decode(),
        "label": label,
    }


def write_many(path: str, items: list[bytes], label: str) -> Step:
    return {
        "op": "write_many",
        "path": path,
        "label": label,
        "items_b64": [base64.b64encode(i).decode() for i in items],
    }


def cycles(count: int, method: str = "auto") -> Step:
    return {"op": "cycles", "count": count, "method": method, "label": "cycles"}


def kmemleak() -> Step:
    return {"op": "kmemleak", "label": "kmemleak"}


def dmesg(label: str = "dmesg") -> Step:
    """The kernel log at this point of the job (result.json has the whole log at the end)."""
    return {"op": "dmesg", "label": label}


def cxl_region(kind: str) -> Step:
    """A CXL region from the cxl-type3 device ("pmem" -> devdax namespace, "ram" -> dax_cxl);
    later steps use its dax device."""
    return {"op": "cxl_region", "type": kind, "label": "cxl_region"}
