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

cargo build --profile wasm --target wasm32-unknown-unknown --lib
rm -rf pkg
wasm-bindgen target/wasm32-unknown-unknown/wasm/rindle_upload.wasm --out-dir pkg --target web
optimize pkg/rindle_upload_bg.wasm
# The checksum module (checksum/): what the checksum workers run, and a
# page without workers loads (src/web/checksums.rs); the page's module has
# none of the hashing.
cargo build --profile wasm --target wasm32-unknown-unknown -p rindle-upload-checksum --lib --features module
wasm-bindgen target/wasm32-unknown-unknown/wasm/rindle_upload_checksum.wasm --out-dir pkg --out-name checksum \
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
