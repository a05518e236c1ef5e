//! The TypeScript declarations of the JavaScript API, emitted into the
//! package's `.d.ts` beside the ones wasm-bindgen derives.

use wasm_bindgen::prelude::*;

#[wasm_bindgen(typescript_custom_section)]
const TYPES: &'static str = r#"
export type SessionState =
  | "initialized" | "signed" | "resuming" | "uploading" | "uploaded"
  | "verifying" | "completed" | "aborted" | "expired" | "failed";

export type ErrorCode =
  | "invalid_request" | "unsupported_strategy" | "file_empty" | "file_too_large"
  | "content_type_not_allowed" | "session_not_found" | "session_expired"
  | "illegal_transition" | "broker_unreachable" | "broker_malformed_response"
  | "broker_rejected" | "broker_server_error" | "url_expired" | "signature_invalid"
  | "store_rejected" | "store_server_error" | "store_malformed_response"
  | "network_error" | "file_changed" | "checksum_mismatch" | "offset_conflict"
  | "verification_failed" | "unauthorized" | "rate_limited" | "aborted" | "internal";

/** A snapshot of the mirrored session record (`session_uri` is redacted). */
export interface Session {
  id: string;
  asset_id: string | null;
  state: SessionState;
  upload_key: string | null;
  upload_strategy: "presigned_put" | "multipart" | "resumable";
  upload_length: number | null;
  resumable_protocol: string | null;
  multipart_upload_id: string | null;
  multipart_parts: { part_number: number; etag: string; size: number | null }[];
  session_uri: string | null;
  session_uri_expires_at: string | null;
  last_known_offset: number | null;
  region_hint: string | null;
  expires_at: string | null;
  verified_at: string | null;
  failure_reason: string | null;
  inserted_at: string | null;
  updated_at: string | null;
}

export interface Asset {
  id: string;
  key: string;
  byte_size: number;
  content_type: string;
  /** The broker's SHA-256 of the stored object (hex); null when it computed none (Rindle's assets). */
  sha256: string | null;
  url: string;
}

/** Every failure: `code` to switch on, `message` for people (docs/api.md lists the codes). */
export class UploadError extends Error {
  constructor(code: ErrorCode, message: string, retryable: boolean, state: SessionState | null);
  name: "UploadError";
  code: ErrorCode;
  /** Whether trying again may succeed. */
  retryable: boolean;
  /** The session state it happened in; null before the session existed. */
  state: SessionState | null;
}

export interface Progress { bytesSent: number; bytesAcked: number; bytesTotal: number; }
/** A store request's bytes `offset..offset + size` and how it went (`onPiece`). */
export interface Piece { offset: number; size: number; state: "sending" | "stored" | "failed" | "stopped"; }
export interface StateChange { from: SessionState | null; to: SessionState; session: Session; }

/** The broker protocol's bodies (docs/broker-protocol.md). */
export interface InitiateRequest {
  filename: string; content_type: string; byte_size: number; upload_strategy: string;
  resumable_protocol?: "tus"; part_size?: number;
  /** multipart: the checksum every part will carry (the broker may tell the store at creation). */
  checksum_algorithm?: "crc32c" | "sha256" | "md5";
  /** The same for every try of one upload's initiate: answer it with the session it created. */
  idempotency_key?: string;
}
export interface SessionRequest { session_id: string; }
/** A checksum: its algorithm and the digest in base64. */
export interface Checksum { algorithm: "crc32c" | "sha256" | "md5" | "sha1"; value: string; }
export interface SignedRequest {
  method: "PUT" | "POST"; url: string; headers?: Record<string, string>; expires_at?: string;
  /** Seconds the URL is valid; absent: unknown (used until the store refuses it as expired). */
  expires_in?: number;
}
export interface BrokerReply {
  session: Session;
  upload?: SignedRequest;
  parts?: { part_number: number; upload: SignedRequest }[];
  asset?: Asset;
  /** multipart: the part size the broker planned the session with (the client uses it). */
  part_size?: number;
}

/** What a broker callback answers: as over HTTP, the session's optional fields may be left out
 * (they read as null); `id`, `state` and `upload_strategy` are required. */
export interface BrokerReplyInput extends Omit<BrokerReply, "session"> {
  session: Pick<Session, "id" | "state" | "upload_strategy"> & Partial<Omit<Session, "multipart_parts">> & {
    /** Also Rindle's map: `{ parts: [...] }`, `{}`, `{ is_partial: true }`. */
    multipart_parts?: Session["multipart_parts"] | { parts?: Session["multipart_parts"]; is_partial?: boolean };
  };
  /** `upload` as Rindle's `sign_url` names it: method in any case ("put"), headers a map or `[]`. */
  presigned?: { url: string; method: string; headers?: Record<string, string> | [] };
}
type Answer = BrokerReplyInput | Promise<BrokerReplyInput>;

/** Any call given here replaces the HTTP call of the same name. */
export interface BrokerCallbacks {
  initiate?(request: InitiateRequest): Answer;
  show?(request: SessionRequest): Answer;
  /** `checksum`: presigned_put, the whole file's, to sign the URL for. */
  sign?(request: SessionRequest & { checksum?: Checksum }): Answer;
  /** `checksums`: each part's, by part number, to sign its URL for. */
  signParts?(request: SessionRequest & { part_numbers: number[]; checksums?: Record<string, Checksum> }): Answer;
  listParts?(request: SessionRequest): Answer;
  /** `checksum`: the whole file's, which the stored object must have. */
  complete?(request: SessionRequest & { checksum?: Checksum }): Answer;
  resumableStatus?(request: SessionRequest & { offset: number; session_uri?: string }): Answer;
  completeMultipart?(
    request: SessionRequest & {
      parts: { part_number: number; etag: string; size: number | null; checksum?: Checksum }[];
      checksum?: Checksum;
    },
  ): Answer;
  cancel?(request: SessionRequest): Answer;
}

