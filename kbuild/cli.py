# SPDX-License-Identifier: GPL-2.0
"""python -m kbuild: build a kernel base with (or without) the kmem memmap_on_memory series.

Each base (kbuild/bases.py, pinned in kernel-patch/bases.lock) has its own series in
kernel-patch/<base>/ and its own trees and images in the cache (kbuild/layout.py).
A second build with nothing changed does no work.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from .bases import BASES, FLAVOURS, default_base, pinned, read_lock, write_lock
from .build import build
from .checks import check_config, check_distro, check_series
from .debian import Archive, resolve_pin
from .ktest import kunit
from .layout import REPO, Layout, default_cache
from .post import post
from .proc import BuildError
from .series import checkout_series, export, range_diff
from .source import ensure_source

# Files that name a base's version in prose, moved forward by update-bases.
VERSION_PROSE = ("README.md", "tests/vm/README.md")


def layout_for(repo: Path, cache: Path, base: str, resolve: bool = True) -> Layout:
    """The layout of a base at its pinned version, or at the version the archive serves
    instead when the pin is gone (resolve)."""
    layout = Layout(repo, cache, pinned(repo, base))
    return replace(layout, pin=resolve_pin(layout)) if resolve else layout


def update_bases(repo: Path, cache: Path) -> int:
    """Move every pin to the newest version its suite serves, then regenerate what names
    the versions: the series (base-commit lines), range-diff.txt and the prose."""
    old = read_lock(repo)
    new = dict(old)
    configs: dict[str, str | None] = {}
    for name in old:
        base = BASES[name]
        archive = Archive(Layout(repo, cache, pinned(repo, name)), base.suite)
        for package, into in ((base.package, new), (base.config_package, configs)):
            served = archive.served(package)
            if not served:
                raise BuildError(f"{base.suite.name} serves no {package}")
            into[name] = served[0]
    moved = {name: (old[name], new[name]) for name in old if old[name] != new[name]}
    write_lock(repo, new, configs)
    if not moved:
        print("every base is at the newest version its suite serves")
        return 0
    for name, (was, now) in moved.items():
        print(f"base {name}: {was} -> {now}")
        layout = layout_for(repo, cache, name, resolve=False)
        ensure_source(layout)
        checkout_series(layout)
        export(layout)
        was_version, now_version = (
            Layout(repo, cache, replace(layout.pin, debian_version=was)).pin.version,
            layout.pin.version,
        )
        for prose in (*VERSION_PROSE, f"kernel-patch/{name}/0000-cover-letter.patch"):
            path = repo / prose
            path.write_text(path.read_text().replace(was_version, now_version))
    layouts = [layout_for(repo, cache, name, resolve=False) for name in new]
    (repo / "kernel-patch" / "range-diff.txt").write_text(range_diff(layouts))
    print("regenerated kernel-patch/range-diff.txt; review and commit the changes")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kbuild", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="default: $MEMMAP_KMEM_CACHE, $XDG_CACHE_HOME/memmap-kmem or ~/.cache/memmap-kmem",
    )
    parser.add_argument(
        "--base",
        choices=sorted(BASES),
        default=None,
        help="kernel base (default: the first of kernel-patch/bases.lock)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build_p = sub.add_parser("build", help="build a flavour's bzImage and print its path")
    build_p.add_argument("--flavour", choices=sorted(FLAVOURS), default="patched")
    sub.add_parser("prepare", help="import the source and put the series on branch memmap-kmem")
    sub.add_parser("export", help="write branch memmap-kmem to kernel-patch/<base>/")
    sub.add_parser("check", help="checkpatch, git am and a build after each patch")
    sub.add_parser("check-config", help="fail if olddefconfig drops a fragment line")
    sub.add_parser("check-distro", help="W=1 build of the touched files under Debian's config")
    kunit_p = sub.add_parser("kunit", help="the KUnit suite through kunit.py (config, exec)")
    kunit_p.add_argument("--kernel", type=Path, help="bzImage (default: the patched build)")
    kunit_p.add_argument("--timeout", type=int, default=300)
    kunit_p.add_argument(
        "--run",
        action="store_true",
        help="kunit.py run: build its own kernel from drivers/dax/.kunitconfig",
    )
    sub.add_parser("image-dir", help="print the directory of the base's images")
    sub.add_parser("default-base", help="print the default base")
    diff_p = sub.add_parser("range-diff", help="git range-diff of the series of the bases")
    diff_p.add_argument("--output", type=Path, help="write it here instead of stdout")
    sub.add_parser("update-bases", help="move every pin to the newest version served")
    post_p = sub.add_parser(
        "post", help="the series as mails from IDENTITY on a tree's HEAD (nothing is sent)"
    )
    post_p.add_argument("--identity", required=True, help="'Name <mail>' of the poster")
    post_p.add_argument("--tree", type=Path, help="kernel git tree (default: the base)")
    post_p.add_argument("--out", type=Path, required=True, help="directory for the mails")
    args = parser.parse_args(argv)
    repo: Path = args.repo
    cache = args.cache or default_cache()
    base = args.base or default_base(repo)
    try:
        if args.command == "default-base":
            print(base)
        elif args.command == "image-dir":
            print(layout_for(repo, cache, base, resolve=False).images)
        elif args.command == "update-bases":
            return update_bases(repo, cache)
        elif args.command == "range-diff":
            text = range_diff([layout_for(repo, cache, name) for name in read_lock(repo)])
            if args.output:
                args.output.write_text(text)
            else:
                sys.stdout.write(text)
        else:
            return run_command(args, layout_for(repo, cache, base))
    except (BuildError, ValueError) as err:
        print(f"kbuild: {err}", file=sys.stderr)
        return 1
    return 0


def run_command(args: argparse.Namespace, layout: Layout) -> int:
    if args.command == "build":
        print(build(layout, FLAVOURS[args.flavour]))
    elif args.command == "prepare":
        checkout_series(layout)
        print(layout.src)
    elif args.command == "export":
        export(layout)
    elif args.command == "check":
        return check_series(layout)
    elif args.command == "check-config":
        return check_config(layout)
    elif args.command == "check-distro":
        return check_distro(layout)
    elif args.command == "post":
        return post(layout, args.identity, args.tree, args.out)
    elif args.command == "kunit":
        image = args.kernel or build(layout, FLAVOURS["patched"])
        return kunit(layout, image, args.timeout, full_run=args.run)
    return 0
