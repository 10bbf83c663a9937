// The uploads model (static/files.js) and the message records (static/chat.js) without a
// browser: checks before any byte, the refusals, the queue, captions, cancel, URLs, tokens.
import test, { afterEach } from "node:test";
import assert from "node:assert/strict";
import { Files, refusal, tooLarge, available } from "../../../src/parlour/web/static/files.js";
import { bytes } from "../../../src/parlour/web/static/format.js";
import { RequestError } from "../../../src/parlour/web/static/connection.js";

globalThis.document ??= { hidden: true };
const { Chat, Conv } = await import("../../../src/parlour/web/static/chat.js");
const { badge } = await import("../../../src/parlour/web/static/attachments.js");

const BASE = "http://127.0.0.1:9/";

// A chat stand-in: `file_token` answers from `answers` (a function of the fields), sends are
// recorded.
class FakeChat {
  constructor(answer) {
    this.limits = { upload_url: "/files/uploads", max_file_size: 10000 };
    this.requests = [];
    this.sent = [];
    this.emits = 0;
    this.answer = answer || (() => ({}));
    this.tokens = 0;
  }

  async request(type, fields) {
    this.requests.push([type, fields]);
    const extra = this.answer(fields);
    if (extra instanceof Error) throw extra;
    this.tokens += 1;
    return {
      token: `tok${this.tokens}`, expires: 1000 + 900, upload_url: "/files/uploads",
      download_url: "/files/", max_file_size: 10000, user_quota: 1e6, quota_used: 0, ...extra,
    };
  }

  emit() {
    this.emits += 1;
  }

  send(conv, text, attachment) {
    this.sent.push({ conv, text, attachment });
  }
}

// A tus server that answers each request when the test says so (`release`).
class GatedHttp {
  constructor() {
    this.log = [];
    this.waiting = [];
    this.next = 1;
    this.offsets = new Map();
    this.http = (req) => new Promise((resolve, reject) => {
      this.log.push(req);
      this.waiting.push({ req, resolve, reject });
      this.changed?.();
    });
  }

  async until(pred) {
    while (!pred()) await new Promise((r) => setTimeout(r, 1));
  }

  // answer the oldest request like a tus server would
  async release() {
    await this.until(() => this.waiting.length > 0);
    const { req, resolve } = this.waiting.shift();
    const headers = (h) => ({ get: (n) => h[n] ?? null });
    const refused = this.refuse?.(req);
    if (refused) {
      resolve({ status: refused[0], headers: headers({}), text: refused[1] });
    } else if (req.method === "POST") {
      const id = `file${this.next++}`;
      resolve({ status: 201, headers: headers({ Location: `/files/uploads/${id}` }), text: "" });
    } else if (req.method === "PATCH") {
      const size = req.body.size ?? req.body.length;
      const offset = Number(req.headers["Upload-Offset"]) + size;
      this.offsets.set(req.url, offset);
      resolve({ status: 204, headers: headers({ "Upload-Offset": String(offset) }), text: "" });
    } else if (req.method === "HEAD") {
      const offset = String(this.offsets.get(req.url) || 0);
      resolve({ status: 200, headers: headers({ "Upload-Offset": offset }), text: "" });
    } else {
      resolve({ status: 204, headers: headers({}), text: "" });
    }
    return req;
  }
}

function blob(size, name) {
  const b = new Blob([new Uint8Array(size)], { type: "text/plain" });
  b.name = name;
  return b;
}

const made = [];
afterEach(() => {
  for (const f of made.splice(0)) f.reset(); // its renewal timer
});

function files(chat, gate) {
  const f = new Files(chat, { http: gate.http, base: BASE, now: () => 1000 });
  made.push(f);
  f.chunkSize = 1 << 20;
  f.retryDelays = [0];
  return f;
}

const tick = () => new Promise((r) => setTimeout(r, 0));

test("uploads are there only when the server says so", () => {
  assert.equal(available(null), false);
  assert.equal(available({ max_frame: 1 }), false);
  assert.equal(available({ upload_url: "/files/uploads" }), true);
});

