"""python -m pyshim: set the per-driver memmap_on_memory, online dax memory, prove placement.

Exit codes: 0 ok, 1 the check or operation failed (also: output that cannot be written), 2
usage, 3 the kernel or machine lacks a prerequisite (including not being root; for `check
--witness` also: nothing to witness), 4 `check` found stale blocks only. Errors are one line
on stderr naming the fix, control characters escaped; no traceback reaches the user
(PYSHIM_DEBUG=1 shows one for internal errors). Output to a closed pipe is dropped quietly
(exit 1); output that cannot be written for any other reason (a full disk, /dev/full, EIO)
is a one-line error, whichever path flushes it.
"""

from __future__ import annotations

import os
import sys

from pyshim.cliparser import parse_command_line
from pyshim.commands import COMMANDS
from pyshim.context import Context, Environment, output_errors, say, silence
from pyshim.errors import EXIT_FAILED, EXIT_OK, PyshimError


def main(argv: list[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    try:
        parsed = parse_command_line(env.prog, COMMANDS, sys.argv[1:] if argv is None else argv)
        if parsed.args is None:  # --help, --version: argparse's text, written as any output
            with output_errors():
                env.stdout.write(parsed.printed)
                env.stdout.flush()
            return parsed.code
        ctx = Context(parsed.args, env)
        command = next(c for c in COMMANDS if c.name == parsed.args.command)
        code = command.run(ctx)
        with output_errors():
            env.stdout.flush()
        return code
    except PyshimError as exc:
        say(env.stderr, f"pyshim: error: {exc.message}")
        return exc.exit_code
    except BrokenPipeError:
        if env.stdout is sys.stdout:
            silence(sys.stdout)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("PYSHIM_DEBUG") == "1":
            raise
        say(
            env.stderr,
            f"pyshim: internal error: {type(exc).__name__}: {exc} "
            "(rerun with PYSHIM_DEBUG=1 and report it)",
        )
        return EXIT_FAILED


def console_main() -> None:
    code = main()
    stdout = sys.stdout
    if stdout is not None:  # None when started with stdout closed
        try:
            stdout.flush()
        except OSError as exc:
            # main() reported its own failure to write; this is output it thought written.
            if code == EXIT_OK and not isinstance(exc, BrokenPipeError):
                say(sys.stderr, f"pyshim: error: cannot write the output: {exc.strerror}")
            silence(stdout)
            code = code or EXIT_FAILED
    sys.exit(code)
