# SPDX-License-Identifier: GPL-2.0
"""Every path of a build, in the repository and in the cache, derived in one place.

  $CACHE/src/linux-<ver>/          git tree: tag base-<ver> is Debian's linux-source
                                   tarball, branch memmap-kmem the series on top
  $CACHE/build/linux-<ver>[-<flavour>]/  kbuild output directory (O=) of a flavour; stock
                                   and patched share one, so that the series builds
                                   incrementally on top of the base
  $CACHE/images/<base>/<flavour>-<key>/  a finished bzImage, its config, modules and
                                   selftests, keyed by everything that went into them;
                                   images/<base>/<flavour> links the newest
  $CACHE/wrong/linux-<ver>/        the tree of a flavour with test-only patches
  $CACHE/apt/<suite>/              a private apt configuration per Debian suite
  $CACHE/resolved/<base>           the version a pin resolved to when the archive no longer
                                   served it
  $CACHE/checked/                  stamps of series checks that passed, keyed by content

The cache is $MEMMAP_KMEM_CACHE, else $XDG_CACHE_HOME/memmap-kmem, else ~/.cache/memmap-kmem.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .bases import Flavour, Pin

BRANCH = "memmap-kmem"
REPO = Path(__file__).resolve().parent.parent


def default_cache(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("MEMMAP_KMEM_CACHE"):
        return Path(env["MEMMAP_KMEM_CACHE"])
    xdg = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(xdg) / "memmap-kmem"


@dataclass(frozen=True)
class Layout:
    """The paths of one base at one version, in one repository and one cache."""

    repo: Path
    cache: Path
    pin: Pin

    @property
    def base_tag(self) -> str:
        return f"base-{self.pin.version}"

    @property
    def src(self) -> Path:
        return self.cache / "src" / f"linux-{self.pin.version}"

    def tree(self, flavour: Flavour) -> Path:
        """The git tree a flavour is built from."""
        if flavour.own_tree:
            return self.cache / flavour.name / f"linux-{self.pin.version}"
        return self.src

    def build_dir(self, flavour: Flavour) -> Path:
        """Stock and patched share a build directory: the series builds incrementally on
        top of the base. Every other flavour has its own config, so its own directory."""
        suffix = "" if flavour.name in ("stock", "patched") else f"-{flavour.name}"
        return self.cache / "build" / f"linux-{self.pin.version}{suffix}"

    @property
    def distro_build_dir(self) -> Path:
        return self.cache / "build" / f"linux-{self.pin.version}-distro"

    @property
    def images(self) -> Path:
        return self.cache / "images" / self.pin.name

    def image(self, flavour_name: str) -> Path:
        """The newest bzImage of a flavour (what the VM tests boot)."""
        return self.images / flavour_name / "bzImage"

    @property
    def patch_dir(self) -> Path:
        return self.repo / "kernel-patch" / self.pin.name

    @property
    def fragment(self) -> Path:
        return self.repo / "Kconfig.snippet"

    def fragments(self, flavour: Flavour) -> list[Path]:
        return [self.fragment, *(self.repo / f for f in flavour.fragments)]

    def extra_patches(self, flavour: Flavour) -> list[Path]:
        """The flavour's patches for this base: <extra_patches>/<base>/*.patch."""
        if flavour.extra_patches is None:
            return []
        return sorted((self.repo / flavour.extra_patches / self.pin.name).glob("*.patch"))

    def extra_patch_bases(self, flavour: Flavour) -> list[str]:
        """The bases the flavour has patches for."""
        if flavour.extra_patches is None or not (self.repo / flavour.extra_patches).is_dir():
            return []
        return sorted(d.name for d in (self.repo / flavour.extra_patches).iterdir() if d.is_dir())

    def series(self) -> list[Path]:
        """kernel-patch/<base>/series in order, the cover letter first when it is listed."""
        series = self.patch_dir / "series"
        if not series.exists():
            return []
        names = [
            line.strip()
            for line in series.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        return [self.patch_dir / name for name in names]

    def patches(self) -> list[Path]:
        """What git am applies: the series without its cover letter."""
        return [p for p in self.series() if not p.name.startswith("0000-")]

    @property
    def cover_letter(self) -> Path:
        return self.patch_dir / "0000-cover-letter.patch"

    def apt_root(self, suite_name: str) -> Path:
        return self.cache / "apt" / suite_name

    @property
    def resolved_file(self) -> Path:
        return self.cache / "resolved" / self.pin.name

    @property
    def checked(self) -> Path:
        return self.cache / "checked"

    def distro_config(self, debian_version: str) -> Path:
        """Debian's amd64 config of a version of linux-config-<base>, unpacked."""
        return self.cache / "debian" / f"config-{debian_version}"
