"""The one exception family the CLI turns into a one-line message and an exit code.

Exit codes follow daxctl/kselftest practice as the project's STYLE asks:
0 success, 1 the check or operation failed, 2 usage, 3 the kernel or machine lacks a
prerequisite (the equivalent of a test "skip": nothing the command itself can fix), and 4 for
`check` finding stale blocks only (memmaps placed under an earlier setting: nothing is wrong
with the kernel, but the machine is not what the settings say; --allow-stale turns it into 0).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PREREQ = 3
EXIT_STALE = 4


class PyshimError(Exception):
    """An error with a message that names the fix, and the exit code to leave with."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class OperationFailed(PyshimError):
    exit_code = EXIT_FAILED


class UsageError(PyshimError):
    exit_code = EXIT_USAGE


class MissingPrerequisite(PyshimError):
    exit_code = EXIT_PREREQ
