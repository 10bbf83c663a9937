// Files in chat (docs/design/files.md), apart from drawing: the bearer token of the files
// endpoints (`file_token` over the chat protocol, renewed before it expires while it is in
// use), each conversation's uploads (the tray: checks, tus upload, progress, cancel, retry),
// posting a finished upload as a message's attachment, and download URLs.
//
// An upload is checked before any byte is sent: its size against the `hello` limit, then
// `file_token` with the size (limit, quota, concurrent uploads). Links a browser opens by
// itself (<img src>, <a href>) cannot send headers, so they carry the token as
// `?access_token=` (downloads only; the server sends no-referrer and private caching).
import { Upload, xhrRequest, CHUNK } from "./tus.js";
import { bytes } from "./format.js";

export const CONCURRENCY = 2; // uploads at a time from this tab; the others wait their turn
const RENEW_BEFORE = 90; // s before expiry at which a token in use is renewed

export function available(limits) {
  return Boolean(limits && limits.upload_url);
}

// What the tray says when the server refuses an upload before it starts (file_token errors).
export function refusal(code, name, size, message) {
  switch (code) {
    case "file_too_large":
      return `${name} is too large (${bytes(size)}): ${message}`;
    case "quota_exceeded":
      return `${name} does not fit in your storage quota: ${message}`;
    case "too_many_uploads":
      return `Too many uploads at once: ${message}`;
    case "unavailable":
      return "This server does not take uploads.";
    default:
      return message || code;
  }
}

// The local check (the hello limit), so that a file that cannot fit costs no request.
export function tooLarge(name, size, limit) {
  if (!limit || size <= limit) return null;
  const [mine, max] = bytes(size) === bytes(limit) ? [`${size} bytes`, `${limit} bytes`] : [bytes(size), bytes(limit)];
  return `${name} is too large (${mine}); the limit is ${max}.`;
}

const OFFLINE = "Not connected to the server: the upload goes on when the connection is back.";

let nextKey = 1;

export class Files {
  // chat: the Chat (request, emit, send, conv); http: the tus transport; base: the URL the
  // server's relative URLs are resolved against.
  constructor(chat, { http = xhrRequest, base = globalThis.location?.href, now = () => Date.now() / 1000 } = {}) {
    this.chat = chat;
    this.http = http;
    this.base = base;
    this.now = now;
    this.chunkSize = CHUNK;
    this.concurrency = CONCURRENCY;
    this.retryDelays = undefined; // tus.js's default
    this.items = []; // every upload of this session, in the order added: {conv, ...}
    this.bearer = null; // {token, expires}
    this.info = null; // the last file_token reply (URLs, quota)
    this.pending = null; // the file_token request on its way
    this.used = false; // a download URL was made with the current token
    this.timer = null;
  }

  get enabled() {
    return available(this.chat.limits);
  }

  // Forget everything (sign-out, session end): every upload stops.
  reset() {
    for (const item of this.items) item.upload?.abort();
    this.items = [];
    this.bearer = null;
    this.info = null;
    this.pending = null;
    clearTimeout(this.timer);
    clearTimeout(this.drawTimer);
    this.drawTimer = null;
  }

  // ------------------------------------------------------------------ the token

  // A valid bearer token (a new one when `renew`, or when the one held is about to expire).
  token(renew = false) {
    if (!renew && this.bearer && this.bearer.expires - this.now() > 60) {
      return Promise.resolve(this.bearer.token);
    }
    if (!this.pending) {
      this.pending = this.chat.request("file_token", {})
        .then((reply) => this._keep(reply))
        .finally(() => {
          this.pending = null;
        });
    }
    return this.pending;
  }

  _keep(reply) {
    this.bearer = { token: reply.token, expires: reply.expires };
    this.info = reply;
    this.used = false;
    clearTimeout(this.timer);
    const wait = Math.max(5, reply.expires - this.now() - RENEW_BEFORE);
    // renew ahead only if links were made with it (a page showing files keeps working)
    this.timer = setTimeout(() => {
      if (this.used) this.token(true).catch(() => {});
    }, wait * 1000);
    this.chat.emit();
    return reply.token;
  }

  // The token for a link, now: null while a fresh one is being fetched (the view is drawn
  // again when it arrives).
  accessToken() {
    const b = this.bearer;
    if (b && b.expires - this.now() > 30) {
      this.used = true;
      return b.token;
    }
    this.token().catch(() => {}); // emits when it arrives
    return null;
  }

  // The URL of a file (`thumbnail`, or `download` to force a download) with `token`.
  url(id, token, { thumbnail = false, download = false } = {}) {
    const prefix = this.info?.download_url || "/files/";
    const url = new URL(`${prefix}${encodeURIComponent(id)}${thumbnail ? "/thumbnail" : ""}`, this.base);
    url.searchParams.set("access_token", token);
    if (download) url.searchParams.set("download", "1");
    return url.href;
  }

  // ------------------------------------------------------------------ uploads

  uploadsOf(conv) {
    return this.items.filter((i) => i.conv === conv);
  }

  // Files picked, dropped or pasted into `conv`: each becomes an item of the tray.
  add(conv, files) {
    for (const file of files) {
      const item = {
        key: nextKey++,
        conv,
        file,
        name: file.name || "file",
        size: file.size,
        type: file.type || "",
        state: "waiting", // waiting | checking | uploading | retrying | done | failed
        sent: 0,
        error: null,
        canRetry: false,
        upload: null,
        fileId: null,
        commit: false, // post it as soon as it is uploaded (Send was pressed)
        caption: "",
      };
      const large = tooLarge(item.name, item.size, this.chat.limits?.max_file_size);
      if (large) this._failed(item, large, false);
      this.items.push(item);
    }
    this.chat.emit();
    this._pump();
  }

