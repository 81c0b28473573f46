"""Guest side of bench/p2_phases.py --trace-kernel: the ftrace function profiler on a few
memory hot-plug functions. Standard library only (it runs in the VM from the 9p root).

    ftrace_profile.py setup FUNC...   filter the profiler to the FUNCs this kernel can trace
                                      (inlined or notrace ones are skipped and listed)
    ftrace_profile.py start           reset and start the profiler
    ftrace_profile.py stop            stop it; print {func: [hits, microseconds]} summed over
                                      CPUs as JSON

Times include the time of nested calls (the profiler runs on the function-graph hooks with
the default `graph-time`), so a parent's time covers its traced and untraced children.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
STAT_LINE = re.compile(r"^\s*(\S+)\s+(\d+)\s+([\d.]+) us")


def mount() -> None:
    if not (TRACEFS / "function_profile_enabled").exists():
        subprocess.run(["mount", "-t", "tracefs", "tracefs", str(TRACEFS)], check=True)


def setup(functions: list[str]) -> dict[str, list[str]]:
    mount()
    available = set()
    for line in (TRACEFS / "available_filter_functions").read_text().splitlines():
        available.add(line.split()[0])
    traced = [f for f in functions if f in available]
    (TRACEFS / "set_ftrace_filter").write_text(" ".join(traced) + "\n")
    return {"traced": traced, "not_traceable": [f for f in functions if f not in available]}


def write(name: str, value: str) -> None:
    fd = os.open(TRACEFS / name, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def stop() -> dict[str, list[float]]:
    write("function_profile_enabled", "0")
    totals: dict[str, list[float]] = {}
    for stat in sorted((TRACEFS / "trace_stat").glob("function[0-9]*")):
        for line in stat.read_text().splitlines():
            match = STAT_LINE.match(line)
            if match:
                entry = totals.setdefault(match.group(1), [0, 0.0])
                entry[0] += int(match.group(2))
                entry[1] += float(match.group(3))
    return totals


def main(argv: list[str]) -> int:
    command = argv[1]
    if command == "setup":
        print(json.dumps(setup(argv[2:])))
    elif command == "start":
        write("function_profile_enabled", "1")  # enabling resets the counters
    elif command == "stop":
        print(json.dumps(stop()))
    else:
        print(f"ftrace_profile: unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
