"""What a command runs with: the process's streams and identity (Environment), the parsed
arguments and the machine (Context), and how output and messages are written.

Output that cannot be written is a one-line failure (exit 1), a closed pipe a quiet exit 1;
messages are one line each, control characters escaped.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import io
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING

from pyshim.drivers import DRIVERS, DriverSpec
from pyshim.errors import MissingPrerequisite, OperationFailed, PyshimError
from pyshim.kernel import Sysfs
from pyshim.userfiles import check_sysroot

if TYPE_CHECKING:
    from pyshim.libdaxctl import Library


def program_name(argv0: str) -> str:
    """How the user started pyshim, for usage lines and for the commands messages suggest."""
    if os.path.basename(argv0) == "__main__.py":
        return f"{os.path.basename(sys.executable) or 'python3'} -m pyshim"
    return os.path.basename(argv0) or "pyshim"


def _default_library(verbose: bool) -> Library:
    from pyshim.libdaxctl import Library  # lazy: cffi and libdaxctl only for online/offline

    return Library(verbose=verbose)


class _ClosedStream(io.TextIOBase):
    """Stands in for a standard stream whose descriptor is closed (`>&-`, where Python sets
    sys.stdout to None): writes fail with EBADF, reported like any unwritable output."""

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))


class Environment:
    """What main() takes from the process; tests inject their own."""

    def __init__(
        self,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
        euid: Callable[[], int] = os.geteuid,
        library: Callable[[bool], Library] = _default_library,
        prog: str | None = None,
    ) -> None:
        self.stdout: IO[str] | io.TextIOBase = stdout or sys.stdout or _ClosedStream()
        # With stderr closed there is nowhere to say anything: messages are dropped.
        self.stderr: IO[str] = stderr or sys.stderr or io.StringIO()
        self.euid = euid
        self.library = library
        self.prog = prog or program_name(sys.argv[0])


class Context:
    def __init__(self, args: argparse.Namespace, env: Environment) -> None:
        self.args = args
        self.env = env
        self.sysfs = Sysfs(check_sysroot(args.sysroot) if "sysroot" in args else "/")
        self.spec: DriverSpec = DRIVERS["dax_kmem"]

    def out(self, text: str) -> None:
        with output_errors():
            self.env.stdout.write(text)

    def note(self, text: str) -> None:
        say(self.env.stderr, f"pyshim: {text}")

    def require_root(self, why: str) -> None:
        if self.sysfs.is_live and self.env.euid() != 0:
            raise MissingPrerequisite(f"{why} needs root: run as root")

    def refused(self, path: str, err: int) -> PyshimError:
        """EACCES or EPERM writing path: "run as root" only when we are not root on the live
        machine; as root it is the file itself (immutable, read-only mount, a security
        module), which running as root again would not change."""
        if self.sysfs.is_live and self.env.euid() != 0:
            return MissingPrerequisite(f"cannot write {path}: run as root")
        why = "immutable? see lsattr" if err == errno.EPERM else "check its permissions"
        return OperationFailed(f"cannot write {path}: {os.strerror(err)} ({why})")


def one_line(text: str) -> str:
    """text with control characters escaped (a newline in a path must not split a message)."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def say(stream: IO[str], text: str) -> None:
    """One line on stderr. When stderr itself cannot be written there is nowhere left to say
    anything: the line is dropped, and the stream silenced so that the interpreter's last
    flush does not fail on it (exit 120 and a traceback)."""
    try:
        stream.write(one_line(text) + "\n")
        stream.flush()
    except OSError:
        silence(stream)


@contextlib.contextmanager
def output_errors() -> Iterator[None]:
    """A closed pipe stays a BrokenPipeError (quiet exit 1); any other failure to write the
    output (closed descriptor, full disk or /dev/full) becomes a one-line failure, exit 1."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OperationFailed(f"cannot write the output: {exc.strerror}") from None


def silence(stream: IO[str] | io.TextIOBase) -> None:
    """Point a standard stream's descriptor at /dev/null, so that what is still buffered for
    it goes nowhere quietly (after EPIPE, ENOSPC or EIO); a no-op for in-memory streams."""
    try:
        fileno = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fileno)
        os.close(devnull)
    except (OSError, ValueError):
        pass
