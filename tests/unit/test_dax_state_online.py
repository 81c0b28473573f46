"""online and offline on Linux 7.3-shaped trees: an unplugged kmem device is onlined by
writing daxX.Y/state, every other device goes the libdaxctl way as on 6.12, and offline never
writes the file.

FakeKernel stands in for kmem behind the file: pyshim's write lands in the tree (a sysroot
write, as in the other tests), and the fake then does to the tree what kmem's state_store()
does to sysfs: memoryN directories appear on a hot-add and go on a hot-remove; onlining
works only from unplugged (-EBUSY otherwise); a failed hot-add leaves the device unplugged.
"""

from __future__ import annotations

import errno
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from test_daxctl_commands import FakeLibrary
from test_ops import FakeDevice
from unit_helpers import Result, run_cli

from pyshim import daxctl_commands, ops
from pyshim.errors import MissingPrerequisite, OperationFailed
from pyshim.kernel import DAX_DEVICES, MEMORY, KernelWriteError, Sysfs

ONLINE_WORDS = {"online": "Movable", "online_kernel": "Normal", "online_movable": "Movable"}


class FakeKernel:
    """kmem's state_store() acting on a recorded tree."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.writes: list[tuple[str, str]] = []  # (device, word) pyshim wrote to state
        self.fail_with: int | None = None  # errno for the next hot-add, which then adds nothing
        self.add_limit: int | None = None  # add only this many blocks (a partial hot-add)
        self._real_write = Sysfs.write_attr

        def write_attr(sysfs: Sysfs, rel: str, value: str) -> None:  # a function: binds sysfs
            self._write(sysfs, rel, value)

        monkeypatch.setattr(Sysfs, "write_attr", write_attr)

    def _write(self, sysfs: Sysfs, rel: str, value: str) -> None:
        if not (rel.startswith(DAX_DEVICES + "/") and rel.endswith("/state")):
            self._real_write(sysfs, rel, value)
            return
        name = rel.split("/")[-2]
        before = (self.root / rel).read_text().strip()
        if value in ONLINE_WORDS and before != value:
            if before != "unplugged":
                raise KernelWriteError("Device or resource busy", errno.EBUSY, sysfs.path(rel))
            if self.fail_with is not None:
                raise KernelWriteError("refused", self.fail_with, sysfs.path(rel))
        self._real_write(sysfs, rel, value)  # the sysroot write pyshim asked for
        self.writes.append((name, value))
        if value in ONLINE_WORDS and before == "unplugged":
            self._add(name, ONLINE_WORDS[value])
        elif value == "unplugged":
            self._remove(name)

    def _blocks(self, name: str) -> tuple[int, list[int]]:
        dev = self.root / DAX_DEVICES / name
        block_size = int((self.root / MEMORY / "block_size_bytes").read_text(), 16)
        start = int((dev / "mapping0/start").read_text(), 16)
        end = int((dev / "mapping0/end").read_text(), 16) + 1
        node = int((dev / "target_node").read_text())
        return node, list(range(start // block_size, end // block_size))

    def _add(self, name: str, zone: str) -> None:
        node, indices = self._blocks(name)
        for index in indices[: self.add_limit]:
            block = self.root / MEMORY / f"memory{index}"
            block.mkdir()
            (block / "state").write_text("online\n")
            (block / "valid_zones").write_text(f"{zone}\n")
            (block / "memmap_on_memory").write_text("1\n")
            (block / "phys_index").write_text(f"{index:08x}\n")
            link = self.root / f"sys/devices/system/node/node{node}/memory{index}"
            link.symlink_to(f"../../memory/memory{index}")

    def _remove(self, name: str) -> None:
        node, indices = self._blocks(name)
        for index in indices:
            shutil.rmtree(self.root / MEMORY / f"memory{index}", ignore_errors=True)
            (self.root / f"sys/devices/system/node/node{node}/memory{index}").unlink(
                missing_ok=True
            )

    def state(self, name: str) -> str:
        return (self.root / DAX_DEVICES / name / "state").read_text().strip()

    def block_states(self, name: str) -> dict[int, str]:
        _, indices = self._blocks(name)
        return {
            i: (self.root / MEMORY / f"memory{i}/state").read_text().strip()
            for i in indices
            if (self.root / MEMORY / f"memory{i}").is_dir()
        }


@pytest.fixture
def kernel(tree_copy: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    return FakeKernel(tree_copy("v73_states"), monkeypatch)


def libdaxctl_device(name: str, nblocks: int, online: bool = False) -> FakeDevice:
    """What libdaxctl shows for a kmem device: an unplugged one has a memory object with
    no blocks (it counts the blocks it finds in sysfs)."""
    dev = FakeDevice(mode="system-ram", nblocks=nblocks)
    dev.name = name
    if online:
        dev.blocks = dict.fromkeys(dev.blocks, "online")
    return dev


def online_op(
    kernel: FakeKernel, dev: FakeDevice, movable: bool, auto: str = "offline"
) -> dict[str, object]:
    sysfs = Sysfs(kernel.root)
    return ops.online(sysfs, dev, movable, auto, lambda: ops.device_block_states(sysfs, dev.name))


# --- ops: the decision and the write --------------------------------------------------------


def test_unplugged_is_onlined_through_state(kernel: FakeKernel) -> None:
    dev = libdaxctl_device("dax1.0", 0)
    result = online_op(kernel, dev, movable=True)
    assert kernel.writes == [("dax1.0", "online_movable")]
    assert dev.calls == []  # libdaxctl would have onlined 0 of 0 blocks
    assert kernel.state("dax1.0") == "online_movable"
    assert kernel.block_states("dax1.0") == dict.fromkeys(range(40, 44), "online")
    assert (result["online_memblocks"], result["total_memblocks"]) == (4, 4)


def test_no_movable_writes_online_kernel(kernel: FakeKernel) -> None:
    online_op(kernel, libdaxctl_device("dax1.0", 0), movable=False)
    assert kernel.writes == [("dax1.0", "online_kernel")]


def test_state_write_ignores_auto_online_policy(kernel: FakeKernel) -> None:
    """The word names the zone, so auto_online_blocks (which decides only the probe's
    hot-add) cannot put the blocks elsewhere: no refusal as for a devdax device."""
    online_op(kernel, libdaxctl_device("dax1.0", 0), movable=True, auto="online")
    assert kernel.writes == [("dax1.0", "online_movable")]


@pytest.mark.parametrize(("name", "nblocks"), [("dax0.0", 4), ("dax2.0", 2)])
def test_added_memory_goes_through_libdaxctl(kernel: FakeKernel, name: str, nblocks: int) -> None:
    """online_movable (onlined through state) and offline (added at probe): the memory is
    added, so online means onlining blocks, as on 6.12; state is left alone."""
    before = kernel.state(name)
    dev = libdaxctl_device(name, nblocks)
    online_op(kernel, dev, movable=True)
    assert dev.calls == ["online movable=True"]
    assert kernel.writes == []
    assert kernel.state(name) == before


def test_partial_hot_add_is_undone(kernel: FakeKernel) -> None:
    kernel.add_limit = 2
    with pytest.raises(OperationFailed) as info:
        online_op(kernel, libdaxctl_device("dax1.0", 0), movable=True)
    message = info.value.message
    assert "dax1.0: only 2 of 4 memory blocks came online after writing online_movable" in message
    assert message.endswith("dax1.0 returned to its earlier state (unplugged)")
    assert kernel.writes == [("dax1.0", "online_movable"), ("dax1.0", "unplugged")]
    assert kernel.state("dax1.0") == "unplugged" and kernel.block_states("dax1.0") == {}


@pytest.mark.parametrize(
    ("err", "cause"),
    [
        (errno.EBUSY, "another driver holds part of its range: see /proc/iomem and dmesg"),
        (errno.ENOMEM, "out of memory for the hot-add"),
        (errno.EINVAL, "Invalid argument: see dmesg for the kernel's reason"),
    ],
)
def test_refused_hot_add_says_why_and_where_the_device_is(
    kernel: FakeKernel, err: int, cause: str
) -> None:
    kernel.fail_with = err
    with pytest.raises(OperationFailed) as info:
        online_op(kernel, libdaxctl_device("dax1.0", 0), movable=True)
    message = info.value.message
    assert message.startswith("writing online_movable to ")
    assert "dax1.0/state failed: " in message and cause in message
    assert message.endswith("; dax1.0 reads unplugged now")
    assert "\n" not in message
    assert kernel.writes == [] and kernel.block_states("dax1.0") == {}


def test_refused_for_permissions_is_a_prerequisite(kernel: FakeKernel) -> None:
    kernel.fail_with = errno.EACCES
    with pytest.raises(MissingPrerequisite, match="state: run as root"):
        online_op(kernel, libdaxctl_device("dax1.0", 0), movable=True)


def test_state_write_stays_inside_the_sysroot(kernel: FakeKernel) -> None:
    """A state file that is a symlink out of the root is read, but never written."""
    outside = kernel.root.parent / "outside-state"
    outside.write_text("unplugged\n")
    state = kernel.root / DAX_DEVICES / "dax1.0" / "state"
    state.unlink()
    state.symlink_to(outside)
    with pytest.raises(OperationFailed, match="refusing to write outside"):
        online_op(kernel, libdaxctl_device("dax1.0", 0), movable=True)
    assert outside.read_text() == "unplugged\n"


def test_offline_leaves_an_unplugged_device_alone(kernel: FakeKernel) -> None:
    sysfs = Sysfs(kernel.root)
    dev = libdaxctl_device("dax1.0", 0)
    result = ops.offline(sysfs, dev, dev.states)
    assert result["unplugged"] is True and dev.calls == [] and kernel.writes == []


def test_offline_never_writes_state(kernel: FakeKernel) -> None:
    """offline keeps the memory added: blocks go offline through libdaxctl, and the kernel's
    word stays what it was (kmem would remove the memory for unplugged)."""
    sysfs = Sysfs(kernel.root)
    dev = libdaxctl_device("dax0.0", 4, online=True)
    ops.offline(sysfs, dev, dev.states)
    assert dev.calls == ["offline"] and kernel.writes == []
    assert kernel.state("dax0.0") == "online_movable"


# --- the command line -----------------------------------------------------------------------


Runner = Callable[[list[str], dict[str, FakeDevice]], Result]


@pytest.fixture
def run(kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> Runner:
    """main() against the fake kernel's tree, with the live-system prerequisites waived."""
    monkeypatch.setattr(daxctl_commands, "_daxctl_prerequisites", lambda ctx, action: None)

    def run(argv: list[str], devices: dict[str, FakeDevice]) -> Result:
        return run_cli(
            [*argv, "--sysroot", str(kernel.root)], library=lambda verbose: FakeLibrary(devices)
        )

    return run


