// The demo page: uses only the package's public API.
import init, { Uploader } from "/pkg/index.js";

// Controls work from the first moment: a file picked while the package
// loads waits for it.
const loaded = init().then(() => new Uploader({ endpoint: "/api/uploads" }));
const list = document.getElementById("uploads");
const rowTemplate = document.getElementById("upload-row");
const announcer = document.getElementById("announce");
const fileInput = document.getElementById("files");

/** Says it to screen readers (the polite live region). */
function announce(message) {
  announcer.textContent = message;
}

function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function start(file) {
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  const [name, state, bar, bytes, rate, pause, cancel, detail] =
    [".name", ".state", "progress", ".bytes", ".rate", ".pause", ".cancel", ".detail"].map((s) => row.querySelector(s));
  name.textContent = file.name;
  // Each control and bar names its file: a list of rows reads unambiguously.
  bar.setAttribute("aria-label", `Upload of ${file.name}`);
  pause.setAttribute("aria-label", `Pause ${file.name}`);
  cancel.setAttribute("aria-label", `Cancel ${file.name}`);
  list.prepend(row);
  announce(`Uploading ${file.name}`);
  const started = performance.now();

  const uploader = await loaded;
  // The same file picked again after a reload continues where it stopped.
  const [previous] = await uploader.findPreviousUploads(file);
  if (previous) detail.textContent = `continuing the ${previous.strategy} upload started ${new Date(previous.createdAt).toLocaleString()}`;
  const upload = uploader.upload(file, {
    strategy: previous ? undefined : document.getElementById("strategy").value,
    resumeFrom: previous,
    onPausedChange: (paused) => {
      pause.textContent = paused ? "Resume" : "Pause";
      pause.setAttribute("aria-label", `${pause.textContent} ${file.name}`);
      announce(`${file.name} ${paused ? "paused" : "resumed"}`);
    },
    onStateChange: ({ to }) => { state.textContent = to; state.dataset.state = to; },
    onProgress: ({ bytesSent, bytesAcked, bytesTotal }) => {
      bar.value = bytesTotal ? bytesSent / bytesTotal : 1;
      bytes.textContent = `${formatBytes(bytesSent)} sent, ${formatBytes(bytesAcked)} stored of ${formatBytes(bytesTotal)}`;
      const seconds = (performance.now() - started) / 1000;
      if (seconds > 0) rate.textContent = `${formatBytes(bytesSent / seconds)}/s`;
    },
  });
  pause.addEventListener("click", () => (upload.paused ? upload.resume() : upload.pause()));
  cancel.addEventListener("click", () => upload.cancel());
  upload.done.then(
    ({ asset }) => {
      bar.value = 1;
      pause.disabled = cancel.disabled = true;
      detail.innerHTML = "";
      const link = document.createElement("a");
      link.href = asset.url;
      link.textContent = asset.sha256 ? `stored: sha256 ${asset.sha256.slice(0, 16)}…` : "stored";
      detail.append(link);
      announce(`${file.name} uploaded`);
    },
    (error) => {
      pause.disabled = cancel.disabled = true;
      detail.textContent = `${error.code}: ${error.message}`;
      announce(`${file.name} failed: ${error.message}`);
    },
  );
}

fileInput.addEventListener("change", (event) => {
  for (const file of event.target.files) start(file);
  event.target.value = "";
});
const drop = document.getElementById("drop");
// The drop zone is also a button: click, Enter or Space opens the picker.
drop.addEventListener("click", () => fileInput.click());
drop.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" && event.key !== " ") return;
  event.preventDefault();
  fileInput.click();
});
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  for (const file of event.dataTransfer.files) start(file);
});
