#!/usr/bin/env bash
# Builds the npm package into pkg/ (WASM + JS glue + TypeScript types) and
# the reference broker.
set -euo pipefail
cd "$(dirname "$0")/.."

# binaryen from npm is the wasm-opt that reads current rustc output; the
# features are those rustc enables by default for wasm32.
optimize() {
  node_modules/.bin/wasm-opt -Oz --strip-debug --strip-producers \
    --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    "$1" -o "$1"
}

# The WebAssembly builds also compile the standard library, for size: with
# `panic=immediate-abort` a panic is a bare trap (the browser build installs
# no panic hook, so its messages and locations were never shown), which
# takes the panic formatting and locations out, and std's
# `optimize_for_size` picks its smaller code. These are unstable options of
# the pinned stable toolchain, enabled for these two builds only
# (RUSTC_BOOTSTRAP); setup.sh adds the rust-src they compile.
wasm_build() {
  RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zunstable-options -Cpanic=immediate-abort -Zlocation-detail=none" \
    cargo build --profile wasm --target wasm32-unknown-unknown --lib \
    -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size --target-dir target/wasm-size "$@"
}

wasm_build
rm -rf pkg
wasm-bindgen target/wasm-size/wasm32-unknown-unknown/wasm/rindle_upload.wasm --out-dir pkg --target web
optimize pkg/rindle_upload_bg.wasm
# The checksum module (checksum/): what the checksum workers run, and a
# page without workers loads (src/web/checksums.rs); the page's module has
# none of the hashing.
wasm_build -p rindle-upload-checksum --features module
wasm-bindgen target/wasm-size/wasm32-unknown-unknown/wasm/rindle_upload_checksum.wasm --out-dir pkg --out-name checksum \
  --target web --no-typescript
optimize pkg/checksum_bg.wasm
cp js/checksum-worker.js js/checksum-stream.js pkg/
# The package's entry re-exports the glue and UploadError's class, whose
# module wasm-bindgen copied to a path with a hash in it.
error_module=$(cd pkg && ls snippets/*/js/upload-error.js)
sed "s|./UPLOAD_ERROR_MODULE|./$error_module|" js/index.js > pkg/index.js
cp js/index.d.ts pkg/
# Drop-in modules, each an `exports` entry of the package.
cp js/liveview.js js/liveview.d.ts js/element.js js/element.d.ts js/uppy.js js/uppy.d.ts js/filepond.js js/filepond.d.ts pkg/
# `[Symbol.dispose]()` (the same as `free()`) would make the declarations
# need lib "esnext.disposable" to type-check; the method stays at run time.
sed -i '/\[Symbol.dispose\](): void;/d' pkg/rindle_upload.d.ts

cargo build --release -p rindle-broker
node scripts/size.mjs
