#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Build a kernel base with (or without) the kmem memmap_on_memory series.

Each kernel base (BASES: Debian's 6.12 LTS and 7.3 sources) has its own series in
kernel-patch/<base>/ and its own trees and images in a cache outside the repository:

  $CACHE/src/linux-<ver>/      git tree: tag base-<ver> is Debian's linux-source
                               tarball, branch memmap-kmem is the series on top
  $CACHE/build/<flavour>/      kbuild output directory (O=), one per config flavour
  $CACHE/images/<base>/<name>-<key>/  finished bzImage + .config, keyed by everything
                               that went into them; images/<base>/<name> links the newest
  $CACHE/wrong/linux-<ver>/    the "wrong" variant's own tree (a shared clone of src:
                               series + tests/vm/wrong-kernel/*.patch, detached); its
                               build directory is build/linux-<ver>-wrong
  $CACHE/build/kunit-<ver>/    kunit.py's build directory: its kernel, configured from
                               the series' drivers/dax/.kunitconfig
  $CACHE/apt/<suite>/          a private apt configuration per Debian suite, used to
                               download sources the host's apt does not know

The cache is $MEMMAP_KMEM_CACHE, else $XDG_CACHE_HOME/memmap-kmem, else
~/.cache/memmap-kmem.  A second build with nothing changed does no work.

Sub-commands (each takes --base, default 6.12):
  build   --variant stock|patched|wrong [--debug]   print the bzImage path
  export                                      branch -> kernel-patch/
  check                                       git am, checkpatch, build each patch
  check-config                                fragment lines olddefconfig dropped
  check-distro                                W=1 build under Debian's amd64 config
  kunit   [--kernel K] [--log L]                the KUnit suite through the kernel's own
                                              kunit.py: 'kunit.py run --kunitconfig
                                              drivers/dax' as the series documents it, and
                                              the patched build booted, parsed by kunit.py
  range-diff                                  git range-diff of the 6.12 and 7.3 series
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

BRANCH = "memmap-kmem"
DEBIAN_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


@dataclass(frozen=True)
class Suite:
    """A Debian suite that apt reaches through a private configuration (private_apt)."""

    uri: str
    name: str


@dataclass(frozen=True)
class Base:
    """A kernel the series is maintained for: Debian's linux-source package of it.

    archive None means the host's own apt sources have the package (Debian 12's
    bookworm-security for 6.12); otherwise it is downloaded from that suite with a
    private apt configuration and never installed. newest: a suite whose newest
    package of the same series the patches must also apply to (check-series).
    kconfig_renames: Kconfig.snippet symbols this base knows under another name."""

    name: str
    version: str
    package: str
    debian_version: str
    config_package: str
    archive: Suite | None = None
    newest: Suite | None = None
    kconfig_renames: dict[str, str] = field(default_factory=dict)


BASES = {
    base.name: base
    for base in (
        Base(
            name="6.12",
            version="6.12.117",
            package="linux-source-6.12",
            debian_version="6.12.117-1~deb12u1",
            config_package="linux-config-6.12",
            newest=Suite("http://deb.debian.org/debian-security", "trixie-security"),
        ),
        Base(
            name="7.3",
            version="7.3.4",
            package="linux-source-7.3",
            debian_version="7.3.4-1~bpo13+1",
            config_package="linux-config-7.3",
            archive=Suite("http://deb.debian.org/debian", "trixie-backports"),
            # The sysctl option lost its PROC_ prefix (default y) after 6.12.
            kconfig_renames={"CONFIG_PROC_SYSCTL": "CONFIG_SYSCTL"},
        ),
    )
}
DEFAULT_BASE = "6.12"
KUNIT_SUITES = ("dax_kmem_memmap",)
# Identity and dates of the imported base commit: fixed, so that every machine
# creates the same base-commit id and the series' base-commit line is stable.
BASE_IDENTITY = {
    "GIT_AUTHOR_NAME": "Debian kernel source",
    "GIT_AUTHOR_EMAIL": "debian-kernel@lists.debian.org",
    "GIT_COMMITTER_NAME": "Debian kernel source",
    "GIT_COMMITTER_EMAIL": "debian-kernel@lists.debian.org",
    "GIT_AUTHOR_DATE": "2025-11-14T12:56:00+00:00",
    "GIT_COMMITTER_DATE": "2025-11-14T12:56:00+00:00",
}
# Debian's codespell keeps its dictionary inside the Python package.
CODESPELL_DICTIONARY = "/usr/lib/python3/dist-packages/codespell_lib/data/dictionary.txt"
SERIES_IDENTITY = ("Memmap Kmem Developers", "memmap-kmem@lists.example.org")


class BuildError(Exception):
    """A step failed in a way the user can fix; the message says how."""


@dataclass(frozen=True)
class Layout:
    """Every path of a build, derived from the repository and the cache roots."""

    repo: Path
    cache: Path
    base: Base = BASES[DEFAULT_BASE]

    @property
    def base_tag(self) -> str:
        return f"base-{self.base.version}"

    @property
    def src(self) -> Path:
        return self.cache / "src" / f"linux-{self.base.version}"

    def build_dir(self, debug: bool, variant: str = "patched") -> Path:
        suffix = "-wrong" if variant == "wrong" else ""
        suffix += "-debug" if debug else ""
        return self.cache / "build" / f"linux-{self.base.version}{suffix}"

    @property
    def kunit_build_dir(self) -> Path:
        """kunit.py's own build directory: its kernel comes from drivers/dax/.kunitconfig."""
        return self.cache / "build" / f"kunit-{self.base.version}"

    @property
    def wrong_src(self) -> Path:
        return self.cache / "wrong" / f"linux-{self.base.version}"

    def wrong_patches(self) -> list[Path]:
        return sorted((self.repo / "tests" / "vm" / "wrong-kernel").glob("*.patch"))

    @property
    def images(self) -> Path:
        return self.cache / "images" / self.base.name

    @property
    def patch_dir(self) -> Path:
        return self.repo / "kernel-patch" / self.base.name

    @property
    def fragment(self) -> Path:
        return self.repo / "Kconfig.snippet"

    @property
    def debug_fragment(self) -> Path:
        return self.repo / "kbuild" / "debug.config"

    def series(self) -> list[Path]:
        series = self.patch_dir / "series"
        if not series.exists():
            return []
        names = [
            line.strip()
            for line in series.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        return [self.patch_dir / name for name in names]


def default_cache() -> Path:
    if os.environ.get("MEMMAP_KMEM_CACHE"):
        return Path(os.environ["MEMMAP_KMEM_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "memmap-kmem"


def run(
    cmd: list[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    capture: bool = False,
    quiet: bool = False,
) -> str:
    """Run cmd; capture returns its stdout, quiet shows its output only on failure."""
    full_env = dict(os.environ, **env) if env else None
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env=full_env,
        text=True,
        stdout=subprocess.PIPE if capture or quiet else None,
        stderr=subprocess.STDOUT if quiet else None,
    )
    if proc.returncode:
        if quiet:
            sys.stderr.write(proc.stdout)
        raise BuildError(f"'{' '.join(cmd)}' failed with exit status {proc.returncode}")
    return proc.stdout if capture else ""


def git(
    layout: Layout, *args: str, capture: bool = False, env: dict[str, str] | None = None
) -> str:
    return run(["git", "-C", str(layout.src), *args], capture=capture, env=env)


def source_tarball(layout: Layout) -> Path:
    """The base's linux-source tarball: installed from the host's apt sources, or
    downloaded from the base's suite with a private apt and unpacked in the cache."""
    base = layout.base
    if base.archive is None:
        tarball = Path("/usr/src") / f"{base.package}.tar.xz"
        if not tarball.exists():
            run(
                ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                 f"{base.package}={base.debian_version}"],
                env={"DEBIAN_FRONTEND": "noninteractive"},
            )  # fmt: skip
        return tarball
    deb = download_deb(layout, base.archive, f"{base.package}={base.debian_version}")
    root = deb.parent / "root"
    shutil.rmtree(root, ignore_errors=True)
    run(["dpkg-deb", "-x", str(deb), str(root)])
    return next(root.rglob(f"{base.package}.tar.xz"))


def ensure_source(layout: Layout) -> None:
    """Fetch the Debian source package if needed and import it as a git base."""
    if (layout.src / ".git").is_dir():
        return
    base = layout.base
    tarball = source_tarball(layout)
    staging = layout.src.with_name(layout.src.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    run(["tar", "-xJf", str(tarball), "-C", str(staging), "--strip-components=1"])
    if base.archive is not None:
        shutil.rmtree(tarball.parents[2])  # the unpacked .deb; the .deb stays cached
    # Debian's .gitignore ignores the whole top level; the import takes every file.
    env = dict(BASE_IDENTITY)
    for args in (
        ["init", "-q"],
        ["add", "-f", "-A", "."],
        ["commit", "-q", "-m", f"Linux {base.version} ({base.package})"],
        ["tag", layout.base_tag],
        ["config", "user.name", SERIES_IDENTITY[0]],
        ["config", "user.email", SERIES_IDENTITY[1]],
    ):
        run(["git", "-C", str(staging), *args], env=env)
    staging.rename(layout.src)


def require_clean_tree(layout: Layout) -> None:
    dirty = git(layout, "status", "--porcelain", "--untracked-files=no", capture=True)
    if dirty.strip():
        raise BuildError(
            f"{layout.src} has uncommitted changes: commit them on branch "
            f"{BRANCH} and run 'make export-series', or 'git -C {layout.src} "
            "stash' them"
        )


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def series_key(layout: Layout, patches_only: bool = False) -> str:
    """Digest of kernel-patch/: all of it, or only what git am applies (no cover letter)."""
    files = [p for p in layout.series() if not (patches_only and p.name.startswith("0000-"))]
    return digest(*(p.name.encode() + p.read_bytes() for p in files))


def checkout_series(layout: Layout, work_tree: bool = True) -> None:
    """Put branch memmap-kmem at base + kernel-patch/ unless it is there already, and check
    it out. work_tree=False moves only the branch and leaves the files as they are (HEAD
    detached where it was): check() then walks the series commit by commit from there, and
    a file touched twice on the way (to the tip, back to patch 1) would make kbuild rebuild
    everything that includes it."""
    key = series_key(layout)
    stamp = layout.src / ".git" / "memmap-kmem-series"
    if stamp.exists():
        recorded_key, _, recorded_head = stamp.read_text().strip().partition(" ")
        head = (
            git(layout, "rev-parse", "-q", "--verify", f"refs/heads/{BRANCH}", capture=True).strip()
            if branch_exists(layout)
            else ""
        )
        if recorded_key == key and recorded_head == head:
            if work_tree:
                git(layout, "checkout", "-q", BRANCH)
            return
    head = apply_series(layout)
    if not work_tree:
        git(layout, "checkout", "-q", "--detach")
        git(layout, "update-ref", f"refs/heads/{BRANCH}", head)
        set_cover_letter(layout)
        stamp.write_text(f"{key} {head}\n")
        return
    # Moving the tree straight from its current commit to the new one rewrites only the
    # files that differ, so kbuild rebuilds what the change touched, not the whole series.
    git(layout, "checkout", "-q", "-B", BRANCH, head)
    set_cover_letter(layout)
    stamp.write_text(f"{key} {head}\n")


@contextmanager
def scratch_worktree(tree: Path, suffix: str, start: str) -> Iterator[Path]:
    """A detached worktree of tree at start, next to it, removed afterwards (and any
    leftover of an interrupted run first)."""
    tree_git = ["git", "-C", str(tree)]
    scratch = tree.with_name(tree.name + suffix)
    run([*tree_git, "worktree", "prune"])
    if scratch.exists():
        run([*tree_git, "worktree", "remove", "--force", str(scratch)])
    run([*tree_git, "worktree", "add", "-q", "--detach", str(scratch), start])
    try:
        yield scratch
    finally:
        run([*tree_git, "worktree", "remove", "--force", str(scratch)])


def apply_series(layout: Layout) -> str:
    """git am the series onto the base in a scratch worktree; return the new tip."""
    patches = [p for p in layout.series() if not p.name.startswith("0000-")]
    with scratch_worktree(layout.src, ".am", layout.base_tag) as scratch:
        if patches:
            run(["git", "-C", str(scratch), "am", "-q", "--keep-cr",
                 *(str(p.resolve()) for p in patches)])  # fmt: skip
        return run(["git", "-C", str(scratch), "rev-parse", "HEAD"], capture=True).strip()


def branch_exists(layout: Layout) -> bool:
    return (
        subprocess.run(
            ["git", "-C", str(layout.src), "rev-parse", "-q", "--verify", f"refs/heads/{BRANCH}"],
            capture_output=True,
        ).returncode
        == 0
    )


def set_cover_letter(layout: Layout) -> None:
    """Restore the branch description (the cover letter text) from kernel-patch/."""
    cover = layout.patch_dir / "0000-cover-letter.patch"
    if cover.exists():
        description = cover_description(cover.read_text())
        git(layout, "config", f"branch.{BRANCH}.description", description)


def cover_description(cover: str) -> str:
    """The branch description that format-patch turned into this cover letter.

    Its first line is the subject; the body runs up to git's shortlog, which
    starts with "Author Name (N):".
    """
    subject = re.search(r"^Subject: \[PATCH[^\]]*\] (.*)$", cover, re.M)
    _, _, body = cover.partition("\n\n")
    body_lines = []
    for line in body.splitlines():
        if re.match(r"^\S.* \(\d+\):$", line):
            break
        body_lines.append(line)
    text = (subject.group(1) if subject else "") + "\n\n" + "\n".join(body_lines)
    return text.strip() + "\n"


def configure(
    layout: Layout, out: Path, debug: bool, strict: bool, tree: Path | None = None
) -> None:
    """Configure tree (default: the cache's source tree) into out."""
    src = tree or layout.src
    out.mkdir(parents=True, exist_ok=True)
    make = ["make", "-s", "-C", str(src), f"O={out}", "ARCH=x86_64"]
    run([*make, "tinyconfig"], quiet=True)
    fragments = [layout.fragment] + ([layout.debug_fragment] if debug else [])
    run(
        [
            str(src / "scripts/kconfig/merge_config.sh"),
            "-m",
            "-O",
            str(out),
            str(out / ".config"),
            *map(str, fragments),
        ],
        quiet=True,
    )
    run([*make, "olddefconfig"], quiet=True)
    if strict:
        dropped = dropped_lines(fragments, out / ".config", layout.base.kconfig_renames)
        if dropped:
            raise BuildError(
                "olddefconfig dropped these fragment lines (a missing "
                "dependency?): " + "; ".join(dropped)
            )


def dropped_lines(
    fragments: list[Path], config: Path, renames: dict[str, str] | None = None
) -> list[str]:
    """Fragment lines missing from config; a later fragment's line for a symbol replaces an
    earlier one's, as merge_config.sh does (the debug variant turns kmem into a module).
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


def make_bzimage(layout: Layout, out: Path, tree: Path | None = None) -> Path:
    run(
        [
            "make",
            "-s",
            "-C",
            str(tree or layout.src),
            f"O={out}",
            "ARCH=x86_64",
            f"-j{os.cpu_count() or 1}",
            "bzImage",
        ]
    )
    return out / "arch/x86/boot/bzImage"


def install_modules(layout: Layout, out: Path, root: Path, tree: Path | None = None) -> None:
    """Build the modules of a CONFIG_MODULES=y kernel and install them under root, where
    the VM runner finds them (root/lib/modules/<release>/, depmod done)."""
    if "CONFIG_MODULES=y" not in (out / ".config").read_text().splitlines():
        return
    make = ["make", "-s", "-C", str(tree or layout.src), f"O={out}", "ARCH=x86_64"]
    run([*make, f"-j{os.cpu_count() or 1}", "modules"])
    run([*make, f"INSTALL_MOD_PATH={root}", "modules_install"], quiet=True)
    # The build and source links point back into the cache's trees: not part of the image.
    for link in root.glob("lib/modules/*/*"):
        if link.is_symlink():
            link.unlink()


def image_key(layout: Layout, variant: str, debug: bool) -> str:
    parts = [layout.base.version.encode(), variant.encode(), layout.fragment.read_bytes()]
    if debug:
        parts.append(layout.debug_fragment.read_bytes())
    if variant in ("patched", "wrong"):
        parts.append(series_key(layout, patches_only=True).encode())
    if variant == "wrong":
        parts += [p.name.encode() + p.read_bytes() for p in layout.wrong_patches()]
    return digest(*parts)


def prepare_wrong_tree(layout: Layout) -> Path:
    """The "wrong" variant's tree: the series, then tests/vm/wrong-kernel/*.patch, applied
    with git am in a shared clone of the cache's source tree, detached.

    The clone is a tree of its own (layout.wrong_src), so the build never checks anything
    out in layout.src and the patch can never reach branch memmap-kmem, where `make
    export-series` would pick it up. Re-running moves the clone from its last tip to the new
    one, which rewrites only the files that differ (an incremental kbuild)."""
    wrong = layout.wrong_patches()
    if not wrong:
        raise BuildError(f"no patches in {layout.repo / 'tests/vm/wrong-kernel'}")
    if layout.base.name != DEFAULT_BASE:
        raise BuildError(f"the wrong kernel's patch is written for the {DEFAULT_BASE} series")
    tree = layout.wrong_src
    if not (tree / ".git").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        tree.parent.mkdir(parents=True, exist_ok=True)
        run(["git", "clone", "-q", "--shared", "--no-checkout", str(layout.src), str(tree)])
        for key, value in (("user.name", SERIES_IDENTITY[0]), ("user.email", SERIES_IDENTITY[1])):
            run(["git", "-C", str(tree), "config", key, value])
    tree_git = ["git", "-C", str(tree)]
    # Tags of a newer source import; harmless when there is nothing new.
    run([*tree_git, "fetch", "-q", "--tags", str(layout.src)])
    with scratch_worktree(tree, ".am", layout.base_tag) as scratch:
        patches = [p for p in layout.series() if not p.name.startswith("0000-")] + wrong
        run(["git", "-C", str(scratch), "am", "-q", "--keep-cr",
             *(str(p.resolve()) for p in patches)])  # fmt: skip
        head = run(["git", "-C", str(scratch), "rev-parse", "HEAD"], capture=True).strip()
    run([*tree_git, "checkout", "-q", "--force", "--detach", head])
    return tree


def build(layout: Layout, variant: str, debug: bool) -> Path:
    name = variant + ("-debug" if debug else "")
    key = image_key(layout, variant, debug)
    final = layout.images / f"{name}-{key}"
    link = layout.images / name
    if not (final / "bzImage").exists():
        ensure_source(layout)
        tree = layout.src
        if variant == "wrong":
            tree = prepare_wrong_tree(layout)
        else:
            require_clean_tree(layout)
            if variant == "patched":
                checkout_series(layout)
            else:
                git(layout, "checkout", "-q", "--detach", layout.base_tag)
        out = layout.build_dir(debug, variant)
        configure(layout, out, debug, strict=variant != "stock", tree=tree)
        image = make_bzimage(layout, out, tree)
        staging = final.with_name(final.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(image, staging / "bzImage")
        shutil.copy2(out / ".config", staging / "config")
        install_modules(layout, out, staging / "modroot", tree)
        # What the VM tests need of this tree, which later builds check out anew:
        # modules.builtin for daxctl, the series' kselftest, upstream's dax and memory
        # hotplug selftests, and their KTAP helpers.
        for name in ("modules.builtin", "modules.builtin.modinfo"):
            if (out / name).exists():
                shutil.copy2(out / name, staging / name)
        for sub in ("dax", "memory-hotplug", "kselftest"):
            tests = tree / "tools/testing/selftests" / sub
            if tests.is_dir():
                shutil.copytree(tests, staging / "selftests" / sub)
        staging.rename(final)
    tmp_link = link.with_name(link.name + ".new")
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(final.name)
    tmp_link.replace(link)
    return link / "bzImage"


def export(layout: Layout) -> None:
    """Regenerate kernel-patch/ from branch memmap-kmem (never hand-edit patches)."""
    require_clean_tree(layout)
    # The cover letter carries the date of the newest patch, not of the export.
    tip_date = git(layout, "log", "-1", "--format=%aD", BRANCH, capture=True).strip()
    with tempfile.TemporaryDirectory() as tmp:
        git(
            layout,
            "format-patch",
            "-q",
            "--cover-letter",
            "--cover-from-description=subject",
            "--thread=shallow",
            f"--base={layout.base_tag}",
            "-o",
            tmp,
            f"{layout.base_tag}..{BRANCH}",
        )
        layout.patch_dir.mkdir(exist_ok=True)
        for old in layout.patch_dir.glob("*.patch"):
            old.unlink()
        names = sorted(p.name for p in Path(tmp).glob("*.patch"))
        for name in names:
            # Message-Id and the From line's date differ on every run: drop them
            # so that an unchanged branch exports to byte-identical files.
            text = (Path(tmp) / name).read_text()
            text = re.sub(
                r"^From [0-9a-f]{40} .*$",
                "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001",
                text,
                count=1,
                flags=re.M,
            )
            text = re.sub(r"^(Message-Id|In-Reply-To|References): .*\n", "", text, flags=re.M)
            if name.startswith("0000-"):
                text = re.sub(r"^Date: .*$", f"Date: {tip_date}", text, count=1, flags=re.M)
            (layout.patch_dir / name).write_text(text)
        (layout.patch_dir / "series").write_text("\n".join(names) + "\n")
    key = series_key(layout)
    head = git(layout, "rev-parse", BRANCH, capture=True).strip()
    (layout.src / ".git" / "memmap-kmem-series").write_text(f"{key} {head}\n")
    print(f"exported {len(names)} files to {layout.patch_dir}")


def check(layout: Layout) -> int:
    """Fresh git am, checkpatch --strict --codespell, and a build after each patch."""
    ensure_source(layout)
    require_clean_tree(layout)
    checkout_series(layout, work_tree=False)
    patches = [p for p in layout.series() if not p.name.startswith("0000-")]
    if not patches:
        raise BuildError("kernel-patch/series lists no patches")
    failures = 0
    for patch in patches:
        proc = subprocess.run(
            [
                str(layout.src / "scripts/checkpatch.pl"),
                "--strict",
                "--codespell",
                "--codespellfile",
                CODESPELL_DICTIONARY,
                "--terse",
                "--show-types",
                # The base is a tarball import without history: commit ids the
                # messages cite (checked by hand) are unknown to this tree.
                "--ignore",
                "UNKNOWN_COMMIT_ID",
                str(patch),
            ],
            cwd=layout.src,
            text=True,
            capture_output=True,
            # scripts/spdxcheck.py needs Debian's python3 with python3-ply and
            # python3-git, not whichever python3 comes first on PATH.
            env=dict(os.environ, PATH="/usr/bin:" + os.environ.get("PATH", "")),
        )
        if "Traceback" in proc.stderr or (proc.returncode and not proc.stdout.strip()):
            raise BuildError(f"checkpatch.pl failed on {patch.name}: {proc.stderr.strip()}")
        report = [line for line in proc.stdout.splitlines() if ": " in line]
        bad = [line for line in report if ": ERROR:" in line or ": WARNING:" in line]
        checks = [line for line in report if ": CHECK:" in line]
        print(f"checkpatch {patch.name}: {len(bad)} errors/warnings, {len(checks)} checks")
        for line in bad + checks:
            print("   ", line)
        failures += len(bad)
    commits = git(
        layout, "rev-list", "--reverse", f"{layout.base_tag}..{BRANCH}", capture=True
    ).split()
    out = layout.build_dir(debug=False)
    for number, commit in enumerate(commits, 1):
        git(layout, "checkout", "-q", "--detach", commit)
        subject = git(layout, "log", "-1", "--format=%s", capture=True).strip()
        print(f"build after patch {number}/{len(commits)}: {subject}", flush=True)
        configure(layout, out, debug=False, strict=False)
        make_bzimage(layout, out)
    git(layout, "checkout", "-q", BRANCH)
    configure(layout, out, debug=False, strict=True)
    print(f"series applies to its base {layout.base.version} and builds after each patch")
    if layout.base.newest and not check_newest_base(layout, layout.base.newest, patches):
        failures += 1
    if failures:
        print(f"check-series: {failures} problems (checkpatch, newest base)", file=sys.stderr)
        return 1
    print(f"series OK: {len(patches)} patches apply, are checkpatch-clean and build")
    return 0


KUNIT_TOOL = "tools/testing/kunit/kunit.py"


@dataclass
class KunitReport:
    """Results of KUnit suites as kunit.py reports them (--json), keyed "suite.case"; a
    parameterised case rolls its parameters up into one result, failed if any failed."""

    cases: dict[str, str]
    parameters: int
    problems: list[str]


def kunit_json_results(text: str, suites: tuple[str, ...]) -> KunitReport:
    """Read the KernelCI JSON of kunit.py (run, exec or parse with --json): a group per
    suite, a case per test, and a sub-group per parameterised test."""
    top = json.loads(text)
    cases: dict[str, str] = {}
    parameters = 0
    for suite in top.get("sub_groups", []):
        for case in suite.get("test_cases", []):
            cases[f"{suite['name']}.{case['name']}"] = case["status"]
        for group in suite.get("sub_groups", []):
            statuses = [param["status"] for param in group.get("test_cases", [])]
            parameters += len(statuses)
            worst = next((s for s in statuses if s != "PASS"), "PASS" if statuses else "EMPTY")
            cases[f"{suite['name']}.{group['name']}"] = worst
    problems = [
        f"suite {name} did not run"
        for name in suites
        if not any(case.startswith(name + ".") for case in cases)
    ]
    problems += [f"{case}: {status}" for case, status in cases.items() if status != "PASS"]
    return KunitReport(cases, parameters, problems)


# kunit.py since 6.13 starts QEMU with "-accel kvm -accel hvf -accel tcg". Where /dev/kvm
# opens but runs no guest (nested or paravirtual KVM, as on this project's CI machines), QEMU
# takes KVM and the guest never prints a line. The suite runs in about a second under TCG, so
# kunit.py gets a private mount namespace whose /dev/kvm is /dev/null: QEMU falls back to TCG.
MASK_KVM = 'mount --bind /dev/null /dev/kvm && exec "$@"'


def mask_kvm() -> bool:
    """Hide /dev/kvm from kunit.py's QEMU, unless MEMMAP_KMEM_VM_ACCEL=kvm asks for KVM
    (the VM tests' setting) or we are not root (no mount namespace to make)."""
    wanted = os.environ.get("MEMMAP_KMEM_VM_ACCEL", "auto")
    return wanted != "kvm" and os.path.exists("/dev/kvm") and os.geteuid() == 0


def kunit_tool(layout: Layout, args: list[str], json_out: Path) -> str:
    """Run the base's own kunit.py with --json; its JSON (empty when it wrote none)."""
    json_out.unlink(missing_ok=True)
    cmd = [sys.executable, str(layout.src / KUNIT_TOOL), *args, f"--json={json_out}"]
    if args[0] == "run" and mask_kvm():  # only run starts QEMU
        cmd = ["unshare", "--mount", "--", "sh", "-c", MASK_KVM, "sh", *cmd]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=layout.src, check=False)
    return json_out.read_text() if json_out.exists() else "{}"


def report_kunit(what: str, report: KunitReport) -> bool:
    passed = sum(1 for status in report.cases.values() if status == "PASS")
    print(
        f"KUnit ({what}): {passed}/{len(report.cases)} cases passed "
        f"({report.parameters} parameters)"
    )
    for problem in report.problems:
        print(f"KUnit ({what}): {problem}", file=sys.stderr)
    return not report.problems


def kunit(
    layout: Layout, kernel: Path | None, log: Path | None, save_log: Path | None, timeout: int
) -> int:
    """kunit.py run as the series' commit message gives it, then the patched build (the
    VM tests' kernel, Kconfig.snippet) booted and its log parsed by kunit.py."""
    ensure_source(layout)
    log = log.resolve() if log else None  # kunit.py runs in the kernel tree
    with tempfile.TemporaryDirectory(prefix="kunit-") as tmp:
        out = Path(tmp) / "kunit.json"
        ok = True
        if log is None:
            image = kernel or build(layout, "patched", False)
            require_clean_tree(layout)
            checkout_series(layout)
            run_args = ["run", "--arch=x86_64", "--kunitconfig", "drivers/dax"]
            run_args += ["--build_dir", str(layout.kunit_build_dir), "--timeout", str(timeout)]
            run = kunit_tool(layout, run_args, out)
            ok = report_kunit("kunit.py run", kunit_json_results(run, KUNIT_SUITES))
            log = Path(tmp) / "boot.log"
            log.write_text(boot_for_kunit(image, timeout))
            if save_log:
                shutil.copyfile(log, save_log)
        parsed = kunit_tool(layout, ["parse", str(log)], out)
        parsed_report = kunit_json_results(parsed, KUNIT_SUITES)
        ok = report_kunit(f"{log.name} via kunit.py parse", parsed_report) and ok
    return 0 if ok else 1


def boot_for_kunit(kernel: Path, timeout: int) -> str:
    """Boot the kernel without a root file system and return its log.

    Built-in KUnit suites run before the root file system is mounted; the
    kernel then panics for want of a root, and panic=-1 with -no-reboot makes
    QEMU exit, so the boot ends on its own in a few seconds.
    """
    cmd = [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "512M",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1 kunit.enable=1",
    ]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, errors="replace", timeout=timeout
        )
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else ""
        return out + f"\nkbuild: QEMU did not exit within {timeout} s\n"
    return proc.stdout


