"""The commands that read the machine: show, check, plan, metrics and report."""

from __future__ import annotations

import os
import time

from pyshim import logic, parse, render
from pyshim.check import CheckResult, Status, check
from pyshim.context import Context
from pyshim.drivers import validate_device
from pyshim.errors import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STALE,
    MissingPrerequisite,
    OperationFailed,
    UsageError,
)
from pyshim.kernel import MAX_BLOCK_SIZE, MAX_PHYSICAL, MIN_BLOCK_SIZE, PATCHED_KERNEL
from pyshim.snapshot import Snapshot
from pyshim.userfiles import check_output_path, write_atomic


def _snapshot(ctx: Context, zones: bool = False, accounting: bool = True) -> Snapshot:
    snap = ctx.sysfs.snapshot(ctx.spec, zones=zones, accounting=accounting)
    for name in snap.vanished:
        ctx.note(f"{name} vanished during the scan (unbound or destroyed); skipped")
    return snap


def _require_block_attr(ctx: Context, snap: Snapshot) -> None:
    for blocks in snap.blocks.values():
        if any(b.memmap_on_memory is None for b in blocks):
            raise MissingPrerequisite(
                "this kernel lacks /sys/devices/system/memory/memoryN/memmap_on_memory (the "
                f"per-driver setting): {PATCHED_KERNEL}"
            )


def cmd_show(ctx: Context) -> int:
    sysfs = ctx.sysfs
    snap = _snapshot(ctx, zones=True, accounting=False)
    if snap.settings.kmem is None and sysfs.exists(ctx.spec.driver_path):
        ctx.note(
            f"this kernel lacks {sysfs.path(ctx.spec.attribute_path)} (the per-driver "
            f"setting): {PATCHED_KERNEL}"
        )
    data = render.show_json(
        snap,
        {
            "kmem_module": sysfs.module_kind(ctx.spec.module),
            "auto_online_blocks": sysfs.auto_online_blocks(),
        },
    )
    ctx.out(render.to_json(data) if ctx.args.json else render.show_text(data))
    return EXIT_OK


def _checked_snapshot(ctx: Context, device: str | None = None) -> tuple[Snapshot, CheckResult]:
    ctx.sysfs.require_driver_setting(ctx.spec)
    snap = _snapshot(ctx)
    _require_block_attr(ctx, snap)
    if device is not None and device not in {d.name for d in snap.devices}:
        if device in snap.vanished:
            raise OperationFailed(f"{device} vanished during the scan: retry")
        raise OperationFailed(f"no dax device {device}: see {ctx.env.prog} show")
    return snap, check(snap, only=device)


def cmd_check(ctx: Context) -> int:
    device = validate_device(ctx.args.device) if ctx.args.device is not None else None
    if ctx.args.witness:
        # The witness reads the page tables: it needs neither the per-driver setting nor
        # the block attribute, so it also checks stock kernels.
        from pyshim import witness  # lazy: only this option reads /proc/kcore

        ctx.require_root("check --witness (it reads kernel page tables through /proc/kcore)")
        snap = ctx.sysfs.snapshot(ctx.spec)
        found = witness.witness_for_check(ctx.sysfs, snap, device, ctx.env.prog)
        result = check(snap, only=device, witnessed=found)
    else:
        _, result = _checked_snapshot(ctx, device)
    prog = ctx.env.prog
    ctx.out(
        render.to_json(render.check_json(result, prog))
        if ctx.args.json
        else render.check_text(result, prog)
    )
    if result.status is Status.INCONSISTENT:
        return EXIT_FAILED
    if result.status is Status.STALE and not ctx.args.allow_stale:
        return EXIT_STALE
    return EXIT_OK


def cmd_plan(ctx: Context) -> int:
    args = ctx.args
    try:
        capacity = parse.parse_size(args.capacity)
        block_size = parse.parse_size(args.block_size) if args.block_size else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if capacity > MAX_PHYSICAL:
        raise UsageError(
            f"capacity {args.capacity} is more than x86-64 can address "
            f"({parse.format_size(MAX_PHYSICAL)})"
        )
    if block_size is None:
        block_size = ctx.sysfs.block_size()
    elif block_size & (block_size - 1):
        raise UsageError(f"block size {args.block_size} is not a power of two")
    elif not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise UsageError(
            f"block size {args.block_size} is outside the {parse.format_size(MIN_BLOCK_SIZE)} "
            f"to {parse.format_size(MAX_BLOCK_SIZE)} any kernel uses"
        )
    force = ctx.sysfs.global_mode() is parse.GlobalMode.FORCE
    result = logic.plan(capacity, block_size, force)
    ctx.out(render.to_json(render.plan_json(result)) if args.json else render.plan_text(result))
    return EXIT_OK


def cmd_metrics(ctx: Context) -> int:
    directory = ctx.args.textfile
    if not directory:
        raise UsageError("--textfile is empty: give node_exporter's textfile directory")
    if not os.path.isdir(directory):
        raise UsageError(f"textfile directory {directory} does not exist")
    path = check_output_path(os.path.join(directory, "pyshim.prom"))
    from pyshim import report  # lazy: only metrics and report need it

    snap, result = _checked_snapshot(ctx)
    try:
        report.write_metrics(path, snap, result, time.time())
    except OSError as exc:
        raise OperationFailed(f"cannot write {path}: {exc.strerror}") from None
    ctx.note(f"wrote {path}")
    return EXIT_OK


def cmd_report(ctx: Context) -> int:
    if not ctx.args.html:
        raise UsageError("--html is empty: give the HTML file to write, e.g. /tmp/memmap.html")
    target = check_output_path(ctx.args.html)
    from pyshim import report

    snap, result = _checked_snapshot(ctx)
    try:
        write_atomic(target, report.report_html(snap, result, ctx.env.prog))
    except OSError as exc:
        raise OperationFailed(f"cannot write {target}: {exc.strerror}") from None
    ctx.note(f"wrote {target}")
    return EXIT_OK
