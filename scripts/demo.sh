#!/usr/bin/env bash
# Sets up, builds, and starts the reference broker, which serves the demo
# page at http://127.0.0.1:${PORT:-8080}/ with its embedded local store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
echo "Open http://127.0.0.1:${PORT:-8080}/ (Ctrl-C stops the broker)"
exec target/release/rindle-broker
