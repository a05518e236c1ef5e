// The package inside a dedicated module Worker (no window, no document):
// all four strategies against the reference broker and its embedded store.
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { brokerAndPage } from "./support.mjs";

describe("in a module Worker (reference broker, embedded store)", () => {
  const suite = brokerAndPage();

  test("presigned PUT, multipart, resumable and tus each store the file byte-identical", async () => {
    const results = await suite.page.evaluate(async (endpoint) => {
      const source = `
        const { default: init, Uploader } = await import(${JSON.stringify(`${location.origin}/pkg/index.js`)});
        await init();
        const hex = (b) => [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
        self.onmessage = async ({ data: { strategy, size } }) => {
          try {
            const bytes = new Uint8Array(size);
            for (let i = 0; i < size; i += 65536) crypto.getRandomValues(bytes.subarray(i, Math.min(size, i + 65536)));
            const file = new File([bytes], strategy + ".bin", { type: "application/octet-stream" });
            const states = [];
            const upload = new Uploader({ endpoint: ${JSON.stringify(endpoint)} }).upload(file, {
              strategy, partSize: 5 << 20, chunkSize: 1 << 20, onStateChange: ({ to }) => states.push(to),
            });
            const { session, asset } = await upload.done;
            const stored = await fetch(new URL(asset.url, ${JSON.stringify(endpoint)})).then((r) => r.arrayBuffer());
            postMessage({
              strategy: session.upload_strategy, states, sent: hex(await crypto.subtle.digest("SHA-256", bytes)),
              stored: hex(await crypto.subtle.digest("SHA-256", stored)), window: typeof window, document: typeof document,
            });
          } catch (error) {
            postMessage({ error: String(error?.code ?? error) + ": " + error?.message });
          }
        };
        postMessage("ready");
      `;
      const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })), { type: "module" });
      const next = () => new Promise((resolve, reject) => {
        worker.onmessage = ({ data }) => resolve(data);
        worker.onerror = (e) => reject(new Error(e.message));
      });
      const ready = await next();
      if (ready !== "ready") return { ready };
      const results = [];
      for (const [strategy, size] of [["presigned_put", 3 << 20], ["multipart", 12 << 20], ["resumable", (3 << 20) + 17], ["tus", (3 << 20) + 5]]) {
        const reply = next();
        worker.postMessage({ strategy, size });
        results.push(await reply);
      }
      worker.terminate();
      return results;
    }, `${suite.broker.url}/api/uploads`);
    assert.equal(results.length, 4, JSON.stringify(results));
    for (const result of results) {
      assert.equal(result.error, undefined, JSON.stringify(result));
      assert.deepEqual([result.window, result.document], ["undefined", "undefined"]);
      assert.deepEqual(result.states, ["initialized", "signed", "uploading", "uploaded", "verifying", "completed"], JSON.stringify(result));
      assert.equal(result.stored, result.sent, `${result.strategy}: the stored bytes are the file's`);
    }
    assert.deepEqual(results.map((r) => r.strategy), ["presigned_put", "multipart", "resumable", "resumable"]);
  });
});
