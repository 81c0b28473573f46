# SPDX-License-Identifier: GPL-2.0
"""The series as git work: kernel-patch/<base>/ applied to branch memmap-kmem of the cache's
tree, exported back, compared across bases, and the test-only trees built on it."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .bases import Flavour
from .layout import BRANCH, Layout
from .proc import BuildError, digest, git, git_am, run, scratch_worktree
from .source import BASE_IDENTITY, SERIES_IDENTITY, ensure_source


def series_key(layout: Layout, patches_only: bool = False) -> str:
    """Digest of kernel-patch/<base>/: all of it, or only what git am applies."""
    files = layout.patches() if patches_only else layout.series()
    return digest(*(p.name.encode() + p.read_bytes() for p in files))


def require_clean_tree(layout: Layout) -> None:
    dirty = git(layout.src, "status", "--porcelain", "--untracked-files=no", capture=True)
    if dirty.strip():
        raise BuildError(
            f"{layout.src} has uncommitted changes: commit them on branch "
            f"{BRANCH} and run 'make export-series', or 'git -C {layout.src} stash' them"
        )


def apply_series(layout: Layout, tree: Path, extra: list[Path] | None = None) -> str:
    """git am the series (and extra patches) onto the base in a scratch worktree of tree;
    return the new tip."""
    with scratch_worktree(tree, ".am", layout.base_tag) as scratch:
        git_am(scratch, layout.patches() + (extra or []))
        return git(scratch, "rev-parse", "HEAD", capture=True).strip()


def checkout_series(layout: Layout, work_tree: bool = True) -> None:
    """Put branch memmap-kmem at base + kernel-patch/ unless it is there already, and check
    it out. work_tree=False moves only the branch and leaves the files as they are (HEAD
    detached where it was): the series check then walks the series commit by commit from
    there, and a file touched twice on the way would make kbuild rebuild its includers."""
    ensure_source(layout)
    require_clean_tree(layout)
    key = series_key(layout)
    stamp = layout.src / ".git" / "memmap-kmem-series"
    if stamp.exists():
        recorded_key, _, recorded_head = stamp.read_text().strip().partition(" ")
        verify = [
            "git",
            "-C",
            str(layout.src),
            "rev-parse",
            "-q",
            "--verify",
            f"refs/heads/{BRANCH}",
        ]
        head = subprocess.run(verify, capture_output=True, text=True).stdout.strip()
        if recorded_key == key and recorded_head == head:
            if work_tree:
                git(layout.src, "checkout", "-q", BRANCH)
            return
    head = apply_series(layout, layout.src)
    if work_tree:
        # Moving the tree straight from its current commit to the new one rewrites only the
        # files that differ, so kbuild rebuilds what the change touched.
        git(layout.src, "checkout", "-q", "-B", BRANCH, head)
    else:
        git(layout.src, "checkout", "-q", "--detach")
        git(layout.src, "update-ref", f"refs/heads/{BRANCH}", head)
    set_cover_letter(layout)
    stamp.write_text(f"{key} {head}\n")


def checkout_base(layout: Layout) -> None:
    ensure_source(layout)
    require_clean_tree(layout)
    git(layout.src, "checkout", "-q", "--detach", layout.base_tag)


def prepare_own_tree(layout: Layout, flavour: Flavour) -> Path:
    """The tree of a flavour with test-only patches: the series, then the flavour's patches,
    applied with git am in a shared clone of the cache's tree, detached.

    The clone is a tree of its own, so the build never checks anything out in layout.src
    and the patch can never reach branch memmap-kmem, where `make export-series` would pick
    it up. Re-running moves the clone from its last tip to the new one, which rewrites only
    the files that differ (an incremental kbuild)."""
    extra = layout.extra_patches(flavour)
    if not extra:
        written = layout.extra_patch_bases(flavour)
        raise BuildError(
            f"the {flavour.name} kernel's patches are written for the "
            f"{', '.join(written) or 'no'} series, not {layout.pin.name} "
            f"(no {flavour.extra_patches}/{layout.pin.name}/*.patch)"
        )
    ensure_source(layout)
    tree = layout.tree(flavour)
    if not (tree / ".git").is_dir():
        shutil.rmtree(tree, ignore_errors=True)
        tree.parent.mkdir(parents=True, exist_ok=True)
        run(["git", "clone", "-q", "--shared", "--no-checkout", str(layout.src), str(tree)])
        git(tree, "config", "user.name", SERIES_IDENTITY[0])
        git(tree, "config", "user.email", SERIES_IDENTITY[1])
    # Tags of a newer source import; harmless when there is nothing new.
    git(tree, "fetch", "-q", "--tags", str(layout.src))
    head = apply_series(layout, tree, extra)
    git(tree, "checkout", "-q", "--force", "--detach", head)
    return tree


def set_cover_letter(layout: Layout) -> None:
    """Restore the branch description (the cover letter text) from kernel-patch/."""
    if layout.cover_letter.exists():
        description = cover_description(layout.cover_letter.read_text())
        git(layout.src, "config", f"branch.{BRANCH}.description", description)


def cover_description(cover: str) -> str:
    """The branch description that format-patch turned into this cover letter.

    Its first line is the subject; the body runs up to git's shortlog, which starts with
    "Author Name (N):".
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


