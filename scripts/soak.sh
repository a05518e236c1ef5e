#!/usr/bin/env bash
# npm run soak [-- N]: N uploads per strategy (default 500) through the
# fault-injecting proxy into Garage, gcp-storage-emulator and @tus/server
# (tests/faults.rs), then a table of the faults injected. FAULT_SEED=...
# replays a run.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-500}
bash scripts/setup.sh test
bash scripts/build.sh
. scripts/start-garage.sh
FAULT_TRIALS="$count" NODE_NO_WARNINGS=1 cargo test --test faults -- --ignored --nocapture
