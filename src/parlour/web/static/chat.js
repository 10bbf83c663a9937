// The client's state and everything it does with the protocol (docs/protocol.md), apart from
// drawing. Views read `chat` and call its methods; every change ends with emit().
//
// Exactness after a reconnect: per room and DM peer the client keeps the highest sequence it
// has taken from the stream (`cursors`), logs in again with them as `resume`, and takes a
// pushed message only if its sequence is above the cursor; while a truncated catch-up is
// being followed with `sync`, a message that would skip ahead is held back for the next
// round (the rule of parlour.client.catchup, docs/design/client-catch-up.md). Message lists
// are windows of at most WINDOW_MAX messages, ordered and de-duplicated by sequence. Read
// positions and unread counts are the server's (`unread`, `mark_read`, `read_marker`), so
// every client of the user agrees; live messages update the counts in between.
import { Connection, RequestError } from "./connection.js";
import { mentions } from "./markdown.js";
import { notify } from "./notify.js";
import { Files } from "./files.js";

export const WINDOW_MAX = 250;
export const PAGE = 50;

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// A room or a DM conversation and its window of messages.
export class Conv {
  constructor(kind, key) {
    this.kind = kind; // "room" | "dm"
    this.key = key; // room name or peer name
    this.msgs = []; // ordered by seq, unique
    this.atEnd = true; // the window reaches the newest message
    this.hasMore = true; // older messages exist before the window
    this.loading = false;
    this.lastSeq = 0;
    this.readSeq = 0;
    this.unread = 0;
    this.capped = false; // the server stopped counting (more than its cap)
    this.mentions = 0;
    this.marking = false; // a mark_read is on its way
    this.markAgain = false; // ... and the position moved on meanwhile
    this.pending = []; // messages being sent: {client_id, text, state, error}
    this.members = new Set();
    this.online = new Set();
    this.membersTotal = 0;
    this.membersTruncated = false;
    this.marker = null; // seq after which the "new messages" line is drawn
    this.generation = 0; // bumped when the window is replaced (views re-anchor)
    this.draft = ""; // the composer's unsent text, kept while another conversation is open
  }

  get id() {
    return `${this.kind}:${this.key}`;
  }

  indexOf(seq) {
    let lo = 0;
    let hi = this.msgs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.msgs[mid].seq < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  put(rec) {
    const i = this.indexOf(rec.seq);
    if (i < this.msgs.length && this.msgs[i].seq === rec.seq) this.msgs[i] = rec;
    else this.msgs.splice(i, 0, rec);
  }

  find(seq) {
    const i = this.indexOf(seq);
    return i < this.msgs.length && this.msgs[i].seq === seq ? this.msgs[i] : null;
  }
}

function record(frame) {
  return {
    seq: frame.seq,
    ts: frame.ts,
    from: frame.from,
    text: frame.text,
    edited: !!frame.edited,
    deleted: !!frame.deleted,
    client_id: frame.client_id ?? null,
    attachment: frame.deleted ? null : frame.attachment ?? null, // a tombstone carries no file
  };
}

export class Chat {
  constructor(url) {
    this.url = url;
    this.listeners = new Set();
    this.conn = null;
    this.files = new Files(this);
    this.reset();
  }

  // ------------------------------------------------------------------ plumbing

  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  emit() {
    for (const fn of this.listeners) fn();
  }

  reset() {
    this.phase = "signin"; // signin | connecting | ready | ended
    this.auth = null; // {username, password, token, signup}
    this.authError = null;
    this.me = null;
    this.role = "member";
    this.limits = null;
    this.rooms = new Map(); // joined rooms
    this.dms = new Map();
    this.directory = [];
    this.people = new Map();
    this.blocks = new Set();
    this.cursors = { rooms: {}, dms: {} };
    this.catchup = { incomplete: false, head: false };
    this.current = null;
    this.following = true;
    this.link = { state: "idle" };
    this.notices = [];
    this.ended = null;
    this.resumed = 0;
    this.files?.reset();
  }

  conv(kind, key, create = true) {
    const map = kind === "room" ? this.rooms : this.dms;
    let c = map.get(key);
    if (!c && create) {
      c = new Conv(kind, key);
      map.set(key, c);
    }
    return c;
  }

  get currentConv() {
    if (!this.current) return null;
    return this.conv(this.current.kind, this.current.key, false);
  }

