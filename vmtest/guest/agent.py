"""Guest side of the VM runner: run the host's job, write result.json, power off.

Started by init.sh as PID 1 with the writable 9p share as its only argument. The job
(job.json on the share) is a list of steps; each step is one primitive below. The host
composes scenarios from them, so all test logic and assertions stay on the host, and this
file only measures and acts. Standard library only: it runs with whatever interpreter the
host used (the checkout's venv), which the read-only 9p root provides.

result.json: {"status": "ok"|"failed"|"error", "exit_status": int, "steps": [...],
"error": str|None, "dmesg": str}. exit_status is 0 when every step succeeded, 1 when a step
failed, 2 when the job could not be run. The same status is printed on the console as
`VMTEST-EXIT-STATUS=<n>` for the host to fall back on.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sysinfo

Step = dict[str, Any]
Context = dict[str, Any]

RB_POWER_OFF = 0x4321FEDC
# Modules that Kconfig.snippet builds in and that daxctl/ndctl/cxl look up through libkmod.
BUILTIN_MODULES = (
    "kernel/drivers/dax/dax.ko",
    "kernel/drivers/dax/device_dax.ko",
    "kernel/drivers/dax/kmem.ko",
    "kernel/drivers/dax/hmem/dax_hmem.ko",
    "kernel/drivers/dax/dax_pmem.ko",
    "kernel/drivers/dax/dax_cxl.ko",
    "kernel/drivers/nvdimm/libnvdimm.ko",
    "kernel/drivers/nvdimm/nd_pmem.ko",
    "kernel/drivers/nvdimm/nd_e820.ko",
    "kernel/drivers/acpi/nfit/nfit.ko",
    "kernel/drivers/cxl/core/cxl_core.ko",
    "kernel/drivers/cxl/cxl_acpi.ko",
    "kernel/drivers/cxl/cxl_pci.ko",
    "kernel/drivers/cxl/cxl_mem.ko",
    "kernel/drivers/cxl/cxl_port.ko",
    "kernel/drivers/cxl/cxl_pmem.ko",
)


class StepFailed(Exception):
    """A step did not do what it was asked; the job stops here."""


def log(message: str) -> None:
    print(f"vmtest: [{time.monotonic():9.3f}] {message}", flush=True)


def provide_modules_builtin(share: Path) -> None:
    """Make /lib/modules/$(uname -r) describe the built-in drivers, for libkmod."""
    release = os.uname().release
    moddir = Path("/lib/modules") / release
    moddir.mkdir(parents=True, exist_ok=True)
    from_host = share / "modules.builtin"
    if from_host.is_file():
        (moddir / "modules.builtin").write_bytes(from_host.read_bytes())
    else:
        (moddir / "modules.builtin").write_text("".join(m + "\n" for m in BUILTIN_MODULES))
    modinfo = share / "modules.builtin.modinfo"
    if modinfo.is_file():
        (moddir / "modules.builtin.modinfo").write_bytes(modinfo.read_bytes())
    (moddir / "modules.order").write_text("")
    # A modular kernel: the runner shares the modules that `make modules_install` put in
    # <image>/modroot (kmem.ko and its KUnit suite), installed where modprobe looks.
    modules = share / "modules"
    if modules.is_dir():
        shutil.copytree(modules, moddir, dirs_exist_ok=True)
    subprocess.run(["depmod", "-a", release], check=False, capture_output=True)


def load_kmem_module(job: dict[str, Any]) -> dict[str, Any] | None:
    """Load kmem when it is a module, as a distribution's udev would at boot (modprobe picks
    kmem.* parameters from the kernel command line); a job that tests loading says no."""
    if not job.get("load_kmem", True) or Path("/sys/bus/dax/drivers/kmem").is_dir():
        return None
    release = os.uname().release
    if not list((Path("/lib/modules") / release).rglob("kmem.ko*")):
        return None
    return run_argv(["modprobe", "kmem"])


def run_argv(
    argv: list[str],
    *,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout, env=full_env, cwd=cwd, check=False
        )
    except FileNotFoundError as exc:
        return {"argv": argv, "rc": 127, "stdout": "", "stderr": str(exc), "seconds": 0.0}
    except subprocess.TimeoutExpired as exc:
        return {
            "argv": argv,
            "rc": 124,
            "stdout": (exc.stdout or b"").decode(errors="replace"),
            "stderr": (exc.stderr or b"").decode(errors="replace") + f"\ntimeout after {timeout}s",
            "seconds": time.monotonic() - start,
        }
    return {
        "argv": argv,
        "rc": proc.returncode,
        "stdout": proc.stdout.decode(errors="replace"),
        "stderr": proc.stderr.decode(errors="replace"),
        "seconds": time.monotonic() - start,
    }


def require_ok(out: dict[str, Any], what: str) -> dict[str, Any]:
    if out["rc"] != 0:
        raise StepFailed(f"{what}: exit {out['rc']}: {out['stderr'].strip() or out['stdout']}")
    return out


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


def write_bytes(path: str, data: bytes) -> dict[str, Any]:
    """One write(2) of data to a sysfs file: the errno the kernel returned, or the count."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return {"errno": exc.errno, "errname": errno.errorcode.get(exc.errno or 0), "at": "open"}
    try:
        written = os.write(fd, data)
    except OSError as exc:
        return {"errno": exc.errno, "errname": errno.errorcode.get(exc.errno or 0), "at": "write"}
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return {"errno": None, "errname": None, "written": written}


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


