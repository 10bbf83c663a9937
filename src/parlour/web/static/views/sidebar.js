// Left column: joined rooms and DM conversations with unread and mention counts, rooms to
// join, and who is online.
import { html, useState } from "../html.js";

function Badge({ conv }) {
  if (!conv.unread) return null;
  const count = `${conv.unread}${conv.capped ? "+" : ""}`;
  const label = `${count} unread${conv.mentions ? `, ${conv.mentions} mentioning you` : ""}`;
  return html`<span class="badges" aria-label=${label}>
    ${conv.mentions > 0 && html`<span class="badge mention" aria-hidden="true">@${conv.mentions}</span>`}
    <span class="badge unread" aria-hidden="true">${count}</span></span>`;
}

function Entry({ chat, conv, label, onPick }) {
  const active = chat.current && chat.current.kind === conv.kind && chat.current.key === conv.key;
  return html`<li>
    <button type="button" class=${`entry${active ? " active" : ""}${conv.unread ? " has-unread" : ""}`}
      aria-current=${active ? "page" : undefined} data-conv=${conv.id}
      onClick=${() => { chat.open(conv.kind, conv.key); onPick(); }}>
      <span class="name">${label}</span><${Badge} conv=${conv} />
    </button></li>`;
}

export function Sidebar({ chat, onPick, openDialog }) {
  const [browse, setBrowse] = useState(false);
  const rooms = [...chat.rooms.values()].sort((a, b) => a.key.localeCompare(b.key));
  const dms = [...chat.dms.values()].sort((a, b) => b.lastSeq - a.lastSeq || a.key.localeCompare(b.key));
  const joinable = chat.directory.filter((r) => !chat.rooms.has(r.name));
  const online = [...chat.people.values()].filter((u) => u.online && u.username !== chat.me);
  online.sort((a, b) => a.username.localeCompare(b.username));
  return html`
    <nav class="sidebar" aria-label="Conversations">
      <h2 id="rooms-title">Rooms</h2>
      <ul aria-labelledby="rooms-title" id="room-list">
        ${rooms.map((c) => html`<${Entry} key=${c.id} chat=${chat} conv=${c} label=${`# ${c.key}`} onPick=${onPick} />`)}
      </ul>
      <button type="button" class="link" aria-expanded=${browse} onClick=${() => setBrowse(!browse)}>
        ${browse ? "Hide other rooms" : `Browse rooms (${joinable.length})`}</button>
      ${browse && html`<ul class="joinable" aria-label="Rooms you can join">
        ${joinable.map((r) => html`<li key=${r.name}><span># ${r.name}</span>
          <span class="meta">${r.members} members, ${r.online} online</span>
          <button type="button" class="small" data-join=${r.name} onClick=${async () => {
            try { await chat.join(r.name); onPick(); } catch (err) { chat.notice(err.message, "warning"); }
          }} aria-label=${`Join ${r.name}`}>Join</button></li>`)}
        ${!joinable.length && html`<li class="meta">You are in every room.</li>`}
      </ul>`}
      <h2 id="dms-title">Direct messages</h2>
      <ul aria-labelledby="dms-title" id="dm-list">
        ${dms.map((c) => html`<${Entry} key=${c.id} chat=${chat} conv=${c} label=${c.key} onPick=${onPick} />`)}
      </ul>
      <button type="button" class="link" id="new-dm" onClick=${() => openDialog("dm")}>New message…</button>
      <h2 id="online-title">Online now (${online.length + 1})</h2>
      <ul class="people" aria-labelledby="online-title" id="online-list">
        <li><span class="dot on" aria-hidden="true"></span>${chat.me} <span class="meta">(you)</span></li>
        ${online.map((u) => html`<li key=${u.username}>
          <button type="button" class="person" onClick=${() => openDialog("user", u.username)}>
            <span class="dot on" aria-hidden="true"></span>${u.username}</button></li>`)}
      </ul>
      <button type="button" class="link" onClick=${() => openDialog("people")}>Logged in within the last hour…</button>
    </nav>`;
}
