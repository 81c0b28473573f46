#!/bin/sh
# PID 1 of the test guest. The kernel starts it as `/bin/sh <this file> <python> <agent.py>`
# (arguments after `--` on the kernel command line), with the host's root mounted read-only
# over virtio-9p. Mount what a read-only root cannot provide, then hand over to the agent,
# which runs the job from the host, writes result.json to the writable share and powers off.
# If anything here fails, the kernel panics when PID 1 exits and QEMU (-no-reboot) quits:
# the host then reports "no result" and keeps the serial log.

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 TERM=dumb

mountpoint -q /proc || mount -t proc -o nosuid,nodev,noexec proc /proc
mountpoint -q /sys || mount -t sysfs -o nosuid,nodev,noexec sysfs /sys
mountpoint -q /dev || mount -t devtmpfs -o nosuid devtmpfs /dev
mountpoint -q /run || mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
# What udev would add to devtmpfs: bash's process substitution needs /dev/fd.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
# A checkout under /tmp (CI may clone there) would vanish under the tmpfs: move the
# top directory that holds the agent from the host's view onto the new tmpfs.
for dir in /tmp /var/tmp /var/lib/misc; do
    mountpoint -q "$dir" && continue
    keep=
    case "$2" in
    "$dir"/*)
        sub=${2#"$dir"/}
        keep=${sub%%/*}
        mkdir -p "/run/keep/$keep"
        mount --bind "$dir/$keep" "/run/keep/$keep"
        ;;
    esac
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$dir" 2>/dev/null
    if [ -n "$keep" ]; then
        mkdir -p "$dir/$keep"
        mount --move "/run/keep/$keep" "$dir/$keep"
    fi
done
# daxctl looks up the built-in kmem driver through libkmod: /lib/modules/$(uname -r) must
# exist and hold modules.builtin; the agent writes it and runs depmod. A host without
# /lib/modules (a container) gets a writable overlay on the directory that holds it.
if [ -d /lib/modules ]; then
    mount -t tmpfs -o mode=0755 tmpfs /lib/modules
else
    libdir=$(readlink -f /lib)
    mkdir -p /run/lib-overlay/upper /run/lib-overlay/work
    mount -t overlay overlay \
        -o "lowerdir=$libdir,upperdir=/run/lib-overlay/upper,workdir=/run/lib-overlay/work" \
        "$libdir"
    mkdir -p /lib/modules
fi
# `pyshim set --persist` writes /etc/modprobe.d (kmem as a module): a writable copy of
# the host's directory, so that a reload of kmem in the guest reads what was written.
if [ -d /etc/modprobe.d ]; then
    cp -a /etc/modprobe.d /run/modprobe.d
    mount -t tmpfs -o mode=0755 tmpfs /etc/modprobe.d
    cp -a /run/modprobe.d/. /etc/modprobe.d/
fi
mkdir -p /run/vmtest
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmtest /run/vmtest

read -r up _ </proc/uptime; echo "vmtest: init mounts done at $up s"
exec "$1" "$2" /run/vmtest
