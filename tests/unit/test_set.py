"""set and --persist: writes, errno messages, and that every write stays under --sysroot."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from unit_helpers import Result, run_cli, tree_path

from pyshim import kernel
from pyshim.errors import OperationFailed
from pyshim.parse import SETTING_WORDS

ATTR = "sys/bus/dax/drivers/kmem/memmap_on_memory"
CONF = "etc/modprobe.d/dax-kmem-memmap.conf"


@pytest.mark.parametrize(
    ("word", "stored"),
    [("on", "on"), ("off", "off"), ("global", "global")],
)
def test_set_writes_attribute(
    word: str, stored: str, cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    root = tree_copy("patched_on")
    r = cli(["set", "--driver", "dax_kmem", word, "--sysroot", str(root)])
    assert r.code == 0, r.err
    assert (root / ATTR).read_text() == stored
    assert r.out == f"dax_kmem memmap_on_memory: {stored} (was on)\n"
    assert "dax0.0 is already bound to kmem" in r.err


def test_set_default_is_on(cli: Callable[..., Result], tree_copy: Callable[[str], Path]) -> None:
    root = tree_copy("mixed")
    assert cli(["set", "--sysroot", str(root)]).code == 0
    assert (root / ATTR).read_text() == "on"


@pytest.mark.parametrize("word", ["1", "0", "yes", "no", "true", "false"])
def test_set_refuses_boolean_words(
    word: str, cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    """The kernel takes exactly global, on and off (series v3): so does the shim."""
    root = tree_copy("patched_on")
    r = cli(["set", word, "--sysroot", str(root)])
    assert r.code == 2, r.err
    assert (root / ATTR).read_text() == "on\n"


def test_set_invalid_value(cli: Callable[..., Result], tree_copy: Callable[[str], Path]) -> None:
    root = tree_copy("patched_on")
    r = cli(["set", "force", "--sysroot", str(root)])
    assert r.code == 2
    assert r.err == "pyshim: error: invalid value 'force': use one of global, on, off\n"
    assert (root / ATTR).read_text() == "on\n"


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One writable tree for every Hypothesis example (a copy per example costs seconds)."""
    import shutil

    root = tmp_path_factory.mktemp("strict") / "patched_on"
    shutil.copytree(tree_path("patched_on"), root, symlinks=True)
    return root


# deadline off: each example runs the CLI on a tree, which a loaded machine slows down
@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=12), st.sampled_from(sorted(SETTING_WORDS))))
def test_nothing_outside_the_accepted_words_is_written(shared_root: Path, text: str) -> None:
    attr = shared_root / ATTR
    attr.write_text("global\n")
    r = run_cli(["set", "--sysroot", str(shared_root), "--", text])
    if text in SETTING_WORDS:
        assert r.code == 0, r.err
        assert attr.read_text() == SETTING_WORDS[text].value
    else:
        assert r.code == 2
        assert "use one of global, on, off" in r.err
        assert attr.read_text() == "global\n"


