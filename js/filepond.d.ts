// rindle-upload/filepond: a FilePond `server` (see filepond.js).
import type { UploaderOptions, UploadOptions, UploadResult } from "./index.js";

export interface RindleServerOptions
  extends Pick<UploaderOptions, "endpoint" | "headers" | "credentials" | "broker" | "maxUploads">,
    Omit<UploadOptions, "resumeFrom" | "sessionId" | "signal"> {
  /** FilePond's undo of a completed upload: remove the asset your app's way. */
  onRevert?: (result: UploadResult) => unknown;
}

/** FilePond's `server` option: `process` (with abort) and `revert`. */
export interface RindleServer {
  process: (
    fieldName: string,
    file: File,
    metadata: unknown,
    load: (assetId: string) => void,
    error: (message: string) => void,
    progress: (computable: boolean, loaded: number, total: number) => void,
    abort: () => void,
  ) => { abort: () => void };
  revert: (assetId: string, load: () => void, error: (message: string) => void) => void;
}

export declare function rindleServer(options: RindleServerOptions): RindleServer;
