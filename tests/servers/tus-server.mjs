// @tus/server with @tus/file-store on a free loopback port, storing in the
// directory given as the first argument; prints "listening on <url>".
import { createServer } from "node:http";
import { Server } from "@tus/server";
import { FileStore } from "@tus/file-store";

const directory = process.argv[2];
const tus = new Server({ path: "/files", datastore: new FileStore({ directory }) });
const server = createServer((req, res) => tus.handle(req, res));
server.listen(0, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${server.address().port}`));

// A request cut mid-body makes Node's web-stream adapter close a stream
// twice ("ReadableStream is already closed"), thrown outside any handler;
// it concerns only that request, so the server stays up for the next.
process.on("uncaughtException", (error) => {
  if (error.code !== "ERR_INVALID_STATE") throw error;
});
