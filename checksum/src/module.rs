//! The checksum module (`pkg/checksum.js`): a `Hasher` JavaScript feeds
//! window by window (`js/checksum-stream.js` reads the Blob as a stream),
//! for the checksum Workers and for a page that cannot start one.

use wasm_bindgen::prelude::*;

// Talc: less WebAssembly than the default allocator, dlmalloc. Not in the
// page's module: there it brought main-thread tasks of 50 ms and more
// during a 1 GiB upload on a busy machine (tests/e2e/integrity.test.mjs);
// here it runs in the workers.
#[cfg(not(target_feature = "atomics"))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// A running digest of "crc32c", "md5", "sha1" or "sha256" (rindle-upload's
/// names for them).
#[wasm_bindgen(js_name = Hasher)]
pub struct Streamed(crate::Hasher);

#[wasm_bindgen(js_class = Hasher)]
impl Streamed {
    #[wasm_bindgen(constructor)]
    pub fn new(algorithm: &str) -> Result<Streamed, JsValue> {
        let algorithm = match algorithm {
            "crc32c" => crate::Algorithm::Crc32c,
            "md5" => crate::Algorithm::Md5,
            "sha1" => crate::Algorithm::Sha1,
            "sha256" => crate::Algorithm::Sha256,
            _ => return Err(JsValue::from_str("unknown checksum algorithm")),
        };
        Ok(Streamed(crate::Hasher::new(algorithm)))
    }

    pub fn update(&mut self, window: &[u8]) {
        self.0.update(window);
    }

    /// The digest (a CRC32C as 4 bytes big-endian); frees the hasher.
    pub fn finish(self) -> Vec<u8> {
        self.0.finish()
    }
}
