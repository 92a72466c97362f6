#!/usr/bin/env bash
# Installs everything microcontainer-tool needs to build, run and test images,
# then the tool itself into a virtual environment (.venv, or $MCT_VENV).
# Idempotent: a second run installs nothing. Debian/Ubuntu; apt-get needs root.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MCT_VENV:-$top/.venv}

# runc runs images; umoci, skopeo and oci-image-tool check them in the tests;
# gcc builds test fixtures; rpm (rpmbuild), rpm2cpio, cpio and createrepo-c make and
# check RPM fixtures and repositories; docker-registry, apache2-utils (htpasswd) and openssl
# run real registries in the tests; busybox-static is the debug toolbox; debootstrap builds
# the fat Debian+nginx image the microize test cuts a server out of; python3-venv makes
# the virtual environment; qemu-user-static runs ld.so and the layer compressor as other
# CPUs (qemu-x86_64-static -cpu Haswell-v4/Nehalem/max), since their answers depend on the CPU;
# curl is the host program several tests image, gnupg (gpg) makes the keys the RPM signature
# tests sign with; podman and containerd (ctr) are the container clients the tests load, name and
# run the outputs with (tests/test_clients.py).
apt_packages=(runc umoci skopeo oci-image-tool gcc libc6-dev python3-venv rpm rpm2cpio cpio createrepo-c
              docker-registry apache2-utils openssl busybox-static debootstrap qemu-user-static curl gnupg
              podman containerd
              # the debug toolbox's default programs (microcontainer debug, tests/test_debug_toolbox.py)
              strace gdb tcpdump lsof iproute2)
missing=()
for pkg in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: apt-get install ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: warning: not root or no apt-get; missing: ${missing[*]}" >&2
    fi
fi

# Multi-platform images (tests/test_platforms.py): arm64 .debs come from Debian's archive
# (dpkg --add-architecture arm64), and runc runs arm64 programs through qemu-aarch64-static,
# registered with binfmt_misc with the F flag (the interpreter is opened at registration, so it
# works inside a container's root). Both steps are idempotent.
if [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "setup: dpkg --add-architecture arm64" >&2
        dpkg --add-architecture arm64
        apt-get update -qq
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || true
    fi
    if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] \
            && [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
        echo "setup: registering qemu-aarch64 with binfmt_misc" >&2
        grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf | grep -v '^$' > /proc/sys/fs/binfmt_misc/register
    fi
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
stamp="$venv/.mct-installed"
if [ ! -f "$stamp" ] || [ "$top/setup.cfg" -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$top[test]"
    touch "$stamp"
fi
