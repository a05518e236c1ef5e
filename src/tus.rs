//! tus 1.0 (the resumable protocol Rindle's TusPlug speaks): discovery
//! (OPTIONS), creation (POST, with upload or deferred length), HEAD for the
//! offset, chunked PATCHes with checksums, expiration and termination. The
//! header rules are in `wire::tus`.

use crate::broker::BrokerCall;
use crate::error::{ErrorCode, UploadError};
use crate::options::UploadOptions;
use crate::progress::Piece;
use crate::recovery::{send_from_offset, Committed};
use crate::secret::Secret;
use crate::state::SessionState;
use crate::strategy::OffsetUpload;
use crate::toolbox::{ActiveUpload, Io, PendingDigest};
use crate::transport::{ByteSource, HttpRequest, HttpResponse};
use crate::wire::checksum::Checksum;
use crate::wire::s3;
use crate::wire::tus::{
    check, checksum_header, encode_metadata, parse_expires, parse_size, tus_request, upload_url, Discovery,
    OFFSET_CONTENT_TYPE, TUS_VERSION,
};
use std::cell::{Cell, RefCell};

/// Where the bytes go and how: the upload URL once known, and what the
/// server offers.
pub(crate) struct TusUpload<'a, I: Io> {
    upload: &'a ActiveUpload<'a, I>,
    discovery: Discovery,
    url: Secret,
    /// creation-defer-length: the next PATCH still has to send the length.
    length_deferred: Cell<bool>,
    chunk: u64,
    /// The next chunk's checksum, hashed while this one goes.
    next_checksum: RefCell<Option<(Piece, PendingDigest<'a>)>>,
}

impl<'a, I: Io> TusUpload<'a, I> {
    fn new(
        upload: &'a ActiveUpload<'a, I>,
        discovery: Discovery,
        url: Secret,
        deferred: bool,
        chunk: u64,
    ) -> Self {
        let (length_deferred, next_checksum) = (Cell::new(deferred), RefCell::new(None));
        TusUpload { upload, discovery, url, length_deferred, chunk, next_checksum }
    }

    /// Ends the upload as `expired` if the server says its time is up.
    fn check_expiry(&self, response: &HttpResponse) -> Result<(), UploadError> {
        if let Some(value) = response.header("upload-expires") {
            if parse_expires(value)? <= self.upload.tools.now_ms() {
                self.upload.transition(SessionState::Expired)?;
                return Err(UploadError::new(ErrorCode::SessionExpired, "the tus upload has expired"));
            }
        }
        Ok(())
    }

    fn at(&self, offset: u64) -> Committed {
        Committed { offset, complete: offset >= self.upload.total() && !self.length_deferred.get() }
    }

    async fn report(&self, offset: u64) -> Result<(), UploadError> {
        let call = BrokerCall::ResumableStatus {
            session_id: self.upload.session_id(),
            offset,
            session_uri: Some(self.url.clone()),
        };
        self.upload.ask(&call).await.map(drop)
    }
}

impl<I: Io> TusUpload<'_, I> {
    /// One PATCH of the piece.
    pub async fn send_chunk(&self, piece: Piece) -> Result<Committed, UploadError> {
        let source = self.upload.tools.source;
        let mut headers = vec![
            ("Content-Type".to_owned(), OFFSET_CONTENT_TYPE.to_owned()),
            ("Upload-Offset".to_owned(), piece.start.to_string()),
        ];
        if self.length_deferred.get() {
            headers.push(("Upload-Length".to_owned(), self.upload.total().to_string()));
        }
        if let Some(algorithm) = self.discovery.checksum(self.upload.tools.checksum) {
            let digest = match self.next_checksum.take() {
                Some((ahead, pending)) if ahead == piece => pending.await?,
                _ => source.digest(piece.start, piece.end(), algorithm).await?,
            };
            headers.push(("Upload-Checksum".to_owned(), checksum_header(algorithm, &digest)));
            let next = Piece::between(piece.end(), (piece.end() + self.chunk).min(self.upload.total()));
            if next.len > 0 {
                self.next_checksum.replace(Some((next, self.upload.tools.digest_ahead(next, algorithm))));
            }
        }
        let request = tus_request("PATCH", &self.url, headers, Some(self.upload.body(piece)));
        let offset = self
            .upload
            .send_piece(piece, request, |response| {
                check(response)?;
                self.check_expiry(response)?;
                let committed = parse_size("Upload-Offset", response.header("upload-offset"))?;
                Ok((committed, committed.saturating_sub(piece.start)))
            })
            .await?;
        self.length_deferred.set(false);
        Ok(self.at(offset))
    }

    /// HEAD: the offset the server holds, told to the broker too.
    pub async fn committed(&self) -> Result<Committed, UploadError> {
        let head = || async {
            let response =
                self.upload.tools.send_bodiless(tus_request("HEAD", &self.url, vec![], None)).await?;
            check(&response)?;
            self.check_expiry(&response)?;
            let offset = parse_size("Upload-Offset", response.header("upload-offset"))?;
            self.report(offset).await?;
            Ok(self.at(offset))
        };
        self.upload.tools.retrying(head).await
    }
}

