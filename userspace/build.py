#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Build the operators' tools with the companion patches: daxctl (ndctl) and lsmem (util-linux).

    python3 userspace/build.py build [ndctl] [util-linux]   print the executables' paths
    python3 userspace/build.py test-util-linux              util-linux's own lsmem test

For each project (TOOLS): download its source, `git am` the series from userspace-patch/,
configure with meson and build only the executables needed (ninja -j2 under nice), in a cache
keyed by content:

  $CACHE/userspace/<project>-<version>-<key>/src     the source, series applied (a git tree)
  $CACHE/userspace/<project>-<version>-<key>/build   meson's build directory
  $CACHE/userspace/<project>-<version>-<key>/stamp.json   written last: the build is complete

The key hashes the source (the tarball's sha256 or the git tree id), every patch, the meson
options and BUILDER_VERSION. A second `build` with nothing changed does no work. The cache is
$MEMMAP_KMEM_CACHE, else $XDG_CACHE_HOME/memmap-kmem, else ~/.cache/memmap-kmem.

Sources (a repository named in the environment wins):
  1. Debian's orig tarball of the pinned version, through an apt configuration of its own
     under the cache (deb-src lines for sid, trixie-backports and trixie; $APT_CONFIG points
     apt at it, so the host's /etc/apt is neither read nor written; `apt-get source
     --tar-only --download-only` of each Debian revision of that upstream version), checked
     against its sha256. ndctl is pinned at 81 (trixie's; the submission is on v85, whose
     tarball Debian's pool does not serve) with the backport userspace-patch/ndctl/81/,
     util-linux at 2.42.4 with userspace-patch/util-linux/2.42.4/;
  2. a git repository named by $MEMMAP_KMEM_<PROJECT>_GIT (e.g. MEMMAP_KMEM_NDCTL_GIT) that has
     the pinned tag or commit (`git archive`).
The executables run from the build directory (meson's build rpath finds libdaxctl and
libsmartcols there), so the cache must stay where it is.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from kbuild.layout import default_cache
from kbuild.proc import BuildError, run

REPO = Path(__file__).resolve().parent.parent
BUILDER_VERSION = "1"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_URI = "http://deb.debian.org/debian"
DEBIAN_SUITES = ("sid", "trixie-backports", "trixie")
# Debian tarballs unpack with their owners: git must accept the tree as root.
GIT_IDENTITY = [
    "-c", "user.name=userspace/build.py", "-c", "user.email=build@localhost",
    "-c", "safe.directory=*",
]  # fmt: skip


@dataclass(frozen=True)
class Tool:
    """One project: where its source comes from, the series, and what to build."""

    project: str  # Debian source package and directory name
    version: str
    orig: str  # Debian's orig tarball
    sha256: str
    git_ref: str  # the same source in the project's repository
    patches: Path
    meson: tuple[str, ...]
    targets: tuple[str, ...]  # ninja targets; the first is the executable printed
    env: str = field(default="")

    @property
    def git_env(self) -> str:
        return self.env or f"MEMMAP_KMEM_{self.project.upper().replace('-', '_')}_GIT"


TOOLS: dict[str, Tool] = {
    # The submission is on ndctl v85 (userspace-patch/ndctl/); Debian's archive lists 85 in
    # sid but does not serve its orig tarball, and trixie serves 81, so the builder applies
    # the backport to v81 (userspace-patch/ndctl/81/).
    "ndctl": Tool(
        project="ndctl",
        version="81",
        orig="ndctl_81.orig.tar.gz",
        sha256="e40784687ac2d0c176748c9ffb8bde541a12301b6fedb607a9a70c8fd1f94929",
        git_ref="v81",
        patches=REPO / "userspace-patch" / "ndctl" / "81",
        meson=(
            "-Dversion-tag=81",
            "-Ddocs=enabled",
            "-Dasciidoctor=enabled",
            "-Dsystemd=disabled",
            "-Dlibtracefs=disabled",
            "-Dkeyutils=disabled",
        ),
        targets=(
            "daxctl/daxctl",
            "Documentation/daxctl/daxctl-list.1",
            "Documentation/daxctl/daxctl-reconfigure-device.1",
        ),
    ),
    # The submission is on util-linux master (userspace-patch/util-linux/); what a machine
    # can download is Debian's 2.42.4, so the builder applies the backport.
    "util-linux": Tool(
        project="util-linux",
        version="2.42.4",
        orig="util-linux_2.42.4.orig.tar.xz",
        sha256="fbd62a100ab7bb8746ba0661255c3c48185b1e9021507c624da01fbc696330ec",
        git_ref="v2.42.4",
        patches=REPO / "userspace-patch" / "util-linux" / "2.42.4",
        meson=(
            "-Dauto_features=disabled",
            "-Dbuild-lsmem=enabled",
            "-Dbuild-libsmartcols=enabled",
            "-Dprogram-tests=false",
        ),
        targets=("lsmem",),
    ),
}


def log(msg: str) -> None:
    print(f"userspace: {msg}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def patch_files(patches: Path) -> list[Path]:
    """The series in order, cover letter (no diff) left out."""
    found = sorted(p for p in patches.glob("[0-9][0-9][0-9][0-9]-*.patch"))
    series = [p for p in found if not p.name.startswith("0000-")]
    if not series:
        raise BuildError(f"no patches in {patches}")
    return series


class PrivateApt:
    """apt-get and apt-cache with a configuration of their own under the cache: deb-src lines
    for DEBIAN_SUITES, its own lists and no dpkg status. $APT_CONFIG names a file that moves
    Dir::Etc there, so nothing of the host's /etc/apt (sources, apt.conf.d) is read and
    nothing of it is written."""

    def __init__(self, cache: Path) -> None:
        root = cache / "userspace" / "apt"
        for sub in ("etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d",
                    "etc/apt/trusted.gpg.d", "var/lib/apt/lists/partial",
                    "var/cache/apt/archives/partial", "var/lib/dpkg"):  # fmt: skip
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "var/lib/dpkg/status").touch()
        (root / "etc/apt/sources.list").write_text(
            "".join(
                f"deb-src [signed-by={DEBIAN_KEYRING}] {DEBIAN_URI} {suite} main\n"
                for suite in DEBIAN_SUITES
            )
        )
        conf = root / "apt.conf"
        conf.write_text(
            f'Dir "{root}/";\n'
            f'Dir::Etc "{root}/etc/apt/";\n'
            f'Dir::State "{root}/var/lib/apt/";\n'
            f'Dir::State::status "{root}/var/lib/dpkg/status";\n'
            f'Dir::Cache "{root}/var/cache/apt/";\n'
            'Debug::NoLocking "true";\n'
            'Acquire::Languages "none";\n'
            # A clock ahead of the archive's Valid-Until (or behind its Date) must not stop a
            # build: the Release files stay checked against Debian's keyring, and the
            # tarball against its sha256.
            'Acquire::Check-Valid-Until "false";\n'
            'Acquire::Check-Date "false";\n'
        )
        self.env = {**os.environ, "APT_CONFIG": str(conf), "LC_ALL": "C"}

    def run(self, args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=cwd, env=self.env, capture_output=True, text=True, errors="replace"
        )

    def update(self) -> None:
        proc = self.run(["apt-get", "-q", "update"])
        if proc.returncode != 0:
            raise BuildError(f"apt-get update exited {proc.returncode}: {proc.stderr[-2000:]}")

    def source_versions(self, package: str, upstream: str) -> list[str]:
        """Debian's versions of the source package whose upstream part is upstream."""
        proc = self.run(["apt-cache", "showsrc", package])
        found = []
        for line in proc.stdout.splitlines():
            if line.startswith("Version: "):
                version = line.split()[1]
                if version.split(":")[-1].rsplit("-", 1)[0] == upstream:
                    found.append(version)
        return list(dict.fromkeys(found))


def debian_tarball(cache: Path, tool: Tool) -> Path | None:
    """Debian's orig tarball of the pinned version, or None when the archive does not serve it."""
    downloads = cache / "userspace" / "downloads"
    path = downloads / tool.orig
    if path.is_file() and sha256_file(path) == tool.sha256:
        return path
    downloads.mkdir(parents=True, exist_ok=True)
    apt = PrivateApt(cache)
    try:
        apt.update()
    except BuildError as err:
        log(str(err))
        return None
    versions = apt.source_versions(tool.project, tool.version)
    if not versions:
        log(f"Debian's archive ({', '.join(DEBIAN_SUITES)}) has no {tool.project} {tool.version}")
        return None
    for version in versions:
        # --tar-only: just the orig tarball; apt's exit code is ignored, the file is checked.
        apt.run(
            ["apt-get", "-q", "source", "--download-only", "--tar-only",
             f"{tool.project}={version}"],
            cwd=downloads,
        )  # fmt: skip
        if path.is_file():
            break
    if not path.is_file():
        log(f"Debian's archive did not serve {tool.orig} (tried {', '.join(versions)})")
        return None
    if sha256_file(path) != tool.sha256:
        path.unlink()
        raise BuildError(f"{tool.orig}: sha256 is not {tool.sha256}")
    return path


@dataclass(frozen=True)
class Source:
    kind: str  # "debian" or "git"
    ident: str  # tarball sha256 or git tree id
    origin: str  # the tarball's path or the repository


def find_source(cache: Path, tool: Tool) -> Source:
    """A repository named in the environment first (an explicit choice), else Debian's."""
    repo = os.environ.get(tool.git_env)
    if not repo:
        tarball = debian_tarball(cache, tool)
        if tarball:
            return Source("debian", tool.sha256, str(tarball))
    if repo:
        proc = subprocess.run(
            ["git", "-C", repo, "rev-parse", f"{tool.git_ref}^{{tree}}"],
            capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode == 0:
            return Source("git", proc.stdout.strip(), repo)
        raise BuildError(f"${tool.git_env}={repo} has no {tool.git_ref}")
    raise BuildError(
        f"no source for {tool.project} {tool.version}: Debian's archive does not serve "
        f"{tool.orig}; set {tool.git_env} to a clone that has {tool.git_ref}"
    )


def cache_key(tool: Tool, source: Source, patches: list[Path]) -> str:
    digest = hashlib.sha256()
    for part in (BUILDER_VERSION, tool.project, tool.version, source.ident, *tool.meson):
        digest.update(part.encode() + b"\0")
    for patch in patches:
        digest.update(patch.name.encode() + b"\0" + patch.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def unpack(tool: Tool, source: Source, src: Path) -> None:
    """The source into src as a git tree with one commit, ready for git am."""
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    if source.kind == "debian":
        with tarfile.open(source.origin) as tar:
            top = tar.getnames()[0].split("/")[0]
            tar.extractall(src.parent / "unpack", filter="tar")
        shutil.rmtree(src)
        (src.parent / "unpack" / top).rename(src)
        shutil.rmtree(src.parent / "unpack")
    else:
        archive = subprocess.run(
            ["git", "-C", source.origin, "archive", "--format=tar", tool.git_ref],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    run(["git", *GIT_IDENTITY, "init", "-q"], cwd=src)
    run(["git", *GIT_IDENTITY, "add", "-A", "-f"], cwd=src, quiet=True)
    run(["git", *GIT_IDENTITY, "commit", "-q", "-m", f"{tool.project} {tool.version}"], cwd=src)


def build(tool: Tool, patches: list[Path], cache: Path) -> Path:
    """Build tool with patches (cached); return the entry's directory. One builder at a time
    per cache (a lock file), so that concurrent callers (pytest workers) wait for one build."""
    (cache / "userspace").mkdir(parents=True, exist_ok=True)
    with (cache / "userspace" / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_locked(tool, patches, cache)


def build_locked(tool: Tool, patches: list[Path], cache: Path) -> Path:
    source = find_source(cache, tool)
    key = cache_key(tool, source, patches)
    entry = cache / "userspace" / f"{tool.project}-{tool.version}-{key}"
    stamp = entry / "stamp.json"
    if stamp.is_file():
        return entry
    started = time.monotonic()
    log(f"{tool.project} {tool.version} from {source.kind} ({source.origin}), key {key}")
    src, bld = entry / "src", entry / "build"
    shutil.rmtree(entry, ignore_errors=True)
    unpack(tool, source, src)
    try:
        run(["git", *GIT_IDENTITY, "am", "-q", *map(str, patches)], cwd=src, quiet=True)
    except BuildError as err:
        raise BuildError(f"{tool.project}: the series does not apply: {err}") from None
    nice = ["nice", "-n", "10"]
    run([*nice, "meson", "setup", str(bld), *tool.meson], cwd=src, quiet=True)
    run([*nice, "ninja", "-C", str(bld), "-j2", *tool.targets], quiet=True)
    seconds = round(time.monotonic() - started, 1)
    stamp.write_text(
        json.dumps(
            {
                "project": tool.project,
                "version": tool.version,
                "source": source.kind,
                "origin": source.origin,
                "patches": [p.name for p in patches],
                "targets": list(tool.targets),
                "cold_build_seconds": seconds,
            },
            indent=1,
        )
        + "\n"
    )
    log(f"{tool.project}: built in {seconds} s")
    return entry


def executable(tool: Tool, entry: Path) -> Path:
    return entry / "build" / tool.targets[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_build = sub.add_parser("build", help="build the patched tools, print their paths")
    p_build.add_argument("projects", nargs="*", metavar="|".join(TOOLS), default=[])
    p_build.add_argument(
        "--extra-patch", type=Path, action="append", default=[],
        help="apply this patch after the series (a test of the tests)",
    )  # fmt: skip
    p_test = sub.add_parser("test-util-linux", help="util-linux's own tests/ts/lsmem")
    p_test.add_argument("--extra-patch", type=Path, action="append", default=[])
    args = parser.parse_args(argv)
    cache = default_cache()
    unknown = [p for p in getattr(args, "projects", []) if p not in TOOLS]
    if unknown:
        parser.error(f"unknown project {unknown[0]}: choose from {', '.join(TOOLS)}")
    try:
        if args.cmd == "build":
            for name in args.projects or list(TOOLS):
                tool = TOOLS[name]
                patches = patch_files(tool.patches) + [p.resolve() for p in args.extra_patch]
                print(executable(tool, build(tool, patches, cache)))
            return 0
        tool = TOOLS["util-linux"]
        patches = patch_files(tool.patches) + [p.resolve() for p in args.extra_patch]
        entry = build(tool, patches, cache)
        proc = subprocess.run(
            ["tests/run.sh", f"--builddir={entry / 'build'}", "lsmem"], cwd=entry / "src"
        )
        return proc.returncode
    except BuildError as err:
        log(f"error: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
