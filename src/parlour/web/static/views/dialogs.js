// Modal dialogs (native <dialog>: focus stays inside, Escape closes): a new DM, a person's
// actions (message, block; kick and ban for admins), who was active, settings, administration.
import { html, useState, useEffect, useRef } from "../html.js";
import { ago, full, until } from "../format.js";
import { askPermission, notifyPermission } from "../notify.js";

export function Dialog({ title, onClose, children, wide }) {
  const ref = useRef(null);
  useEffect(() => {
    const d = ref.current;
    if (d && !d.open) d.showModal();
    return () => d?.open && d.close();
  }, []);
  return html`
    <dialog ref=${ref} class=${wide ? "wide" : ""} aria-labelledby="dialog-title"
      onClose=${onClose} onCancel=${(e) => { e.preventDefault(); onClose(); }}>
      <header><h2 id="dialog-title">${title}</h2>
        <button type="button" class="close" aria-label="Close" onClick=${onClose}>×</button></header>
      ${children}
    </dialog>`;
}

// A form whose submit runs `action` and shows its error or its success text.
function useAction(chat) {
  const [status, setStatus] = useState(null);
  const run = async (action, done) => {
    setStatus({ busy: true });
    try {
      await action();
      setStatus(done ? { ok: done } : null);
    } catch (err) {
      setStatus({ error: err.message });
    }
  };
  const view = status && (status.error
    ? html`<p class="error" role="alert">${status.error}</p>`
    : status.ok ? html`<p class="ok" role="status">${status.ok}</p>` : null);
  return [run, view, status?.busy];
}

function NewDm({ chat, close }) {
  const [name, setName] = useState("");
  const [run, status] = useAction(chat);
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      if (name === chat.me) throw new Error("That is you.");
      await chat.startDm(name.trim());
      close();
    });
  };
  return html`<${Dialog} title="New direct message" onClose=${close}>
    <form onSubmit=${submit}>
      <label>To (user name)<input id="dm-to" required maxlength="32" value=${name}
        onInput=${(e) => setName(e.target.value)} autofocus /></label>
      <p class="hint">They get it now if online, or at their next sign-in.</p>
      ${status}
      <button class="primary" type="submit">Open conversation</button>
    </form></${Dialog}>`;
}

const DURATIONS = [
  ["600", "10 minutes"], ["3600", "1 hour"], ["86400", "1 day"], ["604800", "1 week"], ["", "until unbanned"],
];

