// rindle-upload/liveview (js/liveview.js): Phoenix LiveView uploaders for
// the meta Rindle.LiveView emits.
import type { UploadOptions } from "./index.js";

/** An upload entry as Phoenix LiveView's client hands it to an uploader. */
export interface LiveViewEntry {
  file: File;
  meta: Record<string, unknown>;
  /** Whole percent; 100 means done. */
  progress(percent: number): void;
  error(reason?: string): void;
  onCancel?(callback: () => void): void;
}

export type LiveViewUploader = (entries: LiveViewEntry[], onViewError: (callback: () => void) => void) => void;

/** `Rindle` (allow_upload) and `RindleTus` (allow_tus_upload), with these upload options. */
export function uploaders(options?: UploadOptions): { Rindle: LiveViewUploader; RindleTus: LiveViewUploader };
export const Rindle: LiveViewUploader;
export const RindleTus: LiveViewUploader;
