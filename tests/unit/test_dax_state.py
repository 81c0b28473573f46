"""daxX.Y/state (Linux 7.3): show, metrics and report on 7.3-shaped trees, and the same
commands on 6.12 trees, where the file does not exist. Bad values of the file are in the
table of test_bad_input.py; unreadable ones, which a tree cannot make for root, are here."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import Result, tree_path

STATE_REL = "sys/bus/dax/devices/dax0.0/state"

# What v73_states holds (treebuilder.v73_states says why each device is there).
V73_STATES = {
    "dax0.0": "online_movable",
    "dax1.0": "unplugged",
    "dax2.0": "offline",
    "dax3.0": None,  # bound to device_dax: kmem's attribute is not there
}


def show_devices(cli: Callable[..., Result], tree: str | Path) -> dict[str, dict[str, Any]]:
    root = tree_path(tree) if isinstance(tree, str) else tree
    r = cli(["show", "--json", "--sysroot", str(root)])
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["version"] == 1
    return {d["chardev"]: d for d in data["devices"]}


def test_show_json_reports_the_kernel_word(cli: Callable[..., Result]) -> None:
    devices = show_devices(cli, "v73_states")
    assert {n: d["state_attribute"] for n, d in devices.items()} == V73_STATES


def test_show_json_keeps_daxctl_state_key(cli: Callable[..., Result]) -> None:
    """daxctl's "state" (enabled/disabled) keeps its meaning: the kernel's word is a key of
    its own, so no reader of version 1 sees a value it does not know under an old key."""
    devices = show_devices(cli, "v73_states")
    assert {d["state"] for d in devices.values()} == {"enabled"}


def test_unplugged_device_has_no_blocks(cli: Callable[..., Result]) -> None:
    dev = show_devices(cli, "v73_states")["dax1.0"]
    assert (dev["mode"], dev["online_memblocks"], dev["total_memblocks"]) == ("system-ram", 0, 0)
    assert dev["memmap"] is None


def test_state_word_is_not_the_blocks_state(cli: Callable[..., Result]) -> None:
    """dax2.0's blocks were onlined one by one: the kernel still says offline, and show
    reports both as they are instead of making one up from the other."""
    dev = show_devices(cli, "v73_states")["dax2.0"]
    assert (dev["state_attribute"], dev["online_memblocks"], dev["total_memblocks"]) == (
        "offline",
        2,
        2,
    )


@pytest.mark.parametrize("tree", ["patched_on", "stock", "mixed", "devdax"])
def test_before_7_3_the_key_is_null(tree: str, cli: Callable[..., Result]) -> None:
    devices = show_devices(cli, tree)
    assert devices and all(d["state_attribute"] is None for d in devices.values())


def test_stock_7_3_shows_state_without_the_series(cli: Callable[..., Result]) -> None:
    r = cli(["show", "--json", "--sysroot", str(tree_path("v73_stock"))])
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert data["settings"]["kmem_memmap_on_memory"] is None
    assert data["devices"][0]["state_attribute"] == "online_movable"


def test_show_text_column(cli: Callable[..., Result]) -> None:
    r = cli(["show", "--sysroot", str(tree_path("v73_states"))])
    assert r.code == 0, r.err
    rows = [line.split() for line in r.out.splitlines() if line.startswith(("DEVICE", "dax"))]
    assert rows[0][-1] == "DAX_STATE"
    assert {row[0]: row[-1] for row in rows[1:]} == {
        name: word or "-" for name, word in V73_STATES.items()
    }


def test_kernel_fallback_word_unknown_is_reported(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    """state_show() prints "unknown" for a state without a name: a kernel word, shown as is."""
    root = tree_copy("v73_states")
    (root / STATE_REL).write_text("unknown\n")
    assert show_devices(cli, root)["dax0.0"]["state_attribute"] == "unknown"


def test_check_ignores_the_state_word(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    """check's verdict comes from the blocks: any valid state word gives the same result."""
    root = tree_copy("v73_states")
    outputs = set()
    for word in ("online_movable", "offline", "online", "unknown"):
        (root / STATE_REL).write_text(f"{word}\n")
        r = cli(["check", "--json", "--sysroot", str(root)])
        assert r.code == 0, r.err
        outputs.add(r.out)
    assert len(outputs) == 1