def private_apt(layout: Layout, suite: Suite) -> list[str]:
    """apt-get with a configuration of its own under the cache: one suite, its own lists and
    status, so that the host's sources and installed packages are never touched."""
    root = layout.cache / "apt" / suite.name
    for sub in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "var/lib/apt/lists/partial",
                "var/cache/apt/archives/partial", "var/lib/dpkg"):  # fmt: skip
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "var/lib/dpkg/status").touch()
    (root / "etc/apt/sources.list").write_text(
        f"deb [signed-by={DEBIAN_KEYRING}] {suite.uri} {suite.name} main\n"
    )
    return [
        "apt-get",
        "-q",
        "-o", f"Dir={root}",
        "-o", "Dir::Etc::TrustedParts=/etc/apt/trusted.gpg.d",
        "-o", f"Dir::State::status={root}/var/lib/dpkg/status",
        "-o", "APT::Architecture=amd64",
    ]  # fmt: skip


def download_deb(layout: Layout, suite: Suite, package: str) -> Path:
    """apt-get download package (name or name=version) from suite into the cache; the
    .deb of a pinned version is reused, an unpinned name fetches the suite's newest."""
    work = layout.cache / "apt" / suite.name / "download"
    name, _, version = package.partition("=")
    if version:
        # apt names the file with the version as it is ("~" and all); an epoch's ":" is
        # written %3a.
        cached = sorted(work.glob(f"{name}_{glob.escape(version.replace(':', '%3a'))}_*.deb"))
        if cached:
            return cached[0]
    apt = private_apt(layout, suite)
    run([*apt, "update"], quiet=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run([*apt, "download", package], cwd=work, quiet=True)
    debs = sorted(work.glob(f"{name}_*.deb"))
    if not debs:
        raise BuildError(f"apt-get download {package} from {suite.name} left no .deb in {work}")
    return debs[0]


def newest_base_files(layout: Layout, suite: Suite, paths: list[str]) -> tuple[str, Path]:
    """Download the newest package of the base's series in suite and extract the given paths
    into a git repository of their own; return its version and the repository."""
    package = layout.base.package
    deb = download_deb(layout, suite, package)
    version = deb.name.split("_")[1].replace("%7e", "~")
    repo = layout.cache / "src" / f"newest-{version}"
    if (repo / ".git").is_dir():
        return version, repo
    shutil.rmtree(repo, ignore_errors=True)
    deb_root = deb.parent / "root"
    run(["dpkg-deb", "-x", str(deb), str(deb_root)])
    tarball = next(deb_root.rglob(f"{package}.tar.xz"))
    repo.mkdir(parents=True)
    top = f"{package}/"
    run(["tar", "-xJf", str(tarball), "-C", str(repo), "--strip-components=1",
         "--ignore-failed-read", *(top + p for p in paths)])  # fmt: skip
    shutil.rmtree(deb_root)
    env = dict(BASE_IDENTITY)
    for args in (["init", "-q"], ["add", "-f", "-A", "."], ["commit", "-q", "-m", version]):
        run(["git", "-C", str(repo), *args], env=env)
    return version, repo


def check_newest_base(layout: Layout, suite: Suite, patches: list[Path]) -> bool:
    """git am the series onto the files it touches, taken from the suite's newest package
    of the base's series (for 6.12: the newest 6.12.y that Debian ships)."""
    touched = touched_paths(patches)
    in_base = set(
        git(layout, "ls-tree", "-r", "--name-only", layout.base_tag, capture=True).split()
    )
    version, repo = newest_base_files(layout, suite, sorted(touched & in_base))
    identity = {k: v for k, v in BASE_IDENTITY.items() if not k.endswith("_DATE")}
    proc = subprocess.run(
        ["git", "-C", str(repo), "am", "-q", "--keep-cr", *(str(p.resolve()) for p in patches)],
        capture_output=True,
        text=True,
        env=dict(os.environ, **identity),
    )
    if proc.returncode:
        subprocess.run(["git", "-C", str(repo), "am", "--abort"], capture_output=True)
    # Back to the imported base, ready for the next check.
    root = run(["git", "-C", str(repo), "rev-list", "--max-parents=0", "HEAD"], capture=True)
    run(["git", "-C", str(repo), "reset", "-q", "--hard", root.strip()])
    status = "applies" if proc.returncode == 0 else "does NOT apply"
    print(f"series {status} with git am to Debian {suite.name} {version}")
    if proc.returncode:
        print(proc.stdout + proc.stderr, file=sys.stderr)
    return proc.returncode == 0


DISTRO_CONFIG = "config.amd64_none_amd64.xz"
WARNING_LINE = re.compile(r"^(?P<file>[^:\s]+):\d+:\d+: warning: (?P<text>.*)$")


def distro_config(layout: Layout) -> Path:
    """Debian's own amd64 config of this kernel, from its linux-config package (downloaded
    and unpacked into the cache: nothing is installed on the host)."""
    base = layout.base
    target = layout.cache / "debian" / f"config-{base.debian_version}"
    if target.exists():
        return target
    package = f"{base.config_package}={base.debian_version}"
    work = layout.cache / "debian" / "download"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if base.archive is None:
        run(["apt-get", "download", "-q", package], cwd=work)
    else:
        shutil.copy2(download_deb(layout, base.archive, package), work)
    debs = sorted(work.glob("*.deb"))
    if not debs:
        raise BuildError(f"apt-get download {package} left no .deb in {work}")
    run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")])
    packed = next((work / "root").rglob(DISTRO_CONFIG), None)
    if packed is None:
        raise BuildError(f"{debs[0].name} has no {DISTRO_CONFIG}")
    text = subprocess.run(["xz", "-dc", str(packed)], check=True, capture_output=True).stdout
    target.write_bytes(text)
    return target


def distro_targets(layout: Layout) -> list[str]:
    """The x86 objects the series touches and the objects of drivers/dax/."""
    changed = git(
        layout, "diff", "--name-only", f"{layout.base_tag}..{BRANCH}", capture=True
    ).split()
    # Other arches need cross compilers; Debian's config enables no KUnit test.
    objects = [
        f[:-2] + ".o"
        for f in changed
        if f.endswith(".c")
        and not f.endswith("_test.c")
        and not f.startswith(("arch/powerpc/", "drivers/s390/"))
    ]
    # drivers/dax/ builds every object of the dax modules as Debian configures them.
    return [*sorted(set(objects)), "drivers/dax/"]


def distro_warnings(layout: Layout, tree: Path, out: Path, targets: list[str]) -> list[str]:
    """W=1 warnings of the targets, built in tree with Debian's config (out is kept, so the
    second build is incremental)."""
    make = ["make", "-s", "-C", str(tree), f"O={out}", "ARCH=x86_64"]
    shutil.copy2(distro_config(layout), out / ".config")
    run([*make, "olddefconfig"], quiet=True)
    # Debian signs modules with keys that are not in the source package.
    for option in ("MODULE_SIG_KEY", "SYSTEM_TRUSTED_KEYS", "SYSTEM_REVOCATION_KEYS"):
        run([str(tree / "scripts/config"), "--file", str(out / ".config"),
             "--set-str", option, ""])  # fmt: skip
    run([str(tree / "scripts/config"), "--file", str(out / ".config"), "-d", "MODULE_SIG_ALL"])
    run([*make, "olddefconfig"], quiet=True)
    if "CONFIG_DEV_DAX_KMEM=m" in (out / ".config").read_text().splitlines():
        targets = [*targets, "drivers/dax/kmem.ko"]  # a distribution's kmem: a module
    # Without vmlinux, modpost cannot resolve the module's symbols: warn, do not fail.
    proc = subprocess.run(
        [*make, f"-j{os.cpu_count() or 1}", "W=1", "KBUILD_MODPOST_WARN=1", *targets],
        text=True,
        capture_output=True,
    )
    if proc.returncode:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise BuildError(f"W=1 build of {' '.join(targets)} under Debian's config failed")
    found = []
    for line in proc.stderr.splitlines():
        match = WARNING_LINE.match(line)
        if match:
            found.append(f"{Path(match['file']).name}: {match['text']}")
    return sorted(set(found))


def check_distro(layout: Layout) -> int:
    """The series under Debian's 6.12 amd64 config: the touched objects and the dax modules
    build with W=1 and show no warning that the unpatched base does not show."""
    ensure_source(layout)
    require_clean_tree(layout)
    checkout_series(layout)
    targets = distro_targets(layout)
    out = layout.cache / "build" / f"linux-{layout.base.version}-distro"
    out.mkdir(parents=True, exist_ok=True)
    with scratch_worktree(layout.src, ".distro", layout.base_tag) as scratch:
        before = distro_warnings(layout, scratch, out, targets)
        run(["git", "-C", str(scratch), "checkout", "-q", "--detach", BRANCH])
        after = distro_warnings(layout, scratch, out, targets)
    new = [w for w in after if w not in before]
    print(f"Debian config: built {len(targets)} targets with W=1: {' '.join(targets)}")
    print(f"warnings: {len(before)} before the series, {len(after)} after, {len(new)} new")
    for warning in new:
        print("   ", warning)
    return 1 if new else 0


def touched_paths(patches: list[Path]) -> set[str]:
    paths: set[str] = set()
    for patch in patches:
        paths.update(re.findall(r"^diff --git a/(\S+) ", patch.read_text(), re.M))
    return paths


def range_diff(layouts: list[Layout]) -> str:
    """git range-diff of the committed series of two bases.

    Both series go into one scratch repository that holds, per base, only the base's files
    the series touch (a root commit) with that series applied by git am on top."""
    scratch = layouts[0].cache / "range-diff"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    scratch_git = ["git", "-C", str(scratch)]
    run([*scratch_git, "init", "-q"])
    # The patches keep their authors and dates; a fixed committer makes the commit ids,
    # and so the output, the same on every run.
    committer = {k: v for k, v in BASE_IDENTITY.items() if k.startswith("GIT_COMMITTER_")}
    ranges = []
    for layout in layouts:
        ensure_source(layout)
        patches = [p for p in layout.series() if not p.name.startswith("0000-")]
        in_base = set(
            git(layout, "ls-tree", "-r", "--name-only", layout.base_tag, capture=True).split()
        )
        files = sorted(touched_paths(patches) & in_base)
        run([*scratch_git, "checkout", "-q", "--orphan", layout.base.name])
        run([*scratch_git, "rm", "-rfq", "--ignore-unmatch", "."])
        archive = subprocess.run(
            ["git", "-C", str(layout.src), "archive", layout.base_tag, *files],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        run([*scratch_git, "add", "-f", "-A", "."])
        run([*scratch_git, "commit", "-q", "-m", layout.base_tag], env=BASE_IDENTITY)
        run([*scratch_git, "am", "-q", "--keep-cr", *(str(p.resolve()) for p in patches)],
            env=committer)  # fmt: skip
        ranges.append(f"{layout.base.name}~{len(patches)}..{layout.base.name}")
    return run(
        [*scratch_git, "range-diff", "--no-color", "--creation-factor=95", *ranges],
        capture=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument(
        "--base",
        choices=sorted(BASES),
        default=DEFAULT_BASE,
        help=f"kernel base (default {DEFAULT_BASE}): kernel-patch/<base>/, its own cache trees",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    build_p = sub.add_parser("build", help="build a bzImage and print its path")
    build_p.add_argument(
        "--variant",
        choices=("stock", "patched", "wrong"),
        default="patched",
        help="wrong: the series plus tests/vm/wrong-kernel/*.patch (a test-only kernel)",
    )
    build_p.add_argument("--debug", action="store_true", help="KASAN, lockdep, kmemleak")
    sub.add_parser("export", help="write branch memmap-kmem to kernel-patch/<base>/")
    sub.add_parser("check", help="git am, checkpatch and build each patch")
    sub.add_parser("check-config", help="fail if olddefconfig drops a fragment line")
    sub.add_parser("check-distro", help="W=1 build of the touched files under Debian's config")
    sub.add_parser("prepare", help="import the source and apply the series")
    kunit_p = sub.add_parser("kunit", help="the KUnit suite through kunit.py: run, then a boot")
    kunit_p.add_argument("--kernel", type=Path, help="bzImage (default: the patched build)")
    kunit_p.add_argument("--log", type=Path, help="only parse this saved boot log with kunit.py")
    kunit_p.add_argument("--save-log", type=Path, help="write the boot log here")
    kunit_p.add_argument("--timeout", type=int, default=300)
    diff_p = sub.add_parser("range-diff", help="git range-diff of the series of two bases")
    diff_p.add_argument("--output", type=Path, help="write it here instead of stdout")
    args = parser.parse_args(argv)
    cache = args.cache or default_cache()
    layout = Layout(repo=args.repo, cache=cache, base=BASES[args.base])
    try:
        if args.command == "build":
            print(build(layout, args.variant, args.debug))
        elif args.command == "export":
            export(layout)
        elif args.command == "check":
            return check(layout)
        elif args.command == "prepare":
            ensure_source(layout)
            require_clean_tree(layout)
            checkout_series(layout)
            print(layout.src)
        elif args.command == "check-distro":
            return check_distro(layout)
        elif args.command == "range-diff":
            text = range_diff([Layout(args.repo, cache, base) for base in BASES.values()])
            if args.output:
                args.output.write_text(text)
            else:
                sys.stdout.write(text)
        elif args.command == "check-config":
            ensure_source(layout)
            require_clean_tree(layout)
            checkout_series(layout)
            with tempfile.TemporaryDirectory() as tmp:
                configure(layout, Path(tmp), debug=False, strict=True)
            print("Kconfig.snippet: every line survives olddefconfig")
        elif args.command == "kunit":
            return kunit(layout, args.kernel, args.log, args.save_log, args.timeout)
    except BuildError as err:
        print(f"kbuild: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
