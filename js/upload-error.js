// The class of every error rindle-upload raises or rejects with, so that
// `error instanceof UploadError` works. The package's WebAssembly makes
// them (src/web/mod.rs); the package's entry (js/index.js) exports it.
export class UploadError extends Error {
  constructor(code, message, retryable, state) {
    super(message);
    this.name = "UploadError";
    /** What went wrong, to switch on (docs/api.md lists every code). */
    this.code = code;
    /** Whether trying again may succeed. */
    this.retryable = retryable;
    /** The session state it happened in; null before the session existed. */
    this.state = state;
  }
}
