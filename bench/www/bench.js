// The bench page: each variant uploads the same disk-backed File (OPFS)
// and reports its time, the long tasks it caused and WASM memory.
import init, { Uploader } from "/pkg/index.js";
import { AwsS3, LibStorageUpload, S3Client, TusUpload, Uppy } from "./peers.js";

const wasm = await init();
const MiB = 1 << 20;

/** Writes `size` random bytes to an OPFS file once, and returns the File. */
async function diskFile(size) {
  const root = await navigator.storage.getDirectory();
  const name = `bench-${size}.bin`;
  const handle = await root.getFileHandle(name, { create: true });
  if ((await handle.getFile()).size !== size) {
    const writable = await handle.createWritable();
    const block = new Uint8Array(8 * MiB);
    for (let written = 0; written < size; written += block.length) {
      for (let i = 0; i < block.length; i += 65536) crypto.getRandomValues(block.subarray(i, i + 65536));
      await writable.write(block.subarray(0, Math.min(block.length, size - written)));
    }
    await writable.close();
  }
  return handle.getFile();
}

async function post(url, body) {
  // The brokers are on other origins than the page: the owner cookie goes along.
  const response = await fetch(url, {
    method: "POST", credentials: "include", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
  });
  return response.json();
}

/** Uploads with this library; returns when the bytes were stored (state
 * `uploaded`), before the broker's verification. */
async function rindle(file, endpoint, options) {
  let uploadedAt = null;
  const upload = new Uploader({ endpoint, credentials: "include" }).upload(file, {
    filename: "bench.bin",
    contentType: "application/octet-stream",
    onStateChange: ({ to }) => { if (to === "uploaded") uploadedAt = performance.now(); },
    ...options,
  });
  await upload.done;
  return uploadedAt;
}

const variants = {
  /** The browser's own ceiling: one fetch PUT of the whole File. */
  async fetchPut(file, c) {
    const created = await post(c.endpoint, { filename: "bench.bin", content_type: "application/octet-stream", byte_size: file.size, upload_strategy: "presigned_put" });
    const signed = await post(`${c.endpoint}/${created.session.id}/sign`, {});
    const response = await fetch(signed.upload.url, { method: "PUT", headers: signed.upload.headers, body: file });
    if (!response.ok) throw new Error(`PUT answered ${response.status}`);
  },
  presignedPut: (file, c) => rindle(file, c.endpoint, { strategy: "presigned_put" }),
  multipart4: (file, c) => rindle(file, c.endpoint, { strategy: "multipart", concurrency: 4, partSize: 8 * MiB }),
  multipart8: (file, c) => rindle(file, c.endpoint, { strategy: "multipart", concurrency: 8, partSize: 8 * MiB }),
  resumable: (file, c) => rindle(file, c.endpoint, { strategy: "resumable", chunkSize: 8 * MiB }),
  tus: (file, c) => rindle(file, c.endpoint, { strategy: "tus", chunkSize: 8 * MiB }),
  // The same without checksums: what integrity costs.
  presignedPutNoChecksum: (file, c) => rindle(file, c.endpoint, { strategy: "presigned_put", checksum: "none" }),
  multipart4NoChecksum: (file, c) =>
    rindle(file, c.endpoint, { strategy: "multipart", concurrency: 4, partSize: 8 * MiB, checksum: "none" }),
  tusNoChecksum: (file, c) => rindle(file, c.endpoint, { strategy: "tus", chunkSize: 8 * MiB, checksum: "none" }),
  async uppyAwsS3(file, c) {
    const uppy = new Uppy({ autoProceed: false });
    uppy.use(AwsS3, {
      shouldUseMultipart: true,
      getChunkSize: () => 8 * MiB,
      limit: 4,
      s3Endpoint: `${c.s3.endpoint}/${c.s3.bucket}`,
      region: c.s3.region,
      getCredentials: () => ({ credentials: { accessKeyId: c.s3.accessKeyId, secretAccessKey: c.s3.secretAccessKey }, region: c.s3.region }),
    });
    uppy.addFile({ name: `uppy-${Date.now()}.bin`, type: "application/octet-stream", data: file });
    const result = await uppy.upload();
    if (result.failed?.length) throw new Error(`Uppy: ${result.failed[0].error}`);
    uppy.destroy();
  },
  async libStorage(file, c) {
    const client = new S3Client({
      endpoint: c.s3.endpoint,
      region: c.s3.region,
      forcePathStyle: true,
      credentials: { accessKeyId: c.s3.accessKeyId, secretAccessKey: c.s3.secretAccessKey },
    });
    const upload = new LibStorageUpload({
      client,
      params: { Bucket: c.s3.bucket, Key: `lib-storage-${Date.now()}.bin`, Body: file },
      queueSize: 4,
      partSize: 8 * MiB,
    });
    await upload.done();
  },
  tusJsClient(file, c) {
    return new Promise((resolve, reject) => {
      new TusUpload(file, {
        endpoint: c.tusEndpoint,
        chunkSize: 8 * MiB,
        metadata: { filename: "bench.bin", filetype: "application/octet-stream" },
        onSuccess: resolve,
        onError: reject,
      }).start();
    });
  },
};

/** Runs one variant; returns its time, long tasks and WASM memory. */
window.bench = async (variant, size, config) => {
  const file = await diskFile(size);
  const longTasks = [];
  const observer = new PerformanceObserver((list) => longTasks.push(...list.getEntries().map((e) => e.duration)));
  observer.observe({ type: "longtask" });
  const started = performance.now();
  const storedAt = await variants[variant](file, config);
  const ms = performance.now() - started;
  // Peers have no verification step: compare time to stored bytes.
  const transferMs = (typeof storedAt === "number" ? storedAt : performance.now()) - started;
  await new Promise((resolve) => setTimeout(resolve, 0));
  observer.disconnect();
  return { ms, transferMs, longTasks: longTasks.length, longestTask: Math.max(0, ...longTasks), wasmBytes: wasm.memory.buffer.byteLength };
};
/** Hash throughput in the checksum worker (the package's own), MiB/s per algorithm. */
window.hashBench = async (size) => {
  const file = await diskFile(size);
  const worker = new Worker("/pkg/checksum-worker.js", { type: "module" });
  const digest = (algorithm) => new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => (data.error ? reject(new Error(data.error.message)) : resolve(data.digest));
    worker.postMessage({ id: 0, blob: file, start: 0, end: file.size, algorithm });
  });
  await digest("crc32c"); // warm: the worker loads the package first
  const speeds = {};
  for (const algorithm of ["crc32c", "md5", "sha1", "sha256"]) {
    const started = performance.now();
    await digest(algorithm);
    speeds[algorithm] = size / MiB / ((performance.now() - started) / 1000);
  }
  worker.terminate();
  return speeds;
};
window.benchReady = true;
