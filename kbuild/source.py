# SPDX-License-Identifier: GPL-2.0
"""Debian's linux-source tarballs imported as git trees, with a fixed identity, so that every
machine creates the same base commit and the series' base-commit line is stable."""

from __future__ import annotations

import shutil
from pathlib import Path

from .bases import Suite
from .debian import newest_deb, source_tarball
from .layout import Layout
from .proc import git, run

BASE_IDENTITY = {
    "GIT_AUTHOR_NAME": "Debian kernel source",
    "GIT_AUTHOR_EMAIL": "debian-kernel@lists.debian.org",
    "GIT_COMMITTER_NAME": "Debian kernel source",
    "GIT_COMMITTER_EMAIL": "debian-kernel@lists.debian.org",
    "GIT_AUTHOR_DATE": "2025-11-14T12:56:00+00:00",
    "GIT_COMMITTER_DATE": "2025-11-14T12:56:00+00:00",
}
# The committer of the series branch in the cache's trees: the project, not a person. The
# poster's own identity replaces it when the series is posted.
SERIES_IDENTITY = ("Memmap Kmem Developers", "memmap-kmem@lists.example.org")


def import_tree(tree: Path, message: str) -> None:
    """Commit every file under tree as the root commit (Debian's .gitignore ignores the
    whole top level: the import takes every file)."""
    for args in (["init", "-q"], ["add", "-f", "-A", "."], ["commit", "-q", "-m", message]):
        git(tree, *args, env=BASE_IDENTITY)


def ensure_source(layout: Layout) -> None:
    """Download the base's linux-source package if needed and import it as a git base."""
    if (layout.src / ".git").is_dir():
        return
    pin = layout.pin
    unpacked = layout.src.with_name(layout.src.name + ".deb")
    tarball = source_tarball(layout, unpacked)
    staging = layout.src.with_name(layout.src.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    run(["tar", "-xJf", str(tarball), "-C", str(staging), "--strip-components=1"])
    shutil.rmtree(unpacked)  # the .deb stays in the apt cache
    import_tree(staging, f"Linux {pin.version} ({pin.base.package})")
    git(staging, "tag", layout.base_tag)
    git(staging, "config", "user.name", SERIES_IDENTITY[0])
    git(staging, "config", "user.email", SERIES_IDENTITY[1])
    staging.rename(layout.src)


def newest_base_files(layout: Layout, suite: Suite, paths: list[str]) -> tuple[str, Path]:
    """The given paths of the newest package of the base's stream in suite, in a git
    repository of their own; return its version and the repository."""
    package = layout.pin.base.package
    version, deb = newest_deb(layout, suite, package)
    repo = layout.cache / "src" / f"newest-{version}"
    if (repo / ".git").is_dir():
        return version, repo
    shutil.rmtree(repo, ignore_errors=True)
    deb_root = deb.parent / "root"
    shutil.rmtree(deb_root, ignore_errors=True)
    run(["dpkg-deb", "-x", str(deb), str(deb_root)])
    tarball = next(deb_root.rglob(f"{package}.tar.xz"))
    repo.mkdir(parents=True)
    top = f"{package}/"
    run(["tar", "-xJf", str(tarball), "-C", str(repo), "--strip-components=1",
         "--ignore-failed-read", *(top + p for p in paths)])  # fmt: skip
    shutil.rmtree(deb_root)
    import_tree(repo, version)
    return version, repo
