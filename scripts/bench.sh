#!/usr/bin/env bash
# npm run bench [-- --sizes 256,1024 --repeat 3 --write]: sets up, builds,
# starts Garage, and runs bench/run.mjs (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/build.sh
while kill -0 "$(cat .data/garage-install.pid 2>/dev/null)" 2>/dev/null; do sleep 5; done
garage_dir=$(mktemp -d)
trap 'kill "$(cat "$garage_dir/garage.pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$garage_dir"' EXIT
NODE_NO_WARNINGS=1 bash scripts/garage.sh "$garage_dir"
set -a
. "$garage_dir/env"
set +a
NODE_NO_WARNINGS=1 node bench/run.mjs "$@"
