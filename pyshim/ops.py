"""online, offline and back to devdax: what `daxctl online-memory`, `offline-memory` and
`reconfigure-device` do, with rollback on a half-done change.

The steps go through libdaxctl (libdaxctl.py); the direct sysfs writes are the per-block
rollback writes (kernel.Sysfs.write_attr), which libdaxctl cannot do per block, and, on
Linux 7.3 and later, daxX.Y/state for a kmem device whose memory is unplugged (see
online_unplugged for why only there). Interfaces are duck-typed (Protocols below) so the
orchestration is testable without the library.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Protocol

from pyshim.errors import MissingPrerequisite, OperationFailed, PyshimError
from pyshim.kernel import MEMORY, DeviceVanished, KernelWriteError, Sysfs, dax_state_path
from pyshim.libdaxctl import DaxctlError
from pyshim.parse import DaxState


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
    if sysfs.dax_state(dev.name) is DaxState.UNPLUGGED:
        return online_unplugged(sysfs, dev.name, movable, states)
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


def online_unplugged(
    sysfs: Sysfs, name: str, movable: bool, states: BlockStates
) -> dict[str, object]:
    """Hot-add and online a kmem device whose daxX.Y/state reads unplugged (Linux 7.3+).

    Why through daxX.Y/state here and only here: an unplugged device is bound to kmem but
    has no memory blocks, and libdaxctl onlines blocks that exist, so it would report 0 of 0
    blocks online and change nothing; the only ways to add the memory are a state write or
    unbinding and rebinding kmem. The write is the kernel's own whole-device operation:
    kmem hot-adds every range (its memmap placed by the kmem setting, as at probe) and
    onlines it in the zone the word names, or undoes it all and returns an errno. Devices
    whose memory is added keep the libdaxctl path on every kernel: the kernel onlines a
    device through state only from unplugged (-EBUSY otherwise), so using state there would
    mean removing and re-adding memory that `online` promises only to online.

    movable writes online_movable; otherwise online_kernel, the zone libdaxctl's no-movable
    path insists on (it writes "online", then fails unless every block landed in Normal).
    A partial hot-add (kmem keeps ranges added before one that fails) is undone by writing
    unplugged, so the device ends as it started.
    """
    word = DaxState.ONLINE_MOVABLE if movable else DaxState.ONLINE_KERNEL
    path = sysfs.path(dax_state_path(name))
    total = expected_block_count(sysfs, name)
    try:
        sysfs.write_dax_state(name, word)
    except KernelWriteError as exc:
        raise _state_write_failure(sysfs, name, word, exc) from None
    now = sum(1 for state in states().values() if state == "online")
    if now < total:
        try:
            sysfs.write_dax_state(name, DaxState.UNPLUGGED)
            note = f"{name} returned to its earlier state (unplugged)"
        except KernelWriteError as exc:
            note = f"rollback failed too ({exc}): {name} may be left half-configured"
        raise OperationFailed(
            f"{name}: only {now} of {total} memory blocks came online after writing "
            f"{word.value} to {path}: see dmesg; {note}"
        )
    return {
        "chardev": name,
        "mode": "system-ram",
        "online_memblocks": now,
        "total_memblocks": total,
        "movable": movable,
    }


def expected_block_count(sysfs: Sysfs, name: str) -> int:
    """How many memory blocks kmem adds for `name`: whole blocks inside its ranges, as
    dax_kmem_range() aligns them. Read before the write, so that a device that cannot be
    read is refused without being touched."""
    try:
        dev = sysfs.dax_device(name)
    except DeviceVanished:
        raise OperationFailed(f"{name} vanished (unbound or destroyed): retry") from None
    return len(sysfs.device_blocks(dev, sysfs.block_size()))


def _state_write_failure(
    sysfs: Sysfs, name: str, word: DaxState, exc: KernelWriteError
) -> PyshimError:
    """One line for a refused state write: the cause, the fix, and where the device is now
    (kmem drops every reservation of a hot-add that failed, so it normally stays unplugged)."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return MissingPrerequisite(f"cannot write {exc.path}: run as root")
    try:
        state = sysfs.dax_state(name)
        where = f"{name} reads {state.value if state else 'no state'} now"
    except PyshimError:
        where = f"{name}'s state cannot be read back"
    if exc.errno == errno.EBUSY:
        cause = (
            "the device left the unplugged state meanwhile, or another driver holds part of "
            "its range: see /proc/iomem and dmesg, then retry"
        )
    elif exc.errno == errno.ENOMEM:
        cause = (
            "out of memory for the hot-add (its memmap comes from DRAM unless it goes on the "
            "device: see `set`): free memory, then retry"
        )
    else:
        cause = f"{os.strerror(exc.errno)}: see dmesg for the kernel's reason"
    return OperationFailed(f"writing {word.value} to {exc.path} failed: {cause}; {where}")


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
    onlined again. A kmem device whose daxX.Y/state reads unplugged (Linux 7.3+) has no
    memory added, so nothing to offline: it is left as it is and reported so. `offline`
    never writes unplugged itself: that removes the memory, which `offline` promises to keep
    (and the kernel refuses "offline" in daxX.Y/state)."""
    if sysfs.dax_state(dev.name) is DaxState.UNPLUGGED:
        return {
            "chardev": dev.name,
            "mode": "system-ram",
            "online_memblocks": 0,
            "total_memblocks": 0,
            "unplugged": True,
        }
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