  notice(text, kind = "info") {
    const id = newId();
    this.notices = [...this.notices.slice(-4), { id, text, kind }];
    this.emit();
    setTimeout(() => this.dismiss(id), 12000);
  }

  dismiss(id) {
    this.notices = this.notices.filter((n) => n.id !== id);
    this.emit();
  }

  // A request; one refused for the rate limit (reads are limited too) is tried again after
  // the time the server asks for, a few times.
  async request(type, fields) {
    for (let attempt = 0; ; attempt += 1) {
      if (!this.conn) throw new RequestError({ code: "disconnected", message: "not connected" });
      try {
        return await this.conn.request(type, fields);
      } catch (err) {
        if (err.code !== "rate_limited" || attempt >= 8) throw err;
        await new Promise((r) => setTimeout(r, (err.reply.retry_after || 0.5) * 1000));
      }
    }
  }

  // ------------------------------------------------------------------ session

  // Sign in with a password, or with a session token kept from this tab's earlier session
  // (a reload). Once the server has handed out a token, reconnects use it and the password
  // is forgotten.
  signIn(username, password, signup = false, token = null) {
    this.auth = { username, password, token, signup };
    this.authError = null;
    this.ended = null;
    this.phase = "connecting";
    this.emit();
    if (this.conn) this.conn.stop();
    this.conn = new Connection(this.url, {
      onEvent: (ev) => this._event(ev),
      onOpen: () => this._session(),
      onState: (state, detail) => {
        this.link = { state, ...detail };
        this.emit();
      },
    });
    this.conn.start();
  }

  async signOut() {
    forgetSession();
    try {
      await this.request("logout", {}); // revokes the session token
    } catch {
      /* gone anyway */
    }
    this.conn?.stop();
    this.conn = null;
    this.lastUser = this.me; // the sign-in form offers the name again
    this.reset();
    this.emit();
  }

  _end(code, reason, extra = {}) {
    this.conn?.stop();
    this.conn = null;
    const me = this.me;
    this.reset();
    this.ended = { code, reason, ...extra };
    this.phase = "signin";
    this.authError = reason;
    this.lastUser = me;
    this.emit();
  }

  async _session() {
    const conn = this.conn;
    try {
      const hello = await conn.request("hello", { version: 1, client: "parlour-web/0.1" });
      this.limits = hello.limits;
      conn.heartbeat = hello.heartbeat_s || 30;
      conn.maxFrame = hello.limits?.max_frame || 65536;
      const { username, password, token, signup } = this.auth;
      const again = this.me !== null;
      let reply;
      if (signup && !again) {
        reply = await conn.request("signup", { username, password });
      } else {
        const fields = token ? { username, token } : { username, password };
        if (again) fields.resume = this._resume();
        reply = await conn.request("login", fields);
      }
      this._keepToken(reply);
      this._replied(reply.truncated);
      if (!again) {
        this.me = reply.username;
        this.role = reply.role;
        for (const room of reply.rooms) this.conv("room", room); // events count from now on
        await this._continueCatchUp(reply.truncated); // offline DMs beyond one login's share
        await this._firstLoad(reply.rooms);
      } else {
        await this._continueCatchUp(reply.truncated);
        await this._afterResume();
      }
      this.auth.signup = false;
      this.phase = "ready";
      conn.settled();
      this.emit();
    } catch (err) {
      if (conn !== this.conn) return;
      this._sessionFailed(err);
    }
  }

  // The session token replaces the password in memory; this tab keeps it for a reload.
  _keepToken(reply) {
    if (!reply.token) return;
    this.auth.token = reply.token;
    this.auth.password = null;
    keepSession(reply.username || this.auth.username, reply.token);
  }

  _sessionFailed(err) {
    const code = err.code;
    if (code === "bad_credentials" && err.reply?.token) {
      // the token expired or was revoked (a password change elsewhere): sign in again
      forgetSession();
      if (this.me === null) {
        this.conn.stop();
        this.conn = null;
        this.phase = "signin";
        this.authError = "Your session has ended; sign in again.";
        this.authCode = code;
        this.emit();
        return;
      }
      this._end(code, "Your session has ended; sign in again.");
      return;
    }
    if (code === "disconnected" || code === "timeout" || code === "server_busy") {
      if (code === "timeout") this.conn.drop();
      return; // the connection retries
    }
    if (code === "already_logged_in" && this.me !== null) {
      // our previous connection is not gone from the server yet: try again shortly
      this.conn.drop();
      return;
    }
    if (this.me === null) {
      // the first sign-in failed: back to the form with the server's words
      this.conn.stop();
      this.conn = null;
      this.phase = "signin";
      this.authError = err.message;
      this.authCode = code;
      this.emit();
      return;
    }
    this._end(code, err.message, err.reply || {});
  }

