//! Resume records in IndexedDB (`js/browser.js`): per file and broker
//! endpoint, the session to continue after a page reload.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(module = "/js/browser.js")]
extern "C" {
    /// The record's key: the same file picked again for the same broker.
    #[wasm_bindgen(js_name = recordKey)]
    pub fn key(endpoint: &str, file: &web_sys::File) -> String;
    /// Writes the record; a failure only loses resuming after a reload.
    #[wasm_bindgen(js_name = saveRecord)]
    pub fn save(key: &str, record: &js_sys::Object);
    #[wasm_bindgen(js_name = removeRecord)]
    pub fn remove(key: &str);
    /// Resolves with the file's unexpired record for this broker as a list
    /// of at most one (an expired one is deleted; a `Blob` has none).
    #[wasm_bindgen(js_name = findRecords)]
    pub fn find(endpoint: &str, file: &web_sys::Blob) -> js_sys::Promise;
}
