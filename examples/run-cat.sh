#!/usr/bin/env bash
# The main example, from a fresh Debian machine: set up, build smith's "cat"
# microcontainer from this machine's / and run it with runc, read-only root.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$top/examples/setup.sh"
venv=${MCT_VENV:-$top/.venv}
out="$top/out"
mkdir -p "$out"

"$venv/bin/microcontainer" build -c "$top/examples/cat" -o "$out/cat" --tag latest
"$venv/bin/microcontainer" inspect "$out/cat"

if [ "$(id -u)" != 0 ] || ! command -v runc >/dev/null || ! command -v umoci >/dev/null; then
    echo "built $out/cat; to run it: umoci unpack --image $out/cat:latest BUNDLE && runc run --bundle BUNDLE cat (as root)"
    exit 0
fi
bundle=$(mktemp -d)
trap 'runc delete --force mct-cat-$$ >/dev/null 2>&1 || true; rm -rf "$bundle"' EXIT
umoci unpack --image "$out/cat:latest" "$bundle/b" >/dev/null
# A microcontainer runs with a read-only root, no terminal, tmpfs on /run.
"$venv/bin/python" - "$bundle/b/config.json" <<'PY'
import json, sys
path = sys.argv[1]
config = json.load(open(path))
config["root"]["readonly"] = True
config["process"]["terminal"] = False
config["mounts"].append({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid", "nodev", "mode=1777"]})
json.dump(config, open(path, "w"))
PY
echo "--- runc run (read-only root, uid $(python3 -c "import json;print(json.load(open('$bundle/b/config.json'))['process']['user']['uid'])")):"
runc run --bundle "$bundle/b" "mct-cat-$$" </dev/null
