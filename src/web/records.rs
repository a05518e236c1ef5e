//! Resume records in IndexedDB: per file (name, size, lastModified, type)
//! and broker endpoint, the session to continue after a page reload. No
//! bearer URL is kept: resuming asks the broker for the session again.

use js_sys::{Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{File, IdbDatabase, IdbRequest, IdbTransactionMode};

const DATABASE: &str = "rindle-upload";
const STORE: &str = "uploads";

/// The record's key: the same file picked again for the same broker. Size
/// and time are whole numbers written as integers (the same text as
/// before, without shipping float formatting).
pub fn fingerprint(endpoint: &str, file: &File) -> String {
    format!(
        "rindle-upload:{endpoint}|{}|{}|{}|{}",
        file.name(),
        file.size() as u64,
        file.last_modified() as u64,
        file.type_()
    )
}

/// Resolves with the request's result once it succeeds.
async fn settle(request: &IdbRequest) -> Result<JsValue, JsValue> {
    let done = Promise::new(&mut |resolve, reject| {
        request.set_onsuccess(Some(&resolve));
        request.set_onerror(Some(&reject));
    });
    JsFuture::from(done).await?;
    request.result()
}

async fn open() -> Result<IdbDatabase, JsValue> {
    let factory = Reflect::get(&js_sys::global(), &"indexedDB".into())?;
    let factory: web_sys::IdbFactory = factory.dyn_into()?;
    let opening = factory.open_with_u32(DATABASE, 1)?;
    let upgrading = opening.clone();
    let create = Closure::once(move |_: web_sys::Event| {
        if let Ok(db) = upgrading.result() {
            let _ = db.unchecked_into::<IdbDatabase>().create_object_store(STORE);
        }
    });
    opening.set_onupgradeneeded(Some(create.as_ref().unchecked_ref()));
    let db = settle(&opening).await;
    opening.set_onupgradeneeded(None);
    Ok(db?.unchecked_into())
}

async fn run(
    mode: IdbTransactionMode,
    operation: impl FnOnce(&web_sys::IdbObjectStore) -> Result<IdbRequest, JsValue>,
) -> Result<JsValue, JsValue> {
    let db = open().await?;
    let store = db.transaction_with_str_and_mode(STORE, mode)?.object_store(STORE)?;
    let result = settle(&operation(&store)?).await;
    db.close();
    result
}

pub async fn save(key: &str, record: &Object) -> Result<(), JsValue> {
    run(IdbTransactionMode::Readwrite, |store| store.put_with_key(record, &key.into())).await.map(|_| ())
}

pub async fn remove(key: &str) -> Result<(), JsValue> {
    run(IdbTransactionMode::Readwrite, |store| store.delete(&key.into())).await.map(|_| ())
}

/// The record under `key`, if there is one and it has not expired (an
/// expired one is deleted).
pub async fn find(key: &str) -> Result<Option<JsValue>, JsValue> {
    let found = run(IdbTransactionMode::Readonly, |store| store.get(&key.into())).await?;
    if found.is_undefined() {
        return Ok(None);
    }
    let expires_at = Reflect::get(&found, &"expiresAt".into())?.as_f64();
    if expires_at.is_some_and(|at| at <= js_sys::Date::now()) {
        remove(key).await?;
        return Ok(None);
    }
    Ok(Some(found))
}
