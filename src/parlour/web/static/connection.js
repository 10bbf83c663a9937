// One WebSocket to the server's /ws door: one protocol message per WebSocket message
// (docs/protocol.md). Requests get ids and promises; events go to onEvent in order.
// Reconnects with exponential backoff and jitter; a ping every heartbeat (the server also
// pings the socket, which the browser answers on its own). The caller logs in again and
// resumes on every `open`.

const BACKOFF = [0.5, 1, 2, 4, 8, 15, 30];

export class RequestError extends Error {
  constructor(reply) {
    super(reply.message || reply.code);
    this.code = reply.code;
    this.reply = reply;
  }
}

export class Connection {
  constructor(url, { onEvent, onOpen, onState }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onOpen = onOpen;
    this.onState = onState;
    this.ws = null;
    this.nextId = 1;
    this.waiting = new Map();
    this.attempt = 0;
    this.timer = null;
    this.heartbeat = 30;
    this.maxFrame = 65536;
    this.lastSent = 0;
    this.stopped = true;
    this.state = "idle";
    this.retryAt = 0;
    this._tick = null;
    this._wake = () => {
      if (this.state === "waiting") this.retryNow();
    };
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this._wake);
    document.addEventListener("visibilitychange", this._wake);
    this._open();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this._tick);
    window.removeEventListener("online", this._wake);
    document.removeEventListener("visibilitychange", this._wake);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    this._fail("stopped");
    this._setState("idle");
  }

  _setState(state, detail = {}) {
    this.state = state;
    this.onState(state, detail);
  }

  _open() {
    clearTimeout(this.timer);
    this._setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._scheduleRetry(String(err));
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this._setState("open");
      clearInterval(this._tick);
      this._tick = setInterval(() => this._beat(), 5000);
      this.onOpen();
    };
    ws.onmessage = (msg) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = JSON.parse(msg.data);
      } catch {
        return;
      }
      if (frame.type === "event") {
        this.onEvent(frame);
        return;
      }
      const pending = this.waiting.get(frame.id);
      if (!pending) return; // an error not tied to a request (frame errors): nothing to do
      this.waiting.delete(frame.id);
      clearTimeout(pending.timer);
      if (frame.type === "ok") pending.resolve(frame.data);
      else pending.reject(new RequestError(frame));
    };
    ws.onclose = (ev) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this._tick);
      this._fail("disconnected");
      if (!this.stopped) this._scheduleRetry(ev.reason || `closed (${ev.code})`);
    };
    ws.onerror = () => {}; // onclose follows
  }

  _scheduleRetry(why) {
    const base = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)];
    this.attempt += 1;
    const delay = base * (0.8 + Math.random() * 0.4);
    this.retryAt = Date.now() + delay * 1000;
    this._setState("waiting", { why, retryAt: this.retryAt });
    this.timer = setTimeout(() => this._open(), delay * 1000);
  }

  retryNow() {
    if (this.stopped || this.state !== "waiting") return;
    clearTimeout(this.timer);
    this._open();
  }

  // The session is back (logged in and resumed): the next failure starts the backoff again.
  settled() {
    this.attempt = 0;
  }

  // Drop the socket (a dead connection, or the server asked us to go); reconnect unless stopped.
  drop() {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(4000, "client reconnects");
      clearInterval(this._tick);
      this._fail("disconnected");
      if (!this.stopped) this._scheduleRetry("connection lost");
    }
  }

  _fail(code) {
    for (const pending of this.waiting.values()) {
      clearTimeout(pending.timer);
      pending.reject(new RequestError({ code, message: "not connected" }));
    }
    this.waiting.clear();
  }

  _beat() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastSent >= this.heartbeat * 1000 * 0.9) {
      this.request("ping", {}, this.heartbeat * 1000).catch((err) => {
        if (err.code === "timeout") this.drop();
      });
    }
  }

  request(type, fields = {}, timeoutMs = 60000) {
    return new Promise((resolve, reject) => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(new RequestError({ code: "disconnected", message: "not connected" }));
        return;
      }
      const id = this.nextId++;
      const data = JSON.stringify({ id, type, ...fields });
      if (new TextEncoder().encode(data).length > this.maxFrame) {
        reject(new RequestError({ code: "frame_too_large", message: "message too long" }));
        return;
      }
      const timer = setTimeout(() => {
        if (this.waiting.delete(id)) {
          reject(new RequestError({ code: "timeout", message: "the server did not answer" }));
        }
      }, timeoutMs);
      this.waiting.set(id, { resolve, reject, timer });
      this.lastSent = Date.now();
      ws.send(data);
    });
  }
}
