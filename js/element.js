// rindle-upload/element: <rindle-upload endpoint="/api/uploads">, a file
// picker and drop zone with a row per file (an accessible two-tone bar:
// sent and stored; the session's state; pause, resume and cancel), that
// takes part in its <form> and reports what happens as DOM events.
//
//   import "rindle-upload/element";
//   <form><rindle-upload endpoint="/api/uploads" name="assets" multiple></rindle-upload></form>
//
// Attributes: endpoint, strategy, multiple, accept, max-uploads, name.
// The form submits each completed upload's asset id under `name`; while an
// upload runs, the element is invalid (the form does not submit). A file
// picked again after a reload continues the upload it started.
// Events (bubbling, composed): rindle-upload:progress, :state, :piece,
// :complete and :error, whose `detail` is the object the matching
// `upload()` callback gets (progress, state change, piece, `{ session,
// asset }`, the UploadError); `event.file` is the file.
import init, { Uploader } from "./index.js";

let loaded = null;

const STYLE = `
:host { display: block; font: var(--rindle-upload-font, inherit); color: inherit; }
.zone { border: 2px dashed var(--rindle-upload-border, #8a94a6); border-radius: var(--rindle-upload-radius, 8px);
  padding: 1.5em; text-align: center; cursor: pointer; }
.zone:focus-visible, .zone.over { outline: 3px solid var(--rindle-upload-accent, #3a63d8); outline-offset: 2px; }
ul { list-style: none; margin: .75em 0 0; padding: 0; }
li { padding: .5em 0; border-bottom: 1px solid var(--rindle-upload-border, #8a94a6); }
.head { display: flex; justify-content: space-between; gap: 1em; }
.bar { position: relative; height: var(--rindle-upload-bar-height, 8px); margin: .35em 0;
  background: var(--rindle-upload-track, #e3e7ee); border-radius: 4px; overflow: hidden; }
.bar > div { position: absolute; inset: 0 auto 0 0; width: 0; }
.sent { background: var(--rindle-upload-sent, #a9bbef); }
.stored { background: var(--rindle-upload-accent, #3a63d8); }
.hidden { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
`;

export class RindleUploadElement extends HTMLElement {
  static formAssociated = true;
  static observedAttributes = ["multiple", "accept"];