def samples_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_state_set(cli: Callable[..., Result], tmp_path: Path) -> None:
    r = cli(["metrics", "--textfile", str(tmp_path), "--sysroot", str(tree_path("v73_states"))])
    assert r.code == 0, r.err
    samples = samples_of((tmp_path / "pyshim.prom").read_text())
    state = {
        (dict(labels)["device"], dict(labels)["state"]): value
        for (name, labels), value in samples.items()
        if name == "pyshim_dax_state"
    }
    assert {dev for dev, _ in state} == {"dax0.0", "dax1.0", "dax2.0"}  # dax3.0: no file
    current = {dev: word for (dev, word), value in state.items() if value == 1}
    assert current == {n: w for n, w in V73_STATES.items() if w is not None}
    assert len(state) == 3 * 6  # one series per kernel word for each device


def test_metrics_without_state_file_has_no_series(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    r = cli(["metrics", "--textfile", str(tmp_path), "--sysroot", str(tree_path("mixed"))])
    assert r.code == 0, r.err
    samples = samples_of((tmp_path / "pyshim.prom").read_text())
    assert not [key for key in samples if key[0] == "pyshim_dax_state"]


def test_report_lists_states(cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    r = cli(["report", "--html", str(out), "--sysroot", str(tree_path("v73_states"))])
    assert r.code == 0, r.err
    html = out.read_text()
    assert "<tr><td>dax1.0</td><td>unplugged</td><td>0</td></tr>" in html
    assert "<tr><td>dax0.0</td><td>online_movable</td><td>4</td></tr>" in html
    assert "<td>dax3.0</td>" not in html


def test_report_before_7_3_has_no_state_table(cli: Callable[..., Result], tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    r = cli(["report", "--html", str(out), "--sysroot", str(tree_path("mixed"))])
    assert r.code == 0, r.err
    assert "daxX.Y/state" not in out.read_text()


@pytest.mark.parametrize(
    ("err", "code", "needle"),
    [
        (errno.EIO, 1, "dax0.0/state: Input/output error"),
        (errno.EACCES, 3, "dax0.0/state: run as root"),
    ],
)
def test_unreadable_state(
    err: int,
    code: int,
    needle: str,
    cli: Callable[..., Result],
    tree_copy: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A state file that cannot be read: one line naming the file, its documented exit code
    (1 for the kernel's I/O error, 3 when only root may read it), and no traceback."""
    root = tree_copy("v73_states")
    real_open = os.open

    def failing_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(path).endswith("dax0.0/state"):
            raise OSError(err, os.strerror(err))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", failing_open)
    r = cli(["show", "--sysroot", str(root)])
    assert r.code == code, r.err
    assert r.err.count("\n") == 1 and r.err.startswith("pyshim: error: cannot read ")
    assert needle in r.err
    assert r.out == ""


def test_a_large_unplugged_device_is_not_read_block_by_block(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    """An unplugged device (7.3) has no memory blocks, whatever its size: a 64 TiB one is
    neither read block by block nor refused for spanning more blocks than memoryN exist."""
    root = tree_copy("v73_states")
    dev = root / "sys/devices/platform/hmem.1/dax1.0"
    size = 64 << 40
    (dev / "size").write_text(f"{size}\n")
    (dev / "mapping0/end").write_text(f"{0x140000000 + size - 1:#x}\n")
    r = cli(["check", "--json", "--sysroot", str(root)])
    assert r.code == 0, r.err
    (unplugged,) = [d for d in json.loads(r.out)["devices"] if d["chardev"] == "dax1.0"]
    assert unplugged["total_memblocks"] == 0
