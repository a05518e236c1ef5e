#!/usr/bin/env bash
# Runs every suite: native (core, engine, reference broker), browser
# (wasm-bindgen-test in headless Chromium against a real broker), and end
# to end (Playwright driving Chromium against the reference broker).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh test
bash scripts/build.sh

echo "== lint: rustfmt, clippy on the native and browser builds, the package's TypeScript declarations"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --target wasm32-unknown-unknown --lib --tests -- -D warnings
cargo clippy -p rindle-upload-checksum --target wasm32-unknown-unknown --features module -- -D warnings
# An example app type-checked against pkg/ (strict, lib es2022 + dom, no skipLibCheck).
node_modules/.bin/tsc -p examples/typescript

echo "== native: core, engine, reference broker"
cargo test --workspace --lib --bins --tests

echo "== browser: XHR transport and HTTP broker in headless Chromium, Firefox and WebKit"
data_dir=$(mktemp -d)
broker_log=$(mktemp)
webkit_log=$(mktemp)
webkit_pid=
ALLOWED_ORIGINS="http://127.0.0.1:*" PORT=0 DATA_DIR="$data_dir" RUST_LOG=warn target/release/rindle-broker >"$broker_log" 2>&1 &
broker_pid=$!
cleanup() {
  kill "$broker_pid" $webkit_pid 2>/dev/null || true
  wait "$broker_pid" $webkit_pid 2>/dev/null || true
  rm -rf "$data_dir" "$broker_log" "$webkit_log"
}
trap cleanup EXIT
for _ in $(seq 100); do
  broker_url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$broker_log")
  [ -n "$broker_url" ] && break
  sleep 0.1
done
[ -n "$broker_url" ] || { cat "$broker_log"; echo "the broker did not start"; exit 1; }
RINDLE_TEST_BROKER="$broker_url" CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}" \
  cargo test --target wasm32-unknown-unknown --test browser
RINDLE_TEST_BROKER="$broker_url" GECKODRIVER="${GECKODRIVER:-$HOME/.cargo/bin/geckodriver}" \
  cargo test --target wasm32-unknown-unknown --test browser
# The test runner opens Safari sessions; this serves WebKitWebDriver with the MiniBrowser.
node scripts/webkit-driver.mjs >"$webkit_log" 2>&1 &
webkit_pid=$!
for _ in $(seq 100); do
  webkit_url=$(sed -n 's/^webkit driver on //p' "$webkit_log")
  [ -n "$webkit_url" ] && break
  sleep 0.1
done
[ -n "$webkit_url" ] || { cat "$webkit_log"; echo "WebKitWebDriver did not start"; exit 1; }
RINDLE_TEST_BROKER="$broker_url" SAFARIDRIVER_REMOTE="$webkit_url" \
  cargo test --target wasm32-unknown-unknown --test browser
cleanup
trap - EXIT

echo "== Garage (S3-compatible store) for the suites that need it"
. scripts/start-garage.sh

echo "== native: the engine against Garage"
cargo test --test garage -- --ignored

echo "== fault trials: ${FAULT_TRIALS:-20} uploads per strategy through the fault-injecting proxy"
NODE_NO_WARNINGS=1 cargo test --test faults -- --ignored --nocapture

echo "== bench smoke run (a small file; no timing is asserted)"
NODE_NO_WARNINGS=1 node bench/run.mjs --sizes 8 --repeat 1 --check >/dev/null

echo "== end to end: public API and demo page in headless Chromium (embedded store, Garage, GCS emulator)"
# One suite at a time (each starts its own Chromium and servers); files
# named explicitly (a directory argument fails on Node 21 and later).
NODE_NO_WARNINGS=1 node --test --test-concurrency=1 --test-timeout=300000 tests/e2e/*.test.mjs

# After the Chromium suites, so that no Firefox or WebKit process is still
# shutting down while they run (the 1 GiB suite watches for long tasks).
echo "== end to end in Firefox and WebKit over WebDriver"
NODE_NO_WARNINGS=1 node --test --test-concurrency=1 --test-timeout=300000 tests/e2e/engines.webdriver.mjs