def test_unknown_driver_lists_known(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    r = cli(["set", "--driver", "cxl_acpi", "--sysroot", str(tree_copy("patched_on"))])
    assert r.code == 2
    assert r.err == "pyshim: error: unknown driver 'cxl_acpi': known drivers: dax_kmem\n"


@pytest.mark.parametrize("bad", ["../../etc", "dax/kmem", "Dax_Kmem", ""])
def test_driver_name_validated(
    bad: str, cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    r = cli(["set", "--driver", bad, "--sysroot", str(tree_copy("patched_on"))])
    assert r.code == 2 and "known drivers: dax_kmem" in r.err


def test_persist_module_writes_modprobe_conf(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    root = tree_copy("patched_on")
    r = cli(["set", "on", "--persist", "--sysroot", str(root)])
    assert r.code == 0, r.err
    text = (root / CONF).read_text()
    assert "options kmem memmap_on_memory=on\n" in text
    assert oct((root / CONF).stat().st_mode & 0o777) == "0o644"
    leftovers = [p for p in (root / "etc/modprobe.d").iterdir() if p.name != CONF.split("/")[-1]]
    assert leftovers == []


def test_persist_builtin_prints_cmdline(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path]
) -> None:
    root = tree_copy("builtin_offline")
    r = cli(["set", "on", "--persist", "--sysroot", str(root)])
    assert r.code == 0, r.err
    assert r.out.splitlines()[-1] == "kmem.memmap_on_memory=on"
    assert not (root / "etc").exists()


def test_not_root_on_live_system(
    cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the live root a non-root user is told to run as root before anything is written."""
    monkeypatch.setattr(kernel.Sysfs, "require_driver_setting", lambda self, spec: None)
    monkeypatch.setattr(kernel.Sysfs, "write_attr", lambda *a: pytest.fail("wrote"))
    r = cli(["set", "on"], euid=1000)
    assert r.code == 3 and r.err.endswith("run as root\n")


def _fail_write(err: int) -> Callable[..., None]:
    def write_attr(self: kernel.Sysfs, rel: str, value: str) -> None:
        raise kernel.KernelWriteError("x", err, self.path(rel))

    return write_attr


@pytest.mark.parametrize(
    ("err", "code", "needle"),
    [
        (errno.EOPNOTSUPP, 3, "cannot place the memmap on hot-plugged memory"),
        (errno.EINVAL, 1, "EINVAL"),
        # as root (run_cli's euid): the file refuses, running as root again would not help
        (errno.EACCES, 1, "Permission denied (check its permissions)"),
        (errno.EPERM, 1, "Operation not permitted (immutable? see lsattr)"),
        (
            errno.EBUSY,
            1,
            "dax0.0 bound to kmem; release with pyshim reconfigure --mode devdax dax0.0",
        ),
        (errno.EIO, 1, "Input/output error"),
    ],
)
def test_set_errno_messages(
    err: int,
    code: int,
    needle: str,
    cli: Callable[..., Result],
    tree_copy: Callable[[str], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tree_copy("patched_on")
    monkeypatch.setattr(kernel.Sysfs, "write_attr", _fail_write(err))
    r = cli(["set", "on", "--sysroot", str(root)])
    assert r.code == code
    assert needle in r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err


def test_set_reads_back_what_it_wrote(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write the kernel accepted but did not apply (the value reads back unchanged) fails."""
    root = tree_copy("patched_on")
    monkeypatch.setattr(kernel.Sysfs, "write_attr", lambda self, rel, value: None)
    r = cli(["set", "off", "--sysroot", str(root)])
    assert r.code == 1
    assert r.err == f"pyshim: error: {root / ATTR} reads on after writing off: see dmesg\n"


def test_eopnotsupp_names_block_size(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree_copy("patched_on")
    (root / "sys/devices/system/memory/block_size_bytes").write_text("4000000\n")  # 64 MiB
    monkeypatch.setattr(kernel.Sysfs, "write_attr", _fail_write(errno.EOPNOTSUPP))
    r = cli(["set", "on", "--sysroot", str(root)])
    assert r.code == 3
    assert "memory block size 64 MiB" in r.err and "pageblock" in r.err


def test_eopnotsupp_names_config(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree_copy("patched_on")
    (root / "sys/module/memory_hotplug/parameters/memmap_on_memory").unlink()
    monkeypatch.setattr(kernel.Sysfs, "write_attr", _fail_write(errno.EOPNOTSUPP))
    r = cli(["set", "on", "--sysroot", str(root)])
    assert r.code == 3 and "CONFIG_MHP_MEMMAP_ON_MEMORY" in r.err


def test_kmem_not_loaded(cli: Callable[..., Result], tree_copy: Callable[[str], Path]) -> None:
    import shutil

    root = tree_copy("patched_on")
    shutil.rmtree(root / "sys/bus/dax/drivers/kmem")
    r = cli(["set", "on", "--sysroot", str(root)])
    assert r.code == 3 and "modprobe kmem" in r.err


def test_every_write_stays_under_sysroot(
    cli: Callable[..., Result], tree_copy: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree_copy("patched_on")
    written: list[str] = []
    real_open, real_replace, real_mkstemp = os.open, os.replace, tempfile.mkstemp
    real_makedirs, real_chmod = os.makedirs, os.chmod
    real_rename, real_mkdir = os.rename, os.mkdir

    def at(path: Any, dir_fd: int | None) -> str:
        if dir_fd is None:
            return os.fspath(path)
        return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), os.fspath(path))

    def spy_open(path: Any, flags: int, *args: Any, dir_fd: int | None = None, **kw: Any) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC):
            written.append(at(path, dir_fd))
        return real_open(path, flags, *args, dir_fd=dir_fd, **kw)

    def spy_rename(src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None) -> None:
        written.extend([at(src, src_dir_fd), at(dst, dst_dir_fd)])
        real_rename(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    def spy_mkdir(path: Any, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        written.append(at(path, dir_fd))
        real_mkdir(path, mode, dir_fd=dir_fd)

    def spy_replace(src: Any, dst: Any) -> None:
        written.extend([os.fspath(src), os.fspath(dst)])
        real_replace(src, dst)

    def spy_mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, path = real_mkstemp(*args, **kwargs)
        written.append(path)
        return fd, path

    def spy_makedirs(path: Any, *args: Any, **kwargs: Any) -> None:
        written.append(os.fspath(path))
        real_makedirs(path, *args, **kwargs)

    def spy_chmod(path: Any, *args: Any, **kwargs: Any) -> None:
        written.append(os.fspath(path))
        real_chmod(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy_open)
    monkeypatch.setattr(os, "rename", spy_rename)
    monkeypatch.setattr(os, "mkdir", spy_mkdir)
    monkeypatch.setattr(os, "replace", spy_replace)
    monkeypatch.setattr(tempfile, "mkstemp", spy_mkstemp)
    monkeypatch.setattr(os, "makedirs", spy_makedirs)
    monkeypatch.setattr(os, "chmod", spy_chmod)
    for argv in (["set", "off"], ["set", "global", "--persist"], ["set", "on", "--persist"]):
        assert cli([*argv, "--sysroot", str(root)]).code == 0
    for argv in (["show"], ["check"], ["plan", "--capacity", "1G"]):
        assert cli([*argv, "--sysroot", str(root)]).code == 0
    assert written, "the spies saw no write"
    base = os.path.realpath(root)
    for path in written:
        assert os.path.realpath(path).startswith(base + os.sep), path


def test_write_refuses_escape(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "sys").mkdir(parents=True)
    (root / "sys/evil").symlink_to(outside)
    sysfs = kernel.Sysfs(root)
    with pytest.raises(OperationFailed, match="refusing to write outside"):
        sysfs.write_attr("sys/evil/x", "1")
    with pytest.raises(OperationFailed, match="refusing to write outside"):
        sysfs.write_attr("../x", "1")
    with pytest.raises(OperationFailed, match="refusing to write outside"):
        sysfs.write_file_atomic("/etc/x", "1")
    assert list(outside.iterdir()) == []


def test_setting_read_from_the_module_parameter(tmp_path: Path) -> None:
    """Where the driver attribute is missing, the module parameter (current since v3)."""
    from pyshim.drivers import DRIVERS
    from pyshim.parse import KmemSetting

    spec = DRIVERS["dax_kmem"]
    (tmp_path / spec.driver_path).mkdir(parents=True)
    param = tmp_path / spec.parameter_path
    param.parent.mkdir(parents=True)
    param.write_text("off\n")
    sysfs = kernel.Sysfs(str(tmp_path))
    assert sysfs.driver_setting(spec) is KmemSetting.OFF
    (tmp_path / spec.attribute_path).write_text("on\n")
    assert sysfs.driver_setting(spec) is KmemSetting.ON


def _no_openat2(dir_fd: int, rel: str, flags: int) -> int:
    raise OSError(errno.ENOSYS, "openat2 not here", rel)


@pytest.mark.parametrize("resolver", ["openat2", "walk"])
def test_writes_resolve_beneath_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resolver: str
) -> None:
    """Both resolvers (openat2 RESOLVE_BENEATH, and the walk kept for kernels before 5.6)
    follow symlinks that stay inside the root and refuse every way out: an absolute symlink,
    a relative one that climbs above the root, `..`, a hard link, a symlink as the file."""
    from pyshim import beneath

    if resolver == "walk":
        monkeypatch.setattr(beneath, "_openat2", _no_openat2)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x").write_text("outside\n")
    root = tmp_path / "root"
    (root / "sys/devices/real").mkdir(parents=True)
    (root / "sys/devices/real/attr").write_text("0\n")
    (root / "sys/inside").symlink_to("devices/real")  # relative, stays inside: followed
    (root / "sys/abs").symlink_to(outside)
    (root / "sys/climb").symlink_to("../../outside")
    (root / "sys/devices/real/hard").unlink(missing_ok=True)
    os.link(outside / "x", root / "sys/devices/real/hard")
    (root / "sys/devices/real/link").symlink_to("attr")
    sysfs = kernel.Sysfs(root)

    sysfs.write_attr("sys/inside/attr", "1")
    assert (root / "sys/devices/real/attr").read_text() == "1"
    for rel in ("sys/abs/x", "sys/climb/x", "sys/../../outside/x", "sys/devices/real/hard",
                "sys/devices/real/link"):  # fmt: skip
        with pytest.raises(OperationFailed, match="refusing to write"):
            sysfs.write_attr(rel, "1")
    assert (outside / "x").read_text() == "outside\n"
    assert sorted(p.name for p in outside.iterdir()) == ["x"]
    assert sorted(p.name for p in (root / "sys/devices/real").iterdir()) == [
        "attr", "hard", "link"
    ]  # fmt: skip