test("a file's badge is its short extension, else FILE", () => {
  assert.equal(badge("report.pdf"), "PDF");
  assert.equal(badge("archive.tar.gz"), "GZ");
  assert.equal(badge("notes.txt"), "TXT");
  assert.equal(badge("Makefile"), "FILE");
  assert.equal(badge(".bashrc"), "FILE");
  assert.equal(badge("x.<img>"), "FILE");
  assert.equal(badge("x.jpeg2000"), "FILE");
  assert.equal(badge("фото.жпг"), "ЖПГ");
});

test("sizes for people", () => {
  assert.equal(bytes(0), "0 B");
  assert.equal(bytes(1023), "1023 B");
  assert.equal(bytes(1536), "1.5 KB");
  assert.equal(bytes(100 * 1024 * 1024), "100 MB");
  assert.equal(bytes(-1), "?");
});

test("a file over the hello limit fails at once: no request, no byte", async () => {
  const chat = new FakeChat();
  const gate = new GatedHttp();
  const f = files(chat, gate);
  const conv = new Conv("room", "general");
  f.add(conv, [blob(10001, "big.iso")]);
  await tick();
  const [item] = f.uploadsOf(conv);
  assert.equal(item.state, "failed");
  assert.equal(item.canRetry, false);
  assert.equal(item.error, tooLarge("big.iso", 10001, 10000));
  assert.equal(item.error, "big.iso is too large (10001 bytes); the limit is 10000 bytes.");
  assert.equal(tooLarge("a", 2 << 20, 1 << 20), "a is too large (2 MB); the limit is 1 MB.");
  assert.equal(tooLarge("a", 1 << 20, 1 << 20), null);
  assert.deepEqual(chat.requests, []);
  assert.deepEqual(gate.log, []);
  assert.equal(f.commit(conv, "caption"), false, "nothing to send");
});

test("the server's refusals (file_token with the size) are shown, no byte sent", async () => {
  for (const [code, retry] of [["quota_exceeded", false], ["file_too_large", false], ["unavailable", false], ["too_many_uploads", true]]) {
    const chat = new FakeChat(() => new RequestError({ code, message: "the server's reason" }));
    const gate = new GatedHttp();
    const f = files(chat, gate);
    const conv = new Conv("room", "general");
    f.add(conv, [blob(500, "notes.txt")]);
    await gate.until(() => f.uploadsOf(conv)[0].state === "failed");
    const [item] = f.uploadsOf(conv);
    assert.equal(item.error, refusal(code, "notes.txt", 500, "the server's reason"));
    assert.equal(item.canRetry, retry, code);
    assert.deepEqual(chat.requests, [["file_token", { size: 500 }]]);
    assert.deepEqual(gate.log, []);
  }
});

test("two uploads at a time, the rest wait their turn; Send posts each with the caption on the first", async () => {
  const chat = new FakeChat();
  const gate = new GatedHttp();
  const f = files(chat, gate);
  const conv = new Conv("room", "general");
  f.add(conv, [blob(100, "a.txt"), blob(200, "b.txt"), blob(300, "c.txt")]);
  await gate.until(() => gate.waiting.length === 2);
  assert.deepEqual(f.uploadsOf(conv).map((i) => i.state), ["uploading", "uploading", "waiting"]);
  assert.ok(f.commit(conv, "holiday photos"));
  let most = 0;
  for (;;) {
    await gate.until(() => gate.waiting.length > 0 || chat.sent.length === 3);
    if (chat.sent.length === 3) break;
    most = Math.max(most, f._active());
    await gate.release();
  }
  assert.ok(most <= 2);
  const posted = Object.fromEntries(chat.sent.map((s) => [s.attachment.name, s]));
  assert.deepEqual(posted["a.txt"].attachment, { id: posted["a.txt"].attachment.id, name: "a.txt", size: 100 });
  assert.deepEqual(Object.keys(posted).sort(), ["a.txt", "b.txt", "c.txt"]);
  assert.equal(posted["a.txt"].text, "holiday photos");
  assert.equal(posted["b.txt"].text, "");
  assert.equal(posted["c.txt"].text, "");
  assert.ok(chat.sent.every((s) => s.conv === conv));
  assert.deepEqual(f.uploadsOf(conv), []);
  assert.equal(chat.requests.filter(([t]) => t === "file_token").length, 3);
});

