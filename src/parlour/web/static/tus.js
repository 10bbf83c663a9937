// A small tus 1.0 client (https://tus.io/protocols/resumable-upload): core, creation,
// termination and checksum (sha256), what the server's /files/uploads speaks
// (docs/design/files.md). Written here rather than vendored: tus-js-client is ~10x this size,
// ships as CommonJS/UMD (this client has no build step) and computes no checksums.
//
// One Upload sends one file in chunks: POST (creation) -> PATCH from the offset, each chunk
// with `Upload-Checksum: sha256 <base64>` when crypto.subtle exists (secure contexts only).
// After a failure that may pass (the network, 5xx, 409/423/460) it waits, asks HEAD for the
// server's durable offset and goes on from there; a 401 renews the bearer token once and
// retries. The HTTP layer is injected (`http`), so the rules are tested without a browser.

export const TUS_VERSION = "1.0.0";
export const CHUNK = 4 * 1024 * 1024;
export const RETRY_DELAYS = [500, 1000, 2000, 4000, 8000, 15000]; // ms; then the upload fails

export class TusError extends Error {
  // status: the HTTP status (0: no answer); code: "aborted" | "network" | "http" | "protocol"
  constructor(message, { status = 0, code = "http", retry = false } = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.retry = retry;
  }
}

const encoder = new TextEncoder();

export function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

// Upload-Metadata: "key base64(utf-8 value),..."; empty values are left out.
export function encodeMetadata(meta) {
  const parts = [];
  for (const [key, value] of Object.entries(meta)) {
    if (!/^[\x21-\x7e]+$/.test(key) || key.includes(",")) throw new Error(`bad metadata key ${key}`);
    if (value === null || value === undefined || value === "") continue;
    parts.push(`${key} ${base64(encoder.encode(String(value)))}`);
  }
  return parts.join(",");
}

// A SHA-256 of `bytes` as base64 (the Upload-Checksum value), or null without WebCrypto.
export async function sha256(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  return base64(new Uint8Array(await subtle.digest("SHA-256", bytes)));
}

// Whether a failed request may succeed if tried again (after a HEAD for the offset).
export function retryable(status) {
  return status === 0 || status === 409 || status === 423 || status === 429 || status === 460
    || (status >= 500 && status !== 501);
}

function offsetOf(response, max) {
  const raw = response.headers.get("Upload-Offset");
  if (raw === null || !/^\d+$/.test(raw)) throw new TusError("the server sent no Upload-Offset", { status: response.status, code: "protocol" });
  const offset = Number(raw);
  if (offset > max) throw new TusError("the server's offset is past the end of the file", { status: response.status, code: "protocol" });
  return offset;
}

// The reason the server gave (tus answers 403/413 with plain text), short and single-line.
function reason(response, fallback) {
  const text = (response.text || "").replace(/\s+/g, " ").trim().slice(0, 200);
  return text || fallback;
}

