# SPDX-License-Identifier: GPL-2.0
"""What a maintainer checks of a series: checkpatch, git am and a build after every patch,
the series on the newest Debian kernel of the stream, the config fragment, and the build
under Debian's own config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from .bases import FLAVOURS, Suite
from .build import build, image_key
from .config import configure
from .debian import distro_config
from .layout import BRANCH, Layout
from .proc import BuildError, digest, git, kmake, run, scratch_worktree
from .series import checkout_series, series_key, touched_paths
from .source import BASE_IDENTITY, ensure_source, newest_base_files

# Debian's codespell keeps its dictionary inside the Python package.
CODESPELL_DICTIONARY = "/usr/lib/python3/dist-packages/codespell_lib/data/dictionary.txt"
WARNING_LINE = re.compile(r"^(?P<file>[^:\s]+):\d+:\d+: warning: (?P<text>.*)$")


def checkpatch(layout: Layout, patch: Path, tree: Path | None = None) -> list[str]:
    """checkpatch.pl --strict --codespell of one patch (with the checkpatch of tree, by
    default the base's): its errors and warnings (printed with its checks)."""
    tree = tree or layout.src
    proc = subprocess.run(
        [str(tree / "scripts/checkpatch.pl"), "--strict", "--codespell",
         "--codespellfile", CODESPELL_DICTIONARY, "--terse", "--show-types",
         # The base is a tarball import without history: commit ids the messages cite
         # (checked by hand) are unknown to this tree.
         "--ignore", "UNKNOWN_COMMIT_ID",
         # New files under drivers/dax/ and tools/testing/selftests/dax/ are covered by the
         # DAX entry (the latter since the series' MAINTAINERS patch); checkpatch asks on
         # every added file whether MAINTAINERS needs updating, whatever it already covers.
         "--ignore", "FILE_PATH_CHANGES", str(patch)],
        cwd=tree,
        text=True,
        capture_output=True,
        # scripts/spdxcheck.py needs Debian's python3 with python3-ply and python3-git,
        # not whichever python3 comes first on PATH.
        env=dict(os.environ, PATH="/usr/bin:" + os.environ.get("PATH", "")),
    )  # fmt: skip
    if "Traceback" in proc.stderr or (proc.returncode and not proc.stdout.strip()):
        raise BuildError(f"checkpatch.pl failed on {patch.name}: {proc.stderr.strip()}")
    report = [line for line in proc.stdout.splitlines() if ": " in line]
    bad = [line for line in report if ": ERROR:" in line or ": WARNING:" in line]
    checks = [line for line in report if ": CHECK:" in line]
    print(f"checkpatch {patch.name}: {len(bad)} errors/warnings, {len(checks)} checks")
    for line in bad + checks:
        print("   ", line)
    return bad


def series_objects(patches: list[Path], built: Path) -> list[str]:
    """What each patch must build: the x86 objects of every C file the series touches that
    the config builds (an object of the base build in built), and drivers/dax/ whole (the
    series adds files there). Touching the same objects after every patch is what catches a
    patch that breaks a caller which a later patch fixes; the tip then builds whole."""
    objects = sorted(
        path[:-2] + ".o"
        for path in touched_paths(patches)
        if path.endswith(".c") and (built / (path[:-2] + ".o")).exists()
    )
    return [obj for obj in objects if not obj.startswith("drivers/dax/")] + ["drivers/dax/"]


def check_key(layout: Layout) -> str:
    """A passed per-patch build is reused for the same series, base, config and checker."""
    checker = Path(__file__).read_bytes()
    return digest(series_key(layout, patches_only=True).encode(),
                  image_key(layout, FLAVOURS["patched"]).encode(), checker)  # fmt: skip


def build_each_patch(layout: Layout) -> None:
    """Configure and build the series' objects after each patch, on top of the base build
    (the stock image's build directory, so only what a patch changes is compiled)."""
    patched = FLAVOURS["patched"]
    build(layout, FLAVOURS["stock"])  # the base build the objects are compared against
    stamp = layout.checked / f"{layout.pin.name}-{check_key(layout)}"
    if stamp.exists():
        print(f"each patch built before for this series and base ({stamp.name}): not again")
        return
    checkout_series(layout, work_tree=False)
    out = layout.build_dir(patched)
    objects = series_objects(layout.patches(), out)
    commits = git(
        layout.src, "rev-list", "--reverse", f"{layout.base_tag}..{BRANCH}", capture=True
    ).split()
    for number, commit in enumerate(commits, 1):
        git(layout.src, "checkout", "-q", "--detach", commit)
        subject = git(layout.src, "log", "-1", "--format=%s", capture=True).strip()
        print(f"build after patch {number}/{len(commits)}: {subject}: {' '.join(objects)}",
              flush=True)  # fmt: skip
        configure(layout, patched, layout.src, out, strict=False)
        kmake(layout.src, out, *objects)
    git(layout.src, "checkout", "-q", BRANCH)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(f"{' '.join(commits)}\n")


def check_series(layout: Layout) -> int:
    """checkpatch --strict --codespell, git am onto the base, the series' objects built after
    each patch and the whole kernel at the tip, git am onto the newest kernel of the stream."""
    ensure_source(layout)
    patches = layout.patches()
    if not patches:
        raise BuildError(f"{layout.patch_dir}/series lists no patches")
    failures = sum(len(checkpatch(layout, patch)) for patch in patches)
    build_each_patch(layout)
    print(f"whole kernel at the tip: {build(layout, FLAVOURS['patched'])}")
    print(f"series applies to its base {layout.pin.version} and builds after each patch")
    newest = layout.pin.base.newest
    if newest and not check_newest_base(layout, newest, patches):
        failures += 1
    if failures:
        print(f"check-series: {failures} problems (checkpatch, newest base)", file=sys.stderr)
        return 1
    print(f"series OK: {len(patches)} patches apply, are checkpatch-clean and build")
    return 0


def check_newest_base(layout: Layout, newest: Suite, patches: list[Path]) -> bool:
    """git am the series onto the files it touches, taken from the suite's newest package
    of the base's stream (for 6.12: the newest 6.12.y that Debian ships)."""
    in_base = set(
        git(layout.src, "ls-tree", "-r", "--name-only", layout.base_tag, capture=True).split()
    )
    version, repo = newest_base_files(layout, newest, sorted(touched_paths(patches) & in_base))
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
    root = git(repo, "rev-list", "--max-parents=0", "HEAD", capture=True)
    git(repo, "reset", "-q", "--hard", root.strip())
    status = "applies" if proc.returncode == 0 else "does NOT apply"
    print(f"series {status} with git am to Debian {newest.name} {version}")
    if proc.returncode:
        print(proc.stdout + proc.stderr, file=sys.stderr)
    return proc.returncode == 0


def check_config(layout: Layout) -> int:
    """Fail when olddefconfig drops a line of Kconfig.snippet on the series' tree."""
    checkout_series(layout)
    with tempfile.TemporaryDirectory() as tmp:
        configure(layout, FLAVOURS["patched"], layout.src, Path(tmp), strict=True)
    print("Kconfig.snippet: every line survives olddefconfig")
    return 0


def distro_targets(layout: Layout) -> list[str]:
    """The x86 objects the series touches and the objects of drivers/dax/."""
    changed = git(
        layout.src, "diff", "--name-only", f"{layout.base_tag}..{BRANCH}", capture=True
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


def distro_warnings(config: Path, tree: Path, out: Path, targets: list[str]) -> list[str]:
    """W=1 warnings of the targets, built in tree with Debian's config (out is kept, so the
    second build is incremental)."""
    (out / ".config").write_bytes(config.read_bytes())
    kmake(tree, out, "olddefconfig", jobs=False, quiet=True)
    # Debian signs modules with keys that are not in the source package.
    for option in ("MODULE_SIG_KEY", "SYSTEM_TRUSTED_KEYS", "SYSTEM_REVOCATION_KEYS"):
        run([str(tree / "scripts/config"), "--file", str(out / ".config"),
             "--set-str", option, ""])  # fmt: skip
    run([str(tree / "scripts/config"), "--file", str(out / ".config"), "-d", "MODULE_SIG_ALL"])
    kmake(tree, out, "olddefconfig", jobs=False, quiet=True)
    if "CONFIG_DEV_DAX_KMEM=m" in (out / ".config").read_text().splitlines():
        targets = [*targets, "drivers/dax/kmem.ko"]  # a distribution's kmem: a module
    # Without vmlinux, modpost cannot resolve the module's symbols: warn, do not fail.
    make = ["make", "-s", "-C", str(tree), f"O={out}", "ARCH=x86_64"]
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
    """The series under Debian's amd64 config: the touched objects and the dax modules build
    with W=1 and show no warning that the unpatched base does not show."""
    checkout_series(layout)
    config = distro_config(layout)
    targets = distro_targets(layout)
    out = layout.distro_build_dir
    out.mkdir(parents=True, exist_ok=True)
    with scratch_worktree(layout.src, ".distro", layout.base_tag) as scratch:
        before = distro_warnings(config, scratch, out, targets)
        git(scratch, "checkout", "-q", "--detach", BRANCH)
        after = distro_warnings(config, scratch, out, targets)
    new = [w for w in after if w not in before]
    print(f"Debian config: built {len(targets)} targets with W=1: {' '.join(targets)}")
    print(f"warnings: {len(before)} before the series, {len(after)} after, {len(new)} new")
    for warning in new:
        print("   ", warning)
    return 1 if new else 0
