// WebKitGTK's WebDriver for wasm-bindgen-test-runner, which opens Safari
// sessions with empty capabilities: starts WebKitWebDriver under xvfb-run
// and serves it on another port, adding the MiniBrowser to each new
// session's capabilities. Prints its URL (for SAFARIDRIVER_REMOTE) and
// runs until killed.
import { spawn } from "node:child_process";
import { createServer } from "node:http";

const MINIBROWSER = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";
const driverPort = 20000 + Math.floor(Math.random() * 20000);
const driver = spawn("xvfb-run", ["-a", "WebKitWebDriver", `--port=${driverPort}`], { stdio: "ignore", detached: true });
const stop = () => { try { process.kill(-driver.pid, "SIGTERM"); } catch {} process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

const server = createServer(async (request, response) => {
  const chunks = [];
  for await (const chunk of request) chunks.push(chunk);
  let body = Buffer.concat(chunks);
  if (request.method === "POST" && request.url === "/session") {
    body = Buffer.from(JSON.stringify({
      capabilities: { alwaysMatch: { browserName: "MiniBrowser", "webkitgtk:browserOptions": { binary: MINIBROWSER, args: ["--automation"] } } },
    }));
  }
  const answer = await fetch(`http://127.0.0.1:${driverPort}${request.url}`, {
    method: request.method, headers: { "content-type": "application/json" },
    body: ["GET", "HEAD"].includes(request.method) ? undefined : body,
  }).catch((error) => ({ status: 502, text: async () => String(error) }));
  response.writeHead(answer.status, { "content-type": "application/json" });
  response.end(await answer.text());
});
server.listen(0, "127.0.0.1", async () => {
  for (let i = 0; i < 100; i++) {
    if (await fetch(`http://127.0.0.1:${driverPort}/status`).then((r) => r.ok, () => false)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  console.log(`webkit driver on http://127.0.0.1:${server.address().port}`);
});
