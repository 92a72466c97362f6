#!/usr/bin/env bash
# Runs an OCI layout image with runc as a microcontainer: read-only root, no
# terminal, no capabilities, tmpfs on /run and /tmp. Needs root, runc, umoci.
#   examples/runc-run.sh LAYOUT_DIR[:TAG] [ARGS...]
set -euo pipefail
image=$1; shift
[[ $image == *:* ]] || image="$image:latest"
bundle=$(mktemp -d)
name="mct-$$-$RANDOM"
trap 'runc delete --force "$name" >/dev/null 2>&1 || true; rm -rf "$bundle"' EXIT
umoci unpack --image "$image" "$bundle/b" >/dev/null
python3 - "$bundle/b/config.json" "$@" <<'PY'
import json, sys
path, args = sys.argv[1], sys.argv[2:]
config = json.load(open(path))
config["root"]["readonly"] = True
process = config["process"]
process["terminal"] = False
process["noNewPrivileges"] = True
process["capabilities"] = {k: [] for k in ("bounding", "effective", "inheritable", "permitted", "ambient")}
if args:
    process["args"] = args
for target in ("/run", "/tmp"):
    config["mounts"].append({"destination": target, "type": "tmpfs", "source": "tmpfs",
                             "options": ["nosuid", "nodev", "mode=1777"]})
json.dump(config, open(path, "w"))
PY
runc run --bundle "$bundle/b" "$name" </dev/null