  _resume() {
    const resume = { rooms: { ...this.cursors.rooms }, dms: { ...this.cursors.dms } };
    if (this.cursors.broadcasts !== undefined) resume.broadcasts = this.cursors.broadcasts;
    return resume;
  }

  _replied(truncated) {
    this.catchup.incomplete = !!truncated;
    this.catchup.head = !!truncated;
  }

  async _continueCatchUp(truncated) {
    let rounds = 0;
    while (truncated && rounds < 1000) {
      rounds += 1;
      await this.request("ping", {}); // everything pushed before it has arrived
      const reply = await this.request("sync", { resume: this._resume() });
      this._replied(reply.truncated);
      truncated = reply.truncated;
    }
    this.catchup.incomplete = false;
  }

  async _firstLoad(rooms) {
    await this.refreshUnread(); // read positions, counts, and every DM conversation
    await Promise.all([
      ...rooms.map((room) => this._loadJoined(room)),
      this.refreshDirectory(),
      this.refreshPeople(),
      this.refreshBlocks(),
    ]);
    if (!this.current) {
      const first = [...this.rooms.keys()].sort()[0];
      if (first) this.open("room", first);
    }
  }

  async _loadJoined(room) {
    const data = await this.request("join", { room, limit: PAGE });
    this._applyJoin(data);
  }

  _applyJoin(data) {
    const c = this.conv("room", data.room);
    c.lastSeq = Math.max(c.lastSeq, data.last_seq);
    const cur = this.cursors.rooms[data.room];
    this.cursors.rooms[data.room] = Math.max(cur ?? 0, data.last_seq);
    c.members = new Set(data.members);
    c.online = new Set(data.online);
    c.membersTotal = data.members_total;
    c.membersTruncated = data.members_truncated;
    for (const m of data.messages) c.put(record(m));
    c.hasMore = data.messages.length > 0 && data.messages[0].seq > 1;
    c.atEnd = true;
  }

  // The server's read positions and counts; they replace the counts kept since (the reply
  // comes after every event it counted, in order).
  async refreshUnread() {
    const data = await this.request("unread", {});
    const apply = (kind, key, row) => {
      const c = this.conv(kind, key);
      const cursors = kind === "room" ? this.cursors.rooms : this.cursors.dms;
      cursors[key] = Math.max(cursors[key] ?? 0, row.last_seq);
      c.lastSeq = Math.max(c.lastSeq, row.last_seq);
      c.unread = row.unread;
      c.mentions = row.mentions;
      c.capped = row.capped;
      if (row.read_seq >= c.readSeq) c.readSeq = row.read_seq;
      else this._sendMark(c); // read here while the server did not hear of it
    };
    for (const r of data.rooms) apply("room", r.room, r);
    for (const d of data.dms) apply("dm", d.peer, d);
    this.emit();
  }

  _scheduleUnread() {
    clearTimeout(this.unreadTimer);
    this.unreadTimer = setTimeout(() => this.refreshUnread().catch(() => {}), 500);
  }

  async _afterResume() {
    this.resumed += 1;
    const jobs = [
      this.refreshUnread(),
      this.refreshDirectory(),
      this.refreshPeople(),
      this.refreshBlocks(),
    ];
    const c = this.currentConv;
    if (c && c.kind === "room") jobs.push(this.refreshMembers(c));
    if (c && c.msgs.length) jobs.push(this._refreshWindow(c)); // edits made while away
    await Promise.all(jobs);
    for (const conv of [...this.rooms.values(), ...this.dms.values()]) {
      for (const item of conv.pending) {
        if (item.state !== "failed") this._deliver(conv, item);
      }
    }
    this.files.reconnected(); // uploads that stopped for want of a token go on
  }

