//! `presigned_put`: one PUT of the whole file to a URL the broker signed
//! (for the file's checksum, when checksums are on: the store verifies it).

use crate::error::UploadError;
use crate::progress::Piece;
use crate::recovery::{send_signed, UrlSigner};
use crate::state::SessionState;
use crate::toolbox::{ActiveUpload, Io};
use crate::wire::checksum::Checksum;
use crate::wire::s3;

/// Answers the whole file's checksum, for `complete`.
pub(crate) async fn transfer<I: Io>(upload: &ActiveUpload<'_, I>) -> Result<Option<Checksum>, UploadError> {
    let whole = Piece { start: 0, len: upload.total() };
    let checksum = upload.tools.checksum_of(whole).await?;
    let signer = UrlSigner::single(upload, checksum.clone());
    signer.sign_ahead(0).await?;
    upload.transition(SessionState::Uploading)?;
    let accept = |response: &_| s3::check_answer(response).map(|()| ((), whole.len));
    send_signed(&signer, 0, whole, accept).await?;
    upload.transition(SessionState::Uploaded)?;
    Ok(checksum)
}
