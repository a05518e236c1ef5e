#!/usr/bin/env bash
# npm run bench [-- --sizes 256,1024 --repeat 3 --write]: sets up, builds,
# starts Garage, and runs bench/run.mjs (see docs/benchmarks.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
bash scripts/build.sh
. scripts/start-garage.sh
NODE_NO_WARNINGS=1 node bench/run.mjs "$@"
