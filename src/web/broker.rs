//! The browser's broker: the v1 HTTP protocol over fetch (`js/browser.js`), with
//! any call replaceable by a JavaScript callback of the same name.

use super::xhr::{header_list, Answer};
use crate::broker::{read_http_answer, read_reply, Broker, BrokerCall, BrokerReply, PROTOCOL_VERSION};
use crate::error::{ErrorCode, UploadError};
use crate::queue::Queue;
use crate::wire::broker_json::{self, Json, JsonBuilder};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

pub struct WebBroker {
    /// e.g. `/api/uploads` or `https://app.example/api/uploads`.
    pub endpoint: String,
    /// Sent with every HTTP call (CSRF tokens, authorization).
    pub headers: Vec<(String, String)>,
    /// Whether cookies go with the calls (fetch's `credentials`).
    pub credentials: &'static str,
    /// An object whose methods `initiate`, `sign`, `complete`, `cancel`
    /// replace the HTTP calls of the same name; `undefined` for none.
    pub callbacks: JsValue,
    pub first_contact: FirstContact,
}

/// A broker may bind sessions to a cookie it sets on its first answer (the
/// reference broker's owner cookie, an app's session cookie): calls made
/// together before that answer would each get a different one and lose
/// their sessions. So an uploader's HTTP calls go one at a time until the
/// broker has answered one.
#[derive(Clone)]
pub struct FirstContact(Rc<RefCell<Option<Queue>>>);

impl Default for FirstContact {
    fn default() -> FirstContact {
        FirstContact(Rc::new(RefCell::new(Some(Queue::new(1)))))
    }
}

impl FirstContact {
    async fn call<T>(&self, send: impl std::future::Future<Output = (bool, T)>) -> T {
        let line = self.0.borrow().clone();
        let Some(line) = line else { return send.await.1 };
        let turn = line.turn().await;
        if self.0.borrow().is_none() {
            // Answered while this call waited: the rest go at once.
            drop(turn);
            return send.await.1;
        }
        let (answered, result) = send.await;
        if answered {
            self.0.replace(None);
        }
        result
    }
}

impl Broker for WebBroker {
    async fn call(&self, call: &BrokerCall) -> Result<BrokerReply, UploadError> {
        let body = broker_json::call_body::<JsValue>(call);
        let mut reply = match self.callback(call.name()) {
            Some(function) => self.call_callback(call, &function, &body).await,
            None => self.call_http(call, &body).await,
        }?;
        crate::broker::resolve_session_uri(&mut reply, &self.endpoint);
        Ok(reply)
    }
}

impl WebBroker {
    fn callback(&self, name: &str) -> Option<js_sys::Function> {
        if !self.callbacks.is_object() {
            return None;
        }
        js_sys::Reflect::get(&self.callbacks, &JsValue::from_str(name)).ok()?.dyn_into().ok()
    }

    async fn call_callback(
        &self,
        call: &BrokerCall,
        function: &js_sys::Function,
        body: &JsValue,
    ) -> Result<BrokerReply, UploadError> {
        let returned =
            function.call1(&self.callbacks, body).map_err(|thrown| thrown_to_error(call, thrown))?;
        let value = JsFuture::from(js_sys::Promise::resolve(&returned))
            .await
            .map_err(|thrown| thrown_to_error(call, thrown))?;
        read_reply(call, decode_reply(value))
    }

    async fn call_http(&self, call: &BrokerCall, body: &JsValue) -> Result<BrokerReply, UploadError> {
        self.first_contact
            .call(async {
                let result = self.send_http(call, body).await;
                // Any HTTP answer, even a refusal, carried the broker's cookies.
                let answered = !matches!(&result, Err(e) if e.code == ErrorCode::BrokerUnreachable);
                (answered, result)
            })
            .await
    }

    async fn send_http(&self, call: &BrokerCall, body: &JsValue) -> Result<BrokerReply, UploadError> {
        let url = [self.endpoint.trim_end_matches('/'), &call.path()].concat();
        let json = (call.method() != "GET")
            .then(|| js_sys::JSON::stringify(body).map(String::from).unwrap_or_default());
        let ours = [("Accept", "application/json"), ("Rindle-Broker-Protocol", PROTOCOL_VERSION)];
        let content_type = json.as_ref().map(|_| ("Content-Type", "application/json"));
        let given = self.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()));
        let headers = header_list(ours.into_iter().chain(given).chain(content_type));
        let sent = broker_request(&url, call.method(), headers, json, self.credentials);
        let answer: Answer = JsFuture::from(sent)
            .await
            .map_err(|thrown| {
                UploadError::new(
                    ErrorCode::BrokerUnreachable,
                    format!(
                        "{}: could not reach the broker at {url}: {}",
                        call.name(),
                        thrown_message(&thrown).unwrap_or_default()
                    ),
                )
            })?
            .unchecked_into();
        let text = answer.text();
        let reply = || decode_reply(parse_json(&text)?).map_err(|e| e.to_string());
        let error = || broker_json::error_body(&parse_json(&text)?).map_err(|e| e.to_string());
        read_http_answer(call, answer.status(), reply, error)
    }
}

