#!/usr/bin/env bash
# Installs what building, the demo and the tests need, each only if missing:
# the wasm target, wasm-bindgen-cli at the version Cargo.toml pins, npm
# packages, and (with the argument `test`) the stores and the three browser
# engines with their WebDriver servers.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# rust-src: the WebAssembly builds compile the standard library (build.sh).
for component in rustfmt clippy rust-src; do
  if ! rustup component list --installed | grep -q "^$component"; then
    say "adding the $component component"
    rustup component add "$component"
  fi
done

pinned=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)"/\1/p' Cargo.toml)
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$pinned" ]; then
  say "installing wasm-bindgen-cli $pinned (a few minutes, once)"
  cargo install wasm-bindgen-cli --version "$pinned" --no-default-features
fi

if [ ! -x node_modules/.bin/wasm-opt ] || [ ! -d node_modules/playwright-core ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm packages"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund
fi

# Garage (the S3 store the tests run against) takes ~11 minutes to build on
# two cores: start it in the background; scripts/test.sh waits for it just
# before the suites that need it.
if [ "${1:-}" = test ] && ! command -v garage >/dev/null 2>&1 && ! kill -0 "$(cat .data/garage-install.pid 2>/dev/null)" 2>/dev/null; then
  say "building Garage 2.5.0 in the background (once)"
  mkdir -p .data
  setsid nohup cargo install garage@2.5.0 --locked >.data/garage-install.log 2>&1 </dev/null &
  echo $! >.data/garage-install.pid
fi

if [ "${1:-}" = test ] && ! command -v gcp-storage-emulator >/dev/null 2>&1; then
  say "installing gcp-storage-emulator (PyPI)"
  python3 -m pip install -q --disable-pip-version-check gcp-storage-emulator
fi

# The three engines the browser suites run in: Chromium, Firefox ESR and
# WebKitGTK (MiniBrowser, under xvfb-run), each over WebDriver.
if [ "${1:-}" = test ] && ! { command -v chromium && command -v chromedriver && command -v firefox-esr \
     && command -v WebKitWebDriver && command -v xvfb-run; } >/dev/null 2>&1; then
  say "installing Debian's chromium, chromium-driver, firefox-esr, webkit2gtk-driver and xvfb"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver firefox-esr webkit2gtk-driver xvfb
fi

if [ "${1:-}" = test ] && [ "$(geckodriver --version 2>/dev/null | awk 'NR == 1 {print $2}')" != 0.37.1 ]; then
  say "installing geckodriver 0.37.1 (crates.io; a few minutes, once)"
  cargo install geckodriver --version 0.37.1
fi
