# SPDX-License-Identifier: GPL-2.0
"""make post: the series as mails a person can send, in one command.

The series in kernel-patch/<base>/ is signed by the project's placeholder, which names no
person. Posting puts it on the HEAD of a kernel tree (mm-new or linux-next for a real
posting; by default the base itself), checks it there, replaces the placeholder with the
poster's identity (From and Signed-off-by), takes To and Cc from the tree's
scripts/get_maintainer.pl, and writes the mails with the real base-commit into a directory,
ready for git send-email. Nothing is sent.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

from .bases import FLAVOURS
from .checks import check_series, checkpatch, series_objects
from .config import configure
from .layout import Layout
from .proc import BuildError, git, git_am, kmake, run, scratch_worktree
from .series import cover_description
from .source import SERIES_IDENTITY, ensure_source

REROLL = 3  # the version of the series: [PATCH v3 n/m]
PLACEHOLDER = f"{SERIES_IDENTITY[0]} <{SERIES_IDENTITY[1]}>"
IDENTITY_RE = re.compile(
    r"\s*(?P<name>[^<>@\s][^<>@]*?)\s*<(?P<email>[^<>@\s]+@[^<>@\s]+\.[^<>@\s]+)>\s*"
)
BRANCH = "memmap-kmem-post"


def parse_identity(text: str) -> tuple[str, str]:
    """'Name <mail@example.org>' -> (name, mail); the placeholder signer is refused."""
    match = IDENTITY_RE.fullmatch(text)
    if not match:
        raise BuildError(f"IDENTITY must be 'Name <mail@domain>', not {text!r}")
    if match["email"] == SERIES_IDENTITY[1] or match["name"] == SERIES_IDENTITY[0]:
        raise BuildError("IDENTITY must be the poster's, not the project's placeholder signer")
    return match["name"], match["email"]


def sign_as(mail: str, name: str, email: str) -> str:
    """The mail with the placeholder replaced by the poster (From: and Signed-off-by:)."""
    return mail.replace(PLACEHOLDER, f"{name} <{email}>")


def maintainers(tree: Path, patches: list[Path]) -> tuple[list[str], list[str]]:
    """(lists, people) of scripts/get_maintainer.pl of the tree for these patches."""
    script = [str(tree / "scripts/get_maintainer.pl"), "--no-git", "--no-git-fallback",
              "--no-rolestats", "--no-multiline", "--separator", "\n"]  # fmt: skip
    files = [str(p) for p in patches]
    lists = run([*script, "--no-m", "--no-r", "--l", *files], cwd=tree, capture=True)
    people = run([*script, "--m", "--r", "--no-l", *files], cwd=tree, capture=True)
    return _lines(lists), _lines(people)


def _lines(text: str) -> list[str]:
    return sorted({line.strip() for line in text.splitlines() if line.strip()})


def build_each_patch_in(layout: Layout, tree: Path, base: str, patches: list[Path]) -> None:
    """Another tree than the base: the series' objects built after each patch there, with
    the patched kernel's configuration, in a build directory of the posting."""
    out = layout.cache / "build" / "post"
    commits = git(tree, "rev-list", "--reverse", f"{base}..HEAD", capture=True).split()
    for number, commit in enumerate(commits, 1):
        git(tree, "checkout", "-q", "--detach", commit)
        print(f"build after patch {number}/{len(commits)} on {tree}", flush=True)
        configure(layout, FLAVOURS["patched"], tree, out, strict=False)
        kmake(tree, out, *series_objects(patches, out))


def post(layout: Layout, identity: str, tree: Path | None, out: Path) -> int:
    name, email = parse_identity(identity)
    ensure_source(layout)
    own_base = tree is None or tree.resolve() == layout.src.resolve()
    kernel = layout.src if own_base or tree is None else tree
    if not (kernel / ".git").exists() or not (kernel / "scripts/get_maintainer.pl").exists():
        raise BuildError(f"{kernel} is not a kernel git tree")
    start = layout.base_tag if own_base else "HEAD"
    # The series on its own base: the full check (stamped, so cheap when done before).
    if own_base and check_series(layout):
        raise BuildError("check-series failed on the base; not posting")
    committer = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                 "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp, scratch_worktree(kernel, ".post", start) as work:
        base = git(work, "rev-parse", "HEAD", capture=True).strip()
        signed = []
        for patch in layout.patches():
            path = Path(tmp) / patch.name
            path.write_text(sign_as(patch.read_text(), name, email))
            signed.append(path)
        try:
            git_am(work, signed, env=committer)
        except BuildError:
            git(work, "am", "--abort")
            raise BuildError(f"the series does not apply to {kernel} HEAD ({base[:12]})") from None
        failures = sum(len(checkpatch(layout, p, tree=work)) for p in signed)
        if failures:
            raise BuildError(f"checkpatch: {failures} errors/warnings on {kernel}")
        if not own_base:
            build_each_patch_in(layout, work, base, signed)
        git(work, "checkout", "-q", "-B", BRANCH)
        cover = sign_as(cover_description(layout.cover_letter.read_text()), name, email)
        git(work, "config", f"branch.{BRANCH}.description", cover)
        lists, people = maintainers(work, signed)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        recipients = [f"--to={a}" for a in lists] + [f"--cc={a}" for a in people]
        git(work, "format-patch", "-q", f"-v{REROLL}", "--cover-letter",
            "--cover-from-description=subject", "--thread=shallow", f"--base={base}",
            "-o", str(out.resolve()), *recipients, f"{base}..{BRANCH}", env=committer)  # fmt: skip
        git(work, "config", "--unset", f"branch.{BRANCH}.description")
        git(work, "checkout", "-q", "--detach")
        git(work, "branch", "-q", "-D", BRANCH)
    return report(layout, out, base, lists, people)


def report(layout: Layout, out: Path, base: str, lists: list[str], people: list[str]) -> int:
    """Check the mails written, then print where they are and to whom they go."""
    mails = sorted(out.glob("*.patch"))
    problems = [m.name for m in mails if SERIES_IDENTITY[1] in m.read_text()]
    if problems:
        raise BuildError(f"the placeholder signer is left in {', '.join(problems)}")
    if not all(f"base-commit: {base}" in m.read_text() for m in mails[:1]):
        raise BuildError("the cover letter has no base-commit")
    print(f"{len(mails)} mails in {out} (base-commit: {base})")
    print("To: " + ", ".join(lists))
    print("Cc: " + ", ".join(people))
    print(f"send with: git send-email {out}/*.patch")
    return 0