#[wasm_bindgen(module = "/js/browser.js")]
extern "C" {
    #[wasm_bindgen(js_name = brokerRequest)]
    fn broker_request(
        url: &str,
        method: &str,
        headers: js_sys::Array,
        body: Option<String>,
        credentials: &str,
    ) -> js_sys::Promise;
}

/// What a thrown value says: an `Error`'s message, or the value if it is a
/// string.
fn thrown_message(thrown: &JsValue) -> Option<String> {
    js_sys::Reflect::get(thrown, &JsValue::from_str("message"))
        .ok()
        .and_then(|v| v.as_string())
        .or_else(|| thrown.as_string())
}

fn parse_json(text: &str) -> Result<JsValue, String> {
    js_sys::JSON::parse(text).map_err(|_| "the body is not JSON".to_owned())
}

/// A reply body, from HTTP or a callback, in the protocol's shape.
fn decode_reply(value: JsValue) -> Result<BrokerReply, broker_json::Malformed> {
    broker_json::broker_reply(&protocol_shapes(value))
}

impl Json for JsValue {
    fn member(&self, key: &str) -> Option<Self> {
        js_sys::Reflect::get(self, &JsValue::from_str(key)).ok().filter(|v| !v.is_undefined() && !v.is_null())
    }

    fn is_object(&self) -> bool {
        self.is_object()
    }

    fn string(&self) -> Option<String> {
        self.as_string()
    }

    fn number(&self) -> Option<f64> {
        self.as_f64()
    }

    fn boolean(&self) -> Option<bool> {
        self.as_bool()
    }

    fn items(&self) -> Option<Vec<Self>> {
        js_sys::Array::is_array(self).then(|| js_sys::Array::from(self).iter().collect())
    }

    fn members(&self) -> Option<Vec<(String, Self)>> {
        let keys = js_sys::Object::keys(self.dyn_ref::<js_sys::Object>()?);
        let member = |key: JsValue| Some((key.as_string()?, js_sys::Reflect::get(self, &key).ok()?));
        Some(keys.iter().filter_map(member).collect())
    }
}

impl JsonBuilder for JsValue {
    fn null() -> Self {
        JsValue::NULL
    }

    fn string(value: &str) -> Self {
        JsValue::from_str(value)
    }

    fn number(value: u64) -> Self {
        JsValue::from_f64(value as f64)
    }

    fn list(items: Vec<Self>) -> Self {
        items.into_iter().collect::<js_sys::Array>().into()
    }

    fn object(members: Vec<(&str, Self)>) -> Self {
        let object = js_sys::Object::new();
        for (key, value) in members {
            let _ = js_sys::Reflect::set(&object, &JsValue::from_str(key), &value);
        }
        object.into()
    }
}

// Done here in a few lines of JavaScript rather than in the WebAssembly,
// which costs ten times the bytes.
#[wasm_bindgen(inline_js = r#"
// The shapes a Phoenix app gets from Rindle's functions and serialises as
// they are (docs/rindle.md), read as the protocol's: `multipart_parts` as
// Rindle's map (%{"parts" => [...]}, %{}, %{"is_partial" => true}); the
// signed request under `presigned` (Rindle's sign_url), its method an
// atom's ("put"), its headers an Elixir empty list.
export function protocol_shapes(reply) {
  if (reply === null || typeof reply !== "object") return reply;
  const shaped = { ...reply };
  const parts = reply.session?.multipart_parts;
  if (parts !== null && typeof parts === "object" && !Array.isArray(parts)) {
    shaped.session = { ...reply.session, multipart_parts: Array.isArray(parts.parts) ? parts.parts : [] };
  }
  const signed = reply.upload ?? reply.presigned;
  if (signed !== null && typeof signed === "object") {
    shaped.upload = { ...signed };
    if (typeof signed.method === "string") shaped.upload.method = signed.method.toUpperCase();
    if (Array.isArray(signed.headers) && signed.headers.length === 0) shaped.upload.headers = {};
  }
  return shaped;
}
"#)]
extern "C" {
    fn protocol_shapes(reply: JsValue) -> JsValue;
}

/// A callback that throws (or rejects) refuses the call; an `Error` with a
/// known `code` property keeps that code.
fn thrown_to_error(call: &BrokerCall, thrown: JsValue) -> UploadError {
    let message = thrown_message(&thrown).unwrap_or_else(|| "callback failed".into());
    let code = js_sys::Reflect::get(&thrown, &JsValue::from_str("code"))
        .ok()
        .and_then(|c| c.as_string())
        .and_then(|c| ErrorCode::from_wire(&c))
        .unwrap_or(ErrorCode::BrokerRejected);
    UploadError::new(code, format!("{} callback: {message}", call.name()))
}
