#!/bin/sh
# qemu-plugin.h of the QEMU that the project installs (tests/vm/setup-backports-qemu.sh:
# bookworm-backports), from Debian's qemu source package of exactly the installed version,
# through an apt configuration of its own under the cache ($APT_CONFIG; deb-src lines only,
# its own lists and an empty dpkg status: the host's /etc/apt is neither read nor written).
# Prints the include directory. Downloads once (the orig tarball, ~100 MB).
#
#   sh bench/costs/qemu-plugin-api.sh        # -> $CACHE/qemu-plugin-api/<version>/include
set -eu

cache=${MEMMAP_KMEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/memmap-kmem}
version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
if [ -z "$version" ]; then
    echo "qemu-plugin-api: qemu-system-x86 is not installed (make vm-deps)" >&2
    exit 3
fi
out=$cache/qemu-plugin-api/$version
if [ -f "$out/include/qemu-plugin.h" ]; then
    echo "$out/include"
    exit 0
fi
root=$cache/qemu-plugin-api/apt
mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d" "$root/etc/apt/preferences.d" \
    "$root/etc/apt/trusted.gpg.d" "$root/var/lib/apt/lists/partial" \
    "$root/var/cache/apt/archives/partial" "$root/var/lib/dpkg" "$out/download"
: >"$root/var/lib/dpkg/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
{
    for suite in bookworm-backports trixie trixie-updates; do
        echo "deb-src [signed-by=$keyring] http://deb.debian.org/debian $suite main"
    done
    echo "deb-src [signed-by=$keyring] http://deb.debian.org/debian-security trixie-security main"
} >"$root/etc/apt/sources.list"
cat >"$root/apt.conf" <<CONF
Dir "$root/";
Dir::Etc "$root/etc/apt/";
Dir::State "$root/var/lib/apt/";
Dir::State::status "$root/var/lib/dpkg/status";
Dir::Cache "$root/var/cache/apt/";
Debug::NoLocking "true";
Acquire::Languages "none";
Acquire::Check-Valid-Until "false";
Acquire::Check-Date "false";
CONF
export APT_CONFIG="$root/apt.conf" LC_ALL=C
apt-get -q update >&2
# The orig tarball only (--tar-only): apt checks it against the sha256 of the installed
# version's .dsc (the backport's debian tarball is no longer served, so Debian's patches are
# not applied: the header is upstream's), and QEMU itself refuses a plugin built against
# another plugin API version (QEMU_PLUGIN_VERSION) at load time. Debian patches nothing of
# the plugin API in that version (bench/README.md, "The meter").
(cd "$out/download" && apt-get -q source --download-only --tar-only "qemu=$version" >&2) || true
orig=$(ls "$out/download"/qemu_*.orig.tar.* 2>/dev/null | head -n1)
if [ -z "$orig" ]; then
    echo "qemu-plugin-api: Debian's archive did not serve the orig tarball of qemu $version" >&2
    exit 1
fi
mkdir -p "$out/include"
tar -xOf "$orig" --wildcards '*/include/qemu/qemu-plugin.h' >"$out/include/qemu-plugin.h.new"
mv "$out/include/qemu-plugin.h.new" "$out/include/qemu-plugin.h"
rm -f "$orig"   # keep the small files, not the 100 MB tarball
echo "$out/include"
