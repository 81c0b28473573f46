"""Scenario 7: bad input to the new attributes, all in one boot.

Each string is invalid whether the kernel matches whole words (`global`, `on`, `off`, with one
optional trailing newline) or falls back to kstrtobool, which decides on the first one or two
characters (so "yellow" and "of" would be valid kstrtobool spellings and are not listed; nor
are case or whitespace variants of valid words, which a parser may legitimately strip).
"""

from __future__ import annotations

import base64
import errno
from typing import Any

import pytest

from vmtest import asserts
from vmtest import steps as s
from vmtest.harness import Harness

pytestmark = pytest.mark.vm

INVALID: list[bytes] = [
    # empty and whitespace (a zero-length write(2) never reaches sysfs, so "empty" is "\n")
    b"\n",
    b" \t\n",
    b" ",
    b"\t",
    b"\n\n",
    b" \n",
    b"\r\n",
    b"\x0b",
    # numbers other than 0 and 1
    b"2",
    b"2\n",
    b"-1",
    b"-1\n",
    b"3",
    b"9",
    b"42",
    b"-2",
    b"255",
    b"256",
    b"99999999999999999999999",
    b"-",
    # partial and extended words
    b"g",
    b"gl",
    b"glo",
    b"glob",
    b"globa",
    b"globa\n",
    b"globall",
    b"global!",
    b"globalon",
    b"global-on",
    b"o",
    b"o\n",
    b"ox",
    b"oo",
    b"o n",
    b"o-n",
    # other words
    b"auto",
    b"default",
    b"enable",
    b"enabled",
    b"disable",
    b"disabled",
    b"maybe",
    b"dram",
    b"memory",
    b"kmem",
    b"cxl",
    b"hmem",
    b"both",
    b"all",
    b"?",
    b"*",
    b"%s%n",
    b"\\0",
    # 4 KiB long (the kernel sees at most one page)
    b"x" * 4096,
    b"global" * 700,
    b"a" * 4095 + b"\n",
    # binary
    b"\x00",
    b"\x00on",
    b"\x00\n",
    b"\xff",
    b"\xfe\xff",
    b"\x80\x81\x82",
    b"\x7f",
    b"\x1b[0m",
    b"\xc3\xa9t\xc3\xa9",
    b"\x01",
]

# Valid spellings and what the attribute reads back after each (docs/design.md, "Kernel ABI", 1).
VALID: dict[bytes, str] = {
    b"global": "global",
    b"on": "on",
    b"off": "off",
    b"global\n": "global",
    b"on\n": "on",
    b"off\n": "off",
}

# The kstrtobool spellings the kernel took before series v3: refused now ("0" is not "off").
BOOLEAN_WORDS = [b"1", b"0", b"y", b"n", b"yes", b"no", b"true", b"false", b"1\n", b"no\n"]

BLOCK_ATTR = "/sys/devices/system/memory/memory1/memmap_on_memory"


def test_invalid_list_is_long_enough() -> None:
    assert len(INVALID) >= 50
    assert len(set(INVALID)) == len(INVALID)


def show(item: dict[str, Any]) -> str:
    return repr(base64.b64decode(item["data_b64"])[:40])


def test_s7_bad_input(vm: Harness) -> None:
    job: list[dict[str, Any]] = []
    for start in ("global", "on", "off"):
        job.append(s.write(s.KMEM_ATTR, start.encode(), f"start_{start}"))
        job.append(s.write_many(s.KMEM_ATTR, INVALID, f"kmem_from_{start}"))
    job.append(s.write(s.KMEM_ATTR, b"off", "param_start"))
    job.append(s.write_many(s.KMEM_PARAM, [*INVALID, b"on"], "param"))
    job.append(s.write_many(s.KMEM_ATTR, BOOLEAN_WORDS, "boolean"))
    job.append(s.write_many(s.KMEM_ATTR, list(VALID), "valid"))
    job.append(s.write(s.KMEM_ATTR, b"global", "restore"))
    job.append(s.write_many(BLOCK_ATTR, [b"0", b"1", b"on", b"", *INVALID[:5]], "block"))
    job.append(s.kmemleak())
    result = vm.boot(job)
    asserts.booted_ok(result)

    problems = []
    for start in ("global", "on", "off"):
        assert result.step(f"start_{start}")["after"] == start, result.describe()
        for item in result.step(f"kmem_from_{start}")["results"]:
            if item["errno"] != errno.EINVAL or item["at"] != "write":
                problems.append(f"kmem attr from {start}: {show(item)} -> {item}")
            elif item["after"] != start:
                problems.append(f"kmem attr changed {start} -> {item['after']} by {show(item)}")

    # The module parameter validates like the attribute (one setter): no invalid string
    # changes the value, and "on" written there is the current value.
    param = result.step("param")["results"]
    for item in param[:-1]:
        if item["after"] != item["before"]:
            problems.append(f"kmem.memmap_on_memory changed to {item['after']} by {show(item)}")
        if item["errno"] is None:
            problems.append(f"kmem.memmap_on_memory accepted {show(item)}")
    if param[-1]["errno"] is not None or param[-1]["after"] != "on":
        problems.append(f"kmem.memmap_on_memory=on: {param[-1]}")

    for item in result.step("boolean")["results"]:
        if item["errno"] != errno.EINVAL or item["after"] != item["before"]:
            problems.append(f"kmem attr took the boolean word {show(item)}: {item}")

    for item in result.step("valid")["results"]:
        data = base64.b64decode(item["data_b64"])
        if item["errno"] is not None or item["after"] != VALID[data]:
            problems.append(f"valid {data!r}: errno {item['errname']}, reads {item['after']!r}")

    for item in result.step("block")["results"]:
        if item["errno"] is None or item["after"] != item["before"]:
            problems.append(f"read-only memory1/memmap_on_memory took {show(item)}: {item}")

    assert not problems, "\n".join(problems[:40]) + f"\n{result.describe()}"
    leak = result.step("kmemleak")
    assert not leak["report"], leak["report"][:2000]
    asserts.clean_log(result)
