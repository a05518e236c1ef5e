# Sourced by the scripts that need Garage: waits for its background build
# (scripts/setup.sh test), starts one in a temporary directory, exports its
# S3_* variables, and stops it when the sourcing script exits.
while kill -0 "$(cat .data/garage-install.pid 2>/dev/null)" 2>/dev/null; do sleep 5; done
command -v garage >/dev/null || { tail -20 .data/garage-install.log; echo "Garage is not installed"; exit 1; }
garage_dir=$(mktemp -d)
stop_garage() { kill "$(cat "$garage_dir/garage.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$garage_dir"; }
trap stop_garage EXIT
NODE_NO_WARNINGS=1 bash scripts/garage.sh "$garage_dir"
set -a
. "$garage_dir/env"
set +a
