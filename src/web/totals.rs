//! The uploader's total progress across its uploads (`Uploader.progress`
//! and its `onProgress` option).

use super::{object, report_thrown};
use crate::progress::ProgressSnapshot;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsValue;

#[derive(Clone, Copy, PartialEq)]
pub enum Status {
    Active,
    Queued,
    Paused,
    Done,
    Failed,
    Cancelled,
}

struct Tally {
    status: Status,
    bytes: ProgressSnapshot,
}

pub struct Totals {
    uploads: RefCell<Vec<Tally>>,
    on_progress: Option<js_sys::Function>,
}

impl Totals {
    pub fn new(on_progress: Option<js_sys::Function>) -> Rc<Totals> {
        Rc::new(Totals { uploads: RefCell::default(), on_progress })
    }

    /// Counts a new upload of `size` bytes; its index for the updates.
    pub fn add(&self, size: u64, status: Status) -> usize {
        let bytes = ProgressSnapshot { bytes_sent: 0, bytes_acked: 0, bytes_total: size };
        let index = {
            let mut uploads = self.uploads.borrow_mut();
            uploads.push(Tally { status, bytes });
            uploads.len() - 1
        };
        self.report();
        index
    }

    pub fn set_status(&self, index: usize, status: Status) {
        self.uploads.borrow_mut()[index].status = status;
        self.report();
    }

    pub fn set_bytes(&self, index: usize, bytes: ProgressSnapshot) {
        self.uploads.borrow_mut()[index].bytes = bytes;
        self.report();
    }

    /// `{ bytesSent, bytesAcked, bytesTotal, active, queued, paused, done,
    /// failed }`; cancelled uploads count nowhere.
    pub fn to_js(&self) -> JsValue {
        let uploads = self.uploads.borrow();
        let count = |status| uploads.iter().filter(|t| t.status == status).count() as u32;
        let counted = || uploads.iter().filter(|t| t.status != Status::Cancelled).map(|t| t.bytes);
        let sum = |field: fn(ProgressSnapshot) -> u64| counted().map(field).sum::<u64>() as f64;
        object(&[
            ("bytesSent", sum(|b| b.bytes_sent).into()),
            ("bytesAcked", sum(|b| b.bytes_acked).into()),
            ("bytesTotal", sum(|b| b.bytes_total).into()),
            ("active", count(Status::Active).into()),
            ("queued", count(Status::Queued).into()),
            ("paused", count(Status::Paused).into()),
            ("done", count(Status::Done).into()),
            ("failed", count(Status::Failed).into()),
        ])
    }

    fn report(&self) {
        if let Some(callback) = &self.on_progress {
            report_thrown(callback.call1(&JsValue::NULL, &self.to_js()));
        }
    }
}