/// Sends the file with tus, from the offset the server holds; answers the
/// whole file's checksum, for `complete`.
pub(crate) async fn transfer<I: Io>(
    upload: &ActiveUpload<'_, I>,
    options: &UploadOptions,
    chunk: u64,
    resuming: bool,
) -> Result<Option<Checksum>, UploadError> {
    let total = upload.total();
    if upload.state() == SessionState::Initialized {
        // The broker either pre-creates the upload (session_uri) or hands
        // out the creation endpoint (`upload`, a POST).
        let reply = upload.ask(&BrokerCall::Sign { session_id: upload.session_id(), checksum: None }).await?;
        if reply.session.session_uri.is_none() {
            let endpoint = reply.upload.map(|u| u.url).ok_or_else(|| {
                UploadError::new(
                    ErrorCode::BrokerMalformedResponse,
                    "sign: a tus session came without a tus URL",
                )
            })?;
            return create_and_send(upload, endpoint, options, chunk).await;
        }
    }
    let url = upload.session().session_uri.clone().ok_or_else(|| {
        UploadError::new(ErrorCode::BrokerMalformedResponse, "a tus session came without its upload URL")
    })?;
    let discovery = discover(upload, &url).await?;
    check_size(&discovery, total)?;
    let tus = TusUpload::new(upload, discovery, url, false, chunk);
    if resuming {
        upload.begin_resuming()?;
    }
    let at = tus.committed().await?;
    upload.already_stored(at.offset);
    send_from(tus, at, chunk).await
}

async fn discover<I: Io>(upload: &ActiveUpload<'_, I>, url: &Secret) -> Result<Discovery, UploadError> {
    let options = || async {
        let response = upload.tools.send_bodiless(tus_request("OPTIONS", url, vec![], None)).await?;
        s3::check_answer(&response)?;
        Ok(response)
    };
    let response = upload.tools.retrying(options).await?;
    let discovery = Discovery::from_response(&response)?;
    if !discovery.versions.iter().any(|v| v == TUS_VERSION) {
        return Err(UploadError::new(ErrorCode::StoreRejected, "the tus server does not speak tus 1.0.0"));
    }
    Ok(discovery)
}

fn check_size(discovery: &Discovery, total: u64) -> Result<(), UploadError> {
    match discovery.max_size {
        Some(max) if total > max => Err(UploadError::new(
            ErrorCode::FileTooLarge,
            format!("the tus server accepts at most {max} bytes; the file has {total}"),
        )),
        _ => Ok(()),
    }
}

/// Creation: POST to the endpoint (with the first chunk when the server
/// offers creation-with-upload), then PATCH the rest.
async fn create_and_send<I: Io>(
    upload: &ActiveUpload<'_, I>,
    endpoint: Secret,
    options: &UploadOptions,
    chunk: u64,
) -> Result<Option<Checksum>, UploadError> {
    let total = upload.total();
    let discovery = discover(upload, &endpoint).await?;
    check_size(&discovery, total)?;
    let defer = options.defer_length && discovery.supports("creation-defer-length");
    let metadata = encode_metadata(&[("filename", &options.filename), ("filetype", &options.content_type)]);
    let mut headers = vec![("Upload-Metadata".to_owned(), metadata)];
    headers.push(if defer {
        ("Upload-Defer-Length".to_owned(), "1".to_owned())
    } else {
        ("Upload-Length".to_owned(), total.to_string())
    });
    let with_upload = !defer && discovery.supports("creation-with-upload") && total > 0;
    let first = Piece::between(0, if with_upload { chunk.min(total) } else { 0 });
    if with_upload {
        headers.push(("Content-Type".to_owned(), OFFSET_CONTENT_TYPE.to_owned()));
    }
    let body = with_upload.then(|| upload.body(first));
    upload.transition(SessionState::Uploading)?;
    let request = tus_request("POST", &endpoint, headers, body);
    let (url, offset) = upload
        .send_piece(first, request, |response| {
            s3::check_answer(response)?;
            let location = response.header("location").ok_or_else(|| {
                UploadError::new(ErrorCode::StoreMalformedResponse, "the tus server created no Location")
            })?;
            let url = upload_url(&endpoint, location)?;
            let offset = match response.header("upload-offset") {
                Some(value) => parse_size("Upload-Offset", Some(value))?,
                None => 0,
            };
            Ok(((url, offset), offset))
        })
        .await?;
    let tus = TusUpload::new(upload, discovery, url, defer, chunk);
    tus.report(offset).await?;
    let at = tus.at(offset);
    send_from(tus, at, chunk).await
}

/// PATCHes from `at` to the end; answers the whole file's checksum. tus
/// chunks come and go at the server's offsets, so the whole file is hashed
/// once more: from the start while chunks go when they carry no checksum
/// of their own (as for GCS), after them when they do (the checksum
/// workers hash one range at a time, and each chunk's is needed first).
async fn send_from<I: Io>(
    tus: TusUpload<'_, I>,
    at: Committed,
    chunk: u64,
) -> Result<Option<Checksum>, UploadError> {
    let upload = tus.upload;
    let whole = Piece::between(0, upload.total());
    let ahead = match tus.discovery.checksum(upload.tools.checksum) {
        None => upload.tools.checksum_ahead(whole),
        Some(_) => None,
    };
    if upload.state() != SessionState::Uploading {
        upload.transition(SessionState::Uploading)?;
    }
    send_from_offset(upload, &OffsetUpload::Tus(tus), at, chunk).await?;
    upload.transition(SessionState::Uploaded)?;
    match ahead {
        Some(pending) => pending.checksum().await.map(Some),
        None => upload.tools.checksum_of(whole).await,
    }
}

/// Termination: asks the tus server to discard the upload.
pub(crate) fn termination<B>(url: &Secret) -> HttpRequest<B> {
    tus_request("DELETE", url, vec![], None)
}
