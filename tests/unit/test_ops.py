"""online/offline orchestration and rollback, with a fake device in place of libdaxctl.

The fake models libdaxctl's observable behaviour (mode, enabled, block states); the real
binding is exercised in the VM tests.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from pyshim import ops
from pyshim.errors import MissingPrerequisite, OperationFailed
from pyshim.kernel import Sysfs
from pyshim.libdaxctl import check


class FakeMemory:
    def __init__(self, dev: FakeDevice) -> None:
        self.dev = dev

    @property
    def num_blocks(self) -> int:
        return len(self.dev.blocks)

    @property
    def online_blocks(self) -> int:
        return sum(1 for s in self.dev.blocks.values() if s == "online")

    @property
    def movable(self) -> bool | None:
        return self.dev.movable if self.online_blocks else None

    def online(self, movable: bool) -> int:
        self.dev.calls.append(f"online movable={movable}")
        count = 0
        for index in sorted(self.dev.blocks):
            if index in self.dev.fail_online:
                return check(-errno.EIO, self.dev.name, "online memory of")
            if self.dev.blocks[index] != "online":
                self.dev.blocks[index] = "online"
                count += 1
        self.dev.movable = movable
        return count

    def offline(self) -> int:
        self.dev.calls.append("offline")
        for index in sorted(self.dev.blocks):
            if index in self.dev.busy:
                return check(-errno.EBUSY, self.dev.name, "offline memory of")
            self.dev.blocks[index] = "offline"
        return 0


class FakeDevice:
    def __init__(self, mode: str = "devdax", nblocks: int = 4) -> None:
        self.name = "dax0.0"
        self.mode = mode  # devdax | system-ram | disabled
        self.nblocks = nblocks
        self.blocks: dict[int, str] = (
            {32 + i: "offline" for i in range(nblocks)} if mode == "system-ram" else {}
        )
        self.movable = True
        self.fail_online: set[int] = set()
        self.busy: set[int] = set()
        self.calls: list[str] = []

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def memory(self) -> FakeMemory | None:
        return FakeMemory(self) if self.mode == "system-ram" else None

    def disable(self) -> None:
        self.calls.append("disable")
        if any(s == "online" for s in self.blocks.values()):
            check(-errno.EBUSY, self.name, "disable")
        self.mode, self.blocks = "disabled", {}

    def enable_ram(self) -> None:
        self.calls.append("enable_ram")
        self.mode = "system-ram"
        self.blocks = {32 + i: "offline" for i in range(self.nblocks)}

    def enable_devdax(self) -> None:
        self.calls.append("enable_devdax")
        self.mode = "devdax"

    def states(self) -> dict[int, str]:
        return dict(self.blocks)


@pytest.fixture
def sysfs(tmp_path: Path) -> Sysfs:
    for i in range(32, 36):
        (tmp_path / f"sys/devices/system/memory/memory{i}").mkdir(parents=True)
        (tmp_path / f"sys/devices/system/memory/memory{i}/state").write_text("offline\n")
    return Sysfs(tmp_path)


def test_online_from_devdax(sysfs: Sysfs) -> None:
    dev = FakeDevice()
    result = ops.online(sysfs, dev, True, "offline", dev.states)
    assert dev.calls == ["disable", "enable_ram", "online movable=True"]
    assert result["online_memblocks"] == 4 and result["movable"] is True


def test_online_refuses_movable_under_auto_online(sysfs: Sysfs) -> None:
    dev = FakeDevice()
    with pytest.raises(OperationFailed, match="--no-movable"):
        ops.online(sysfs, dev, True, "online", dev.states)
    assert dev.calls == []


def test_online_failure_returns_to_devdax(sysfs: Sysfs) -> None:
    dev = FakeDevice()
    dev.fail_online = {34}
    with pytest.raises(OperationFailed, match=r"returned to its earlier state \(devdax mode\)"):
        ops.online(sysfs, dev, True, "offline", dev.states)
    assert dev.mode == "devdax"
    assert dev.calls[-3:] == ["offline", "disable", "enable_devdax"]


def test_online_failure_on_system_ram_offlines_only_new_blocks(sysfs: Sysfs) -> None:
    dev = FakeDevice(mode="system-ram")
    dev.blocks[32] = "online"
    dev.fail_online = {35}
    with pytest.raises(OperationFailed, match="earlier state"):
        ops.online(sysfs, dev, False, "offline", dev.states)
    root = Path(sysfs.root) / "sys/devices/system/memory"
    written = {i: (root / f"memory{i}/state").read_text() for i in range(32, 36)}
    # block 32 was online before: untouched; 33 and 34 were onlined now: written offline
    assert written[32] == "offline\n" and written[33] == "offline" and written[34] == "offline"


REONLINE = "pyshim online dax0.0"


def test_offline_only_offlines(sysfs: Sysfs) -> None:
    """As daxctl offline-memory: the blocks go offline, the device keeps its memory."""
    dev = FakeDevice(mode="system-ram")
    dev.blocks = dict.fromkeys(dev.blocks, "online")
    result = ops.offline(sysfs, dev, dev.states)
    assert dev.calls == ["offline"]
    assert dev.mode == "system-ram" and set(dev.blocks.values()) == {"offline"}
    assert (result["online_memblocks"], result["total_memblocks"]) == (0, 4)


def test_offline_refuses_devdax_device(sysfs: Sysfs) -> None:
    dev = FakeDevice()
    with pytest.raises(OperationFailed, match="not in system-ram mode"):
        ops.offline(sysfs, dev, dev.states)
    assert dev.calls == []


def test_offline_busy_reonlines(sysfs: Sysfs) -> None:
    dev = FakeDevice(mode="system-ram")
    dev.blocks = dict.fromkeys(dev.blocks, "online")
    dev.busy = {34}
    with pytest.raises(OperationFailed, match="memory is in use") as info:
        ops.offline(sysfs, dev, dev.states)
    assert "brought back online" in info.value.message
    root = Path(sysfs.root) / "sys/devices/system/memory"
    assert (root / "memory32/state").read_text() == "online_movable"
    assert dev.mode == "system-ram"


def test_to_devdax(sysfs: Sysfs) -> None:
    dev = FakeDevice(mode="system-ram")
    dev.blocks = dict.fromkeys(dev.blocks, "online")
    result = ops.to_devdax(sysfs, dev, dev.states, REONLINE)
    assert dev.calls == ["offline", "disable", "enable_devdax"]
    assert result["mode"] == "devdax" and dev.mode == "devdax"


def test_to_devdax_busy_keeps_system_ram(sysfs: Sysfs) -> None:
    dev = FakeDevice(mode="system-ram")
    dev.blocks = dict.fromkeys(dev.blocks, "online")
    dev.busy = {34}
    with pytest.raises(OperationFailed, match="brought back online"):
        ops.to_devdax(sysfs, dev, dev.states, REONLINE)
    assert dev.mode == "system-ram" and "disable" not in dev.calls


def test_to_devdax_already_devdax(sysfs: Sysfs) -> None:
    dev = FakeDevice()
    assert ops.to_devdax(sysfs, dev, dev.states, REONLINE)["already"] is True
    assert dev.calls == []


def test_eperm_is_a_prerequisite(sysfs: Sysfs) -> None:
    dev = FakeDevice()

    def denied() -> None:
        check(-errno.EPERM, dev.name, "disable")

    dev.disable = denied  # type: ignore[method-assign]
    with pytest.raises(MissingPrerequisite, match="run as root"):
        ops.online(sysfs, dev, True, "offline", dev.states)
