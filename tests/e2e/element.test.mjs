// <rindle-upload> (rindle-upload/element) in Chromium against the
// reference broker and its embedded store: picked by keyboard and by drop,
// rows with an accessible bar and labelled controls, DOM events, and the
// form it belongs to.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { brokerAndPage, MiB } from "./support.mjs";

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** A page holding a form with one <rindle-upload>, recording its events. */
async function formPage(page, attributes) {
  await page.goto(new URL("/", page.url()).href);
  await page.evaluate(async (attributes) => {
    await import("/pkg/element.js");
    document.body.innerHTML = `<form id="form"><rindle-upload ${attributes}></rindle-upload><button>Send</button></form>`;
    window.seen = [];
    for (const type of ["progress", "state", "piece", "complete", "error"]) {
      document.addEventListener(`rindle-upload:${type}`, (event) => {
        const { detail, file } = event;
        window.seen.push({ type, file: file.name, detail: type === "error" ? { code: detail.code } : type === "state" ? { from: detail.from, to: detail.to } : type === "complete" ? { asset: detail.asset } : detail });
      });
    }
  }, attributes);
}

const events = (page) => page.evaluate(() => window.seen);

describe("<rindle-upload> (reference broker, embedded store)", () => {
  const suite = brokerAndPage();

  test("picked by keyboard: each file is stored byte-identical; events, rows and the form agree", async () => {
    const { page } = suite;
    await formPage(page, `endpoint="/api/uploads" name="assets" multiple max-uploads="2" strategy="multipart"`);
    const files = [0, 1, 2].map((i) => ({ name: `f${i}.bin`, mimeType: "application/octet-stream", buffer: randomBytes(6 * MiB + i) }));
    // Enter on the focused zone opens the picker.
    const chooser = page.waitForEvent("filechooser");
    await page.focus("rindle-upload >> [part=zone]");
    await page.keyboard.press("Enter");
    await (await chooser).setFiles(files);
    const running = await page.evaluate(() => {
      const form = document.getElementById("form");
      return { valid: form.checkValidity(), invalid: form.querySelector("rindle-upload").matches(":invalid") };
    });
    assert.deepEqual(running, { valid: false, invalid: true }, "a running upload keeps the form from submitting");
    await page.waitForFunction(() => window.seen.filter((e) => e.type === "complete").length === 3, null, { timeout: 60_000 });

    const seen = await events(page);
    for (const file of files) {
      const mine = seen.filter((e) => e.file === file.name);
      assert.deepEqual(
        mine.filter((e) => e.type === "state").map((e) => e.detail.to),
        ["initialized", "signed", "uploading", "uploaded", "verifying", "completed"],
      );
      const acked = mine.filter((e) => e.type === "progress").map((e) => e.detail.bytesAcked);
      assert.ok(acked.every((n, j) => j === 0 || n >= acked[j - 1]), "progress never goes back");
      assert.equal(acked.at(-1), file.buffer.length);
      const pieces = mine.filter((e) => e.type === "piece").map((e) => e.detail);
      const stored = pieces.filter((p) => p.state === "stored").sort((a, b) => a.offset - b.offset);
      assert.ok(stored.every((p, j) => p.offset === (j ? stored[j - 1].offset + stored[j - 1].size : 0)), "stored pieces follow each other");
      assert.equal(stored.at(-1).offset + stored.at(-1).size, file.buffer.length, "the stored pieces are the file");
      assert.equal(pieces.filter((p) => p.state === "sending").length, pieces.filter((p) => p.state !== "sending").length, "each request sent ended");
      const { asset } = mine.find((e) => e.type === "complete").detail;
      assert.equal(asset.sha256, sha256(file.buffer), `${file.name} stored byte-identical`);
    }
    const after = await page.evaluate(() => {
      const element = document.querySelector("rindle-upload");
      const rows = [...element.shadowRoot.querySelectorAll("[part=row]")].map((row) => ({
        bar: [row.querySelector("[part=bar]").getAttribute("role"), row.querySelector("[part=bar]").getAttribute("aria-label"), row.querySelector("[part=bar]").getAttribute("aria-valuenow")],
        buttons: [...row.querySelectorAll("button")].map((b) => [b.getAttribute("aria-label"), b.disabled]),
        state: row.querySelector("[part=state]").textContent,
      }));
      const form = document.getElementById("form");
      return {
        rows, valid: form.checkValidity(), submitted: new FormData(form).getAll("assets"), value: element.value,
        status: element.shadowRoot.querySelector("[aria-live=polite]").textContent,
      };
    });
    assert.deepEqual(after.rows, files.map((f) => ({
      bar: ["progressbar", `Upload of ${f.name}`, "100"],
      buttons: [[`Pause ${f.name}`, true], [`Cancel ${f.name}`, true]],
      state: "completed",
    })));
    assert.equal(after.valid, true);
    const assetIds = seen.filter((e) => e.type === "complete").map((e) => e.detail.asset.id);
    assert.deepEqual(after.submitted, assetIds, "the form submits the completed sessions' asset ids under name");
    assert.deepEqual(after.value, assetIds);
    assert.match(after.status, /uploaded$/);
  });

  test("a dropped file uploads; its Cancel button (labelled with its name) cancels it", async () => {
    const { page } = suite;
    await formPage(page, `endpoint="/api/uploads" name="assets" strategy="multipart"`);
    const result = await page.evaluate(async () => {
      const element = document.querySelector("rindle-upload");
      const zone = element.shadowRoot.querySelector("[part=zone]");
      const bytes = new Uint8Array(24 << 20);
      for (let i = 0; i < bytes.length; i += 65536) crypto.getRandomValues(bytes.subarray(i, i + 65536));
      const transfer = new DataTransfer();
      transfer.items.add(new File([bytes], "dropped.bin"));
      zone.dispatchEvent(new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
      await new Promise((resolve) => document.addEventListener("rindle-upload:progress", (e) => e.detail.bytesAcked > 0 && resolve()));
      element.shadowRoot.querySelector('button[aria-label="Cancel dropped.bin"]').click();
      await new Promise((resolve) => document.addEventListener("rindle-upload:error", resolve, { once: true }));
      return { states: window.seen.filter((e) => e.type === "state").map((e) => e.detail.to), error: window.seen.find((e) => e.type === "error"), valid: document.getElementById("form").checkValidity() };
    });
    assert.equal(result.states.at(-1), "aborted");
    assert.deepEqual(result.error, { type: "error", file: "dropped.bin", detail: { code: "aborted" } });
    assert.equal(result.valid, true, "nothing runs once cancelled");
  });

  test("styled from the page through ::part() and custom properties", async () => {
    const { page } = suite;
    await formPage(page, `endpoint="/api/uploads"`);
    const styles = await page.evaluate(async () => {
      const style = document.createElement("style");
      style.textContent = "rindle-upload::part(zone) { border-color: rgb(1, 2, 3); } rindle-upload { --rindle-upload-accent: rgb(4, 5, 6); }";
      document.head.append(style);
      const element = document.querySelector("rindle-upload");
      element.add([new File(["x"], "one.txt")]);
      await new Promise((resolve) => document.addEventListener("rindle-upload:complete", resolve, { once: true }));
      const root = element.shadowRoot;
      return {
        zone: getComputedStyle(root.querySelector("[part=zone]")).borderTopColor,
        stored: getComputedStyle(root.querySelector("[part=stored]")).backgroundColor,
      };
    });
    assert.deepEqual(styles, { zone: "rgb(1, 2, 3)", stored: "rgb(4, 5, 6)" });
  });
});
