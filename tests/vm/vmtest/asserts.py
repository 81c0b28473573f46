"""Assertions with messages that say what was measured and where the serial log is."""

from __future__ import annotations

import json

from .placement import Placement, bad_log_lines, check_in_dram, check_on_memory
from .runner import VMResult


def booted_ok(vm: VMResult) -> None:
    assert vm.exit_status == 0, f"guest job failed: {vm.describe()}"


def clean_log(vm: VMResult) -> None:
    """No WARN, BUG, oops, KASAN/lockdep report or "Altmap not fully unmapped"."""
    text = (vm.result or {}).get("dmesg") or vm.serial_text()
    bad = bad_log_lines(text)
    assert not bad, "kernel log reports:\n" + "\n".join(bad[:20]) + f"\n{vm.describe()}"


def _figures(p: Placement) -> str:
    d = p.as_dict()
    d.pop("blocks")
    return json.dumps(d)


def on_memory(p: Placement, vm: VMResult, *, attr: bool = True) -> None:
    problems = check_on_memory(p, attr_expected=attr)
    assert not problems, (
        "memmap should be on the hot-plugged memory: "
        + "; ".join(problems)
        + f"\nfigures: {_figures(p)}\n{vm.describe()}"
    )


def in_dram(p: Placement, vm: VMResult, *, attr: bool = True) -> None:
    problems = check_in_dram(p, attr_expected=attr)
    assert not problems, (
        "memmap should be in node-0 DRAM: "
        + "; ".join(problems)
        + f"\nfigures: {_figures(p)}\n{vm.describe()}"
    )