function abortError() {
  return new TusError("cancelled", { code: "aborted" });
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(abortError());
      return;
    }
    const done = () => {
      clearTimeout(t);
      reject(abortError());
    };
    const t = setTimeout(() => {
      signal.removeEventListener("abort", done);
      resolve();
    }, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export class Upload {
  // file: a Blob (name, size); options: endpoint (absolute URL), metadata ({filename,
  // filetype}), token(renew) -> bearer token, http (see xhrRequest), chunkSize,
  // onProgress(sent, total), onRetry(error, delay), checksum (bytes -> base64 | null), retryDelays (ms).
  constructor(file, options) {
    this.file = file;
    this.size = file.size;
    this.endpoint = options.endpoint;
    this.metadata = options.metadata || {};
    this.token = options.token;
    this.http = options.http;
    this.chunkSize = options.chunkSize || CHUNK;
    this.onProgress = options.onProgress || (() => {});
    this.onRetry = options.onRetry || (() => {}); // (error, delay ms): waiting to try again
    this.checksum = options.checksum === undefined ? sha256 : options.checksum;
    this.retryDelays = options.retryDelays || RETRY_DELAYS;
    this.url = null; // the upload's URL once created (its last segment is the file id)
    this.offset = 0; // bytes the server has acknowledged
    this.controller = null;
    this.attempts = 0; // retries in a row without progress
  }

  get id() {
    if (!this.url) return null;
    const path = new URL(this.url).pathname;
    return decodeURIComponent(path.slice(path.lastIndexOf("/") + 1));
  }

  // Send the file (or the rest of it); resolves when the server has all of it. May be called
  // again after a failure or abort(): it resumes from the server's offset.
  async start() {
    this.controller = new AbortController();
    const signal = this.controller.signal;
    this.attempts = 0;
    let renewedAt = -1; // the offset at which the token was last renewed
    let restarted = false;
    let needHead = this.url !== null;
    for (;;) {
      try {
        const bearer = await this._token(false, signal);
        if (this.url === null) await this._create(bearer, signal);
        else if (needHead) await this._head(bearer, signal);
        needHead = false;
        while (this.offset < this.size) {
          const before = this.offset;
          await this._patch(bearer, signal);
          if (this.offset > before) this.attempts = 0;
        }
        this.onProgress(this.size, this.size);
        return this.id;
      } catch (err) {
        if (signal.aborted) throw abortError();
        if (err.status === 401 && renewedAt !== this.offset) {
          // the token expired: a new one, once per stretch of progress (a 401 right after
          // a renewal is final)
          renewedAt = this.offset;
          await this._token(true, signal);
          needHead = this.url !== null;
          continue;
        }
        if ((err.status === 404 || err.status === 410) && this.url !== null && !restarted) {
          // the partial upload expired or was removed: start over, once
          restarted = true;
          this.url = null;
          this.offset = 0;
          this.onProgress(0, this.size);
          continue;
        }
        if (!err.retry || this.attempts >= this.retryDelays.length) throw err;
        this.onRetry(err, this.retryDelays[this.attempts]);
        await sleep(this.retryDelays[this.attempts], signal);
        this.attempts += 1;
        needHead = this.url !== null;
      }
    }
  }

  // Stop what is in flight; start() rejects with code "aborted". The upload can be resumed.
  abort() {
    this.controller?.abort();
  }

  // Cancel for good: stop and delete the partial upload on the server (tus termination).
  async terminate() {
    this.abort();
    if (this.url === null) return;
    const url = this.url;
    this.url = null;
    try {
      const bearer = await this.token(false);
      await this.http({ method: "DELETE", url, headers: this._headers(bearer) });
    } catch {
      /* best effort: the server expires abandoned uploads anyway */
    }
  }

  async _token(renew, signal) {
    try {
      return await this.token(renew);
    } catch (err) {
      if (signal.aborted) throw abortError();
      if (err instanceof TusError) throw err;
      // the chat connection is down: wait for it like for the network
      const gone = err.code === "disconnected" || err.code === "timeout" || err.code === "server_busy";
      const error = new TusError(err.message || "no upload token", { code: "token", retry: gone });
      error.reply = err;
      throw error;
    }
  }

  _headers(bearer, extra = {}) {
    return { "Tus-Resumable": TUS_VERSION, Authorization: `Bearer ${bearer}`, ...extra };
  }

  _send(request, signal) {
    return this.http({ ...request, signal });
  }

  _fail(response, what) {
    const status = response.status;
    const message = status === 413
      ? reason(response, "the file is larger than the server accepts")
      : status === 401 ? "not authorised (token expired)"
        : status === 460 ? "checksum mismatch"
          : `${what} failed: ${reason(response, `HTTP ${status}`)}`;
    return new TusError(message, { status, retry: retryable(status) });
  }

  async _create(bearer, signal) {
    const headers = this._headers(bearer, {
      "Upload-Length": String(this.size),
      "Upload-Metadata": encodeMetadata(this.metadata),
    });
    const response = await this._send({ method: "POST", url: this.endpoint, headers }, signal);
    if (response.status !== 201) throw this._fail(response, "creating the upload");
    const location = response.headers.get("Location");
    if (!location) throw new TusError("the server sent no Location", { status: 201, code: "protocol" });
    const url = new URL(location, this.endpoint);
    if (url.origin !== new URL(this.endpoint).origin) {
      // never send the bearer token to another origin
      throw new TusError("the server sent a Location on another origin", { status: 201, code: "protocol" });
    }
    this.url = url.href;
    this.offset = 0;
  }

  async _head(bearer, signal) {
    const response = await this._send({ method: "HEAD", url: this.url, headers: this._headers(bearer) }, signal);
    if (response.status !== 200 && response.status !== 204) throw this._fail(response, "resuming");
    this.offset = offsetOf(response, this.size);
    this.onProgress(this.offset, this.size);
  }

  async _patch(bearer, signal) {
    const start = this.offset;
    const end = Math.min(this.size, start + this.chunkSize);
    const slice = this.file.slice(start, end);
    const extra = {
      "Upload-Offset": String(start),
      "Content-Type": "application/offset+octet-stream",
    };
    let body = slice;
    if (this.checksum) {
      const bytes = new Uint8Array(await slice.arrayBuffer());
      const digest = await this.checksum(bytes);
      if (signal.aborted) throw abortError();
      if (digest) {
        extra["Upload-Checksum"] = `sha256 ${digest}`;
        body = bytes;
      }
    }
    const response = await this._send({
      method: "PATCH",
      url: this.url,
      headers: this._headers(bearer, extra),
      body,
      onProgress: (sent) => this.onProgress(start + Math.min(sent, end - start), this.size),
    }, signal);
    if (response.status !== 204 && response.status !== 200) throw this._fail(response, "uploading");
    const offset = offsetOf(response, this.size);
    if (offset < start) throw new TusError("the server went back", { status: response.status, retry: true });
    this.offset = offset;
    this.onProgress(offset, this.size);
  }
}

// The browser's HTTP for Upload: XMLHttpRequest, for its upload progress events (fetch has
// none). Resolves {status, headers: {get}, text} for any answer; a network failure or an
// abort rejects with a TusError (status 0).
export function xhrRequest({ method, url, headers, body = null, onProgress, signal }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    for (const [k, v] of Object.entries(headers || {})) xhr.setRequestHeader(k, v);
    if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded);
    const onAbort = () => xhr.abort();
    xhr.onload = () => {
      signal?.removeEventListener("abort", onAbort);
      resolve({
        status: xhr.status,
        headers: { get: (name) => xhr.getResponseHeader(name) },
        text: typeof xhr.responseText === "string" ? xhr.responseText : "",
      });
    };
    xhr.onerror = () => reject(new TusError("the connection failed", { code: "network", retry: true }));
    xhr.ontimeout = xhr.onerror;
    xhr.onabort = () => reject(abortError());
    if (signal) {
      if (signal.aborted) {
        reject(abortError());
        return;
      }
      signal.addEventListener("abort", onAbort, { once: true });
    }
    xhr.send(body);
  });
}
