"""A small KTAP (and TAP 13) reader for KUnit logs and kselftest output.

It takes the text as it comes (kernel log lines with `[ time]` prefixes, other messages in
between) and returns every test result with its suite path, so a caller can require that a
suite ran, that no case failed and that no planned case is missing.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

STAMP = re.compile(r"^\[\s*\d+\.\d+\]\s?")
RESULT = re.compile(
    r"^(?P<indent>\s*)(?P<ok>ok|not ok) (?P<num>\d+)(?: -)?(?: (?P<name>[^#]*?))?"
    r"\s*(?:#\s*(?P<directive>SKIP|TODO|XFAIL)\b\s*(?P<reason>.*))?\s*$",
    re.IGNORECASE,
)
PLAN = re.compile(r"^(?P<indent>\s*)1\.\.(?P<count>\d+)")
SUBTEST = re.compile(r"^(?P<indent>\s*)# Subtest: (?P<name>\S+)")
VERSION = re.compile(r"^(?P<indent>\s*)(?:K?TAP) version \d+")


class Status(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    SKIP = "skip"


@dataclass
class Result:
    path: tuple[str, ...]
    number: int
    status: Status
    reason: str = ""

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass
class Suite:
    """One level of nesting: the tests seen at one indentation under one name."""

    name: str
    indent: int
    plan: int | None = None
    results: list[Result] = field(default_factory=list)


@dataclass
class Report:
    results: list[Result]
    plans: dict[str, int]

    def suite(self, name: str) -> list[Result]:
        """Results inside suite name (its cases, not the suite line itself)."""
        return [r for r in self.results if len(r.path) > 1 and r.path[-2] == name]

    def failed(self) -> list[Result]:
        return [r for r in self.results if r.status is Status.FAIL]

    def missing(self) -> dict[str, tuple[int, int]]:
        """Suites whose plan promised more results than came: name -> (planned, seen)."""
        out = {}
        for name, planned in self.plans.items():
            seen = (
                len(self.suite(name)) if name else sum(1 for r in self.results if len(r.path) == 1)
            )
            if seen < planned:
                out[name] = (planned, seen)
        return out

    def counts(self) -> dict[str, int]:
        out = {s.value: 0 for s in Status}
        for r in self.results:
            out[r.status.value] += 1
        return out


def _width(indent: str) -> int:
    return len(indent.expandtabs(8))


def parse(text: str) -> Report:
    stack: list[Suite] = [Suite(name="", indent=0)]
    results: list[Result] = []
    plans: dict[str, int] = {}
    for raw in text.splitlines():
        line = STAMP.sub("", raw.rstrip())
        # A nested suite opens with "KTAP version" and "# Subtest: NAME" (either order).
        if match := SUBTEST.match(line):
            indent = _width(match.group("indent"))
            while len(stack) > 1 and indent < stack[-1].indent:
                stack.pop()
            if indent == stack[-1].indent and stack[-1].name == "?":
                stack[-1].name = match.group("name")
            elif indent > stack[-1].indent:
                stack.append(Suite(name=match.group("name"), indent=indent))
            continue
        if match := VERSION.match(line):
            indent = _width(match.group("indent"))
            while len(stack) > 1 and indent < stack[-1].indent:
                stack.pop()
            if indent > stack[-1].indent:
                stack.append(Suite(name="?", indent=indent))
            continue
        if match := PLAN.match(line):
            indent = _width(match.group("indent"))
            while len(stack) > 1 and indent < stack[-1].indent:
                stack.pop()
            suite = stack[-1]
            if indent == suite.indent:
                suite.plan = int(match.group("count"))
                plans[suite.name] = suite.plan
            continue
        match = RESULT.match(line)
        if not match:
            continue
        indent = _width(match.group("indent"))
        while len(stack) > 1 and indent < stack[-1].indent:
            stack.pop()
        parents = tuple(s.name for s in stack[1:])
        name = (match.group("name") or "").strip() or f"#{match.group('num')}"
        directive = (match.group("directive") or "").upper()
        if directive == "SKIP":
            status = Status.SKIP
        elif match.group("ok").lower() == "ok" or directive in ("TODO", "XFAIL"):
            status = Status.PASS
        else:
            status = Status.FAIL
        result = Result(
            (*parents, name), int(match.group("num")), status, (match.group("reason") or "").strip()
        )
        results.append(result)
        stack[-1].results.append(result)
    return Report(results=results, plans=plans)
