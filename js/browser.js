// The browser's I/O for the WebAssembly (src/web/): each call is a few
// lines here, where the same through web-sys bindings and Rust closures
// costs several times the bytes. Nothing here decides anything: what to
// send, when and what an answer means stay in the Rust.

// Resume records in IndexedDB (src/web/records.rs): per file (name, size,
// lastModified, type) and broker endpoint, the session to continue after a
// page reload. No bearer URL is kept: resuming asks the broker again.
const DATABASE = "rindle-upload";
const STORE = "uploads";

export function recordKey(endpoint, file) {
  return `rindle-upload:${endpoint}|${file.name}|${file.size}|${file.lastModified}|${file.type}`;
}

function settle(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function inStore(mode, operation) {
  const opening = globalThis.indexedDB.open(DATABASE, 1);
  opening.onupgradeneeded = () => opening.result.createObjectStore(STORE);
  const db = await settle(opening);
  try {
    return await settle(operation(db.transaction(STORE, mode).objectStore(STORE)));
  } finally {
    db.close();
  }
}

const remove = (key) => inStore("readwrite", (store) => store.delete(key));

// A record that cannot be written (no IndexedDB, private mode, quota) only
// loses resuming after a reload; the upload goes on.
export function saveRecord(key, record) {
  inStore("readwrite", (store) => store.put(record, key)).catch(() => {});
}

export function removeRecord(key) {
  remove(key).catch(() => {});
}

// The file's unexpired record for this broker, as a list of at most one
// (an expired one is deleted; a Blob that is not a File has none).
export async function findRecords(endpoint, file) {
  if (!(file instanceof File)) return [];
  const key = recordKey(endpoint, file);
  const found = await inStore("readonly", (store) => store.get(key));
  if (found === undefined) return [];
  if (typeof found.expiresAt === "number" && found.expiresAt <= Date.now()) {
    await remove(key);
    return [];
  }
  return [found];
}

// A store request by XMLHttpRequest, because fetch reports no upload
// progress (src/web/xhr.rs). `headers` is a flat list: name, value, name,
// value. `done` resolves with the answer once loaded and rejects on a
// network error; `abort()` stops the request (a pause or cancel), after
// which no callback runs.
export function storeRequest(method, url, headers, body, onProgress) {
  const xhr = new XMLHttpRequest();
  xhr.open(method, url);
  for (let i = 0; i < headers.length; i += 2) xhr.setRequestHeader(headers[i], headers[i + 1]);
  const detach = () => (xhr.upload.onprogress = xhr.onload = xhr.onerror = null);
  const done = new Promise((resolve, reject) => {
    xhr.onload = () => {
      detach();
      resolve({ status: xhr.status, headers: xhr.getAllResponseHeaders(), text: xhr.responseText });
    };
    xhr.onerror = () => {
      detach();
      reject(new Error("network error"));
    };
  });
  xhr.upload.onprogress = (event) => onProgress(event.loaded);
  xhr.send(body);
  return {
    done,
    abort() {
      detach();
      xhr.abort();
    },
  };
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export function isOnline() {
  return globalThis.navigator?.onLine !== false;
}

// Resolves once the network is back (at once if it already is).
export function online() {
  return new Promise((resolve) => {
    addEventListener("online", resolve, { once: true });
    // The network may have come back before the listener was added.
    if (isOnline()) resolve();
  });
}

// A broker call by fetch (src/web/broker.rs); `headers` as for
// storeRequest. Rejects when the broker cannot be reached.
export async function brokerRequest(url, method, headers, body, credentials) {
  const sent = new Headers();
  for (let i = 0; i < headers.length; i += 2) sent.set(headers[i], headers[i + 1]);
  const response = await fetch(url, { method, headers: sent, body, credentials });
  return { status: response.status, text: await response.text() };
}

// The `signal` option: its abort is the upload's cancel. Answers
// "following", "aborted" (already: the upload does not start) or
// "invalid" (not an AbortSignal).
export function followSignal(signal, cancel) {
  if (!(signal instanceof EventTarget) || !("aborted" in signal)) return "invalid";
  if (signal.aborted) return "aborted";
  signal.addEventListener("abort", cancel, { once: true });
  return "following";
}
