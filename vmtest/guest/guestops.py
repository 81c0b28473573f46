"""The guest's steps: one function per op of vmtest/steps.py, and OPS, the table run_job
looks them up in. Each acts and measures; the host asserts."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sysinfo
from guestlib import Context, Step, StepFailed, read_text, require_ok, run_argv, write_bytes


def shim_argv(ctx: Context, args: list[str]) -> list[str]:
    return [ctx["python"], "-m", "pyshim", *args]


def shim_available(ctx: Context) -> bool:
    if "shim" not in ctx:
        probe = run_argv([ctx["python"], "-c", "import pyshim.cli"], cwd=ctx["repo"])
        ctx["shim"] = probe["rc"] == 0
    return bool(ctx["shim"])


def pick_method(ctx: Context, step: Step) -> str:
    method = str(step.get("method", "auto"))
    if method == "auto":
        return "shim" if shim_available(ctx) else "daxctl"
    return method


def resolve_device(ctx: Context, step: Step) -> str:
    name = str(step.get("device", "auto"))
    if name != "auto":
        return name
    if "device" in ctx:
        return str(ctx["device"])
    devices = sorted(p.name for p in Path("/sys/bus/dax/devices").glob("dax*"))
    if len(devices) != 1:
        raise StepFailed(f"device=auto needs exactly one dax device, found {devices}")
    return devices[0]


def op_snapshot(ctx: Context, step: Step) -> dict[str, Any]:
    """Drop clean caches, let freed pages settle (per-CPU lists drain on the 1 s vmstat
    tick), then read everything."""
    if step.get("drop_caches", True):
        sysinfo.drop_caches()
    time.sleep(float(step.get("settle", 0)))
    return sysinfo.snapshot(ctx["repo"])


def op_run(ctx: Context, step: Step) -> dict[str, Any]:
    """Run a command; "{device}" in its arguments and environment is the remembered dax
    device (pmem_devdax, find_dax)."""
    device = str(ctx.get("device", ""))
    env = step.get("env")
    out = run_argv(
        [str(a).replace("{device}", device) for a in step["argv"]],
        timeout=float(step.get("timeout", 300)),
        env={k: str(v).replace("{device}", device) for k, v in env.items()} if env else env,
        cwd=step.get("cwd", ctx["repo"]),
    )
    if not step.get("may_fail", False):
        require_ok(out, " ".join(out["argv"]))
    return out


def op_shim(ctx: Context, step: Step) -> dict[str, Any]:
    out = run_argv(shim_argv(ctx, [str(a) for a in step["args"]]), cwd=ctx["repo"])
    if not step.get("may_fail", False):
        require_ok(out, "pyshim " + " ".join(step["args"]))
    if step.get("json") and out["rc"] in (0, 1):
        try:
            out["json"] = json.loads(out["stdout"])
        except ValueError:
            out["json"] = None
    return out


def op_write(ctx: Context, step: Step) -> dict[str, Any]:
    """Write data (text, or base64 in data_b64) to path; record errno and the value after."""
    data = base64.b64decode(step["data_b64"]) if "data_b64" in step else str(step["data"]).encode()
    path = str(step["path"]).replace("{device}", ctx.get("device", ""))
    before = read_text(path)
    out = write_bytes(path, data)
    out["before"] = before
    out["after"] = read_text(path)
    want = step.get("expect_errno", "any")
    if want != "any" and out["errno"] != want:
        raise StepFailed(f"write {data[:40]!r} to {path}: errno {out['errno']}, expected {want}")
    return out


def op_write_many(ctx: Context, step: Step) -> dict[str, Any]:
    """Write each of many byte strings to one attribute (one boot for scenario 7)."""
    path = str(step["path"]).replace("{device}", ctx.get("device", ""))
    results = []
    for item in step["items_b64"]:
        data = base64.b64decode(item)
        before = read_text(path)
        out = write_bytes(path, data)
        out["before"] = before
        out["after"] = read_text(path)
        out["data_b64"] = item
        results.append(out)
    return {"path": path, "results": results}


def op_read(ctx: Context, step: Step) -> dict[str, Any]:
    path = str(step["path"]).replace("{device}", ctx.get("device", ""))
    return {"path": path, "value": read_text(path)}


def op_kmem_set(ctx: Context, step: Step) -> dict[str, Any]:
    value = str(step["value"])
    method = pick_method(ctx, step)
    if method == "shim":
        out = run_argv(shim_argv(ctx, ["set", "--driver", "dax_kmem", value]), cwd=ctx["repo"])
    else:
        out = write_bytes(sysinfo.KMEM_ATTR, value.encode())
        out["rc"] = 0 if out["errno"] is None else 1
        out["stderr"] = out["errname"] or ""
    out["method"] = method
    out["value"] = read_text(sysinfo.KMEM_ATTR)
    if not step.get("may_fail", False):
        require_ok(out, f"set kmem memmap_on_memory {value} ({method})")
    return out


def op_dev_attr(ctx: Context, step: Step) -> dict[str, Any]:
    """Write daxX.Y/memmap_on_memory (the device must not be bound to kmem)."""
    device = resolve_device(ctx, step)
    path = f"/sys/bus/dax/devices/{device}/memmap_on_memory"
    out = write_bytes(path, str(step["value"]).encode())
    out["value"] = read_text(path)
    if out["errno"] is not None and not step.get("may_fail", False):
        raise StepFailed(f"write {step['value']} to {path}: {out['errname']}")
    return out


def op_pmem_devdax(ctx: Context, step: Step) -> dict[str, Any]:
    """Legacy pmem (memmap=X!Y) -> namespace in devdax mode; remembers the dax device."""
    argv = ["ndctl", "create-namespace", "-f", "-e", str(step.get("namespace", "namespace0.0"))]
    argv += ["-m", "devdax"]
    if "align" in step:
        argv += ["-a", str(step["align"])]
    out = require_ok(run_argv(argv), "ndctl create-namespace")
    info = json.loads(out["stdout"])
    ctx["device"] = info["daxregion"]["devices"][0]["chardev"]
    out["device"] = ctx["device"]
    return out


def op_find_dax(ctx: Context, step: Step) -> dict[str, Any]:
    """Remember the one dax device (or the one on a given node) for later steps."""
    node = step.get("node")
    found = []
    for dev in sorted(Path("/sys/bus/dax/devices").glob("dax*")):
        target = read_text(str(dev / "target_node"))
        if node is None or target == str(node):
            found.append(dev.name)
    if len(found) != 1:
        raise StepFailed(f"expected one dax device (node {node}), found {found}")
    ctx["device"] = found[0]
    return {"device": found[0]}


def sysfs_online(device: str, movable: bool) -> dict[str, Any]:
    """kmem-bind (hot-add) and online each block, with no tool in between: for timing."""
    t0 = time.monotonic()
    driver = sysinfo.dax_driver(device)
    if driver != "kmem":
        if driver is not None:
            sysinfo.write_sysfs(f"/sys/bus/dax/drivers/{driver}/unbind", device)
        sysinfo.write_sysfs("/sys/bus/dax/drivers/kmem/new_id", device, missing_ok=True)
        if sysinfo.dax_driver(device) != "kmem":
            sysinfo.write_sysfs("/sys/bus/dax/drivers/kmem/bind", device)
    t1 = time.monotonic()
    state = "online_movable" if movable else "online_kernel"
    for block in sysinfo.dax_blocks(device):
        if read_text(f"/sys/devices/system/memory/memory{block}/state") != "online":
            sysinfo.write_sysfs(f"/sys/devices/system/memory/memory{block}/state", state)
    t2 = time.monotonic()
    return {"hot_add_seconds": t1 - t0, "online_seconds": t2 - t1}


def sysfs_offline(device: str) -> dict[str, Any]:
    """Offline each block, then unbind kmem (hot-remove) and give the device to device_dax."""
    t0 = time.monotonic()
    for block in sysinfo.dax_blocks(device):
        if read_text(f"/sys/devices/system/memory/memory{block}/state") != "offline":
            sysinfo.write_sysfs(f"/sys/devices/system/memory/memory{block}/state", "offline")
    t1 = time.monotonic()
    sysinfo.write_sysfs("/sys/bus/dax/drivers/kmem/unbind", device)
    sysinfo.write_sysfs("/sys/bus/dax/drivers/kmem/remove_id", device, missing_ok=True)
    t2 = time.monotonic()
    # device_dax only matches hmem/cxl devices (IORESOURCE_DAX_KMEM) through its id list.
    sysinfo.write_sysfs("/sys/bus/dax/drivers/device_dax/new_id", device, missing_ok=True)
    if sysinfo.dax_driver(device) is None:
        sysinfo.write_sysfs("/sys/bus/dax/drivers/device_dax/bind", device, missing_ok=True)
    return {"offline_seconds": t1 - t0, "remove_seconds": t2 - t1}


def op_online(ctx: Context, step: Step) -> dict[str, Any]:
    device = resolve_device(ctx, step)
    method = pick_method(ctx, step)
    movable = bool(step.get("movable", True))
    start = time.monotonic()
    out: dict[str, Any]
    if method == "shim":
        args = ["online", device, "--movable" if movable else "--no-movable"]
        out = require_ok(run_argv(shim_argv(ctx, args), cwd=ctx["repo"]), "pyshim online")
    elif method == "daxctl":
        if sysinfo.dax_driver(device) == "kmem":
            argv = ["daxctl", "online-memory", device]
        else:
            argv = ["daxctl", "reconfigure-device", "-m", "system-ram", device]
        if not movable:
            argv.append("--no-movable")
        out = require_ok(run_argv(argv), " ".join(argv))
    elif method == "sysfs":
        out = sysfs_online(device, movable)
    else:
        raise StepFailed(f"unknown online method {method}")
    out["seconds"] = time.monotonic() - start
    out["method"] = method
    out["device"] = device
    return out


def op_offline(ctx: Context, step: Step) -> dict[str, Any]:
    """Offline the device's memory and hot-remove it (kmem unbound, back to devdax)."""
    device = resolve_device(ctx, step)
    method = pick_method(ctx, step)
    start = time.monotonic()
    out: dict[str, Any]
    if method == "shim":
        out = require_ok(
            run_argv(shim_argv(ctx, ["reconfigure", "--mode", "devdax", device]), cwd=ctx["repo"]),
            "pyshim reconfigure --mode devdax",
        )
    elif method == "daxctl":
        argv = ["daxctl", "reconfigure-device", "-f", "-m", "devdax", device]
        out = require_ok(run_argv(argv), " ".join(argv))
    elif method == "sysfs":
        out = sysfs_offline(device)
    else:
        raise StepFailed(f"unknown offline method {method}")
    out["seconds"] = time.monotonic() - start
    out["method"] = method
    out["device"] = device
    out["driver_after"] = sysinfo.dax_driver(device)
    return out


