// rindle-upload/element: defines <rindle-upload> (see element.js).
import type { Piece, Progress, Session, SessionState, UploadError, UploadResult } from "./index.js";

/** An event of <rindle-upload>: `detail` is what the matching `upload()` callback gets. */
export interface RindleUploadEvent<T> extends CustomEvent<T> {
  readonly file: File;
}

export declare class RindleUploadElement extends HTMLElement {
  static readonly formAssociated: true;
  /** Uploads these files (all of them with `multiple`, else the first). */
  add(files: FileList | readonly File[]): void;
  /** The asset ids of the completed uploads, in the order they completed. */
  readonly value: string[];
}

declare global {
  interface HTMLElementTagNameMap {
    "rindle-upload": RindleUploadElement;
  }
  interface HTMLElementEventMap {
    "rindle-upload:progress": RindleUploadEvent<Progress>;
    "rindle-upload:state": RindleUploadEvent<{ from: SessionState | null; to: SessionState; session: Session }>;
    "rindle-upload:piece": RindleUploadEvent<Piece>;
    "rindle-upload:complete": RindleUploadEvent<UploadResult>;
    "rindle-upload:error": RindleUploadEvent<UploadError>;
  }
}
