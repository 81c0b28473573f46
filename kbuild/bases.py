# SPDX-License-Identifier: GPL-2.0
"""The kernel bases of the series and the flavours a base is built in, as data.

What a base is (its Debian package, the suite that serves it) lives here; which version of
it the series is tested on is pinned in kernel-patch/bases.lock, which the Makefile reads
too, so that the default base is named in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

LOCK_FILE = Path("kernel-patch") / "bases.lock"


@dataclass(frozen=True)
class Suite:
    """A Debian suite that kbuild reaches through a private apt configuration."""

    uri: str
    name: str


@dataclass(frozen=True)
class Base:
    """A kernel the series is maintained for: Debian's linux-source package of it.

    suite serves linux-source-<name> and linux-config-<name>; they are downloaded with a
    private apt configuration and never installed. newest: a suite whose newest package of
    the same stream the patches must also apply to (check-series). kconfig_renames:
    Kconfig.snippet symbols this base knows under another name."""

    name: str
    suite: Suite
    newest: Suite | None = None
    kconfig_renames: dict[str, str] = field(default_factory=dict)

    @property
    def package(self) -> str:
        return f"linux-source-{self.name}"

    @property
    def config_package(self) -> str:
        return f"linux-config-{self.name}"


@dataclass(frozen=True)
class Pin:
    """The version of a base that a build uses: Debian's package version, and the kernel
    version inside it (6.12.117-1~deb12u1 holds 6.12.117)."""

    base: Base
    debian_version: str
    # linux-config-<base> (Debian's own config, check-distro): its own pin, since the archive
    # drops an old linux-config while still serving the same linux-source; None: the same.
    config_version: str | None = None

    @property
    def config_debian_version(self) -> str:
        return self.config_version or self.debian_version

    @property
    def version(self) -> str:
        return upstream_version(self.debian_version)

    @property
    def name(self) -> str:
        return self.base.name


def upstream_version(debian_version: str) -> str:
    """The kernel version of a Debian linux-source version: no epoch, no Debian revision."""
    without_epoch = debian_version.partition(":")[2] or debian_version
    return without_epoch.rsplit("-", 1)[0]


DEBIAN = "http://deb.debian.org/debian"
DEBIAN_SECURITY = "http://deb.debian.org/debian-security"

BASES = {
    base.name: base
    for base in (
        Base(
            name="6.12",
            suite=Suite(DEBIAN_SECURITY, "bookworm-security"),
            newest=Suite(DEBIAN_SECURITY, "trixie-security"),
        ),
        Base(
            name="7.3",
            suite=Suite(DEBIAN, "trixie-backports"),
            # The sysctl option lost its PROC_ prefix (default y) after 6.12.
            kconfig_renames={"CONFIG_PROC_SYSCTL": "CONFIG_SYSCTL"},
        ),
    )
}


CONFIG_WORD = "config="


def read_lock_lines(repo: Path) -> dict[str, tuple[str, str | None]]:
    """kernel-patch/bases.lock: base name -> (linux-source version, linux-config version or
    None for the same), in file order. A line is `<base> <version> [config=<version>]`."""
    pins: dict[str, tuple[str, str | None]] = {}
    for number, line in enumerate((repo / LOCK_FILE).read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        config = words[2] if len(words) == 3 else None
        if (
            len(words) not in (2, 3)
            or words[0] not in BASES
            or (config is not None and not config.startswith(CONFIG_WORD))
        ):
            raise ValueError(
                f"{LOCK_FILE}:{number}: expected '<base> <debian version> "
                f"[{CONFIG_WORD}<debian version>]' with a base of {', '.join(BASES)}, "
                f"not {line.strip()!r}"
            )
        pins[words[0]] = (words[1], config.removeprefix(CONFIG_WORD) if config else None)
    if not pins:
        raise ValueError(f"{LOCK_FILE} names no base")
    return pins


def read_lock(repo: Path) -> dict[str, str]:
    """kernel-patch/bases.lock: base name -> pinned linux-source version, in file order."""
    return {name: source for name, (source, _) in read_lock_lines(repo).items()}


def write_lock(
    repo: Path, pins: dict[str, str], configs: dict[str, str | None] | None = None
) -> None:
    """Rewrite the versions of each base in pins in kernel-patch/bases.lock, keeping its
    comments; configs: the linux-config pins (None or absent: the same as the source)."""
    path = repo / LOCK_FILE
    old = read_lock_lines(repo)
    lines = []
    for line in path.read_text().splitlines():
        words = line.split()
        if words and not line.startswith("#") and words[0] in pins:
            name = words[0]
            config = (configs or {}).get(name, old[name][1] if configs is None else None)
            line = f"{name} {pins[name]}"
            if config and config != pins[name]:
                line += f" {CONFIG_WORD}{config}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def default_base(repo: Path) -> str:
    """The first base of the lock file: the one every command takes unless told."""
    return next(iter(read_lock(repo)))


def pinned(repo: Path, name: str) -> Pin:
    source, config = read_lock_lines(repo)[name]
    return Pin(BASES[name], source, config)


@dataclass(frozen=True)
class Flavour:
    """A kernel built from a base: which patches go on it and which config fragments on top
    of tinyconfig + Kconfig.snippet (each fragment says why in its own comments)."""

    name: str
    series: bool  # the series of kernel-patch/<base>/
    fragments: tuple[str, ...] = ()  # repository paths, merged after Kconfig.snippet
    # Patches after the series, in a tree of its own so that they can never reach the
    # series branch: <dir>/<base>/*.patch (tests/vm/wrong-kernel/6.12/), written per base.
    extra_patches: str | None = None

    @property
    def strict(self) -> bool:
        """A flavour with the series must keep every fragment line through olddefconfig."""
        return self.series

    @property
    def own_tree(self) -> bool:
        return self.extra_patches is not None


FLAVOURS = {
    flavour.name: flavour
    for flavour in (
        # The baseline: the base as Debian ships it, with the same config.
        Flavour("stock", series=False),
        # The series with kmem built in: the setting matrix, CXL, KUnit, the kselftest.
        Flavour("patched", series=True),
        # kmem as a module (as distributions build it), KASAN, lockdep, kmemleak, faults.
        Flavour("debug", series=True, fragments=("kbuild/debug.config",)),
        # The series + memory-failure handling and the hwpoison injector (issue 16, item 4).
        Flavour("hwpoison", series=True, fragments=("kbuild/hwpoison.config",)),
        # The series + the zone->contiguous patch (kernel-patch/<base>-extra/, not part of the
        # series) + a test-only patch that shows zone->contiguous in /proc/zoneinfo.
        Flavour(
            "contig",
            series=True,
            extra_patches="tests/vm/contig-kernel",
        ),
        # The same without the zone->contiguous patch: only the test-only zoneinfo line, so
        # that the contig test can be seen failing where the fix is missing.
        Flavour(
            "contig-unfixed",
            series=True,
            extra_patches="tests/vm/contig-unfixed",
        ),
        # The series + a deliberately wrong patch: the witness must catch it.
        Flavour(
            "wrong",
            series=True,
            extra_patches="tests/vm/wrong-kernel",
        ),
        # The series + kmem ignoring "on": the series' kselftest must fail on it.
        Flavour(
            "broken",
            series=True,
            extra_patches="tests/vm/broken-kmem",
        ),
    )
}