def test_cli_online_unplugged(run: Runner, kernel: FakeKernel) -> None:
    r = run(["online", "dax1.0"], {"dax1.0": libdaxctl_device("dax1.0", 0)})
    assert r.code == 0, r.err
    (dev,) = json.loads(r.out)
    assert (dev["chardev"], dev["state_attribute"]) == ("dax1.0", "online_movable")
    assert (dev["online_memblocks"], dev["total_memblocks"], dev["movable"]) == (4, 4, True)
    assert r.err.splitlines()[-1] == "pyshim: online: 1 device"


def test_cli_online_refused_is_one_line_exit_1(run: Runner, kernel: FakeKernel) -> None:
    kernel.fail_with = errno.EBUSY
    r = run(["online", "dax1.0"], {"dax1.0": libdaxctl_device("dax1.0", 0)})
    assert r.code == 1 and r.out == ""
    assert r.err.count("\n") == 1 and r.err.startswith("pyshim: error: writing online_movable")


def test_cli_offline_all_on_7_3(run: Runner, kernel: FakeKernel) -> None:
    devices = {
        "dax0.0": libdaxctl_device("dax0.0", 4, online=True),
        "dax1.0": libdaxctl_device("dax1.0", 0),
        "dax2.0": libdaxctl_device("dax2.0", 2, online=True),
    }
    r = run(["offline", "all"], devices)
    assert r.code == 0, r.err
    assert [d.calls for d in devices.values()] == [["offline"], [], ["offline"]]
    assert "pyshim: dax1.0 is unplugged (daxX.Y/state): no memory added, nothing to offline" in (
        r.err.splitlines()
    )
    assert r.err.splitlines()[-1] == "pyshim: offline: 3 devices"
    assert kernel.writes == []
