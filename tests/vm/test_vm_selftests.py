"""Scenario 9: the series' KUnit suite and kselftest, run in the VM, KTAP parsed.

KUnit: the patched kernel runs the built-in suite `dax_kmem_memmap` at boot and prints KTAP to
the kernel log. kselftest: tools/testing/selftests/dax/ from the patched tree, run in the
guest on the device named in DAX_KMEM_TEST_DEV (the script touches no other): a legacy pmem
devdax device, and a device with two ranges carved out of a soft-reserved (hmem) region by
two-range-dax.sh. MEMMAP_KMEM_KSELFTEST names the directory or script, else it is looked for
in the kernel tree that the image was built in.

MEMMAP_KMEM_BROKEN_KERNEL names a deliberately broken kernel (the series plus
tests/vm/broken-kmem/6.12/*.patch, `make kernel-broken`): the kselftest must fail on it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from vmtest import asserts, image, ktap
from vmtest import steps as s
from vmtest.harness import Harness, unavailable
from vmtest.machine import Source
from vmtest.runner import VMResult

pytestmark = pytest.mark.vm

KUNIT_SUITE = "dax_kmem_memmap"
OWN_KSELFTEST = "memmap_on_memory.sh"  # the series' kselftest in selftests/dax
TWO_RANGE_SETUP = Path(__file__).with_name("two-range-dax.sh")


def kselftest_programs(configured: Path | None, kernel: Path) -> list[Path]:
    """The scripts to run: the configured file or directory, else the dax selftests of the
    tree the image came from (with selftests/kselftest/ktap_helpers.sh beside them)."""
    candidates = [configured] if configured else []
    found = image.selftest(kernel, "dax")
    candidates += [found] if found else []
    for path in candidates:
        if path.is_file():
            return [path]
        if path.is_dir() and (path / OWN_KSELFTEST).is_file():
            # selftests/dax on 7.x also holds upstream's dax-kmem-hotplug.sh, which
            # test_vm_upstream.py runs with the environment it needs.
            return [path / OWN_KSELFTEST]
    return []


def test_s9_kunit_suite_passes(vm: Harness) -> None:
    result = vm.boot([s.snapshot("boot")])
    asserts.booted_ok(result)
    report = ktap.parse(result.result["dmesg"] if result.result else result.serial_text())
    cases = report.suite(KUNIT_SUITE)
    assert cases, (
        f"KUnit suite {KUNIT_SUITE} not in the boot log (CONFIG_KUNIT?); {result.describe()}"
    )
    failed = [r.name for r in report.failed()]
    assert not failed, f"KUnit failures: {failed}"
    assert not report.missing(), f"KUnit cases missing against the plan: {report.missing()}"
    params = [r for r in report.results if len(r.path) > 2 and r.path[0] == KUNIT_SUITE]
    print(f"KUnit {KUNIT_SUITE}: {len(cases)} cases, {len(params)} parameter results, all ok")


def kselftest_problems(result: VMResult, programs: list[Path]) -> list[str]:
    """What went wrong in the kselftest steps: a non-zero exit, no KTAP, a failed, skipped or
    missing test. The boots have a named devdax device and no global parameter, so every
    test applies: a skip means a path was not exercised."""
    problems = []
    for i, program in enumerate(programs):
        out = result.step(f"kselftest{i}")
        report = ktap.parse(out["stdout"])
        if out["rc"] != 0:
            problems.append(f"{program.name}: exit {out['rc']} (4 = skipped)\n{out['stdout']}")
        if not report.results:
            problems.append(f"{program.name}: no KTAP results\n{out['stdout']}{out['stderr']}")
        problems += [f"{program.name}: not ok {r.name}" for r in report.failed()]
        problems += [
            f"{program.name}: skipped {r.name}"
            for r in report.results
            if r.status is ktap.Status.SKIP
        ]
        if report.missing():
            problems.append(f"{program.name}: missing against the plan {report.missing()}")
        print(f"kselftest {program.name}: {report.counts()}")
    return problems


def kselftest_steps(programs: list[Path], device: str) -> list[dict[str, object]]:
    env = {"DAX_KMEM_TEST_DEV": device}
    return [s.run(f"kselftest{i}", str(p), timeout=600, env=env) for i, p in enumerate(programs)]


def own_kselftest(vm: Harness) -> list[Path]:
    programs = kselftest_programs(vm.settings.kselftest, vm.kernel("patched"))
    if not programs:
        unavailable(
            vm.settings, "no dax kselftest found: set MEMMAP_KMEM_KSELFTEST to its directory"
        )
    return programs


def test_s9_kselftest_passes(vm: Harness) -> None:
    """A legacy pmem devdax device, named to the script: it binds it to kmem under each
    setting, checks its blocks and MemTotal, removes it and restores the kmem setting."""
    programs = own_kselftest(vm)
    result = vm.boot([s.pmem_devdax(), *kselftest_steps(programs, "{device}")],
                     source=Source.PMEM)  # fmt: skip
    asserts.booted_ok(result)
    problems = kselftest_problems(result, programs)
    assert not problems, "\n".join(problems) + f"\n{result.describe()}"
    asserts.clean_log(result)


def test_s9_kselftest_two_range_device(vm: Harness) -> None:
    """A device with two ranges (mapping0, mapping1) of a soft-reserved region: the script
    must find the blocks of both."""
    programs = own_kselftest(vm)
    result = vm.boot(
        [s.run("setup", str(TWO_RANGE_SETUP), timeout=120), *kselftest_steps(programs, "dax0.1")],
        source=Source.HMEM,
    )
    asserts.booted_ok(result)
    setup = result.step("setup")
    assert setup["rc"] == 0, f"two-range setup failed:\n{setup['stdout']}{setup['stderr']}"
    assert "dax0.1: 2 ranges, driver device_dax" in setup["stdout"], setup["stdout"]
    problems = kselftest_problems(result, programs)
    assert not problems, "\n".join(problems) + f"\n{result.describe()}"
    # Both ranges' blocks: the hmem region is 1 GiB, dax0.1 has two quarters of it.
    out = result.step("kselftest0")["stdout"]
    assert "kmem off: bound: 4 blocks" in out, out
    asserts.clean_log(result)


@pytest.mark.skipif(
    not os.environ.get("MEMMAP_KMEM_BROKEN_KERNEL"),
    reason="MEMMAP_KMEM_BROKEN_KERNEL is not set (see tests/vm/broken-kmem/README.md)",
)
def test_s9_kselftest_fails_on_broken_kernel(vm: Harness) -> None:
    """On a kernel whose kmem ignores "on", the kselftest fails, and says where."""
    programs = own_kselftest(vm)
    broken = Path(os.environ["MEMMAP_KMEM_BROKEN_KERNEL"])
    vm.settings = dataclasses.replace(vm.settings, kernel=broken)
    result = vm.boot([s.pmem_devdax(), *kselftest_steps(programs, "{device}")],
                     source=Source.PMEM)  # fmt: skip
    asserts.booted_ok(result)
    out = result.step("kselftest0")
    report = ktap.parse(out["stdout"])
    failed = [r.name for r in report.failed()]
    print(f"kselftest on the broken kernel: exit {out['rc']}, {report.counts()}")
    print("\n".join(f"not ok {name}" for name in failed))
    assert out["rc"] == 1, f"exit {out['rc']}\n{out['stdout']}"
    assert any(name.startswith("kmem on: bound:") for name in failed), failed
    assert not [n for n in failed if n.startswith(("kmem off", "kmem global"))], failed
