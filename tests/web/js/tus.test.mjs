// The tus client's rules (static/tus.js) against an in-memory tus server: chunks, checksums,
// resume after a failure from the server's durable offset, token renewal, refusals, abort.
import test from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { Upload, TusError, encodeMetadata, base64, retryable } from "../../../src/parlour/web/static/tus.js";

const BASE = "http://127.0.0.1:9/files/uploads";

function response(status, headers = {}, text = "") {
  const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { status, headers: { get: (n) => lower[n.toLowerCase()] ?? null }, text };
}

async function bodyBytes(body) {
  if (body instanceof Uint8Array) return body;
  return new Uint8Array(await body.arrayBuffer());
}

// A tus server in memory. `fail(method, n)` scripts the n-th (1-based) request of a method:
// a function returning a response, or "network" for a dropped connection (after which the
// server may have kept part of the chunk: `keep` bytes).
class FakeServer {
  constructor({ tokens = ["t1"], location = (id) => `/files/uploads/${id}` } = {}) {
    this.uploads = new Map();
    this.log = [];
    this.scripts = new Map();
    this.counts = new Map();
    this.valid = new Set(tokens);
    this.location = location;
    this.next = 1;
    this.http = (req) => this.handle(req);
  }

  fail(method, n, what) {
    this.scripts.set(`${method}#${n}`, what);
  }

