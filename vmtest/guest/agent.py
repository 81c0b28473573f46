"""Guest side of the VM runner: run the host's job, write result.json, power off.

Started by init.sh as PID 1 with the writable 9p share as its only argument. The job
(job.json on the share) is a list of steps; each step is one op of guestops.py. The host
composes scenarios from them, so all test logic and assertions stay on the host, and this
file only measures and acts. Standard library only: it runs with whatever interpreter the
host used (the checkout's venv), which the read-only 9p root provides.

result.json: {"status": "ok"|"failed"|"error", "exit_status": int, "steps": [...],
"error": str|None, "dmesg": str}. exit_status is 0 when every step succeeded, 1 when a step
failed, 2 when the job could not be run. The same status is printed on the console as
`VMTEST-EXIT-STATUS=<n>` for the host to fall back on.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import sysinfo
from guestlib import Context, StepFailed, log, read_text, run_argv, write_bytes
from guestops import OPS

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
