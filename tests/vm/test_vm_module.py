"""kmem as a module, as every distribution builds it (issue 7, item 4).

These boots use the modular variant (`make kernel-debug`: kmem and its KUnit suite are
modules, with KASAN, lockdep and kmemleak) and tell the guest not to load kmem itself: the
steps load, reload and unload it. The global parameter is off throughout, so memmap on
memory can only come from the kmem setting.
"""

from __future__ import annotations

from typing import Any

import pytest

from vmtest import asserts, placement
from vmtest import steps as s
from vmtest.harness import Harness
from vmtest.machine import Source
from vmtest.runner import VMResult

# The modular debug kernel is built for the 6.12 backport only (README, "Two kernel bases").
pytestmark = [pytest.mark.vm, pytest.mark.bases("6.12")]

GLOBAL_N = "memory_hotplug.memmap_on_memory=0"
MODPROBE_CONF = "/etc/modprobe.d/dax-kmem-memmap.conf"
DEVICE_DRIVER = "basename $(readlink -f /sys/bus/dax/devices/*/driver)"


def modular_boot(vm: Harness, steps: list[dict[str, Any]]) -> VMResult:
    # 512 MiB: the three whole blocks left after the namespace's metadata prove placement,
    # with less memory for the KASAN kernel to initialise under TCG.
    result = vm.boot(
        steps,
        kernel="modular",
        source=Source.PMEM,
        hotplug_mib=512,
        append=[GLOBAL_N],
        timeout=600,
        load_kmem=False,
    )
    asserts.booted_ok(result)
    return result


def ran_ok(result: VMResult, label: str) -> dict[str, Any]:
    out = result.step(label)
    assert out["rc"] == 0, f"{out['argv']}: exit {out['rc']}: {out['stderr']}\n{result.describe()}"
    return out


def test_module_bad_parameter_reload_and_persist(vm: Harness) -> None:
    """A bad parameter makes modprobe fail and binds nothing; an unload with nothing bound
    forgets a runtime write (the next load starts from its parameter or the Kconfig default);
    `pyshim set --persist` writes modprobe.d, which the next load applies."""
    result = modular_boot(
        vm,
        [
            s.pmem_devdax(),
            s.run("bad", "modprobe", "kmem", "memmap_on_memory=yellow"),
            s.run("after_bad", "ls", "/sys/bus/dax/drivers"),
            s.run("driver_after_bad", "sh", "-c", DEVICE_DRIVER),
            s.run("load", "modprobe", "kmem"),
            s.read(s.KMEM_ATTR, "default"),
            s.write(s.KMEM_ATTR, b"off", "runtime_off"),
            s.run("unload", "rmmod", "kmem"),
            s.run("reload", "modprobe", "kmem"),
            s.read(s.KMEM_ATTR, "after_reload"),
            s.run("unload_again", "rmmod", "kmem"),
            s.run("load_param", "modprobe", "kmem", "memmap_on_memory=off"),
            s.write(s.KMEM_ATTR, b"global", "runtime_global"),
            s.run("unload_param", "rmmod", "kmem"),
            s.run("reload_param", "modprobe", "kmem", "memmap_on_memory=off"),
            s.read(s.KMEM_ATTR, "after_reload_param"),
            s.shim("persist", "set", "--driver", "dax_kmem", "on", "--persist"),
            s.read(MODPROBE_CONF, "conf"),
            s.run("unload_persist", "rmmod", "kmem"),
            s.run("reload_persist", "modprobe", "kmem"),
            s.read(s.KMEM_ATTR, "after_persist"),
            s.snapshot("before"),
            s.online(),
            s.snapshot("after"),
        ],
    )
    bad = result.step("bad")
    # kmod's modprobe exits 1 and names the errno the module's init returned
    assert bad["rc"] == 1, (
        f"modprobe memmap_on_memory=yellow: exit {bad['rc']}\n{result.describe()}"
    )
    assert "could not insert 'kmem': Invalid argument" in bad["stderr"], bad["stderr"]
    log = asserts.kernel_log(result)
    assert "invalid for parameter `memmap_on_memory'" in log, "no kernel message naming it"
    assert "kmem" not in ran_ok(result, "after_bad")["stdout"].split(), "kmem loaded anyway"
    assert ran_ok(result, "driver_after_bad")["stdout"].strip() == "device_dax"
    for label in ("load", "unload", "reload", "unload_again", "load_param", "unload_param"):
        ran_ok(result, label)
    assert result.step("default")["value"] == "global", "Kconfig default of the debug variant"
    assert result.step("runtime_off")["errno"] is None
    assert result.step("after_reload")["value"] == "global", "a reload kept a runtime write"
    assert result.step("runtime_global")["errno"] is None
    assert result.step("after_reload_param")["value"] == "off", "reload ignored its parameter"
    persist = result.step("persist")
    assert persist["rc"] == 0, f"pyshim set --persist: {persist['stderr']}"
    assert "options kmem memmap_on_memory=on" in result.step("conf")["value"]
    ran_ok(result, "unload_persist")
    ran_ok(result, "reload_persist")
    assert result.step("after_persist")["value"] == "on", "modprobe.d was not applied"
    asserts.on_memory(placement.measure(result.step("before"), result.step("after")), result)
    asserts.clean_log(result)


def test_module_parameter_on_then_unload_with_memory_online(vm: Harness) -> None:
    """`modprobe kmem memmap_on_memory=on`: the setting starts on and the memmap goes on
    memory. Unloading kmem while that memory is online behaves as in 6.12: the memory
    cannot be removed and stays online (kmem says so), nothing is corrupted, no WARN; kmem
    loads again, with its default."""
    result = modular_boot(
        vm,
        [
            s.pmem_devdax(),
            s.run("load", "modprobe", "kmem", "memmap_on_memory=on"),
            s.read(s.KMEM_ATTR, "kmem_attr"),
            s.read(s.KMEM_PARAM, "kmem_param"),
            s.snapshot("before"),
            # sysfs: pyshim online on this kernel (about 80 s) runs in the test above.
            s.online(method="sysfs"),
            s.snapshot("onlined"),
            s.run("unload", "rmmod", "kmem"),
            s.snapshot("unloaded"),
            s.run("reload", "modprobe", "kmem"),
            s.read(s.KMEM_ATTR, "after_reload"),
            s.snapshot("reloaded"),
        ],
    )
    ran_ok(result, "load")
    assert result.step("kmem_attr")["value"] == "on", result.describe()
    assert result.step("kmem_param")["value"] == "on", result.describe()
    online = placement.measure(result.step("before"), result.step("onlined"))
    asserts.on_memory(online, result)
    ran_ok(result, "unload")
    log = asserts.kernel_log(result)
    assert "cannot be hotremoved until the next reboot" in log, "kmem did not report it"
    for label in ("unloaded", "reloaded"):
        snap = result.step(label)
        assert placement.node_memtotal(snap, 1) == placement.node_memtotal(
            result.step("onlined"), 1
        ), f"node 1 MemTotal changed after {label}"
        blocks = placement.node_blocks(snap, 1)
        assert blocks and all(b["memmap_on_memory"] == 1 for b in blocks), (
            f"{label}: blocks {blocks}"
        )
    ran_ok(result, "reload")
    assert result.step("after_reload")["value"] == "global"
    asserts.clean_log(result)