function UserActions({ chat, user, close }) {
  const [run, status] = useAction(chat);
  const [reason, setReason] = useState("");
  const [duration, setDuration] = useState("3600");
  const blocked = chat.blocks.has(user);
  const admin = chat.role === "admin";
  const conv = chat.currentConv;
  const p = chat.people.get(user);
  const self = user === chat.me;
  return html`<${Dialog} title=${user} onClose=${close}>
    <p class="meta">${p?.online ? `online, logged in ${ago(p.login_ts)}` : "not online"}</p>
    ${!self && html`<div class="buttons">
      <button type="button" class="primary" onClick=${() => { chat.startDm(user); close(); }}>Message</button>
      <button type="button" id="block-toggle" onClick=${() => run(() => (blocked ? chat.unblock(user) : chat.block(user)),
        blocked ? `${user} is unblocked.` : `${user} is blocked: you will not see their messages.`)}>
        ${blocked ? "Unblock" : "Block"}</button></div>`}
    ${admin && !self && html`<fieldset class="admin-actions"><legend>Moderation</legend>
      <label>Reason<input id="mod-reason" maxlength="200" value=${reason} onInput=${(e) => setReason(e.target.value)} /></label>
      <div class="buttons">
        ${conv?.kind === "room" && html`<button type="button" onClick=${() => run(
          () => chat.request("kick", { user, room: conv.key, reason }), `${user} was removed from #${conv.key}.`)}>Remove from #${conv.key}</button>`}
        <button type="button" id="kick" onClick=${() => run(
          () => chat.request("kick", { user, reason }), `${user} was disconnected.`)}>Kick from server</button>
      </div>
      <label>Ban for<select id="ban-duration" value=${duration} onChange=${(e) => setDuration(e.target.value)}>
        ${DURATIONS.map(([v, l]) => html`<option value=${v}>${l}</option>`)}</select></label>
      <button type="button" class="danger" id="ban" onClick=${() => run(() => chat.request("ban", {
        user, reason, ...(duration ? { duration: Number(duration) } : {}),
      }), `${user} is banned.`)}>Ban</button>
    </fieldset>`}
    ${status}
  </${Dialog}>`;
}

function People({ chat, close, openDialog }) {
  const [users, setUsers] = useState([]);
  useEffect(() => {
    chat.recentPeople()
      .then((found) => setUsers(found.sort((a, b) => a.username.localeCompare(b.username))))
      .catch((err) => chat.notice(err.message, "warning"));
  }, []);
  return html`<${Dialog} title="Online, logged in within the last hour" onClose=${close}>
    <ul class="people" id="people-list">${users.map((u) => html`<li key=${u.username}>
      <button type="button" class="person" onClick=${() => openDialog("user", u.username)}>
        <span class=${u.online ? "dot on" : "dot"} aria-hidden="true"></span>${u.username}</button>
      <span class="meta">${u.role === "admin" ? "admin · " : ""}logged in ${ago(u.login_ts)}</span></li>`)}
    </ul></${Dialog}>`;
}

function Settings({ chat, close }) {
  const [run, status] = useAction(chat);
  const [old, setOld] = useState("");
  const [next, setNext] = useState("");
  const [again, setAgain] = useState("");
  const [perm, setPerm] = useState(notifyPermission());
  const submit = (e) => {
    e.preventDefault();
    run(async () => {
      if (next !== again) throw new Error("The two new passwords differ.");
      await chat.changePassword(old, next);
      setOld(""); setNext(""); setAgain("");
    }, "Password changed.");
  };
  return html`<${Dialog} title="Settings" onClose=${close}>
    <form onSubmit=${submit} aria-labelledby="pw-title">
      <h3 id="pw-title">Change password</h3>
      <label>Current password<input type="password" id="old-password" required autocomplete="current-password"
        value=${old} onInput=${(e) => setOld(e.target.value)} /></label>
      <label>New password<input type="password" id="new-password" required autocomplete="new-password"
        minlength=${chat.limits?.password_min_length || 8} value=${next} onInput=${(e) => setNext(e.target.value)} /></label>
      <label>Repeat new password<input type="password" id="new-password-2" required autocomplete="new-password"
        value=${again} onInput=${(e) => setAgain(e.target.value)} /></label>
      ${status}
      <button class="primary" type="submit">Change password</button>
    </form>
    <h3>Desktop notifications</h3>
    <p class="hint">For mentions and direct messages while this tab is in the background.</p>
    ${perm === "granted" ? html`<p class="ok">On.</p>`
      : perm === "denied" ? html`<p class="meta">Blocked in the browser's site settings.</p>`
      : perm === "unsupported" ? html`<p class="meta">Not available in this browser.</p>`
      : html`<button type="button" onClick=${async () => setPerm(await askPermission())}>Turn on</button>`}
    <h3>Blocked users</h3>
    ${chat.blocks.size ? html`<ul class="people" id="blocked-list">${[...chat.blocks].sort().map((u) => html`<li key=${u}>${u}
      <button type="button" class="small" onClick=${() => chat.unblock(u).catch((err) => chat.notice(err.message))}>Unblock</button></li>`)}</ul>`
      : html`<p class="meta">Nobody.</p>`}
  </${Dialog}>`;
}

function AdminRooms({ chat }) {
  const [run, status] = useAction(chat);
  const [name, setName] = useState("");
  const [renames, setRenames] = useState({});
  return html`<section aria-labelledby="admin-rooms"><h3 id="admin-rooms">Rooms</h3>
    <form class="inline" onSubmit=${(e) => { e.preventDefault(); run(() => chat.request("room_create", { room: name }).then(() => setName("")), "Room created."); }}>
      <label>New room<input id="new-room" required maxlength="32" value=${name} onInput=${(e) => setName(e.target.value)} /></label>
      <button type="submit">Create</button></form>
    <table><thead><tr><th scope="col">Room</th><th scope="col">Members</th><th scope="col">Rename / delete</th></tr></thead><tbody>
      ${chat.directory.map((r) => html`<tr key=${r.name}><td>${r.name}</td><td>${r.members}</td><td>
        <input aria-label=${`New name for ${r.name}`} maxlength="32" value=${renames[r.name] || ""}
          onInput=${(e) => setRenames({ ...renames, [r.name]: e.target.value })} />
        <button type="button" class="small" onClick=${() => run(() => chat.request("room_rename", { room: r.name, new_name: renames[r.name] || "" }), "Renamed.")}>Rename</button>
        <button type="button" class="small danger" onClick=${() => confirm(`Delete #${r.name} and all its messages?`) && run(() => chat.request("room_delete", { room: r.name }), "Deleted.")}>Delete</button>
      </td></tr>`)}
    </tbody></table>${status}</section>`;
}

function AdminBans({ chat }) {
  const [run, status] = useAction(chat);
  const [bans, setBans] = useState(null);
  const load = () => chat.request("bans", {}).then((d) => setBans(d.bans)).catch(() => {});
  useEffect(() => { load(); }, []);
  return html`<section aria-labelledby="admin-bans"><h3 id="admin-bans">Bans</h3>
    ${bans && !bans.length && html`<p class="meta">Nobody is banned.</p>`}
    ${bans && bans.length > 0 && html`<table id="bans"><thead><tr><th scope="col">User</th><th scope="col">By</th><th scope="col">Until</th><th scope="col">Reason</th><th></th></tr></thead><tbody>
      ${bans.map((b) => html`<tr key=${b.user}><td>${b.user}</td><td>${b.by}</td><td>${until(b.until)}</td><td>${b.reason}</td>
        <td><button type="button" class="small" onClick=${() => run(() => chat.request("unban", { user: b.user }).then(load), `${b.user} unbanned.`)}>Unban</button></td></tr>`)}
    </tbody></table>`}${status}</section>`;
}

function AdminBroadcast({ chat }) {
  const [run, status] = useAction(chat);
  const [text, setText] = useState("");
  return html`<section aria-labelledby="admin-bc"><h3 id="admin-bc">Broadcast</h3>
    <form onSubmit=${(e) => { e.preventDefault(); run(() => chat.request("broadcast", { text }).then((d) => { setText(""); return d; }), "Sent to everyone online."); }}>
      <label>Announcement<textarea id="broadcast-text" required rows="2" value=${text} onInput=${(e) => setText(e.target.value)}></textarea></label>
      <button type="submit">Send to everyone</button></form>${status}</section>`;
}

function AdminAudit({ chat }) {
  const [entries, setEntries] = useState(null);
  useEffect(() => { chat.request("audit", { limit: 100 }).then((d) => setEntries(d.entries)).catch(() => {}); }, []);
  return html`<section aria-labelledby="admin-audit"><h3 id="admin-audit">Audit log</h3>
    ${entries && html`<table id="audit"><thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">Action</th><th scope="col">Target</th><th scope="col">Reason</th></tr></thead><tbody>
      ${entries.map((a, i) => html`<tr key=${i}><td>${full(a.ts)}</td><td>${a.actor}</td><td>${a.action}</td><td>${a.target}</td><td>${a.reason}</td></tr>`)}
    </tbody></table>`}</section>`;
}

function Admin({ chat, close }) {
  const [tab, setTab] = useState("rooms");
  const tabs = { rooms: AdminRooms, bans: AdminBans, broadcast: AdminBroadcast, audit: AdminAudit };
  const Body = tabs[tab];
  return html`<${Dialog} title="Administration" onClose=${close} wide=${true}>
    <div class="tabs" role="tablist">${Object.keys(tabs).map((t) => html`
      <button type="button" role="tab" aria-selected=${tab === t} id=${`admin-tab-${t}`} onClick=${() => setTab(t)}>${t[0].toUpperCase() + t.slice(1)}</button>`)}</div>
    <${Body} chat=${chat} /></${Dialog}>`;
}

export function Dialogs({ chat, dialog, close, openDialog }) {
  if (!dialog) return null;
  const [kind, arg] = dialog;
  if (kind === "dm") return html`<${NewDm} chat=${chat} close=${close} />`;
  if (kind === "user") return html`<${UserActions} key=${arg} chat=${chat} user=${arg} close=${close} />`;
  if (kind === "people") return html`<${People} chat=${chat} close=${close} openDialog=${openDialog} />`;
  if (kind === "settings") return html`<${Settings} chat=${chat} close=${close} />`;
  if (kind === "admin") return html`<${Admin} chat=${chat} close=${close} />`;
  return null;
}
