"""Scenario 9: the series' KUnit suite and kselftest, run in the VM, KTAP parsed.

KUnit: the patched kernel runs the built-in suite `dax_kmem_memmap` at boot and prints KTAP to
the kernel log. kselftest: tools/testing/selftests/dax/ from the patched tree, run in the
guest with a dax device present; MEMMAP_KMEM_KSELFTEST names the directory or script, else it
is looked for in the kernel tree that the image was built in.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmtest import asserts, image, ktap
from vmtest import steps as s
from vmtest.harness import Harness, unavailable
from vmtest.machine import Source

pytestmark = pytest.mark.vm

KUNIT_SUITE = "dax_kmem_memmap"
OWN_KSELFTEST = "memmap_on_memory.sh"  # the series' kselftest in selftests/dax


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


def test_s9_kselftest_passes(vm: Harness) -> None:
    programs = kselftest_programs(vm.settings.kselftest, vm.kernel("patched"))
    if not programs:
        unavailable(
            vm.settings, "no dax kselftest found: set MEMMAP_KMEM_KSELFTEST to its directory"
        )
    # A devdax device bound to device_dax: the script binds it to kmem under each setting,
    # checks its blocks, removes it again and restores the kmem setting itself.
    result = vm.boot(
        [
            s.pmem_devdax(),
            *(s.run(f"kselftest{i}", str(p), timeout=300) for i, p in enumerate(programs)),
        ],
        source=Source.PMEM,
    )
    asserts.booted_ok(result)
    problems = []
    for i, program in enumerate(programs):
        out = result.step(f"kselftest{i}")
        report = ktap.parse(out["stdout"])
        if out["rc"] != 0:
            problems.append(f"{program.name}: exit {out['rc']} (4 = skipped)\n{out['stdout']}")
        if not report.results:
            problems.append(f"{program.name}: no KTAP results\n{out['stdout']}{out['stderr']}")
        problems += [f"{program.name}: not ok {r.name}" for r in report.failed()]
        # The boot has a devdax device and no global parameter: every test applies, so a skip
        # means the binding path was not exercised.
        problems += [
            f"{program.name}: skipped {r.name}"
            for r in report.results
            if r.status is ktap.Status.SKIP
        ]
        if report.missing():
            problems.append(f"{program.name}: missing against the plan {report.missing()}")
        print(f"kselftest {program.name}: {report.counts()}")
    assert not problems, "\n".join(problems) + f"\n{result.describe()}"
    asserts.clean_log(result)
