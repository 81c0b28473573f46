# SPDX-License-Identifier: GPL-2.0
"""Kernel configs: tinyconfig + Kconfig.snippet (+ a flavour's fragments), and the check that
olddefconfig kept every line a fragment asks for."""

from __future__ import annotations

import re
from pathlib import Path

from .bases import Flavour
from .layout import Layout
from .proc import BuildError, kmake, run


def configure(layout: Layout, flavour: Flavour, tree: Path, out: Path, strict: bool) -> None:
    """Configure tree into out: tinyconfig, then the flavour's fragments, then olddefconfig.
    strict: fail when olddefconfig dropped a fragment line (a missing dependency)."""
    out.mkdir(parents=True, exist_ok=True)
    kmake(tree, out, "tinyconfig", jobs=False, quiet=True)
    fragments = layout.fragments(flavour)
    run([str(tree / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(out),
         str(out / ".config"), *map(str, fragments)], quiet=True)  # fmt: skip
    kmake(tree, out, "olddefconfig", jobs=False, quiet=True)
    if strict:
        dropped = dropped_lines(fragments, out / ".config", layout.pin.base.kconfig_renames)
        if dropped:
            raise BuildError(
                "olddefconfig dropped these fragment lines (a missing dependency?): "
                + "; ".join(dropped)
            )


def dropped_lines(
    fragments: list[Path], config: Path, renames: dict[str, str] | None = None
) -> list[str]:
    """Fragment lines missing from config; a later fragment's line for a symbol replaces an
    earlier one's, as merge_config.sh does (the debug flavour turns kmem into a module).
    renames: symbols the base knows under another name, whose line must then hold under
    that name."""
    have = set(config.read_text().splitlines())
    wanted: dict[str, str] = {}
    for fragment in fragments:
        for line in fragment.read_text().splitlines():
            line = line.strip()
            symbol = re.match(r"^(?:# )?(CONFIG_\w+)", line)
            if symbol:
                wanted[symbol.group(1)] = line
    for old, new in (renames or {}).items():
        if old in wanted:
            wanted[new] = wanted.pop(old).replace(old, new)
    return [line for line in wanted.values() if line not in have]
