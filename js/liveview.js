// rindle-upload/liveview: Phoenix LiveView client uploaders for the upload
// meta Rindle.LiveView emits, run by this package's engine (retries, stall
// timeouts, offline waits, typed errors).
//
//   import { uploaders } from "rindle-upload/liveview";
//   new LiveSocket("/live", Socket, { uploaders: uploaders(), params });
//
// - "Rindle" (allow_upload): meta { url, method, headers, session_id, asset_id },
//   a presigned PUT Rindle signed.
// - "RindleTus" (allow_tus_upload): meta { endpoint, upload_url, session_id,
//   asset_id }, a tus upload Rindle's TusPlug created.
//
// The session already exists and the server verifies it when the LiveView
// consumes the entry (Rindle's verify_completion), so the "broker" here is
// the meta itself: no broker endpoint is called.
import init, { Uploader } from "./index.js";

let loaded = null;

/** Both uploaders with these options (any `upload()` option: retryDelays, chunkSize, stallTimeout, checksum…). */
export function uploaders(options = {}) {
  return { Rindle: presignedUploader(options), RindleTus: tusUploader(options) };
}

export const Rindle = presignedUploader({});
export const RindleTus = tusUploader({});

function presignedUploader(options) {
  return (entries, onViewError) =>
    entries.forEach((entry) => {
      const { url, method, headers, session_id, asset_id } = entry.meta;
      const session = { id: session_id, asset_id, upload_strategy: "presigned_put" };
      // As Rindle's sign_url returns it (the package reads its shapes).
      const presigned = { url, method: method ?? "PUT", headers: headers ?? {} };
      // Rindle signs the URL without a checksum header: nothing to hash for it.
      run(entry, onViewError, session, { sign: () => ({ presigned }) }, {
        strategy: "presigned_put",
        checksum: "none",
        ...options,
      });
    });
}

function tusUploader(options) {
  return (entries, onViewError) =>
    entries.forEach((entry) => {
      const { endpoint, upload_url, session_id, asset_id } = entry.meta;
      // TusPlug's Location may be a path: the package takes it on the
      // endpoint's origin, as any session URI a broker gives as a path.
      const session = { id: session_id, asset_id, upload_strategy: "resumable", resumable_protocol: "tus", session_uri: upload_url };
      run(entry, onViewError, session, {}, { strategy: "tus", ...options }, endpoint);
    });
}

/**
 * Uploads one entry. The broker calls are answered from the meta, in the
 * state the upload is in (Rindle has the session; it is not asked).
 */
async function run(entry, onViewError, session, extra, options, endpoint = "/") {
  let upload = null;
  const now = (state) => ({ session: { ...session, state: state ?? upload?.state ?? "signed" } });
  const broker = {
    show: () => now("signed"),
    sign: () => ({ ...now(), ...extra.sign?.() }),
    resumableStatus: ({ offset }) => ({ session: { ...now().session, last_known_offset: offset } }),
    // Rindle verifies when the LiveView consumes the entry.
    complete: () => ({
      session: { ...session, state: "completed" },
      asset: { id: session.asset_id ?? "", key: "", byte_size: entry.file.size, content_type: entry.file.type, sha256: null, url: "" },
    }),
    cancel: () => now("aborted"),
  };
  try {
    loaded ??= init();
    await loaded;
    // Every call is answered here; the endpoint places a session URI given as a path.
    const uploader = new Uploader({ endpoint: new URL(endpoint, location.href).href, broker });
    let sent = 0;
    upload = uploader.upload(entry.file, {
      ...options,
      sessionId: session.id,
      resume: false,
      // LiveView wants whole percents, never back, and 100 only once stored.
      onProgress: ({ bytesAcked, bytesTotal }) => {
        const percent = Math.min(99, Math.floor((bytesAcked * 100) / (bytesTotal || 1)));
        if (percent > sent) entry.progress((sent = percent));
      },
    });
    onViewError(() => upload.pause());
    entry.onCancel?.(() => upload.cancel());
    await upload.done;
    entry.progress(100);
  } catch (error) {
    if (error?.code !== "aborted") entry.error(error?.code ?? "failed");
  }
}