  async _refreshWindow(c) {
    const lo = c.msgs[0].seq;
    const hi = c.msgs[c.msgs.length - 1].seq;
    const limit = Math.min(500, hi - lo + 1);
    const data = await this.request("history", { [c.kind === "room" ? "room" : "peer"]: c.key, before: hi + 1, limit });
    for (const m of data.messages) c.put(record(m));
    this.emit();
  }

  // ------------------------------------------------------------------ events

  _event(ev) {
    const handler = this[`_on_${ev.event}`];
    if (handler) handler.call(this, ev);
    this.emit();
  }

  _take(kind, key, seq) {
    const cursors = kind === "room" ? this.cursors.rooms : this.cursors.dms;
    const cur = cursors[key];
    if (this.catchup.incomplete) {
      const head = this.catchup.head;
      this.catchup.head = false;
      if (cur !== undefined && seq > cur + 1 && !head) return false; // pushed again next round
    }
    if (cur !== undefined && seq <= cur) return false;
    cursors[key] = seq;
    return true;
  }

  _incoming(kind, key, ev) {
    if (!this._take(kind, key, ev.seq)) return;
    const c = this.conv(kind, key);
    const rec = record(ev);
    c.lastSeq = Math.max(c.lastSeq, rec.seq);
    if (rec.client_id) c.pending = c.pending.filter((p) => p.client_id !== rec.client_id);
    if (c.atEnd) {
      const cur = this.currentConv === c;
      if (cur && !this.following && c.msgs.length >= WINDOW_MAX) {
        c.atEnd = false; // reading older messages: the newest load when scrolled down
      } else {
        c.put(rec);
        if (c.msgs.length > WINDOW_MAX) {
          c.msgs.splice(0, c.msgs.length - WINDOW_MAX);
          c.hasMore = true;
        }
      }
    }
    if (rec.from === this.me) {
      if (rec.seq > c.readSeq) c.readSeq = rec.seq; // nothing of yours is ever unread
      return;
    }
    if (rec.seq <= c.readSeq) return;
    if (this.currentConv === c && this.following && !document.hidden) {
      this._markRead(c, rec.seq);
      return;
    }
    c.unread += 1;
    const mine = kind === "dm" || mentions(rec.text, this.me); // as the server counts
    if (mine) c.mentions += 1;
    if (kind === "dm" || mine) {
      const where = kind === "room" ? `#${key}` : "direct message";
      notify(`${rec.from} (${where})`, rec.text || (rec.attachment ? `sent ${rec.attachment.name}` : ""), c.id);
    }
  }

  _on_message(ev) {
    if (!this.rooms.has(ev.room) && !this.cursors.rooms[ev.room]) return;
    this._incoming("room", ev.room, ev);
  }

  _on_dm(ev) {
    this._incoming("dm", ev.peer, ev);
  }

  _changed(kind, key, ev) {
    const c = this.conv(kind, key, false);
    if (!c) return;
    if (c.find(ev.seq)) this._update(c, ev);
  }

  // A changed message replaces the one in the window; an edit keeps its attachment even if
  // the frame leaves it out.
  _update(c, frame) {
    const rec = record(frame);
    const old = c.find(rec.seq);
    if (old && !("attachment" in frame) && !rec.deleted) rec.attachment = old.attachment;
    c.put(rec);
  }

  _on_message_edited(ev) { this._changed("room", ev.room, ev); }
  _on_message_deleted(ev) { this._changed("room", ev.room, ev); }
  _on_dm_edited(ev) { this._changed("dm", ev.peer, ev); }
  _on_dm_deleted(ev) { this._changed("dm", ev.peer, ev); }

  _on_joined(ev) {
    // whoever joins is online (a presence event only reaches users who already share a room)
    const p = this.people.get(ev.user) || { username: ev.user, role: "member", rooms: [] };
    if (!p.online) this.people.set(ev.user, { ...p, online: true, last_active: ev.ts });
    const c = this.conv("room", ev.room, false);
    if (c && !c.members.has(ev.user)) {
      c.members.add(ev.user);
      c.membersTotal += 1;
    }
    if (c) c.online.add(ev.user);
  }

  _on_left(ev) {
    const c = this.conv("room", ev.room, false);
    if (c && c.members.delete(ev.user)) c.membersTotal = Math.max(0, c.membersTotal - 1);
    c?.online.delete(ev.user);
  }