export interface UploaderOptions {
  /** The broker protocol's base URL, e.g. "/api/uploads". */
  endpoint: string;
  /** Sent with every broker call (CSRF token, authorization). */
  headers?: Record<string, string>;
  /** Whether broker calls carry cookies, as fetch's `credentials` (default "same-origin"):
   * "include" for a broker on another origin that binds sessions to a cookie. */
  credentials?: "same-origin" | "include" | "omit";
  broker?: BrokerCallbacks;
  /** Uploads transferring at once (default 3); the others wait in call order (`upload.queued`).
   * A paused upload frees its turn and queues again when resumed. */
  maxUploads?: number;
  /** Called with the total over this uploader's uploads whenever one of them changes. */
  onProgress?: (progress: UploaderProgress) => void;
}

/** The total over an uploader's uploads (cancelled ones count nowhere). */
export interface UploaderProgress {
  bytesSent: number;
  bytesAcked: number;
  bytesTotal: number;
  active: number;
  queued: number;
  paused: number;
  done: number;
  failed: number;
}

export interface UploadOptions {
  /** "auto" (default): presigned_put up to `auto.multipartAbove` bytes, multipart above; if the broker
   * does not offer that one (`unsupported_strategy`), the next it offers (multipart, resumable, tus,
   * presigned_put). */
  strategy?: "presigned_put" | "multipart" | "resumable" | "tus" | "auto";
  /** "auto": files larger than `multipartAbove` bytes go multipart first (default 8 MiB). */
  auto?: { multipartAbove?: number };
  /** multipart: bytes per part, 5 MiB to 5 GiB (default 8 MiB; grows past 10,000 parts). */
  partSize?: number;
  /** multipart: parts in flight at once, 1 to 64 (default 4). */
  concurrency?: number;
  /** Continue this existing session (e.g. after a page reload): the store is asked what it holds. */
  sessionId?: string;
  /** resumable, tus: bytes per chunk, rounded down to whole 256 KiB (default 8 MiB). */
  chunkSize?: number;
  /** Waits (ms) before each retry of a failed store request or broker call (network, 5xx, 408, 429),
   * with full jitter; `Retry-After` is honoured; a failure while offline waits for the network and
   * spends no retry. Default [1000, 3000, 5000, 10000, 20000]; [] disables retries. */
  retryDelays?: number[];
  /** A store request with no progress for this long (ms) is aborted and retried. Default 30000; 0 never. */
  stallTimeout?: number;
  /** Retries allowed over the whole upload, all requests together (default 100). */
  retryBudget?: number;
  /** Keep a resume record in IndexedDB so `findPreviousUploads` finds this upload after a reload
   * (default true; only for a `File`). */
  resume?: boolean;
  /** Continue an upload `findPreviousUploads` listed (the store is asked what it holds). */
  resumeFrom?: PreviousUpload;
  /** Aborting it is `cancel()`: the store and the broker discard, `done` rejects with `aborted`.
   * One already aborted rejects `done` at once, before any broker call. */
  signal?: AbortSignal;
  /** Called with true when the upload pauses and false when it resumes. */
  onPausedChange?: (paused: boolean) => void;
  /** tus: create the upload without its length (creation-defer-length); the first PATCH sends it. */
  deferLength?: boolean;
  /** The checksum each piece is sent with, verified by the store (a corrupted piece is sent again),
   * and the whole file's, checked by the broker at completion: "crc32c" (default), "sha256", "md5"
   * or "none". Computed in a Worker (pkg/checksum-worker.js). tus uses it if the server offers it,
   * else the strongest the server offers. */
  checksum?: "crc32c" | "sha256" | "md5" | "none";
  /** multipart: called once per stored part. */
  onPart?: (part: { partNumber: number; etag: string; size: number }) => void;
  /** Each store request: a piece (a part, a chunk, or the whole file) starts "sending", then ends
   * "stored" (size: what the store kept of it), "failed" (sent again if the error may pass) or
   * "stopped" (paused or cancelled). For a live map of the pieces. */
  onPiece?: (piece: Piece) => void;
  /** Defaults to the File's name, or "blob". */
  filename?: string;
  /** Defaults to the File's type, or "application/octet-stream". */
  contentType?: string;
  onProgress?: (progress: Progress) => void;
  onStateChange?: (change: StateChange) => void;
  onError?: (error: UploadError) => void;
}

export interface UploadResult { session: Session; asset: Asset; }

/** `upload(file)` with every option at its default. */
export interface Uploader {
  upload(file: Blob): Upload;
}

/** An unfinished upload of the same file to the same broker, from an earlier page. */
export interface PreviousUpload {
  sessionId: string;
  strategy: "presigned_put" | "multipart" | "resumable" | "tus";
  partSize: number;
  chunkSize: number;
  filename: string;
  size: number;
  lastModified: number;
  type: string;
  endpoint: string;
  createdAt: number;
  expiresAt: number | null;
}
"#;