  // Progress events come many times a second: the page is drawn again at most every 100 ms.
  _drawSoon() {
    if (this.drawTimer) return;
    this.drawTimer = setTimeout(() => {
      this.drawTimer = null;
      this.chat.emit();
    }, 100);
  }

  // Whether leaving the page now would lose an upload (going up, or up and not posted).
  get busy() {
    return this.items.some((i) => i.state !== "failed");
  }

  _failed(item, error, canRetry) {
    item.state = "failed";
    item.error = error;
    item.canRetry = canRetry;
  }

  _active() {
    return this.items.filter((i) => i.state === "checking" || i.state === "uploading" || i.state === "retrying").length;
  }

  _pump() {
    let free = this.concurrency - this._active();
    for (const item of this.items) {
      if (free <= 0) break;
      if (item.state !== "waiting") continue;
      free -= 1;
      this._run(item);
    }
  }

  async _run(item) {
    item.state = "checking";
    item.error = null;
    this.chat.emit();
    try {
      if (!item.upload) {
        // the checks before any byte: size, quota, concurrent uploads
        let reply;
        try {
          reply = await this.chat.request("file_token", { size: item.size });
        } catch (err) {
          if (!this.items.includes(item)) return;
          if (err.code === "too_many_uploads" && this._active() > 1) {
            // the server's limit (shared with the user's other sessions) is below ours:
            // this one waits until one of ours has finished
            this.concurrency = Math.max(1, this._active() - 1);
            item.state = "waiting";
            return;
          }
          if (err.code === "disconnected" || err.code === "timeout") {
            this._failed(item, OFFLINE, true);
            item.offline = true; // starts again by itself after the reconnect
            return;
          }
          this._failed(item, refusal(err.code, item.name, item.size, err.message), err.code === "too_many_uploads");
          return;
        }
        if (!this.items.includes(item)) return; // cancelled meanwhile
        this._keep(reply);
        item.upload = new Upload(item.file, {
          endpoint: new URL(reply.upload_url, this.base).href,
          metadata: { filename: item.name, filetype: item.type },
          token: (renew) => this.token(renew),
          http: this.http,
          chunkSize: this.chunkSize,
          retryDelays: this.retryDelays,
          onProgress: (sent) => {
            item.sent = sent;
            if (item.state === "retrying") item.state = "uploading";
            this._drawSoon();
          },
          onRetry: () => {
            item.state = "retrying";
            this.chat.emit();
          },
        });
      }
      item.state = "uploading";
      this.chat.emit();
      item.fileId = await item.upload.start();
      item.state = "done";
      item.sent = item.size;
      if (item.commit) this._post(item);
    } catch (err) {
      if (err.code === "aborted") return; // cancelled: the item is gone already
      if (err.status === 403 && item.upload && item.upload.url === null && !item.rechecked) {
        // refused at creation although file_token let it through (another upload of the
        // user's began in between): ask again, to learn which limit and whether to wait
        item.rechecked = true;
        item.upload = null;
        item.state = "waiting";
        if (this._active() > 1) this.concurrency = Math.max(1, this._active() - 1);
        return;
      }
      const lost = err.retry === true; // the network (or the chat connection) stayed down
      // 403: a limit of the user's (quota, uploads at once) that may have room later
      const again = lost || err.status >= 500 || err.status === 403;
      let message = err.message;
      if (lost) message = err.status > 0 ? `${err.message}. Retry resumes the upload.` : "Connection lost: Retry resumes the upload.";
      if (err.code === "token" && lost) message = OFFLINE; // no token: the chat connection is down
      this._failed(item, message, again);
      item.offline = err.code === "token" && lost;
    } finally {
      this.chat.emit();
      this._pump();
    }
  }

  // The chat connection is back: uploads that stopped for want of it go on.
  reconnected() {
    for (const item of this.items) {
      if (item.state !== "failed" || !item.offline) continue;
      item.offline = false;
      item.state = "waiting";
      item.error = null;
    }
    this.chat.emit();
    this._pump();
  }

  // Try a failed upload again: it resumes from the server's offset.
  retry(item) {
    if (item.state !== "failed" || !item.canRetry) return;
    item.state = "waiting";
    item.error = null;
    this.chat.emit();
    this._pump();
  }

  // Cancel (or remove) an upload: it stops, and the server forgets the partial upload.
  cancel(item) {
    this.items = this.items.filter((i) => i !== item);
    if (item.upload && !(item.state === "done" && item.posted)) item.upload.terminate();
    this.chat.emit();
    this._pump();
  }

  // Send pressed with files in the tray: each one that has not failed becomes a message
  // (the first one with the caption) as soon as it is uploaded. False when there is none.
  commit(conv, caption) {
    const ready = this.uploadsOf(conv).filter((i) => i.state !== "failed" && !i.commit);
    if (!ready.length) return false;
    ready[0].caption = caption;
    for (const item of ready) {
      item.commit = true;
      if (item.state === "done") this._post(item);
    }
    this.chat.emit();
    return true;
  }

  _post(item) {
    item.posted = true;
    this.items = this.items.filter((i) => i !== item);
    this.chat.send(item.conv, item.caption, { id: item.fileId, name: item.name, size: item.size });
  }
}
