// The demo page: <rindle-upload> (rindle-upload/element) picks, queues and
// shows the uploads; its events draw, for each one, the session's states
// as a timeline and its pieces as a live map. Public API only.
import "/pkg/element.js";

const element = document.getElementById("uploader");
const strategy = document.getElementById("strategy");
const list = document.getElementById("uploads");
const cardTemplate = document.getElementById("upload-card");

// Rindle's path for an upload that succeeds; a state off it (resuming,
// failed, aborted, expired) shows where it happened.
const PATH = ["initialized", "signed", "uploading", "uploaded", "verifying", "completed"];
const ENDS = new Set(["completed", "failed", "aborted", "expired"]);

element.setAttribute("strategy", strategy.value);
strategy.addEventListener("change", () => element.setAttribute("strategy", strategy.value));

/** Each picked file's card. */
const cards = new WeakMap();
const cardOf = (file) => cards.get(file) ?? cards.set(file, card(file)).get(file);

element.addEventListener("rindle-upload:state", ({ file, detail }) => cardOf(file).state(detail));
element.addEventListener("rindle-upload:piece", ({ file, detail }) => cardOf(file).piece(detail));
element.addEventListener("rindle-upload:complete", ({ file, detail }) => cardOf(file).complete(detail.asset));
element.addEventListener("rindle-upload:error", ({ file, detail }) => cardOf(file).error(detail));

function card(file) {
  const item = cardTemplate.content.firstElementChild.cloneNode(true);
  const [name, used, timeline, map, detail] =
    [".name", ".strategy-used", ".timeline", ".pieces", ".detail"].map((s) => item.querySelector(s));
  name.textContent = file.name;
  list.append(item);
  const started = performance.now();
  /** The states reached, in order, with when. */
  const reached = [];
  /** Piece bars by their first byte; a piece that failed once stays marked. */
  const pieces = new Map();

  const drawTimeline = () => {
    const last = reached.at(-1).state;
    const furthest = Math.max(...reached.map(({ state }) => PATH.indexOf(state)));
    const ahead = ENDS.has(last) ? [] : PATH.slice(furthest + 1);
    timeline.replaceChildren(
      ...reached.map(({ state, ms }, i) => step(state, i === reached.length - 1 ? "current" : "reached", ms)),
      ...ahead.map((state) => step(state, "ahead")),
    );
  };
  const describeMap = () => {
    const bars = [...pieces.values()];
    const count = (state) => bars.filter((bar) => bar.dataset.state === state).length;
    map.setAttribute("aria-label",
      `Pieces of ${file.name}: ${count("stored")} stored, ${count("sending")} in flight, ` +
      `${bars.filter((bar) => bar.dataset.retried).length} retried`);
  };
  describeMap();

  return {
    state({ to, session }) {
      reached.push({ state: to, ms: performance.now() - started });
      used.textContent = session.upload_strategy;
      drawTimeline();
    },
    piece({ offset, size, state }) {
      let bar = pieces.get(offset);
      if (!bar) {
        bar = document.createElement("div");
        bar.className = "piece";
        bar.dataset.offset = offset;
        map.append(bar);
        pieces.set(offset, bar);
      }
      if (state === "failed") bar.dataset.retried = "true";
      // Ended unstored (failed, or paused mid-request): waiting to go again.
      bar.dataset.state = state === "failed" || state === "stopped" ? "waiting" : state;
      const share = (bytes) => `${(100 * bytes) / (file.size || 1)}%`;
      bar.style.left = share(offset);
      bar.style.width = share(size);
      describeMap();
    },
    complete(asset) {
      const link = document.createElement("a");
      link.href = asset.url;
      link.textContent = asset.sha256 ? `stored: sha256 ${asset.sha256.slice(0, 16)}…` : "stored";
      detail.replaceChildren(link);
    },
    error(error) {
      detail.textContent = `${error.code}: ${error.message}`;
    },
  };
}

/** One state on the timeline: reached (with when), the current one, or ahead. */
function step(state, kind, ms) {
  const item = document.createElement("li");
  item.className = kind;
  item.dataset.state = state;
  item.textContent = state;
  if (kind === "current") item.setAttribute("aria-current", "step");
  if (ms !== undefined) {
    const when = document.createElement("small");
    when.textContent = ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
    item.append(" ", when);
  }
  return item;
}
