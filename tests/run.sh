#!/usr/bin/env bash
# Runs the whole test suite: sets everything up first (examples/setup.sh).
# Extra arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$top/examples/setup.sh"
venv=${MCT_VENV:-$top/.venv}
cd "$top"
exec "$venv/bin/python" -m pytest "$@"
