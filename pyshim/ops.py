"""online, offline and back to devdax: what `daxctl online-memory`, `offline-memory` and
`reconfigure-device` do, with rollback on a half-done change.

The steps go through libdaxctl (libdaxctl.py); the only direct sysfs writes are the per-block
rollback writes (kernel.Sysfs.write_attr), which libdaxctl cannot do per block. Interfaces
are duck-typed (Protocols below) so the orchestration is testable without the library.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Protocol

from pyshim.errors import MissingPrerequisite, OperationFailed, PyshimError
from pyshim.kernel import MEMORY, KernelWriteError, Sysfs
from pyshim.libdaxctl import DaxctlError


class MemoryLike(Protocol):
    @property
    def num_blocks(self) -> int: ...
    @property
    def online_blocks(self) -> int: ...
    @property
    def movable(self) -> bool | None: ...
    def online(self, movable: bool) -> int: ...
    def offline(self) -> int: ...


class DeviceLike(Protocol):
    name: str

    @property
    def enabled(self) -> bool: ...
    def memory(self) -> MemoryLike | None: ...
    def disable(self) -> None: ...
    def enable_ram(self) -> None: ...
    def enable_devdax(self) -> None: ...


BlockStates = Callable[[], dict[int, str]]


def device_block_states(sysfs: Sysfs, device: str) -> dict[int, str]:
    """{block index: state} for the blocks of `device` as sysfs shows them now."""
    try:
        dev = sysfs.dax_device(device)
        block_size = sysfs.block_size()
    except Exception:
        return {}
    states: dict[int, str] = {}
    for index in sysfs.device_blocks(dev, block_size):
        blk = sysfs.memory_block(index)
        if blk is not None:
            states[index] = blk.state
    return states


def _as_failure(exc: DaxctlError) -> PyshimError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        return MissingPrerequisite(str(exc))
    return OperationFailed(str(exc))


def online(
    sysfs: Sysfs,
    dev: DeviceLike,
    movable: bool,
    auto_online: str | None,
    states: BlockStates,
) -> dict[str, object]:
    """Bring `dev` into system-ram mode and online all its blocks; undo on failure."""
    was_enabled = dev.enabled
    was_ram = was_enabled and dev.memory() is not None
    before = states() if was_ram else {}
    if not was_ram and movable and auto_online in ("online", "online_kernel"):
        raise OperationFailed(
            f"{dev.name}: the kernel auto-onlines hot-plugged memory "
            f"(memory/auto_online_blocks={auto_online}), so its blocks would not be movable: "
            "echo offline > /sys/devices/system/memory/auto_online_blocks, or pass --no-movable"
        )
    changed: list[str] = []
    try:
        if was_enabled and not was_ram:
            dev.disable()
            changed.append("disabled")
        if not was_ram:
            dev.enable_ram()
            changed.append("ram")
        mem = dev.memory()
        if mem is None:
            raise OperationFailed(
                f"{dev.name}: no memory after enabling system-ram mode: see dmesg"
            )
        total = mem.num_blocks
        if mem.online_blocks < total:
            mem.online(movable)
        now = mem.online_blocks
        if now < total:
            raise OperationFailed(
                f"{dev.name}: only {now} of {total} memory blocks came online: see dmesg"
            )
    except (DaxctlError, OperationFailed) as exc:
        failure: PyshimError = _as_failure(exc) if isinstance(exc, DaxctlError) else exc
        note = _rollback_online(sysfs, dev, was_enabled, was_ram, changed, before, states)
        raise type(failure)(f"{failure.message}; {note}") from None
    return {
        "chardev": dev.name,
        "mode": "system-ram",
        "online_memblocks": now,
        "total_memblocks": total,
        "movable": mem.movable,
    }


def _rollback_online(
    sysfs: Sysfs,
    dev: DeviceLike,
    was_enabled: bool,
    was_ram: bool,
    changed: list[str],
    before: dict[int, str],
    states: BlockStates,
) -> str:
    try:
        if was_ram:
            for index, state in states().items():
                if state == "online" and before.get(index) != "online":
                    sysfs.write_attr(f"{MEMORY}/memory{index}/state", "offline")
            return f"{dev.name} returned to its earlier state (blocks onlined now are offline)"
        mem = dev.memory()
        if mem is not None and mem.online_blocks > 0:
            mem.offline()
        if "ram" in changed:
            dev.disable()
            if was_enabled:
                dev.enable_devdax()
        elif "disabled" in changed:
            dev.enable_devdax()
    except (DaxctlError, KernelWriteError, OperationFailed) as exc:
        return f"rollback failed too ({exc}): {dev.name} may be left half-configured"
    earlier = "devdax mode" if was_enabled else "disabled"
    return f"{dev.name} returned to its earlier state ({earlier})"


def offline(sysfs: Sysfs, dev: DeviceLike, states: BlockStates) -> dict[str, object]:
    """Offline every memory block of `dev`, as `daxctl offline-memory` does: the device stays
    in system-ram mode with its memory added. On failure the blocks offlined on the way are
    onlined again."""
    mem = dev.memory() if dev.enabled else None
    if mem is None:
        raise OperationFailed(
            f"{dev.name} is not in system-ram mode, so it has no memory to offline"
        )
    _offline_blocks(sysfs, dev, mem, states)
    return {
        "chardev": dev.name,
        "mode": "system-ram",
        "online_memblocks": mem.online_blocks,
        "total_memblocks": mem.num_blocks,
    }


def to_devdax(
    sysfs: Sysfs, dev: DeviceLike, states: BlockStates, reonline: str
) -> dict[str, object]:
    """Offline all blocks of `dev`, remove its memory and give it back to devdax, as
    `daxctl reconfigure-device -m devdax` does; a failure while offlining onlines the blocks
    again, and `reonline` is the command that brings a device left disabled back."""
    mem = dev.memory() if dev.enabled else None
    if mem is None:
        if not dev.enabled:
            try:
                dev.enable_devdax()
            except DaxctlError as exc:
                raise _as_failure(exc) from None
        return {"chardev": dev.name, "mode": "devdax", "already": True}
    _offline_blocks(sysfs, dev, mem, states)
    try:
        dev.disable()
    except DaxctlError as exc:
        raise _as_failure(exc) from None
    try:
        dev.enable_devdax()
    except DaxctlError as exc:
        raise OperationFailed(
            f"{exc}; {dev.name} is now disabled: {reonline} brings it back as system-ram"
        ) from None
    return {"chardev": dev.name, "mode": "devdax", "already": False}


def _offline_blocks(sysfs: Sysfs, dev: DeviceLike, mem: MemoryLike, states: BlockStates) -> None:
    before = states()
    was_movable = mem.movable
    try:
        if mem.online_blocks > 0:
            mem.offline()
        left = mem.online_blocks
        if left:
            raise OperationFailed(f"{dev.name}: {left} memory blocks stayed online")
    except (DaxctlError, OperationFailed) as exc:
        failure: PyshimError = _as_failure(exc) if isinstance(exc, DaxctlError) else exc
        restored = _reonline(sysfs, before, states, bool(was_movable))
        hint = (
            "; the memory is in use: free it (stop workloads bound to the device's node) "
            "or online it with --movable so the kernel can migrate it"
            if isinstance(exc, DaxctlError) and exc.errno == errno.EBUSY
            else ""
        )
        raise type(failure)(f"{failure.message}{hint}; {restored}") from None


def _reonline(sysfs: Sysfs, before: dict[int, str], states: BlockStates, movable: bool) -> str:
    word = "online_movable" if movable else "online"
    failed = 0
    for index, state in states().items():
        if before.get(index) == "online" and state != "online":
            try:
                sysfs.write_attr(f"{MEMORY}/memory{index}/state", word)
            except KernelWriteError:
                failed += 1
    if failed:
        return f"{failed} blocks could not be brought back online"
    return "blocks offlined on the way were brought back online"