def stable_mail(text: str, date: str | None) -> str:
    """A format-patch mail without what differs on every run (the From line's commit and
    date, Message-Id, threading headers); date replaces the Date header when given."""
    text = re.sub(
        r"^From [0-9a-f]{40} .*$",
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001",
        text,
        count=1,
        flags=re.M,
    )
    text = re.sub(r"^(Message-Id|In-Reply-To|References): .*\n", "", text, flags=re.M)
    if date is not None:
        text = re.sub(r"^Date: .*$", f"Date: {date}", text, count=1, flags=re.M)
    return text


def export(layout: Layout) -> None:
    """Regenerate kernel-patch/<base>/ from branch memmap-kmem (never hand-edit patches)."""
    require_clean_tree(layout)
    # The cover letter carries the date of the newest patch, not of the export.
    tip_date = git(layout.src, "log", "-1", "--format=%aD", BRANCH, capture=True).strip()
    with tempfile.TemporaryDirectory() as tmp:
        git(layout.src, "format-patch", "-q", "--cover-letter",
            "--cover-from-description=subject", "--thread=shallow",
            f"--base={layout.base_tag}", "-o", tmp,
            f"{layout.base_tag}..{BRANCH}")  # fmt: skip
        layout.patch_dir.mkdir(exist_ok=True)
        for old in layout.patch_dir.glob("*.patch"):
            old.unlink()
        names = sorted(p.name for p in Path(tmp).glob("*.patch"))
        for name in names:
            date = tip_date if name.startswith("0000-") else None
            text = stable_mail((Path(tmp) / name).read_text(), date)
            (layout.patch_dir / name).write_text(text)
        (layout.patch_dir / "series").write_text("\n".join(names) + "\n")
    head = git(layout.src, "rev-parse", BRANCH, capture=True).strip()
    (layout.src / ".git" / "memmap-kmem-series").write_text(f"{series_key(layout)} {head}\n")
    print(f"exported {len(names)} files to {layout.patch_dir}")


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
    git(scratch, "init", "-q")
    # The patches keep their authors and dates; a fixed committer makes the commit ids,
    # and so the output, the same on every run.
    committer = {k: v for k, v in BASE_IDENTITY.items() if k.startswith("GIT_COMMITTER_")}
    ranges = []
    for layout in layouts:
        ensure_source(layout)
        patches = layout.patches()
        in_base = set(
            git(layout.src, "ls-tree", "-r", "--name-only", layout.base_tag, capture=True).split()
        )
        files = sorted(touched_paths(patches) & in_base)
        git(scratch, "checkout", "-q", "--orphan", layout.pin.name)
        git(scratch, "rm", "-rfq", "--ignore-unmatch", ".")
        archive = subprocess.run(
            ["git", "-C", str(layout.src), "archive", layout.base_tag, *files],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
        git(scratch, "add", "-f", "-A", ".")
        git(scratch, "commit", "-q", "-m", layout.base_tag, env=BASE_IDENTITY)
        git_am(scratch, patches, env=committer)
        ranges.append(f"{layout.pin.name}~{len(patches)}..{layout.pin.name}")
    return git(scratch, "range-diff", "--no-color", "--creation-factor=95", *ranges, capture=True)
