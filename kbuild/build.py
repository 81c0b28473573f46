# SPDX-License-Identifier: GPL-2.0
"""Kernel images: a flavour of a base built into the cache, keyed by everything that went into
it, so that a second build with nothing changed does no work."""

from __future__ import annotations

import shutil
from pathlib import Path

from .bases import Flavour
from .config import configure
from .layout import Layout
from .proc import digest, kmake
from .series import checkout_base, checkout_series, prepare_own_tree, series_key

# What the VM tests need of a tree, which later builds check out anew: the series'
# kselftest, upstream's dax and memory hotplug selftests, and their KTAP helpers.
SELFTESTS = ("dax", "memory-hotplug", "kselftest")
# modules.builtin lets daxctl find a built-in kmem in the guest.
BUILD_FILES = ("modules.builtin", "modules.builtin.modinfo")


def image_key(layout: Layout, flavour: Flavour) -> str:
    parts = [layout.pin.version.encode(), flavour.name.encode()]
    parts += [fragment.read_bytes() for fragment in layout.fragments(flavour)]
    if flavour.series:
        parts.append(series_key(layout, patches_only=True).encode())
    parts += [p.name.encode() + p.read_bytes() for p in layout.extra_patches(flavour)]
    return digest(*parts)


def install_modules(tree: Path, out: Path, root: Path) -> None:
    """Build the modules of a CONFIG_MODULES=y kernel and install them under root, where
    the VM runner finds them (root/lib/modules/<release>/, depmod done)."""
    if "CONFIG_MODULES=y" not in (out / ".config").read_text().splitlines():
        return
    kmake(tree, out, "modules")
    kmake(tree, out, f"INSTALL_MOD_PATH={root}", "modules_install", jobs=False, quiet=True)
    # The build and source links point back into the cache's trees: not part of the image.
    for link in root.glob("lib/modules/*/*"):
        if link.is_symlink():
            link.unlink()


def prepare_tree(layout: Layout, flavour: Flavour) -> Path:
    """Check out what the flavour builds and return its tree."""
    if flavour.own_tree:
        return prepare_own_tree(layout, flavour)
    if flavour.series:
        checkout_series(layout)
    else:
        checkout_base(layout)
    return layout.src


def build(layout: Layout, flavour: Flavour) -> Path:
    """The flavour's bzImage in images/<base>/<flavour>/, built unless it is there."""
    final = layout.images / f"{flavour.name}-{image_key(layout, flavour)}"
    link = layout.images / flavour.name
    if not (final / "bzImage").exists():
        tree = prepare_tree(layout, flavour)
        out = layout.build_dir(flavour)
        configure(layout, flavour, tree, out, strict=flavour.strict)
        kmake(tree, out, "bzImage")
        staging = final.with_name(final.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(out / "arch/x86/boot/bzImage", staging / "bzImage")
        shutil.copy2(out / ".config", staging / "config")
        install_modules(tree, out, staging / "modroot")
        for name in BUILD_FILES:
            if (out / name).exists():
                shutil.copy2(out / name, staging / name)
        for sub in SELFTESTS:
            tests = tree / "tools/testing/selftests" / sub
            if tests.is_dir():
                shutil.copytree(tests, staging / "selftests" / sub)
        staging.rename(final)
    tmp_link = link.with_name(link.name + ".new")
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(final.name)
    tmp_link.replace(link)
    return link / "bzImage"
