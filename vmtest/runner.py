"""Boot a kernel in QEMU with the host root as the guest's root, run a job, get JSON back.

One call to `run()` is one boot of a machine.VMSpec: a hard timeout (QEMU is killed), the
guest's exit status and result.json returned through a second, writable virtio-9p share, and
the serial log kept in the work directory.

Guest layout: the host's `/` is shared read-only (mount tag `vmroot`) and mounted as the
guest's root; guest/init.sh (PID 1) adds tmpfs for /tmp, /run and /lib/modules and mounts
the work directory (mount tag `vmtest`) at /run/vmtest; guest/agent.py runs job.json's steps
and powers off with reboot(RB_POWER_OFF). Paths in the guest equal paths on the host, so the
checkout, its venv and pyshim run there unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import image
from .machine import MIB, Accel, Source, VMSpec, VMUnavailable, qemu_argv, repo_root


@dataclass
class VMResult:
    """What came back from one boot."""

    spec: VMSpec
    workdir: Path
    serial_log: Path
    seconds: float
    qemu_returncode: int | None
    timed_out: bool
    result: dict[str, Any] | None
    argv: list[str]
    # QEMU failed to start the first time and was run again (see qemu_failed_to_start).
    retried: bool = False

    @property
    def exit_status(self) -> int | None:
        """The guest's exit status (0 ok, 1 a step failed, 2 job error), None if none came."""
        if self.result is not None:
            return int(self.result["exit_status"])
        match = re.search(r"VMTEST-EXIT-STATUS=(\d+)", self.serial_text())
        return int(match.group(1)) if match else None

    def serial_text(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except OSError:
            return ""

    def step(self, label: str) -> dict[str, Any]:
        """The output of the step with this label (the op name when no label was given)."""
        if self.result is None:
            raise KeyError(label)
        for step in self.result["steps"]:
            if step["label"] == label:
                if not step["ok"]:
                    raise AssertionError(f"step {label} failed: {step['error']}")
                return dict(step["out"])
        raise KeyError(f"no step {label!r}; steps: {[s['label'] for s in self.result['steps']]}")

    def describe(self) -> str:
        """One paragraph for an assertion message: what happened and where the log is."""
        parts = [f"exit status {self.exit_status}", f"{self.seconds:.1f}s"]
        if self.retried:
            parts.append("QEMU failed to start once (qemu-first.out) and was run again")
        if self.timed_out:
            parts.append(f"TIMED OUT after {self.spec.timeout:.0f}s")
        if self.result and self.result.get("error"):
            parts.append(f"error: {self.result['error']}")
        elif self.result is None:
            parts.append(f"no result.json came back (QEMU exit code {self.qemu_returncode})")
        parts.append(f"serial log: {self.serial_log}")
        return "; ".join(parts)

    def tails(self, lines: int = 25) -> str:
        """QEMU's own output and the last serial lines: what a report shows when the
        logs stay on another machine (CI)."""
        qemu_out = self.workdir / "qemu.out"
        try:
            qemu_text = qemu_out.read_text(errors="replace").strip()
        except OSError:
            qemu_text = ""
        serial = self.serial_text().rstrip().splitlines()[-lines:]
        return "\n".join(
            [
                f"QEMU output: {qemu_text or '(none)'}",
                f"last {len(serial)} serial lines:" if serial else "serial log empty",
                *serial,
            ]
        )


def run(
    spec: VMSpec,
    steps: Sequence[Mapping[str, Any]],
    workdir: Path | None = None,
    *,
    echo: bool = False,
) -> VMResult:
    """Boot spec, run steps in the guest, return what came back. Never raises on guest failure."""
    if not spec.kernel.is_file():
        raise VMUnavailable(f"kernel image not found: {spec.kernel}")
    if shutil.which(spec.qemu) is None:
        raise VMUnavailable(f"{spec.qemu} not found (apt-get install qemu-system-x86)")
    workdir = Path(tempfile.mkdtemp(prefix="vmtest-")) if workdir is None else workdir
    share = workdir / "share"
    share.mkdir(parents=True, exist_ok=True)
    for stale in ("result.json", "result.json.tmp"):
        (share / stale).unlink(missing_ok=True)
    for path in image.modules_builtin(spec.kernel):
        shutil.copyfile(path, share / path.name)
    shutil.rmtree(share / "modules", ignore_errors=True)
    modules = image.modules(spec.kernel)
    if modules is not None:
        # build and source link back to the kernel tree: not for the guest.
        shutil.copytree(
            modules, share / "modules", ignore=shutil.ignore_patterns("build", "source")
        )
    job = {
        "repo": str(repo_root()),
        "python": spec.python,
        "steps": list(steps),
        "percpu_pagelist_high_fraction": spec.percpu_pagelist_high_fraction,
        "load_kmem": spec.load_kmem,
    }
    (share / "job.json").write_text(json.dumps(job, indent=1))
    serial_log = workdir / "serial.log"
    serial_log.unlink(missing_ok=True)
    (workdir / "qemu-first.out").unlink(missing_ok=True)
    retried = False
    with contextlib.ExitStack() as stack:
        nvdimm_file = None
        if spec.source is Source.NVDIMM:
            nvdimm_file = stack.enter_context(sparse_file(spec.hotplug_mib * MIB, spec.nvdimm_dir))
        argv = qemu_argv(spec, workdir, serial_log, nvdimm_file)
        (workdir / "qemu-argv.json").write_text(json.dumps(argv, indent=1))
        start = time.monotonic()
        proc, timed_out = run_qemu(argv, workdir / "qemu.out", spec.timeout)
        if qemu_failed_to_start(proc.returncode, timed_out, serial_log):
            # The host, not the guest: QEMU quit with an error before the guest wrote a
            # byte. One more try; the first attempt's output stays in qemu-first.out.
            (workdir / "qemu.out").replace(workdir / "qemu-first.out")
            retried = True
            proc, timed_out = run_qemu(argv, workdir / "qemu.out", spec.timeout)
        seconds = time.monotonic() - start
    result_path = share / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else None
    if result is not None:
        (workdir / "result.json").write_text(json.dumps(result, indent=1))
    vm = VMResult(
        spec, workdir, serial_log, seconds, proc.returncode, timed_out, result, argv, retried
    )
    qemu_text = (workdir / "qemu.out").read_text(errors="replace").strip()
    if qemu_text and result is None and echo:
        print(qemu_text, file=sys.stderr)
    if echo:
        print(vm.describe(), file=sys.stderr)
    return vm


def qemu_failed_to_start(returncode: int | None, timed_out: bool, serial_log: Path) -> bool:
    """QEMU exited with an error and the guest never wrote to its serial port. A guest that
    crashes before its console prints nothing either, but QEMU (-no-reboot) then exits 0."""
    if timed_out or returncode in (0, None):
        return False
    try:
        return serial_log.stat().st_size == 0
    except FileNotFoundError:
        return True


@contextlib.contextmanager
def sparse_file(size: int, parent: Path | None) -> Iterator[Path]:
    """A sparse file of size bytes in a new temporary directory, deleted with it afterwards:
    the host pays only for the pages the guest writes."""
    with tempfile.TemporaryDirectory(prefix="vmtest-nvdimm-", dir=parent) as tmp:
        path = Path(tmp) / "nvdimm.img"
        with open(path, "wb") as backing:
            backing.truncate(size)
        yield path


def run_qemu(argv: list[str], out: Path, timeout: float) -> tuple[subprocess.Popen[bytes], bool]:
    """Run QEMU to its end or kill its process group after timeout seconds: (proc, timed out)."""
    with open(out, "wb") as qemu_out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=qemu_out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return proc, True
    return proc, False


def qemu_version(qemu: str = "qemu-system-x86_64") -> tuple[int, int]:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False)
    match = re.search(r"version (\d+)\.(\d+)", out.stdout)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def kvm_works(kernel: Path, qemu: str = "qemu-system-x86_64", timeout: float = 20.0) -> bool:
    """Boot kernel under KVM to the agent and back; False when KVM is absent or hangs."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    spec = VMSpec(kernel=kernel, accel=Accel.KVM, timeout=timeout, qemu=qemu, node0_mib=512)
    with tempfile.TemporaryDirectory(prefix="vmtest-kvm-probe-") as tmp:
        try:
            vm = run(spec, [], Path(tmp))
        except VMUnavailable:
            return False
        return vm.exit_status == 0 and not vm.timed_out


def main(argv: Sequence[str] | None = None) -> int:
    """One boot: `runner.py KERNEL [--source S] [--append WORD] [-- CMD...]`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kernel", type=Path)
    parser.add_argument("--source", choices=[s.value for s in Source], default="none")
    parser.add_argument("--append", action="append", default=[], help="kernel command line word")
    parser.add_argument("--accel", choices=[a.value for a in Accel], default="tcg")
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--workdir", type=Path)
    argv = list(sys.argv[1:] if argv is None else argv)
    command: list[str] = []
    if "--" in argv:
        command = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    args = parser.parse_args(argv)
    spec = VMSpec(
        kernel=args.kernel,
        source=Source(args.source),
        append=tuple(args.append),
        accel=Accel(args.accel),
        timeout=args.timeout,
    )
    steps: list[dict[str, Any]]
    if command:
        steps = [{"op": "run", "argv": command, "may_fail": True, "label": "command"}]
    else:
        steps = [{"op": "snapshot"}]
    try:
        vm = run(spec, steps, args.workdir, echo=True)
    except VMUnavailable as exc:
        print(f"runner: {exc}", file=sys.stderr)
        return 3
    if vm.result is not None and command:
        out = vm.step("command")
        sys.stdout.write(out["stdout"])
        sys.stderr.write(out["stderr"])
        return int(out["rc"])
    if vm.result is not None:
        print(json.dumps(vm.result["steps"], indent=1))
    return 0 if vm.exit_status == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
