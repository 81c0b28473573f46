# SPDX-License-Identifier: GPL-2.0
"""Debian's archive: which versions a suite serves, and downloads through a private apt.

The archive moves on: bookworm-security serves a handful of 6.12.y at a time and
trixie-backports one 7.3.y. A pinned version the suite no longer serves falls back to the
newest version of the same package, with one line saying so, so that a fresh machine builds
without an edit to the repository (`make update-bases` moves the pins forward).
"""

from __future__ import annotations

import glob
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .bases import Pin, Suite
from .layout import Layout
from .proc import BuildError, run

DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DISTRO_CONFIG = "config.amd64_none_amd64.xz"


def private_apt(root: Path, suite: Suite) -> list[str]:
    """apt-get (or apt-cache: replace argv[0]) with a configuration of its own under root:
    one suite, its own lists and status, so that the host's sources and installed packages
    are never touched."""
    for sub in (
        "etc/apt/sources.list.d",
        "etc/apt/preferences.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()
    (root / "etc/apt/sources.list").write_text(
        f"deb [signed-by={DEBIAN_KEYRING}] {suite.uri} {suite.name} main\n"
    )
    return [
        "apt-get",
        "-q",
        "-o",
        f"Dir={root}",
        "-o",
        "Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d",
        "-o",
        f"Dir::State::status={root}/var/lib/dpkg/status",
        "-o",
        "APT::Architecture=amd64",
    ]


def policy_versions(policy: str) -> list[str]:
    """The versions that `apt-cache policy PACKAGE` says an archive serves, in apt's order
    (newest first): a version of its version table with a source other than dpkg's status
    file (installed, no longer served). Empty when no archive serves the package."""
    versions: list[str] = []
    version = None
    in_table = False
    for line in policy.splitlines():
        if line.strip() == "Version table:":
            in_table = True
            continue
        if not in_table:
            continue
        entry = re.match(r"^\s{5}|^ \*\*\* ", line)
        if entry and len(line.split()) in (2, 3):
            version = line.split()[-2]
            continue
        source = line.split()
        served = len(source) >= 2 and source[1] != "/var/lib/dpkg/status"
        if version is not None and served and version not in versions:
            versions.append(version)
    return versions


@dataclass(frozen=True)
class Choice:
    """The version a pin resolved to, and the line that says why when it is not the pin."""

    version: str
    note: str | None


def choose_version(package: str, pinned: str, served: list[str]) -> Choice:
    """The pinned version when the suite serves it, else its newest version of the package."""
    if pinned in served:
        return Choice(pinned, None)
    if not served:
        raise BuildError(
            f"{package} is no longer served at all (pinned {pinned}): add the next base to "
            "kbuild/bases.py and kernel-patch/bases.lock, or point the base at a suite that "
            "serves it"
        )
    return Choice(served[0], f"{package} {pinned} no longer served; using {served[0]}")


class Archive:
    """One Debian suite through a private apt configuration under the cache; the package
    lists are fetched once per process."""

    def __init__(self, layout: Layout, suite: Suite) -> None:
        self.suite = suite
        self.root = layout.apt_root(suite.name)
        self.updated = False

    def apt(self) -> list[str]:
        apt = private_apt(self.root, self.suite)
        if not self.updated:
            run([*apt, "update"], quiet=True)
            self.updated = True
        return apt

    def served(self, package: str) -> list[str]:
        apt = self.apt()
        policy = run(["apt-cache", *apt[1:], "policy", package], capture=True)
        return policy_versions(policy)

    def resolve(self, package: str, pinned: str) -> Choice:
        choice = choose_version(package, pinned, self.served(package))
        if choice.note:
            print(choice.note, file=sys.stderr, flush=True)
        return choice

    def download(self, package: str, version: str) -> Path:
        """The .deb of package=version in the cache (downloaded once)."""
        work = self.root / "download"
        # apt names the file with the version as it is ("~" and all); an epoch's ":" is
        # written %3a.
        pattern = f"{package}_{glob.escape(version.replace(':', '%3a'))}_*.deb"
        cached = sorted(work.glob(pattern))
        if cached:
            return cached[0]
        apt = self.apt()
        work.mkdir(parents=True, exist_ok=True)
        for stale in work.glob(f"{package}_*.deb"):
            stale.unlink()
        run([*apt, "download", f"{package}={version}"], cwd=work, quiet=True)
        debs = sorted(work.glob(pattern))
        if not debs:
            raise BuildError(f"apt-get download {package}={version} left no .deb in {work}")
        return debs[0]


def resolve_pin(layout: Layout) -> Pin:
    """The version of the base that this cache builds: the pin when its tree is already
    imported or the suite serves it, else the newest the suite serves (said in one line and
    remembered in the cache, so that the next command needs no network)."""
    pin = layout.pin
    if (layout.src / ".git").is_dir():
        return pin
    recorded = layout.resolved_file
    if recorded.exists():
        was_pinned, _, version = recorded.read_text().strip().partition(" ")
        if was_pinned == pin.debian_version and version:
            print(
                f"base {pin.version} no longer served; using {Pin(pin.base, version).version} "
                f"(resolved before: {recorded})",
                file=sys.stderr,
            )
            return Pin(pin.base, version)
    choice = Archive(layout, pin.base.suite).resolve(pin.base.package, pin.debian_version)
    if choice.note is None:
        return pin
    taken = Pin(pin.base, choice.version)
    print(f"base {pin.version} no longer served; using {taken.version}", file=sys.stderr)
    recorded.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text(f"{pin.debian_version} {choice.version}\n")
    return taken


def source_tarball(layout: Layout, unpack_to: Path) -> Path:
    """The base's linux-source tarball, from its .deb unpacked under unpack_to."""
    pin = layout.pin
    deb = Archive(layout, pin.base.suite).download(pin.base.package, pin.debian_version)
    shutil.rmtree(unpack_to, ignore_errors=True)
    unpack_to.mkdir(parents=True)
    run(["dpkg-deb", "-x", str(deb), str(unpack_to)])
    found = next(unpack_to.rglob(f"{pin.base.package}.tar.xz"), None)
    if found is None:
        raise BuildError(f"{deb.name} holds no {pin.base.package}.tar.xz")
    return found


def newest_deb(layout: Layout, suite: Suite, package: str) -> tuple[str, Path]:
    """The newest package of a suite: its version and .deb."""
    archive = Archive(layout, suite)
    served = archive.served(package)
    if not served:
        raise BuildError(f"{suite.name} serves no {package}")
    return served[0], archive.download(package, served[0])


def distro_config(layout: Layout) -> Path:
    """Debian's own amd64 config of this kernel, from its linux-config package (downloaded
    and unpacked into the cache: nothing is installed on the host): the version pinned for it
    in bases.lock (`config=`, else the source's), or the newest where that is gone too."""
    pin = layout.pin
    if layout.distro_config(pin.config_debian_version).exists():
        return layout.distro_config(pin.config_debian_version)
    package = pin.base.config_package
    archive = Archive(layout, pin.base.suite)
    choice = archive.resolve(package, pin.config_debian_version)
    target = layout.distro_config(choice.version)
    if target.exists():
        return target
    deb = archive.download(package, choice.version)
    work = layout.cache / "debian" / "unpacked"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run(["dpkg-deb", "-x", str(deb), str(work)])
    packed = next(work.rglob(DISTRO_CONFIG), None)
    if packed is None:
        raise BuildError(f"{deb.name} has no {DISTRO_CONFIG}")
    text = subprocess.run(["xz", "-dc", str(packed)], check=True, capture_output=True).stdout
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(text)
    shutil.rmtree(work)
    return target