test("an upload finished before Send waits in the tray; cancel deletes it on the server", async () => {
  const chat = new FakeChat();
  const gate = new GatedHttp();
  const f = files(chat, gate);
  const conv = new Conv("dm", "bob");
  f.add(conv, [blob(10, "keep.txt"), blob(10, "drop.txt")]);
  await gate.release();
  await gate.release();
  await gate.release();
  await gate.release();
  await gate.until(() => f.uploadsOf(conv).every((i) => i.state === "done"));
  assert.deepEqual(chat.sent, []);
  const [, drop] = f.uploadsOf(conv);
  f.cancel(drop);
  const del = await gate.release();
  assert.equal(del.method, "DELETE");
  assert.equal(del.url, "http://127.0.0.1:9/files/uploads/file2");
  assert.ok(f.commit(conv, ""));
  assert.deepEqual(chat.sent.map((s) => s.attachment.id), ["file1"]);
});

test("too_many_uploads while another of ours runs: this one waits for it", async () => {
  let running = 0;
  const chat = new FakeChat(() => (running++ >= 1 ? new RequestError({ code: "too_many_uploads", message: "limit 1" }) : {}));
  const gate = new GatedHttp();
  const f = files(chat, gate);
  const conv = new Conv("room", "general");
  f.add(conv, [blob(10, "one.txt"), blob(10, "two.txt")]);
  await gate.until(() => f.uploadsOf(conv)[1].state === "waiting" && chat.requests.length === 2);
  assert.equal(f.concurrency, 1);
  chat.answer = () => ({});
  await gate.release();
  await gate.release(); // one.txt done: two.txt starts
  await gate.until(() => gate.waiting.length === 1);
  assert.equal(f.uploadsOf(conv)[1].state, "uploading");
});

test("download URLs carry the token, encode the id, and stay on the page's origin", async () => {
  const chat = new FakeChat();
  const f = files(chat, new GatedHttp());
  assert.equal(f.accessToken(), null); // asked for; drawn again when it arrives
  await gate(() => f.bearer !== null);
  assert.equal(f.accessToken(), "tok1");
  assert.equal(f.url("ab/c?d", "t t"), "http://127.0.0.1:9/files/ab%2Fc%3Fd?access_token=t+t");
  assert.equal(f.url("x", "t", { thumbnail: true }), "http://127.0.0.1:9/files/x/thumbnail?access_token=t");
  assert.equal(f.url("x", "t", { download: true }), "http://127.0.0.1:9/files/x?access_token=t&download=1");
  f.now = () => 1000 + 900 - 10; // about to expire: a new one is fetched
  chat.answer = () => ({ expires: 2800 });
  assert.equal(f.accessToken(), null);
  await gate(() => f.bearer.token === "tok2");
  assert.equal(await f.token(), "tok2");
  assert.equal(chat.requests.length, 2);
});

test("refused at creation (403) after file_token let it through: asked again, the reason shown", async () => {
  let asked = 0;
  const chat = new FakeChat(() => (asked++ === 0 ? {} : new RequestError({ code: "quota_exceeded", message: "5 KB left" })));
  const gate = new GatedHttp();
  gate.refuse = (req) => (req.method === "POST" ? [403, "quota exceeded\n"] : null);
  const f = files(chat, gate);
  const conv = new Conv("room", "general");
  f.add(conv, [blob(9000, "late.bin")]);
  await gate.release();
  await gate.until(() => f.uploadsOf(conv)[0].state === "failed");
  const [item] = f.uploadsOf(conv);
  assert.equal(item.error, refusal("quota_exceeded", "late.bin", 9000, "5 KB left"));
  assert.deepEqual(chat.requests.map(([t, fl]) => [t, fl.size]), [["file_token", 9000], ["file_token", 9000]]);
  assert.equal(gate.log.length, 1);
});

