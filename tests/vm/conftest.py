"""Fixtures for the VM tests: kernels, the accelerator, one `vm.boot()` per scenario.

MEMMAP_KMEM_VM: unset -> skip when QEMU or a kernel image is missing; 1 -> fail instead;
0 -> skip all. Kernels: --vm-kernel / MEMMAP_KMEM_KERNEL (patched) and --vm-stock-kernel /
MEMMAP_KMEM_STOCK_KERNEL (stock), else the images of the kernel base MEMMAP_KMEM_BASE
(default 6.12). A test marked `bases("6.12")` runs only on those bases; the others are
deselected, not skipped. On a failed test the serial log, job and result of each of
its boots are copied to tests/vm/artifacts/<test>/ and the paths are printed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmtest.harness import Harness
from vmtest.machine import Accel
from vmtest.runner import VMResult, kvm_works
from vmtest.settings import Mode, Settings

ARTIFACTS = "artifacts"
BOOTS_KEY = pytest.StashKey[list[tuple[str, VMResult]]]()
TIMINGS_KEY = pytest.StashKey[list[tuple[str, str, float]]]()
FIGURES_KEY = pytest.StashKey[dict[str, dict[str, Any]]]()
FIGURES_FILE = "figures.json"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vm: boots a kernel in QEMU (tests/vm)")
    config.addinivalue_line("markers", "bases(*names): the kernel bases the test runs on")
    config.addinivalue_line("markers", "long: a long run, in make vm-test-long, not make test")
    config.stash[TIMINGS_KEY] = []
    config.pluginmanager.register(BootReport(), "vm-boot-report")
    config.stash[FIGURES_KEY] = {}


def settings_for(config: pytest.Config) -> Settings:
    return Settings.from_env(
        kernel=config.getoption("--vm-kernel", None),
        stock_kernel=config.getoption("--vm-stock-kernel", None),
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    base = settings_for(config).base
    other_bases = [
        item
        for item in items
        if (marker := item.get_closest_marker("bases")) is not None and base not in marker.args
    ]
    if other_bases:
        config.hook.pytest_deselected(items=other_bases)
        items[:] = [item for item in items if item not in other_bases]
    if settings_for(config).mode is Mode.OFF:
        skip = pytest.mark.skip(reason="MEMMAP_KMEM_VM=0")
        for item in items:
            if item.get_closest_marker("vm"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def vm_settings(pytestconfig: pytest.Config) -> Settings:
    return settings_for(pytestconfig)


@pytest.fixture(scope="session")
def vm_accel(vm_settings: Settings) -> Accel:
    """TCG unless asked for KVM, or a probe boot under KVM works (once per run)."""
    fixed = vm_settings.fixed_accel()
    if fixed is not None:
        return fixed
    for kernel in (vm_settings.stock_kernel, vm_settings.kernel):
        if kernel.is_file():
            return Accel.KVM if kvm_works(kernel, vm_settings.qemu) else Accel.TCG
    return Accel.TCG


@pytest.fixture
def vm(
    request: pytest.FixtureRequest,
    vm_settings: Settings,
    vm_accel: Accel,
    tmp_path: Path,
) -> Iterator[Harness]:
    boots: list[tuple[str, VMResult]] = []
    request.node.stash[BOOTS_KEY] = boots
    timings = request.config.stash[TIMINGS_KEY]
    yield Harness(vm_settings, vm_accel, tmp_path, boots, timings, request.node.nodeid)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    boots = item.stash.get(BOOTS_KEY, [])
    if report.when == "call":
        # Boot times and figures travel in the report, so that they reach the controller
        # when pytest-xdist runs the tests in workers (make vm-test: VM_JOBS).
        report.user_properties.append(
            ("vm_boots", [(name, round(result.seconds, 1)) for name, result in boots])
        )
        found = item.config.stash[FIGURES_KEY].get(item.nodeid)
        if found:
            report.user_properties.append(("vm_figures", found))
    if report.failed and boots:
        dest = Path(__file__).resolve().parent / ARTIFACTS / re.sub(r"[^\w.-]+", "_", item.name)
        lines = []
        for name, result in boots:
            target = dest / name
            target.mkdir(parents=True, exist_ok=True)
            for path in result.workdir.glob("*"):
                if path.is_file():
                    shutil.copy2(path, target / path.name)
            lines.append(f"{name}: {result.describe()} -> {target / 'serial.log'}")
            if result.exit_status != 0:
                lines.append(result.tails())
        report.sections.append(("vm boots (serial logs kept)", "\n".join(lines)))
    return report


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str, Any], None]:
    """record(name, value): a measured figure, kept in tests/vm/artifacts/figures.json."""
    store = request.config.stash[FIGURES_KEY].setdefault(request.node.nodeid, {})

    def record(name: str, value: Any) -> None:
        store[name] = value

    return record


class BootReport:
    """Boot wall times and figures, gathered where the test reports arrive: the only
    process under plain pytest, the controller under pytest-xdist (make vm-test: VM_JOBS)."""

    def __init__(self) -> None:
        self.timings: list[tuple[str, str, float]] = []
        self.figures: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        for key, value in report.user_properties:
            if key == "vm_boots":
                self.timings += [(report.nodeid, name, seconds) for name, seconds in value]
            elif key == "vm_figures":
                self.figures[report.nodeid] = value

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if hasattr(session.config, "workerinput") or not (self.figures or self.timings):
            return
        for nodeid, name, seconds in self.timings:
            self.figures.setdefault(nodeid, {}).setdefault("boot_seconds", {})[name] = seconds
        out = Path(__file__).resolve().parent / ARTIFACTS / FIGURES_FILE
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(self.figures, indent=1, sort_keys=True) + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        if not self.timings or hasattr(config, "workerinput"):
            return
        terminalreporter.section("vm boot wall times")
        total = 0.0
        for nodeid, name, seconds in sorted(self.timings, key=lambda t: -t[2]):
            total += seconds
            terminalreporter.write_line(f"{seconds:7.1f}s  {nodeid} [{name}]")
        terminalreporter.write_line(f"{total:7.1f}s  total in {len(self.timings)} boots")