  #internals = this.attachInternals();
  #zone;
  #input;
  #list;
  #status;
  #uploader = null;
  /** The uploads under way (cancelled by a form reset). */
  #running = new Set();
  /** Files picked and not yet stored or failed. */
  #unfinished = 0;
  #assets = [];

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.innerHTML = `<style>${STYLE}</style>
      <div part="zone" class="zone" role="button" tabindex="0" aria-label="Choose files, or drop them here"><slot>Choose files, or drop them here</slot></div>
      <input type="file" hidden>
      <ul part="list" aria-label="Uploads"></ul>
      <p part="status" class="hidden" aria-live="polite"></p>`;
    const zone = (this.#zone = root.querySelector(".zone"));
    [this.#input, this.#list, this.#status] = [root.querySelector("input"), root.querySelector("ul"), root.querySelector("p")];
    // The zone is a button: click, Enter or Space opens the picker; files dropped on it upload.
    zone.addEventListener("click", () => this.#input.click());
    zone.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" && event.key !== " ") return;
      event.preventDefault();
      this.#input.click();
    });
    zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      this.add(event.dataTransfer.files);
    });
    this.#input.addEventListener("change", () => {
      this.add(this.#input.files);
      this.#input.value = "";
    });
    this.#settle();
  }

  attributeChangedCallback() {
    this.#input.multiple = this.hasAttribute("multiple");
    this.#input.accept = this.getAttribute("accept") ?? "";
  }

  /** Uploads these files (a FileList or an array of File). */
  add(files) {
    const picked = [...files];
    for (const file of this.hasAttribute("multiple") ? picked : picked.slice(0, 1)) this.#start(file);
  }

  /** The asset ids of the completed uploads, in the order they completed. */
  get value() {
    return [...this.#assets];
  }

  formResetCallback() {
    for (const upload of this.#running) upload.cancel();
    this.#assets = [];
    this.#list.replaceChildren();
    this.#settle();
  }

  async #start(file) {
    const row = this.#row(file);
    this.#announce(`Uploading ${file.name}`);
    const emit = (type, detail) => {
      const event = new CustomEvent(`rindle-upload:${type}`, { detail, bubbles: true, composed: true });
      event.file = file;
      this.dispatchEvent(event);
    };
    // Unfinished from the moment it is picked: the form waits for it.
    this.#unfinished++;
    this.#settle();
    const ended = await this.#upload(file, row, emit).then((result) => ({ result }), (error) => ({ error }));
    this.#unfinished--;
    if (ended.result) {
      this.#assets.push(ended.result.asset.id);
      row.finish("stored");
      this.#announce(`${file.name} uploaded`);
    } else {
      this.#failed(file, row, ended.error);
    }
    // The form's value and validity are current by the time the event fires.
    this.#settle();
    emit(ended.result ? "complete" : "error", ended.result ?? ended.error);
  }

  /** Uploads `file` shown in `row`; settles as its `done` does (or with a
   * bad attribute's error, such as max-uploads="0", or the package's). */
  async #upload(file, row, emit) {
    await (loaded ??= init());
    this.#uploader ??= new Uploader({
      endpoint: this.getAttribute("endpoint") ?? "/api/uploads",
      maxUploads: Number(this.getAttribute("max-uploads")) || undefined,
    });
    // The same file picked again after a reload continues where it stopped.
    const [previous] = await this.#uploader.findPreviousUploads(file);
    if (previous) row.note(`continuing the ${previous.strategy} upload`);
    const upload = this.#uploader.upload(file, {
      strategy: previous ? undefined : (this.getAttribute("strategy") ?? undefined),
      resumeFrom: previous,
      onPiece: (piece) => emit("piece", piece),
      onProgress: (progress) => {
        row.show(progress);
        emit("progress", progress);
      },
      onStateChange: (change) => {
        row.state(change.to);
        emit("state", change);
      },
      onPausedChange: (paused) => {
        row.paused(paused);
        this.#announce(`${file.name} ${paused ? "paused" : "resumed"}`);
      },
    });
    if (upload.queued) row.state("queued");
    row.control(upload);
    this.#running.add(upload);
    try {
      return await upload.done;
    } finally {
      this.#running.delete(upload);
    }
  }

  #failed(file, row, error) {
    row.finish(`${error.code ?? "failed"}: ${error.message}`);
    this.#announce(`${file.name} failed: ${error.message}`);
  }

  /** One file's row; each control and the bar name the file. */
  #row(file) {
    const row = document.createElement("li");
    row.setAttribute("part", "row");
    row.innerHTML = `<div class="head"><span part="name"></span><span part="state">waiting</span></div>
      <div part="bar" class="bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0">
        <div part="sent" class="sent"></div><div part="stored" class="stored"></div></div>
      <div><button type="button" part="pause">Pause</button> <button type="button" part="cancel">Cancel</button>
        <span part="detail"></span></div>`;
    const find = (part) => row.querySelector(`[part="${part}"]`);
    const [name, state, bar, sent, stored, pause, cancel, detail] =
      ["name", "state", "bar", "sent", "stored", "pause", "cancel", "detail"].map(find);
    name.textContent = file.name;
    bar.setAttribute("aria-label", `Upload of ${file.name}`);
    const label = (button, verb) => {
      button.textContent = verb;
      button.setAttribute("aria-label", `${verb} ${file.name}`);
    };
    label(pause, "Pause");
    label(cancel, "Cancel");
    pause.disabled = cancel.disabled = true;
    this.#list.append(row);
    return {
      show: ({ bytesSent, bytesAcked, bytesTotal }) => {
        const percent = (n) => (bytesTotal ? (100 * n) / bytesTotal : 100);
        sent.style.width = `${percent(bytesSent)}%`;
        stored.style.width = `${percent(bytesAcked)}%`;
        bar.setAttribute("aria-valuenow", String(Math.floor(percent(bytesAcked))));
      },
      state: (to) => {
        state.textContent = to;
        row.dataset.state = to;
      },
      paused: (paused) => label(pause, paused ? "Resume" : "Pause"),
      control: (upload) => {
        pause.disabled = cancel.disabled = false;
        pause.addEventListener("click", () => (upload.paused ? upload.resume() : upload.pause()));
        cancel.addEventListener("click", () => upload.cancel());
      },
      note: (text) => {
        detail.textContent = text;
      },
      finish: (text) => {
        pause.disabled = cancel.disabled = true;
        detail.textContent = text;
      },
    };
  }

  /** The form value (the asset ids under `name`) and validity (no upload running). */
  #settle() {
    const name = this.getAttribute("name");
    const value = new FormData();
    if (name) for (const id of this.#assets) value.append(name, id);
    this.#internals.setFormValue(value);
    if (this.#unfinished) {
      this.#internals.setValidity({ customError: true }, "Wait until the uploads finish.", this.#zone);
    } else {
      this.#internals.setValidity({});
    }
  }

  #announce(message) {
    this.#status.textContent = message;
  }
}

if (!customElements.get("rindle-upload")) customElements.define("rindle-upload", RindleUploadElement);
