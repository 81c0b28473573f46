#!/bin/sh
# Install QEMU >= 8.0 from Debian's bookworm-backports suite, for the volatile CXL memory
# scenario (cxl-type3 volatile-memdev). Debian 12's own QEMU 7.2 only emulates persistent
# CXL memory.
#
# This REPLACES the system qemu-system-x86 (7.2 -> backports, 10.0 when written); every VM
# test and the demo run on it. Only this package and what it needs come from backports
# (apt's default pin keeps everything else on bookworm). Safe to run again: a second run
# finds QEMU >= 8 and does nothing. Needs root.
#
#   sh tests/vm/setup-backports-qemu.sh          # install
#   sh tests/vm/setup-backports-qemu.sh --check  # exit 0 if QEMU >= 8 is installed, else 1
set -eu

qemu_major() {
    qemu-system-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -n1
}

major=$(qemu_major || true)
if [ "${major:-0}" -ge 8 ]; then
    echo "setup-backports-qemu: qemu-system-x86_64 $major.x already installed"
    exit 0
fi
if [ "${1:-}" = "--check" ]; then
    echo "setup-backports-qemu: qemu-system-x86_64 ${major:-missing} < 8" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "setup-backports-qemu: run as root (it adds an apt source and installs a package)" >&2
    exit 3
fi
. /etc/os-release
if [ "${VERSION_CODENAME:-}" != "bookworm" ]; then
    echo "setup-backports-qemu: this is for Debian 12 (bookworm), not ${VERSION_CODENAME:-?}" >&2
    exit 3
fi

# The same mirror that the system's bookworm entry uses.
mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources \
    2>/dev/null | head -n1)
mirror=${mirror:-http://deb.debian.org/debian}
list=/etc/apt/sources.list.d/memmap-kmem-bookworm-backports.sources
cat >"$list" <<EOF
# Added by memmap-kmem tests/vm/setup-backports-qemu.sh for QEMU >= 8.0 (volatile CXL memory).
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q -t bookworm-backports qemu-system-x86
echo "setup-backports-qemu: $(qemu-system-x86_64 --version | head -n1)"
