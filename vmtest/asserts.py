"""Assertions with messages that say what was measured and where the serial log is."""

from __future__ import annotations

import json

from .placement import Placement, bad_log_lines, check_in_dram, check_on_memory
from .runner import VMResult


def booted_ok(vm: VMResult) -> None:
    assert vm.exit_status == 0, f"guest job failed: {vm.describe()}"


def kernel_log(vm: VMResult) -> str:
    """The guest's kernel log as the agent read it, else the serial console."""
    return str((vm.result or {}).get("dmesg") or vm.serial_text())


def clean_log(vm: VMResult) -> None:
    """No WARN, BUG, oops, KASAN/lockdep report or "Altmap not fully unmapped"."""
    bad = bad_log_lines(kernel_log(vm))
    assert not bad, "kernel log reports:\n" + "\n".join(bad[:20]) + f"\n{vm.describe()}"


def _figures(p: Placement) -> str:
    d = p.as_dict()
    d.pop("blocks")
    d.pop("witness")
    return json.dumps(d)


def on_memory(p: Placement, vm: VMResult, *, attr: bool = True) -> None:
    """Every block of the hot-plug node has its memmap on its own first pages: the witness
    (page tables), the per-block attribute (attr) and the node accounting all say so."""
    problems = check_on_memory(p, attr_expected=attr)
    assert not problems, (
        "memmap should be on the hot-plugged memory: "
        + "; ".join(problems)
        + f"\nfigures: {_figures(p)}\n{vm.describe()}"
    )


def in_dram(
    p: Placement, vm: VMResult, *, attr: bool = True, nodes: list[int] | None = None
) -> None:
    """Every block of the hot-plug node has its memmap in DRAM, on `nodes` (default: the
    nodes with boot memory): the witness, the per-block attribute and the node accounting."""
    problems = check_in_dram(p, attr_expected=attr, nodes=nodes)
    assert not problems, (
        "memmap should be in DRAM: "
        + "; ".join(problems)
        + f"\nfigures: {_figures(p)}\n{vm.describe()}"
    )
