"""Kernel images and what kbuild keeps beside them: the one reader of kbuild's image layout.

An image is either a kbuild image (`<cache>/images/<base>/<flavour>/bzImage` with `config`,
`modules.builtin`, `modroot/` and `selftests/` next to it) or a kernel built by hand
(`<build>/arch/x86/boot/bzImage`, the build directory three levels up holding `.config` and
`modules.builtin`). Where a kbuild image is, kbuild's Layout says.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from kbuild.bases import default_base, pinned
from kbuild.layout import REPO, Layout, default_cache


def base_of(env: Mapping[str, str] | None = None) -> str:
    """The kernel base of this run: $MEMMAP_KMEM_BASE, else kbuild's default base."""
    env = os.environ if env is None else env
    return env.get("MEMMAP_KMEM_BASE") or default_base(REPO)


def default_image(flavour: str, env: Mapping[str, str] | None = None) -> Path:
    """The newest kbuild image of a flavour of this run's base."""
    env = os.environ if env is None else env
    layout = Layout(REPO, default_cache(env), pinned(REPO, base_of(env)))
    return layout.image(flavour)


def _build_dir(kernel: Path) -> Path | None:
    """<build>/arch/x86/boot/bzImage -> <build>, for a kernel built by hand."""
    return kernel.parents[3] if len(kernel.parents) > 3 else None


def beside(kernel: Path, name: str) -> Path | None:
    """A file kbuild keeps next to the image, or the build directory's own."""
    build = _build_dir(kernel)
    for candidate in (kernel.parent / name, *([build / name] if build else [])):
        if candidate.exists():
            return candidate
    return None


def config(kernel: Path) -> dict[str, str] | None:
    """The image's kernel config (`config` beside it, or the build's `.config`)."""
    path = beside(kernel, "config") or beside(kernel, ".config")
    if path is None or not path.is_file():
        return None
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            name, _, value = line.partition("=")
            out[name] = value
    return out


def is_kasan(kernel: Path) -> bool:
    return (config(kernel) or {}).get("CONFIG_KASAN") == "y"


def modules_builtin(kernel: Path) -> list[Path]:
    """modules.builtin(.modinfo): daxctl reads them to find a built-in kmem."""
    found = (beside(kernel, n) for n in ("modules.builtin", "modules.builtin.modinfo"))
    return [path for path in found if path is not None]


def modules(kernel: Path) -> Path | None:
    """The installed modules of a modular image: <image>/modroot/lib/modules/<release>/."""
    releases = sorted((kernel.parent / "modroot" / "lib" / "modules").glob("*/"))
    return releases[0] if releases else None


def selftest(kernel: Path, relative: str) -> Path | None:
    """A selftest (relative to tools/testing/selftests) of the tree the image came from:
    kbuild copies them beside the image; a build directory's source tree has them."""
    copied = kernel.parent / "selftests" / relative
    if copied.exists():
        return copied
    build = _build_dir(kernel)
    source = build / "source" if build else None
    if source is not None and source.exists():
        in_tree = source / "tools/testing/selftests" / relative
        if in_tree.exists():
            return in_tree
    return None