  _on_presence(ev) {
    const p = this.people.get(ev.user) || { username: ev.user, role: "member", rooms: [] };
    p.online = ev.online;
    if (ev.online) p.login_ts = ev.ts;
    p.last_active = ev.ts;
    this.people.set(ev.user, p);
    for (const c of this.rooms.values()) {
      if (!c.members.has(ev.user)) continue;
      if (ev.online) c.online.add(ev.user);
      else c.online.delete(ev.user);
    }
  }

  _on_broadcast(ev) {
    if (ev.seq != null) {
      if (this.cursors.broadcasts !== undefined && ev.seq <= this.cursors.broadcasts) return;
      this.cursors.broadcasts = ev.seq;
    }
    this.notice(`Announcement from ${ev.from}: ${ev.text}`, "broadcast");
    notify(`Announcement from ${ev.from}`, ev.text, "broadcast");
  }

  _on_kicked(ev) {
    if (ev.room) {
      this._forgetRoom(ev.room);
      const why = ev.reason ? `: ${ev.reason}` : "";
      this.notice(`You were removed from #${ev.room} by ${ev.by}${why}`, "warning");
      return;
    }
    this.pendingEnd = { code: "kicked", by: ev.by, reason: ev.reason };
  }

  _on_banned(ev) {
    this.pendingEnd = { code: "banned", by: ev.by, reason: ev.reason, until: ev.until };
  }

  _on_room_created(ev) {
    if (!this.directory.some((r) => r.name === ev.room)) {
      this.directory = [...this.directory, { name: ev.room, members: 0, online: 0, joined: false }];
    }
  }

  _on_room_deleted(ev) {
    this.directory = this.directory.filter((r) => r.name !== ev.room);
    if (this.rooms.has(ev.room)) {
      this._forgetRoom(ev.room);
      this.notice(`#${ev.room} was deleted by ${ev.by}`, "warning");
    }
  }

  _on_room_renamed(ev) {
    const { room, new_name: name } = ev;
    this.directory = this.directory.map((r) => (r.name === room ? { ...r, name } : r));
    const c = this.rooms.get(room);
    if (!c) return;
    this.rooms.delete(room);
    c.key = name;
    this.rooms.set(name, c);
    this.cursors.rooms[name] = this.cursors.rooms[room];
    delete this.cursors.rooms[room];
    if (this.current?.kind === "room" && this.current.key === room) this.current = { kind: "room", key: name };
    this.notice(`#${room} is now #${name}`);
  }

  _on_disconnect(ev) {
    const end = this.pendingEnd;
    this.pendingEnd = null;
    if (ev.code === "kicked" || ev.code === "banned") {
      this._end(ev.code, ev.reason, end || {});
    } else if (ev.code === "logged_out") {
      this._end(ev.code, ev.reason);
    }
    // shutting_down, idle_timeout, slow_consumer...: the connection comes back by itself
  }

  _forgetRoom(room) {
    this.rooms.delete(room);
    delete this.cursors.rooms[room];
    this.directory = this.directory.map((r) => (r.name === room ? { ...r, joined: false } : r));
    if (this.current?.kind === "room" && this.current.key === room) {
      const next = [...this.rooms.keys()].sort()[0];
      this.current = next ? { kind: "room", key: next } : null;
    }
  }

  // ------------------------------------------------------------------ reading

  open(kind, key) {
    const c = this.conv(kind, key);
    if (this.current && this.current.kind === kind && this.current.key === key) return;
    this.current = { kind, key };
    c.marker = c.unread ? c.readSeq : null;
    this.following = true;
    if (kind === "room") this.refreshMembers(c).catch(() => {});
    if (kind === "dm" && !c.msgs.length && c.hasMore) this.loadOlder(c);
    this.emit();
  }

  _markRead(c, seq) {
    if (seq <= c.readSeq) return;
    c.readSeq = seq;
    if (seq >= c.lastSeq) {
      c.unread = 0;
      c.mentions = 0;
      c.capped = false;
    } else this._scheduleUnread();
    this._sendMark(c);
  }

  // Tell the server (one request at a time per conversation, the latest position last).
  _sendMark(c) {
    if (c.marking) {
      c.markAgain = true;
      return;
    }
    c.marking = true;
    const seq = c.readSeq;
    this.request("mark_read", { ...this._scope(c), seq })
      .catch(() => {}) // not connected: refreshUnread after the reconnect sends it again
      .finally(() => {
        c.marking = false;
        if (c.markAgain && c.readSeq > seq) {
          c.markAgain = false;
          this._sendMark(c);
        }
      });
  }