# --- primitives -----------------------------------------------------------------------------


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


def run_job(share: Path) -> dict[str, Any]:
    job = json.loads((share / "job.json").read_text())
    ctx: Context = {"python": job.get("python", sys.executable), "repo": job["repo"]}
    steps_out: list[dict[str, Any]] = []
    result: dict[str, Any] = {"status": "ok", "exit_status": 0, "steps": steps_out, "error": None}
    result["uname"] = os.uname().release
    result["cmdline"] = read_text("/proc/cmdline")
    result["kmem_modprobe"] = load_kmem_module(job)
    # Small per-CPU free lists, so that node MemFree moves with what the kernel allocates and
    # not with pages parked on (and later drained from) those lists.
    fraction = job.get("percpu_pagelist_high_fraction")
    if fraction:
        write_bytes("/proc/sys/vm/percpu_pagelist_high_fraction", str(fraction).encode())
    for index, step in enumerate(job["steps"]):
        op = OPS.get(step["op"])
        label = step.get("label", step["op"])
        log(f"step {index} {label}")
        start = time.monotonic()
        try:
            if op is None:
                raise StepFailed(f"unknown op {step['op']!r}")
            out = op(ctx, step)
        except Exception as exc:
            detail = (
                "".join(traceback.format_exception(exc))
                if not isinstance(exc, StepFailed)
                else str(exc)
            )
            steps_out.append(
                {
                    "op": step["op"],
                    "label": label,
                    "ok": False,
                    "error": detail,
                    "seconds": time.monotonic() - start,
                }
            )
            result.update(status="failed", exit_status=1, error=f"step {index} {label}: {exc}")
            log(f"step {index} {label} failed: {detail}")
            break
        steps_out.append(
            {
                "op": step["op"],
                "label": label,
                "ok": True,
                "out": out,
                "seconds": time.monotonic() - start,
            }
        )
    return result


def power_off() -> None:
    os.sync()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.reboot(RB_POWER_OFF)
    # Only reached when reboot(2) failed: exiting PID 1 panics, and -no-reboot ends QEMU.
    log(f"reboot(RB_POWER_OFF) failed: errno {ctypes.get_errno()}")


def main(argv: list[str]) -> int:
    share = Path(argv[1])
    result: dict[str, Any]
    log("agent started")
    try:
        provide_modules_builtin(share)
        log("modules.builtin ready")
        result = run_job(share)
    except Exception:
        result = {"status": "error", "exit_status": 2, "steps": [], "error": traceback.format_exc()}
        log(result["error"])
    log("job done")
    try:
        result["dmesg"] = sysinfo.dmesg()
    except OSError as exc:
        result["dmesg"] = f"(dmesg unavailable: {exc})"
    tmp = share / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    tmp.rename(share / "result.json")
    print(f"VMTEST-EXIT-STATUS={result['exit_status']}", flush=True)
    return int(result["exit_status"])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        main(sys.argv)
    finally:
        power_off()
