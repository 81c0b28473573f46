"""What the guest's steps share: running a command, one write(2) to a sysfs file, reading
one, the log line, and the exception that fails a step. Standard library only."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import time
from pathlib import Path
from typing import Any

Step = dict[str, Any]
Context = dict[str, Any]


class StepFailed(Exception):
    """A step did not do what it was asked; the job stops here."""


def log(message: str) -> None:
    print(f"vmtest: [{time.monotonic():9.3f}] {message}", flush=True)


def run_argv(
    argv: list[str],
    *,
    timeout: float = 300.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> dict[str, Any]:
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout, env=full_env, cwd=cwd, check=False
        )
    except FileNotFoundError as exc:
        return {"argv": argv, "rc": 127, "stdout": "", "stderr": str(exc), "seconds": 0.0}
    except subprocess.TimeoutExpired as exc:
        return {
            "argv": argv,
            "rc": 124,
            "stdout": (exc.stdout or b"").decode(errors="replace"),
            "stderr": (exc.stderr or b"").decode(errors="replace") + f"\ntimeout after {timeout}s",
            "seconds": time.monotonic() - start,
        }
    return {
        "argv": argv,
        "rc": proc.returncode,
        "stdout": proc.stdout.decode(errors="replace"),
        "stderr": proc.stderr.decode(errors="replace"),
        "seconds": time.monotonic() - start,
    }


def require_ok(out: dict[str, Any], what: str) -> dict[str, Any]:
    if out["rc"] != 0:
        raise StepFailed(f"{what}: exit {out['rc']}: {out['stderr'].strip() or out['stdout']}")
    return out


def write_bytes(path: str, data: bytes) -> dict[str, Any]:
    """One write(2) of data to a sysfs file: the errno the kernel returned, or the count."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as exc:
        return {"errno": exc.errno, "errname": errno.errorcode.get(exc.errno or 0), "at": "open"}
    try:
        written = os.write(fd, data)
    except OSError as exc:
        return {"errno": exc.errno, "errname": errno.errorcode.get(exc.errno or 0), "at": "write"}
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    return {"errno": None, "errname": None, "written": written}


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


# --- primitives -----------------------------------------------------------------------------