def op_cycles(ctx: Context, step: Step) -> dict[str, Any]:
    """Repeat online -> snapshot -> offline -> snapshot, count times, in this boot. The
    snapshot after onlining has the blocks and their witness too (placement per cycle)."""
    rounds = []
    for _ in range(int(step["count"])):
        online = op_online(ctx, step)
        after_online = sysinfo.snapshot_nodes()
        after_online.update(sysinfo.snapshot_placement(ctx["repo"]))
        offline = op_offline(ctx, step)
        after_offline = sysinfo.snapshot_nodes()
        rounds.append(
            {
                "online_seconds": online["seconds"],
                "offline_seconds": offline["seconds"],
                "online": after_online,
                "offline": after_offline,
                "driver_after": offline["driver_after"],
            }
        )
    return {"rounds": rounds}


def op_cxl_region(ctx: Context, step: Step) -> dict[str, Any]:
    import cxlsetup

    result = cxlsetup.create_region(str(step.get("type", "ram")), step.get("size"))
    if result.get("device"):
        ctx["device"] = result["device"]
    return result


def op_dmesg(ctx: Context, step: Step) -> dict[str, Any]:
    return {"text": sysinfo.dmesg()}


def op_kmemleak(ctx: Context, step: Step) -> dict[str, Any]:
    """On a kmemleak kernel: scan now and return the report (empty when nothing leaked)."""
    debugfs = Path("/sys/kernel/debug")
    if not (debugfs / "kmemleak").exists():
        run_argv(["mount", "-t", "debugfs", "debugfs", str(debugfs)])
    control = debugfs / "kmemleak"
    if not control.exists():
        return {"available": False, "report": ""}
    for _ in range(2):  # objects need two scans to be reported
        write_bytes(str(control), b"scan")
    return {"available": True, "report": read_text(str(control)) or ""}


OPS: dict[str, Callable[[Context, Step], dict[str, Any]]] = {
    "snapshot": op_snapshot,
    "run": op_run,
    "shim": op_shim,
    "write": op_write,
    "write_many": op_write_many,
    "read": op_read,
    "kmem_set": op_kmem_set,
    "dev_attr": op_dev_attr,
    "pmem_devdax": op_pmem_devdax,
    "find_dax": op_find_dax,
    "online": op_online,
    "offline": op_offline,
    "cycles": op_cycles,
    "cxl_region": op_cxl_region,
    "dmesg": op_dmesg,
    "kmemleak": op_kmemleak,
}