  _on_read_marker(ev) {
    const c = ev.room ? this.conv("room", ev.room, false) : this.conv("dm", ev.peer, false);
    if (!c || ev.seq <= c.readSeq) return;
    c.readSeq = ev.seq; // read on another of your sessions
    if (ev.seq >= c.lastSeq) {
      c.unread = 0;
      c.mentions = 0;
      c.capped = false;
      if (this.currentConv === c) c.marker = null;
    } else this._scheduleUnread();
  }

  // The view calls this when the newest message is on screen and the page is visible.
  seen(c) {
    if (c.atEnd && c.lastSeq > c.readSeq) {
      this._markRead(c, c.lastSeq);
      this.emit();
    }
  }

  firstUnread(c) {
    return c.marker === null ? null : c.marker + 1;
  }

  _scope(c) {
    return c.kind === "room" ? { room: c.key } : { peer: c.key };
  }

  async loadOlder(c) {
    if (c.loading || !c.hasMore) return;
    c.loading = true;
    this.emit();
    try {
      const before = c.msgs.length ? c.msgs[0].seq : c.lastSeq + 1;
      const fields = { ...this._scope(c), limit: PAGE };
      if (before > 0 && c.msgs.length) fields.before = before;
      const data = await this.request("history", fields);
      for (const m of data.messages) c.put(record(m));
      c.hasMore = data.has_more;
      if (c.msgs.length > WINDOW_MAX) {
        c.msgs.splice(WINDOW_MAX);
        c.atEnd = false;
      }
      if (c.kind === "dm" && data.messages.length) {
        const last = data.messages[data.messages.length - 1].seq;
        c.lastSeq = Math.max(c.lastSeq, last);
        this.cursors.dms[c.key] = Math.max(this.cursors.dms[c.key] ?? 0, last);
      }
    } catch (err) {
      this.notice(`Could not load history: ${err.message}`, "warning");
    } finally {
      c.loading = false;
      this.emit();
    }
  }

  async loadNewer(c) {
    if (c.loading || c.atEnd) return;
    c.loading = true;
    this.emit();
    try {
      const hi = c.msgs.length ? c.msgs[c.msgs.length - 1].seq : 0;
      const before = hi + PAGE + 1;
      const data = await this.request("history", { ...this._scope(c), before, limit: PAGE });
      for (const m of data.messages) c.put(record(m));
      if (before > c.lastSeq) c.atEnd = true;
      if (c.msgs.length > WINDOW_MAX) {
        c.msgs.splice(0, c.msgs.length - WINDOW_MAX);
        c.hasMore = true;
      }
    } catch (err) {
      this.notice(`Could not load messages: ${err.message}`, "warning");
    } finally {
      c.loading = false;
      this.emit();
    }
  }

  // Replace the window with the messages around `seq` (jump to first unread) or the newest.
  async jump(c, seq = null) {
    c.loading = true;
    this.emit();
    try {
      const fields = { ...this._scope(c), limit: seq === null ? PAGE : 2 * PAGE };
      if (seq !== null) fields.before = seq + PAGE;
      const data = await this.request("history", fields);
      c.msgs = [];
      for (const m of data.messages) c.put(record(m));
      c.hasMore = data.has_more;
      c.atEnd = seq === null || seq + PAGE > c.lastSeq;
      c.generation += 1;
    } finally {
      c.loading = false;
      this.emit();
    }
  }

  // ------------------------------------------------------------------ writing

  // `attachment`: {id, name, size} of a finished upload (docs/design/files.md), or null.
  send(c, text, attachment = null) {
    const item = { client_id: newId(), text, attachment, state: "sending", error: null };
    c.pending = [...c.pending, item];
    this.following = true;
    this.emit();
    this._deliver(c, item);
  }