test("refused at creation twice: the server's words, and Retry", async () => {
  const chat = new FakeChat();
  const gate = new GatedHttp();
  gate.refuse = (req) => (req.method === "POST" ? [403, "too many unfinished uploads (4)\n"] : null);
  const f = files(chat, gate);
  const conv = new Conv("room", "general");
  f.add(conv, [blob(10, "x.txt")]);
  await gate.release();
  await gate.release();
  await gate.until(() => f.uploadsOf(conv)[0].state === "failed");
  const [item] = f.uploadsOf(conv);
  assert.match(item.error, /too many unfinished uploads \(4\)$/);
  assert.equal(item.canRetry, true);
  gate.refuse = null;
  f.retry(item);
  await gate.release();
  await gate.release();
  await gate.until(() => item.state === "done");
});

test("a server that keeps failing (5xx): its words, and Retry resumes", async () => {
  const chat = new FakeChat();
  const gate = new GatedHttp();
  gate.refuse = (req) => (req.method === "PATCH" ? [503, "busy, try later"] : null);
  const f = files(chat, gate);
  const conv = new Conv("room", "general");
  f.add(conv, [blob(10, "x.txt")]);
  for (let i = 0; i < 4; i += 1) await gate.release(); // POST, PATCH, HEAD, PATCH
  await gate.until(() => f.uploadsOf(conv)[0].state === "failed");
  const [item] = f.uploadsOf(conv);
  assert.equal(item.error, "uploading failed: busy, try later. Retry resumes the upload.");
  assert.equal(item.canRetry, true);
  assert.deepEqual(gate.log.map((r) => r.method), ["POST", "PATCH", "HEAD", "PATCH"]);
});

test("no chat connection: the upload waits, and goes on after the reconnect", async () => {
  const chat = new FakeChat(() => new RequestError({ code: "disconnected", message: "not connected" }));
  const gate = new GatedHttp();
  const f = files(chat, gate);
  const conv = new Conv("room", "general");
  f.add(conv, [blob(10, "x.txt"), blob(10, "y.txt")]);
  await gate.until(() => f.uploadsOf(conv).every((i) => i.state === "failed"));
  const [item] = f.uploadsOf(conv);
  assert.match(item.error, /^Not connected to the server/);
  assert.equal(item.canRetry, true);
  assert.deepEqual(gate.log, []);
  chat.answer = () => ({});
  f.reconnected();
  await gate.release();
  await gate.release();
  await gate.release();
  await gate.release();
  await gate.until(() => f.uploadsOf(conv).every((i) => i.state === "done"));
});

async function gate(pred) {
  while (!pred()) await new Promise((r) => setTimeout(r, 1));
}

test("message records: a file on a message, kept by an edit, gone with a delete", () => {
  const chat = new Chat("ws://127.0.0.1:9/ws");
  const c = chat.conv("room", "general");
  const file = { id: "f1", name: "<b>x</b>.png", size: 5, type: "image/png", inline: true, thumbnail: true };
  chat.cursors.rooms.general = 0;
  chat._on_message({ event: "message", room: "general", seq: 1, ts: 1, from: "bob", text: "", attachment: file });
  assert.deepEqual(c.find(1).attachment, file);
  chat._on_message_edited({ room: "general", seq: 1, ts: 1, from: "bob", text: "caption", edited: true });
  assert.deepEqual(c.find(1).attachment, file);
  chat._on_message_deleted({ room: "general", seq: 1, ts: 1, from: "bob", text: "", deleted: true, attachment: file });
  assert.equal(c.find(1).attachment, null);
  assert.equal(c.find(1).deleted, true);
});
