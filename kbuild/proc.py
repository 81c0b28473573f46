# SPDX-License-Identifier: GPL-2.0
"""Running the tools a build needs: one place that echoes, captures and turns a failure
into a BuildError the user can act on."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class BuildError(Exception):
    """A step failed in a way the user can fix; the message says how."""


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


def git(tree: Path, *args: str, capture: bool = False, env: dict[str, str] | None = None) -> str:
    return run(["git", "-C", str(tree), *args], capture=capture, env=env)


def git_am(tree: Path, patches: list[Path], env: dict[str, str] | None = None) -> None:
    """Apply patches as mails, keeping the CRs a patch may carry."""
    if patches:
        git(tree, "am", "-q", "--keep-cr", *(str(p.resolve()) for p in patches), env=env)


def kmake(tree: Path, out: Path, *targets: str, jobs: bool = True, quiet: bool = False) -> None:
    """make in a kernel tree for x86_64 into the build directory out."""
    cmd = ["make", "-s", "-C", str(tree), f"O={out}", "ARCH=x86_64"]
    if jobs:
        cmd.append(f"-j{os.cpu_count() or 1}")
    run([*cmd, *targets], quiet=quiet)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


@contextmanager
def scratch_worktree(tree: Path, suffix: str, start: str) -> Iterator[Path]:
    """A detached worktree of tree at start, next to it, removed afterwards (and any
    leftover of an interrupted run first)."""
    scratch = tree.with_name(tree.name + suffix)
    git(tree, "worktree", "prune")
    if scratch.exists():
        git(tree, "worktree", "remove", "--force", str(scratch))
    git(tree, "worktree", "add", "-q", "--detach", str(scratch), start)
    try:
        yield scratch
    finally:
        git(tree, "worktree", "remove", "--force", str(scratch))
