"""The sub-commands that act through libdaxctl, as daxctl does: online, offline, reconfigure.

They share one shape: check the prerequisites (live machine, root, dax, modules.builtin),
run an action per device inside one libdaxctl context, stop at the first failure saying
which devices were done before it, and print the devices as daxctl does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyshim import render
from pyshim.drivers import validate_device
from pyshim.errors import EXIT_OK, MissingPrerequisite, OperationFailed, PyshimError, UsageError
from pyshim.kernel import DeviceVanished, Sysfs

if TYPE_CHECKING:
    from pyshim.context import Context


def _daxctl_prerequisites(ctx: Context, action: str) -> None:
    sysfs = ctx.sysfs
    if not sysfs.is_live:
        raise UsageError(
            f"{action} acts on the running kernel through libdaxctl, which always reads /sys: "
            "drop --sysroot"
        )
    ctx.require_root(action)
    if not sysfs.exists("sys/bus/dax"):
        raise MissingPrerequisite(
            "no /sys/bus/dax: this kernel lacks dax (boot one built with CONFIG_DEV_DAX)"
        )
    release = sysfs.osrelease() or "$(uname -r)"
    builtin = f"lib/modules/{release}/modules.builtin"
    if not sysfs.exists(builtin):
        raise MissingPrerequisite(
            f"libdaxctl finds the kmem and device_dax drivers through /{builtin}, which is "
            f"missing: install the kernel's modules.builtin there and run depmod {release}"
        )


def _device_names(ctx: Context, only_kmem: bool = False) -> list[str]:
    """The DEVICE arguments, with `all` meaning every dax device (those bound to kmem when
    only_kmem: offlining memory means nothing for a devdax device)."""
    names: list[str] = ctx.args.devices
    if names == ["all"]:
        everything = ctx.sysfs.dax_device_names()
        if only_kmem:
            kmem = f"{ctx.spec.driver_path}/"
            everything = [n for n in everything if ctx.sysfs.exists(kmem + n)]
        return everything
    if "all" in names:
        raise UsageError("all stands alone: give either all or device names")
    return [validate_device(name) for name in names]


Action = Callable[[Sysfs, Any, str], dict[str, object]]


def _for_each_device(ctx: Context, verb: str, action: Action, only_kmem: bool = False) -> int:
    """Run action(sysfs, libdaxctl device, name) for each device inside one libdaxctl
    context, then print the devices as daxctl does (a JSON array) and a count on stderr.
    The first failure stops the run; devices done before it stay done, and the message
    says which."""
    from pyshim.libdaxctl import DaxctlError

    names = _device_names(ctx, only_kmem)
    _daxctl_prerequisites(ctx, verb)
    library = ctx.env.library(getattr(ctx.args, "verbose", False))
    done: list[str] = []
    results: list[dict[str, object]] = []
    try:
        with library.context() as daxctx:
            for name in names:
                dev = daxctx.find(name)
                if dev is None:
                    raise OperationFailed(f"no dax device {name}: see {ctx.env.prog} show")
                results.append(action(ctx.sysfs, dev, name))
                done.append(name)
    except (DaxctlError, PyshimError) as exc:
        failure = exc if isinstance(exc, PyshimError) else OperationFailed(str(exc))
        if done:
            failure.message += f" ({verb} done for {', '.join(done)} before)"
        raise failure from None
    ctx.out(
        render.to_json([_device_state(ctx, name, r) for name, r in zip(done, results, strict=True)])
    )
    ctx.note(f"{verb}: {len(done)} device{'s' if len(done) != 1 else ''}")
    return EXIT_OK


def _online(ctx: Context) -> Action:
    from pyshim import ops

    def online(sysfs: Sysfs, dev: Any, name: str) -> dict[str, object]:
        return ops.online(
            sysfs,
            dev,
            ctx.args.movable,
            sysfs.auto_online_blocks(),
            lambda: ops.device_block_states(sysfs, name),
        )

    return online


def cmd_online(ctx: Context) -> int:
    return _for_each_device(ctx, "online", _online(ctx))


def cmd_offline(ctx: Context) -> int:
    from pyshim import ops

    def offline(sysfs: Sysfs, dev: Any, name: str) -> dict[str, object]:
        result = ops.offline(sysfs, dev, lambda: ops.device_block_states(sysfs, name))
        if result.get("unplugged"):
            ctx.note(f"{name} is unplugged (daxX.Y/state): no memory added, nothing to offline")
        return result

    return _for_each_device(ctx, "offline", offline, only_kmem=True)


def cmd_reconfigure(ctx: Context) -> int:
    from pyshim import ops

    if ctx.args.mode == "system-ram":
        return _for_each_device(ctx, "reconfigure to system-ram", _online(ctx))

    def to_devdax(sysfs: Sysfs, dev: Any, name: str) -> dict[str, object]:
        reonline = f"{ctx.env.prog} online {name}"
        result = ops.to_devdax(sysfs, dev, lambda: ops.device_block_states(sysfs, name), reonline)
        if result.get("already"):
            ctx.note(f"{name} was already in devdax mode")
        return result

    return _for_each_device(ctx, "reconfigure to devdax", to_devdax)


def _device_state(ctx: Context, name: str, result: dict[str, object]) -> dict[str, object]:
    """The device as `show --json` describes it after the change (the operation's own
    result when sysfs cannot be read back), with a one-line summary on stderr."""
    sysfs = ctx.sysfs
    try:
        dev = sysfs.dax_device(name)
        block_size = sysfs.block_size()
        blocks = [
            b
            for i in (sysfs.device_blocks(dev, block_size) if dev.driver == "kmem" else [])
            if (b := sysfs.memory_block(i, zones=True)) is not None
        ]
    except (PyshimError, DeviceVanished):
        return result
    data = render.device_json(dev, blocks, block_size)
    if dev.driver == "kmem":
        ctx.note(
            f"{name}: {data['online_memblocks']} of {data['total_memblocks']} memory blocks "
            f"online, memmap on memory for {data['memmap_on_memory_memblocks']}"
        )
    return data