  async handle({ method, url, headers, body, onProgress, signal }) {
    const n = (this.counts.get(method) || 0) + 1;
    this.counts.set(method, n);
    this.log.push({ method, url, headers: { ...headers } });
    assert.equal(headers["Tus-Resumable"], "1.0.0");
    if (signal?.aborted) throw new TusError("cancelled", { code: "aborted" });
    const script = this.scripts.get(`${method}#${n}`);
    const bearer = (headers.Authorization || "").replace(/^Bearer /, "");
    if (!this.valid.has(bearer)) return response(401, { "WWW-Authenticate": "Bearer" });
    if (typeof script === "function") {
      const r = await script({ method, url, headers, body });
      if (r) return r;
    }
    if (method === "POST") {
      const id = `id${this.next++}`;
      this.uploads.set(id, { length: Number(headers["Upload-Length"]), data: new Uint8Array(0), meta: headers["Upload-Metadata"] });
      return response(201, { Location: this.location(id) });
    }
    const id = new URL(url).pathname.split("/").pop();
    const up = this.uploads.get(id);
    if (!up) return response(404);
    if (method === "HEAD") return response(200, { "Upload-Offset": String(up.data.length), "Upload-Length": String(up.length) });
    if (method === "DELETE") {
      this.uploads.delete(id);
      return response(204);
    }
    assert.equal(method, "PATCH");
    assert.equal(headers["Content-Type"], "application/offset+octet-stream");
    if (Number(headers["Upload-Offset"]) !== up.data.length) return response(409);
    const bytes = await bodyBytes(body);
    if (script === "network" || script?.network) {
      const keep = script.keep || 0; // what reached the disk before the link dropped
      up.data = concat(up.data, bytes.subarray(0, keep));
      throw new TusError("the connection failed", { code: "network", retry: true });
    }
    if (headers["Upload-Checksum"]) {
      const [algo, digest] = headers["Upload-Checksum"].split(" ");
      assert.equal(algo, "sha256");
      const want = createHash("sha256").update(bytes).digest("base64");
      if (digest !== want || script === "corrupt") return response(460);
    }
    onProgress?.(Math.floor(bytes.length / 2));
    up.data = concat(up.data, bytes);
    return response(204, { "Upload-Offset": String(up.data.length) });
  }
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function file(size, name = "data.bin") {
  const bytes = new Uint8Array(size);
  for (let i = 0; i < size; i += 1) bytes[i] = (i * 31 + 7) & 0xff;
  const blob = new Blob([bytes]);
  blob.name = name;
  return { blob, bytes };
}

function upload(server, blob, extra = {}) {
  let token = "t1";
  const progress = [];
  const up = new Upload(blob, {
    endpoint: BASE,
    metadata: { filename: blob.name, filetype: "application/octet-stream" },
    token: async (renew) => {
      if (renew) {
        token = extra.renewTo ?? "t2";
        server.valid.add(extra.renewValid === false ? "never" : token);
      }
      return token;
    },
    http: server.http,
    chunkSize: 1000,
    retryDelays: [0, 0, 0],
    onProgress: (sent, total) => progress.push([sent, total]),
    ...extra.options,
  });
  return { up, progress };
}

test("metadata is base64 of UTF-8, empty values left out, bad keys refused", () => {
  const name = "<img src=x onerror=alert(1)>.html — café.txt";
  const meta = encodeMetadata({ filename: name, filetype: "", other: null });
  assert.equal(meta, `filename ${Buffer.from(name, "utf8").toString("base64")}`);
  assert.equal(encodeMetadata({ a: "1", b: "2" }), "a MQ==,b Mg==");
  assert.throws(() => encodeMetadata({ "bad key": "x" }));
  assert.throws(() => encodeMetadata({ "a,b": "x" }));
  const big = new Uint8Array(100000).fill(65);
  assert.equal(base64(big), Buffer.from(big).toString("base64"));
});

test("which statuses are worth another try", () => {
  for (const s of [0, 409, 423, 429, 460, 500, 502, 503]) assert.ok(retryable(s), s);
  for (const s of [400, 401, 403, 404, 410, 413, 501]) assert.ok(!retryable(s), s);
});

test("a file goes up in chunks with a sha256 each, and progress ends at its size", async () => {
  const server = new FakeServer();
  const { blob, bytes } = file(3500);
  const { up, progress } = upload(server, blob);
  const id = await up.start();
  assert.equal(id, "id1");
  assert.deepEqual(server.uploads.get("id1").data, bytes);
  const patches = server.log.filter((r) => r.method === "PATCH");
  assert.deepEqual(patches.map((r) => r.headers["Upload-Offset"]), ["0", "1000", "2000", "3000"]);
  assert.ok(patches.every((r) => r.headers["Upload-Checksum"].startsWith("sha256 ")));
  assert.equal(server.log[0].headers["Upload-Length"], "3500");
  assert.equal(server.log[0].headers.Authorization, "Bearer t1");
  const sent = progress.map(([s]) => s);
  assert.deepEqual([...sent].sort((a, b) => a - b), sent, "progress never goes back");
  assert.deepEqual(progress.at(-1), [3500, 3500]);
  assert.ok(sent.some((s) => s % 1000 !== 0 && s < 3500), "progress inside a chunk is reported");
});

test("without WebCrypto the chunks go without a checksum", async () => {
  const server = new FakeServer();
  const { blob, bytes } = file(1500);
  const { up } = upload(server, blob, { options: { checksum: async () => null } });
  await up.start();
  assert.deepEqual(server.uploads.get("id1").data, bytes);
  assert.ok(server.log.filter((r) => r.method === "PATCH").every((r) => !("Upload-Checksum" in r.headers)));
});

test("a dropped connection resumes from the server's durable offset (HEAD, then PATCH)", async () => {
  const server = new FakeServer();
  server.fail("PATCH", 2, { network: true, keep: 300 }); // 300 bytes of the second chunk kept
  const { blob, bytes } = file(3500);
  const retries = [];
  const { up } = upload(server, blob, { options: { onRetry: (err) => retries.push(err.code) } });
  await up.start();
  assert.deepEqual(server.uploads.get("id1").data, bytes);
  assert.deepEqual(retries, ["network"]);
  const methods = server.log.map((r) => r.method + (r.headers["Upload-Offset"] ? ` ${r.headers["Upload-Offset"]}` : ""));
  assert.deepEqual(methods, ["POST", "PATCH 0", "PATCH 1000", "HEAD", "PATCH 1300", "PATCH 2300", "PATCH 3300"]);
});

test("gives up after the retry delays, then start() again resumes", async () => {
  const server = new FakeServer();
  for (let n = 2; n <= 5; n += 1) server.fail("PATCH", n, "network");
  const { blob, bytes } = file(2500);
  const { up } = upload(server, blob);
  await assert.rejects(up.start(), (err) => err.code === "network" && err.retry);
  assert.equal(up.offset, 1000);
  await up.start(); // the user's Retry
  assert.deepEqual(server.uploads.get("id1").data, bytes);
  assert.equal(server.log.filter((r) => r.method === "POST").length, 1, "the same upload, resumed");
});

test("a checksum mismatch (460) sends the chunk again", async () => {
  const server = new FakeServer();
  server.fail("PATCH", 1, "corrupt");
  const { blob, bytes } = file(1200);
  const { up } = upload(server, blob);
  await up.start();
  assert.deepEqual(server.uploads.get("id1").data, bytes);
  assert.equal(server.counts.get("PATCH"), 3);
});

test("an expired token (401) is renewed once and the upload goes on", async () => {
  const server = new FakeServer();
  server.fail("PATCH", 2, () => {
    server.valid.delete("t1");
    return response(401);
  });
  const { blob, bytes } = file(2500);
  const { up } = upload(server, blob);
  await up.start();
  assert.deepEqual(server.uploads.get("id1").data, bytes);
  assert.equal(server.log.at(-1).headers.Authorization, "Bearer t2");
  assert.ok(server.log.some((r) => r.method === "HEAD"));
});

test("a 401 right after a renewal is final", async () => {
  const server = new FakeServer({ tokens: [] });
  const { blob } = file(10);
  const { up } = upload(server, blob, { renewValid: false });
  await assert.rejects(up.start(), (err) => err.status === 401);
  assert.equal(server.log.length, 2);
});

test("too large (413) and refused (403) stop at once with the server's words", async () => {
  for (const [status, text] of [[413, "the file is over the limit of 100 MB"], [403, "quota exceeded: 5 MB left\n"]]) {
    const server = new FakeServer();
    server.fail("POST", 1, () => response(status, {}, text));
    const { blob } = file(5000);
    const { up } = upload(server, blob);
    await assert.rejects(up.start(), (err) => err.status === status && !err.retry && err.message.includes(text.trim()));
    assert.deepEqual(server.log.map((r) => r.method), ["POST"]);
  }
});

test("a Location on another origin is refused: the token never goes there", async () => {
  const server = new FakeServer({ location: (id) => `https://evil.example/${id}` });
  const { blob } = file(100);
  const { up } = upload(server, blob);
  await assert.rejects(up.start(), (err) => err.code === "protocol");
  assert.deepEqual(server.log.map((r) => r.method), ["POST"]);
});

test("an empty file is created and done without a PATCH", async () => {
  const server = new FakeServer();
  const { blob } = file(0);
  const { up } = upload(server, blob);
  assert.equal(await up.start(), "id1");
  assert.deepEqual(server.log.map((r) => r.method), ["POST"]);
});

test("an upload the server forgot (404) starts over once", async () => {
  const server = new FakeServer();
  server.fail("PATCH", 2, "network");
  server.fail("HEAD", 1, () => {
    server.uploads.clear();
    return response(404);
  });
  const { blob, bytes } = file(2500);
  const { up } = upload(server, blob);
  assert.equal(await up.start(), "id2");
  assert.deepEqual(server.uploads.get("id2").data, bytes);
});

test("abort stops during a wait; terminate deletes the upload on the server", async () => {
  const server = new FakeServer();
  server.fail("PATCH", 2, "network");
  const { blob } = file(2500);
  const { up } = upload(server, blob, { options: { retryDelays: [60000] } });
  const running = up.start();
  await new Promise((resolve) => {
    const check = () => (server.counts.get("PATCH") === 2 ? resolve() : setTimeout(check, 1));
    check();
  });
  up.abort();
  await assert.rejects(running, (err) => err.code === "aborted");
  assert.ok(server.uploads.has("id1"));
  await up.terminate();
  assert.equal(server.log.at(-1).method, "DELETE");
  assert.ok(!server.uploads.has("id1"));
});
