#!/usr/bin/env bash
# The main example, from a fresh Debian machine: set everything up, build the
# example monorepo's images with `scons image` (a C program and its in-tree
# shared library, a second program reusing it, smith's cat), then run them
# with runc as microcontainers (read-only root, uid 10, no capabilities).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$top/examples/setup.sh"
venv=${MCT_VENV:-$top/.venv}
cd "$top"
"$venv/bin/scons" -Q image
"$venv/bin/microcontainer" inspect build/images/hello

if [ "$(id -u)" != 0 ] || ! command -v runc >/dev/null || ! command -v umoci >/dev/null; then
    echo "built build/images/{hello,goodbye,cat}; run one as root with: examples/runc-run.sh build/images/cat"
    exit 0
fi
for image in cat hello goodbye; do
    echo "--- runc run build/images/$image"
    examples/runc-run.sh "build/images/$image"
done