  async _deliver(c, item) {
    item.state = "sending";
    const fields = c.kind === "room"
      ? { room: c.key, text: item.text, client_id: item.client_id }
      : { to: c.key, text: item.text, client_id: item.client_id };
    if (item.attachment) fields.attachment = item.attachment.id;
    try {
      const reply = await this.request(c.kind === "room" ? "send" : "dm", fields);
      if (reply.duplicate) c.pending = c.pending.filter((p) => p !== item); // stored earlier
      else item.state = "sent";
    } catch (err) {
      if (err.code === "disconnected" || err.code === "timeout") {
        item.state = "queued"; // resent with the same client_id after the reconnect
      } else if (err.code === "rate_limited") {
        item.state = "queued";
        setTimeout(() => this._deliver(c, item), (err.reply.retry_after || 1) * 1000);
      } else {
        item.state = "failed";
        item.error = err.message;
      }
    }
    this.emit();
  }

  retry(c, item) {
    this._deliver(c, item);
  }

  discard(c, item) {
    c.pending = c.pending.filter((p) => p !== item);
    this.emit();
  }

  async edit(c, seq, text) {
    const data = await this.request("edit", { ...this._scope(c), seq, text });
    this._update(c, data.message);
    this.emit();
  }

  async remove(c, seq) {
    const data = await this.request("delete", { ...this._scope(c), seq });
    if (c.find(seq)) this._update(c, data.message);
    this.emit();
  }

  lastOwn(c) {
    for (let i = c.msgs.length - 1; i >= 0; i -= 1) {
      const m = c.msgs[i];
      if (m.from === this.me && !m.deleted) return m;
    }
    return null;
  }

  // ------------------------------------------------------------------ rooms, people

  async refreshDirectory() {
    const data = await this.request("rooms", {});
    this.directory = data.rooms;
    this.emit();
  }

  async refreshPeople() {
    const data = await this.request("who", {}); // everyone online now
    this.people = new Map(data.users.map((u) => [u.username, u]));
    this.emit();
  }

  // Online users who logged in within the server's window (an hour by default).
  async recentPeople() {
    const data = await this.request("who", { recent: true });
    return data.users;
  }

  async refreshBlocks() {
    const data = await this.request("blocks", {});
    this.blocks = new Set(data.users);
    this.emit();
  }

  async refreshMembers(c) {
    const data = await this.request("who", { room: c.key, recent: true });
    c.recent = data.users;
    for (const u of data.users) {
      c.members.add(u.username);
      if (u.online) c.online.add(u.username);
      else c.online.delete(u.username);
    }
    this.emit();
  }

  async join(room) {
    const data = await this.request("join", { room, limit: PAGE });
    this._applyJoin(data);
    this.directory = this.directory.map((r) => (r.name === room ? { ...r, joined: true } : r));
    this.open("room", room);
  }

  async leave(room) {
    await this.request("leave", { room });
    this._forgetRoom(room);
    this.emit();
  }

  async startDm(peer) {
    const c = this.conv("dm", peer);
    this.open("dm", peer);
    if (!c.msgs.length) await this.loadOlder(c);
  }

  async block(user) {
    await this.request("block", { user });
    this.blocks.add(user);
    for (const c of this.rooms.values()) c.msgs = c.msgs.filter((m) => m.from !== user);
    this.emit();
  }

  async unblock(user) {
    await this.request("unblock", { user });
    this.blocks.delete(user);
    const c = this.currentConv;
    if (c) await this.jump(c);
    this.emit();
  }

  async changePassword(oldPassword, newPassword) {
    const reply = await this.request("passwd", {
      old_password: oldPassword,
      new_password: newPassword,
    });
    this._keepToken(reply); // every earlier token was revoked; reconnects use the new one
  }

  get totalUnread() {
    let n = 0;
    for (const c of this.rooms.values()) n += c.unread;
    for (const c of this.dms.values()) n += c.unread;
    return n;
  }
}

// ------------------------------------------------------------------ the tab's session

const SESSION_KEY = "parlour.session";

// This tab's session token (sessionStorage: it survives a reload, not the tab; other tabs
// sign in on their own).
export function savedSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    if (saved && typeof saved.username === "string" && typeof saved.token === "string") {
      return saved;
    }
  } catch {
    /* storage unavailable or garbled: sign in by hand */
  }
  return null;
}

function keepSession(username, token) {
  try {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ username, token }));
  } catch {
    /* storage unavailable: a reload asks for the password */
  }
}

function forgetSession() {
  try {
    sessionStorage.removeItem(SESSION_KEY);
  } catch {
    /* nothing kept */
  }
}
