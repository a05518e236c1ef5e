// rindle-upload/uppy: an Uppy uploader plugin (see uppy.js).
import type { BrokerCallbacks, UploadOptions } from "./index.js";

export interface RindleUploadOptions extends Omit<UploadOptions, "resumeFrom" | "sessionId" | "signal" | "filename" | "contentType"> {
  /** The broker protocol's base URL, e.g. "/api/uploads". */
  endpoint: string;
  headers?: Record<string, string>;
  credentials?: "same-origin" | "include" | "omit";
  broker?: BrokerCallbacks;
  /** Uploads at once (default 3; 0: no limit). */
  limit?: number;
  /** The plugin's id in Uppy (default "RindleUpload"). */
  id?: string;
}

/** `uppy.use(RindleUpload, { endpoint })`. */
export default class RindleUpload {
  static readonly VERSION: string;
  constructor(uppy: unknown, opts: RindleUploadOptions);
  readonly id: string;
  readonly type: "uploader";
  opts: RindleUploadOptions;
  install(): void;
  uninstall(): void;
  update(): void;
  setOptions(opts: Partial<RindleUploadOptions>): void;
}
