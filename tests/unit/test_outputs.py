"""plan, metrics, report, and the process-level promises (pipe, no traceback)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from unit_helpers import Result, assert_golden, tree_path


def test_plan_golden(cli: Callable[..., Result]) -> None:
    r = cli(["plan", "--capacity", "1T", "--json", "--sysroot", str(tree_path("patched_on"))])
    assert r.code == 0
    assert_golden("patched_on.plan-1T.json", r.out)
    assert json.loads(r.out)["dram_saved_bytes"] == 16 << 30


def test_plan_text(cli: Callable[..., Result]) -> None:
    r = cli(["plan", "--capacity", "512M", "--sysroot", str(tree_path("patched_on"))])
    assert r.code == 0
    assert r.out == (
        "capacity 512 MiB = 4 memory blocks of 128 MiB\n"
        "memmap: 2 MiB per block\n"
        "without memmap_on_memory: DRAM 8 MiB, device 0 B, usable 512 MiB\n"
        "with memmap_on_memory:    DRAM 0 B, device 8 MiB, usable 504 MiB\n"
        "DRAM saved: 8 MiB\n"
    )


@pytest.mark.parametrize("bad", ["", "lots", "-1G", "0"])
def test_plan_bad_capacity(bad: str, cli: Callable[..., Result]) -> None:
    r = cli(["plan", "--capacity", bad, "--sysroot", str(tree_path("patched_on"))])
    assert r.code == 2


def test_plan_block_size_override(cli: Callable[..., Result]) -> None:
    root = str(tree_path("patched_on"))
    r = cli(["plan", "--capacity", "1G", "--block-size", "64M", "--sysroot", root])
    assert r.code == 0 and "not possible" in r.out


def test_metrics(cli: Callable[..., Result], tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    before = time.time()
    r = cli(["metrics", "--textfile", str(tmp_path), "--sysroot", str(tree_path("mixed"))])
    assert r.code == 0, r.err
    text = (tmp_path / "pyshim.prom").read_text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    # dax0.0 (cxl) holds its memmap on node 1 itself; dax1.0 (hmem) has it in node 0's DRAM
    two_mib_blocks = 4 * (2 << 20)
    assert samples[("pyshim_memmap_bytes", (("memmap_node", "1"), ("node", "1")))] == (
        two_mib_blocks
    )
    assert samples[("pyshim_memmap_bytes", (("memmap_node", "0"), ("node", "1")))] == (
        two_mib_blocks
    )
    assert samples[("pyshim_memory_blocks", (("memmap_node", "0"), ("node", "1")))] == 4
    assert samples[("pyshim_kmem_memmap_on_memory", (("setting", "global"),))] == 1
    assert samples[("pyshim_global_memmap_on_memory", (("setting", "Y"),))] == 1
    assert samples[("pyshim_check_status", (("status", "ok"),))] == 1
    assert samples[("pyshim_memory_block_size_bytes", ())] == 128 << 20
    assert before <= samples[("pyshim_last_run_timestamp_seconds", ())] <= time.time()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyshim.prom"]


def test_metrics_never_write_through_a_planted_name(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    """The temporary file is a new one (mkstemp): a symlink planted at the name a fixed
    scheme would use (prometheus_client's write_to_textfile: path.PID.THREAD) is left alone,
    and so is the file it points to."""
    import os
    import threading

    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    planted = textfile / f"pyshim.prom.{os.getpid()}.{threading.current_thread().ident}"
    planted.symlink_to(victim)
    r = cli(["metrics", "--textfile", str(textfile), "--sysroot", str(tree_path("mixed"))])
    assert r.code == 0, r.err
    assert victim.read_text() == "keep\n"
    assert planted.is_symlink()
    assert "pyshim_check_status" in (textfile / "pyshim.prom").read_text()


def test_metrics_missing_dir(cli: Callable[..., Result], tmp_path: Path) -> None:
    r = cli(["metrics", "--textfile", str(tmp_path / "nope"), "--sysroot", str(tree_path("mixed"))])
    assert r.code == 2


def test_report(cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    r = cli(["report", "--html", str(out), "--sysroot", str(tree_path("mixed"))])
    assert r.code == 0, r.err
    html = out.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("<svg") == 2  # node 0 and node 1
    # node 1: dax0.0's 4 blocks (memmap on them) and dax1.0's 4 (memmap in DRAM), one bar each
    assert html.count('class="memory"') == 1 and html.count('class="dram"') == 1
    assert "memory32-35 (dax0.0, online): 4 blocks, 512 MiB, memmap on the blocks" in html
    assert "memory40-43 (dax1.0, online): 4 blocks, 512 MiB, memmap in DRAM" in html
    assert "Memmap in DRAM of node 0: 8 MiB." in html
    assert "This node's DRAM holds 8 MiB of memmap for other nodes' blocks." in html
    assert "http" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_report_scales(cli: Callable[..., Result], tmp_path: Path) -> None:
    """1024 blocks on node 1 (128 GiB): a handful of bars, not a wall of squares, and both
    nodes on one scale (16 boot blocks of node 0 get 16/1024 of the width)."""
    import treebuilder

    root = tmp_path / "big"
    tree = treebuilder.Tree(root, kmem="on")
    tree.boot(0, 0, 16)
    tree.dax("dax0.0", "cxl", 1, 4 << 30, 1024)
    tree.finish()
    out = tmp_path / "r.html"
    r = cli(["report", "--html", str(out), "--sysroot", str(root)])
    assert r.code == 0, r.err
    html = out.read_text()
    assert len(html) < 8192
    assert html.count("<rect") == 3  # boot bar; dax0.0's bar and its memmap share
    assert 'width="900.0" height="28" class="memory"' in html
    assert 'width="14.06" height="28" class="boot"' in html
    assert 'width="14.06" height="28" class="memmap"' in html  # 1.5625 % of 900 px


def test_report_stock_kernel(cli: Callable[..., Result], tmp_path: Path) -> None:
    r = cli(["report", "--html", str(tmp_path / "r.html"), "--sysroot", str(tree_path("stock"))])
    assert r.code == 3


def test_usage_errors_are_one_line(cli: Callable[..., Result]) -> None:
    for argv in (["bogus"], [], ["check", "--nope"], ["online"], ["plan"]):
        r = cli(argv)
        assert r.code == 2, argv
        assert r.err.count("\n") == 1 and r.err.startswith("pyshim: error: "), r.err


def test_help_exits_zero(cli: Callable[..., Result]) -> None:
    """Help goes to the CLI's stdout like any output (so a failing stdout is reported)."""
    r = cli(["--help"])
    assert r.code == 0 and "exit status" in r.out


def test_online_refuses_sysroot(cli: Callable[..., Result]) -> None:
    r = cli(["online", "dax0.0", "--sysroot", str(tree_path("patched_on"))])
    assert r.code == 2 and "drop --sysroot" in r.err


def test_internal_error_has_no_traceback(
    cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pyshim import cli as cli_module

    def boom(ctx: object) -> int:
        raise RuntimeError("surprise")

    commands = tuple(c._replace(run=boom) if c.name == "show" else c for c in cli_module.COMMANDS)
    monkeypatch.setattr(cli_module, "COMMANDS", commands)
    monkeypatch.delenv("PYSHIM_DEBUG", raising=False)
    r = cli(["show"])
    assert r.code == 1 and "internal error: RuntimeError: surprise" in r.err
    assert "Traceback" not in r.err


def test_quiet_on_closed_pipe() -> None:
    """Reader gone before the first write (`pyshim check | head` style): nothing on stderr."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    for command in ("show", "check"):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pyshim",
                command,
                "--json",
                "--sysroot",
                str(tree_path("mixed")),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        proc.wait(timeout=60)
        assert err == b""
        assert proc.returncode == 1


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize(
    "command",
    [["show"], ["check", "--json"], ["check", "-h"], ["--version"], ["plan", "--capacity", "1T"]],
)
@pytest.mark.parametrize(
    ("stdout", "strerror"),
    [("closed", "Bad file descriptor"), ("/dev/full", "No space left on device")],
)
def test_unwritable_stdout_is_one_line(
    stdout: str, strerror: str, command: list[str], buffered: bool
) -> None:
    """`show >&-` and `show >/dev/full`: exit 1 and one line naming the cause, no traceback
    (and no exit 120 from the interpreter's own last flush), whether Python buffers stdout
    (the default) or not (PYTHONUNBUFFERED), on every command path that writes stdout."""
    if stdout == "/dev/full" and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    env.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, "-m", "pyshim", *command, "--sysroot", str(tree_path("mixed"))]
    with open(os.devnull if stdout == "closed" else stdout, "w") as target:
        proc = subprocess.run(
            argv,
            stdout=target,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
            check=False,
            # closing fd 1 in the child is what `>&-` does
            preexec_fn=(lambda: os.close(1)) if stdout == "closed" else None,
        )
    assert proc.returncode == 1
    assert proc.stderr.decode() == f"pyshim: error: cannot write the output: {strerror}\n"


def test_broken_pipe_in_process(cli: Callable[..., Result]) -> None:
    from pyshim.cli import Environment, main

    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    err = io.StringIO()
    code = main(
        ["show", "--sysroot", str(tree_path("mixed"))], Environment(stdout=Closed(), stderr=err)
    )
    assert code == 1 and err.getvalue() == ""


def test_module_entry_point() -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    proc = subprocess.run(
        [sys.executable, "-m", "pyshim", "check", "--sysroot", str(tree_path("stock"))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1


def test_version(cli: Callable[..., Result]) -> None:
    from pyshim import __version__

    r = cli(["--version"])
    assert r.code == 0 and r.out == f"pyshim {__version__}\n"


def test_every_command_has_a_description_with_an_example() -> None:
    import argparse

    from pyshim.cliparser import build_parser
    from pyshim.commands import COMMANDS

    parser = build_parser("pyshim", COMMANDS)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        assert f"Example: pyshim {name}" in (sub.description or ""), name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest}"
