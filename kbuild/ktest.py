# SPDX-License-Identifier: GPL-2.0
"""The series' KUnit suite through the kernel's own tools/testing/kunit/kunit.py.

make test: `kunit.py config --kunitconfig drivers/dax` proves that the series'
.kunitconfig resolves on x86_64 (every option survives olddefconfig), and `kunit.py exec`
boots the patched image (Kconfig.snippet builds the suite in) with kunit.py's own QEMU
command line and parser. `kunit.py run --kunitconfig drivers/dax`, which compiles a third
kernel of the same code under kunit.py's own config, is `make kunit-run`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout
from .series import checkout_series

KUNIT_TOOL = "tools/testing/kunit/kunit.py"
KUNIT_SUITES = ("dax_kmem_memmap",)
# kunit.py since 6.13 starts QEMU with "-accel kvm -accel hvf -accel tcg". Where /dev/kvm
# opens but runs no guest (nested or paravirtual KVM, as on this project's CI machines), QEMU
# takes KVM and the guest never prints a line. The suite runs in about a second under TCG, so
# kunit.py gets a private mount namespace whose /dev/kvm is /dev/null: QEMU falls back to TCG.
MASK_KVM = 'mount --bind /dev/null /dev/kvm && exec "$@"'


@dataclass
class KunitReport:
    """Results of KUnit suites as kunit.py reports them (--json), keyed "suite.case"; a
    parameterised case rolls its parameters up into one result, failed if any failed."""

    cases: dict[str, str]
    parameters: int
    problems: list[str]


def kunit_json_results(text: str, suites: tuple[str, ...]) -> KunitReport:
    """Read the KernelCI JSON of kunit.py (run, exec or parse with --json): a group per
    suite, a case per test, and a sub-group per parameterised test."""
    top = json.loads(text)
    cases: dict[str, str] = {}
    parameters = 0
    for suite in top.get("sub_groups", []):
        for case in suite.get("test_cases", []):
            cases[f"{suite['name']}.{case['name']}"] = case["status"]
        for group in suite.get("sub_groups", []):
            statuses = [param["status"] for param in group.get("test_cases", [])]
            parameters += len(statuses)
            worst = next((s for s in statuses if s != "PASS"), "PASS" if statuses else "EMPTY")
            cases[f"{suite['name']}.{group['name']}"] = worst
    problems = [
        f"suite {name} did not run"
        for name in suites
        if not any(case.startswith(name + ".") for case in cases)
    ]
    problems += [f"{case}: {status}" for case, status in cases.items() if status != "PASS"]
    return KunitReport(cases, parameters, problems)


def mask_kvm() -> bool:
    """Hide /dev/kvm from kunit.py's QEMU, unless MEMMAP_KMEM_VM_ACCEL=kvm asks for KVM
    (the VM tests' setting) or we are not root (no mount namespace to make)."""
    wanted = os.environ.get("MEMMAP_KMEM_VM_ACCEL", "auto")
    return wanted != "kvm" and os.path.exists("/dev/kvm") and os.geteuid() == 0


def kunit_tool(layout: Layout, args: list[str], json_out: Path | None = None) -> tuple[int, str]:
    """Run the base's own kunit.py; its exit status and its --json (empty when none)."""
    cmd = [sys.executable, str(layout.src / KUNIT_TOOL), *args]
    if json_out is not None:
        json_out.unlink(missing_ok=True)
        cmd.append(f"--json={json_out}")
    if args[0] in ("run", "exec") and mask_kvm():  # the sub-commands that start QEMU
        cmd = ["unshare", "--mount", "--", "sh", "-c", MASK_KVM, "sh", *cmd]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    status = subprocess.run(cmd, cwd=layout.src, check=False).returncode
    text = json_out.read_text() if json_out is not None and json_out.exists() else "{}"
    return status, text


def report_kunit(what: str, report: KunitReport) -> bool:
    passed = sum(1 for status in report.cases.values() if status == "PASS")
    print(
        f"KUnit ({what}): {passed}/{len(report.cases)} cases passed "
        f"({report.parameters} parameters)"
    )
    for problem in report.problems:
        print(f"KUnit ({what}): {problem}", file=sys.stderr)
    return not report.problems


def exec_dir(image: Path, into: Path) -> Path:
    """A build directory for `kunit.py exec` that holds only the image, where kunit.py's
    x86_64 QEMU config looks for it."""
    boot = into / "arch" / "x86" / "boot"
    boot.mkdir(parents=True)
    (boot / "bzImage").symlink_to(image.resolve())
    return into


def kunit(layout: Layout, image: Path, timeout: int, full_run: bool) -> int:
    """The KUnit suite on image (the patched build) through kunit.py; full_run: `kunit.py
    run` with its own kernel instead."""
    checkout_series(layout)
    with tempfile.TemporaryDirectory(prefix="kunit-") as tmp:
        out = Path(tmp) / "kunit.json"
        common = ["--arch=x86_64", "--kunitconfig", "drivers/dax"]
        if full_run:
            build_dir = layout.cache / "build" / f"kunit-{layout.pin.version}"
            args = ["run", *common, "--build_dir", str(build_dir), "--timeout", str(timeout)]
            _, text = kunit_tool(layout, args, out)
            return 0 if report_kunit("kunit.py run", kunit_json_results(text, KUNIT_SUITES)) else 1
        config_dir = Path(tmp) / "config"
        status, _ = kunit_tool(layout, ["config", *common, "--build_dir", str(config_dir)])
        ok = status == 0
        print(f"KUnit: drivers/dax/.kunitconfig {'resolves' if ok else 'does NOT resolve'} "
              "on x86_64 (kunit.py config)")  # fmt: skip
        build_dir = exec_dir(image, Path(tmp) / "exec")
        args = ["exec", "--arch=x86_64", "--build_dir", str(build_dir), "--timeout", str(timeout)]
        _, text = kunit_tool(layout, args, out)
        ok = report_kunit(f"kunit.py exec {image}", kunit_json_results(text, KUNIT_SUITES)) and ok
    return 0 if ok else 1
