#!/usr/bin/env bash
# Install the Debian packages that userspace/build.py needs to build the patched daxctl
# (ndctl) and lsmem (util-linux), and that tests/userspace needs to run them. Does nothing
# (no apt-get update) when all are present already. Kept apart from install-deps.sh.
set -euo pipefail

packages=(
	# the builder: a private apt configuration for Debian's source tarballs, git am, meson
	apt debian-archive-keyring git xz-utils build-essential pkg-config meson ninja-build
	# ndctl (daxctl only, its man pages with asciidoctor)
	libkmod-dev libudev-dev uuid-dev libjson-c-dev libiniparser-dev asciidoctor
	# util-linux's own test suite (tests/ts/lsmem unpacks .tar.bz2 dumps)
	bzip2 tar
	# tests/userspace: daxctl in a mount namespace (unshare, mount)
	util-linux mount
)

missing=()
for pkg in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "install-userspace-deps: missing packages ${missing[*]}: run as root or install them" >&2
	exit 3
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
