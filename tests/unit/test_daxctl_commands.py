"""online, offline and reconfigure at the command line, daxctl style: devices as arguments
or `all`, a JSON array of devices on stdout, a count on stderr. libdaxctl is replaced by the
fake devices of test_ops; the recorded tree stands in for /sys."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_ops import FakeDevice
from unit_helpers import Result, run_cli, tree_path

from pyshim import cli, context, daxctl_commands


class FakeLibrary:
    def __init__(self, devices: dict[str, FakeDevice]) -> None:
        self.devices = devices

    @contextmanager
    def context(self) -> Iterator[FakeLibrary]:
        yield self

    def find(self, name: str) -> FakeDevice | None:
        return self.devices.get(name)


def fake_device(name: str, mode: str, online: bool = False) -> FakeDevice:
    dev = FakeDevice(mode=mode)
    dev.name = name
    if online:
        dev.blocks = dict.fromkeys(dev.blocks, "online")
    return dev


Runner = Callable[[list[str], dict[str, FakeDevice]], Result]


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Runner:
    """main() against a tree, with the live-system prerequisites waived."""
    monkeypatch.setattr(daxctl_commands, "_daxctl_prerequisites", lambda ctx, action: None)

    def run(argv: list[str], devices: dict[str, FakeDevice]) -> Result:
        root = str(tree_path("mixed"))
        return run_cli([*argv, "--sysroot", root], library=lambda verbose: FakeLibrary(devices))

    return run


@pytest.mark.parametrize(
    ("flag", "movable"), [([], True), (["--movable"], True), (["--no-movable"], False)]
)
def test_online_positional_device_and_zone(flag: list[str], movable: bool, run: Runner) -> None:
    """Movable unless --no-movable, as daxctl online-memory."""
    dev = fake_device("dax0.0", "devdax")
    r = run(["online", "dax0.0", *flag], {"dax0.0": dev})
    assert r.code == 0, r.err
    assert dev.calls == ["disable", "enable_ram", f"online movable={movable}"]
    devices = json.loads(r.out)
    assert [d["chardev"] for d in devices] == ["dax0.0"]
    assert r.err.splitlines()[-1] == "pyshim: online: 1 device"


def test_offline_all_only_offlines_kmem_devices(run: Runner) -> None:
    devices = {n: fake_device(n, "system-ram", online=True) for n in ("dax0.0", "dax1.0")}
    r = run(["offline", "all"], devices)
    assert r.code == 0, r.err
    assert [d.calls for d in devices.values()] == [["offline"], ["offline"]]
    assert all(d.mode == "system-ram" for d in devices.values())
    assert r.err.splitlines()[-1] == "pyshim: offline: 2 devices"


def test_reconfigure_devdax_stops_at_the_first_failure(run: Runner) -> None:
    first = fake_device("dax0.0", "system-ram", online=True)
    second = fake_device("dax1.0", "system-ram", online=True)
    second.busy = {34}
    r = run(
        ["reconfigure", "--mode", "devdax", "dax0.0", "dax1.0"], {"dax0.0": first, "dax1.0": second}
    )
    assert r.code == 1
    assert first.mode == "devdax" and second.mode == "system-ram"
    assert r.err.count("\n") == 1
    assert r.err.rstrip().endswith("(reconfigure to devdax done for dax0.0 before)")
    assert r.out == ""


@pytest.mark.parametrize(("flag", "verbose"), [([], False), (["--verbose"], True)])
def test_verbose_reaches_libdaxctl(
    flag: list[str], verbose: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daxctl_commands, "_daxctl_prerequisites", lambda ctx, action: None)
    asked: list[bool] = []

    def library(want_verbose: bool) -> FakeLibrary:
        asked.append(want_verbose)
        return FakeLibrary({"dax0.0": fake_device("dax0.0", "system-ram", online=True)})

    env = cli.Environment(
        stdout=io.StringIO(), stderr=io.StringIO(), euid=lambda: 0, library=library, prog="p"
    )  # type: ignore[arg-type]
    argv = ["offline", "dax0.0", *flag, "--sysroot", str(tree_path("mixed"))]
    assert cli.main(argv, env) == 0
    assert asked == [verbose]


def test_all_stands_alone(run: Runner) -> None:
    r = run(["online", "all", "dax0.0"], {})
    assert (r.code, r.err) == (
        2,
        "pyshim: error: all stands alone: give either all or device names\n",
    )


def test_unknown_device(run: Runner) -> None:
    r = run(["offline", "dax9.0"], {})
    assert (r.code, r.err) == (1, "pyshim: error: no dax device dax9.0: see pyshim show\n")


def test_program_name_from_argv() -> None:
    assert context.program_name("/usr/bin/pyshim") == "pyshim"
    main_py = Path(cli.__file__).with_name("__main__.py")
    assert context.program_name(str(main_py)).endswith(" -m pyshim")
