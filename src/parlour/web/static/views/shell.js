// The signed-in layout: top bar (menu on phones, conversation title, connection state, user
// menu), sidebar, conversation, members, notices and dialogs.
import { html, useState, useEffect } from "../html.js";
import { Sidebar } from "./sidebar.js";
import { Conversation } from "./conversation.js";
import { Members } from "./members.js";
import { Dialogs } from "./dialogs.js";

function Link({ chat }) {
  const [, tick] = useState(0);
  const link = chat.link;
  useEffect(() => {
    if (link.state !== "waiting") return undefined;
    const t = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(t);
  }, [link.state, link.retryAt]);
  if (link.state === "open" && chat.phase === "ready") {
    return html`<span class="link-state ok" id="link-state" role="status">Connected</span>`;
  }
  let text = "Connecting…";
  if (link.state === "waiting") {
    const s = Math.max(0, Math.ceil((link.retryAt - Date.now()) / 1000));
    text = `Connection lost — reconnecting in ${s} s`;
  } else if (link.state === "open") text = "Catching up…";
  return html`<span class="link-state down" id="link-state" role="status">${text}
    ${link.state === "waiting" && html` <button type="button" class="small" onClick=${() => chat.conn?.retryNow()}>Retry now</button>`}</span>`;
}

function Lobby({ chat }) {
  const rooms = chat.directory.filter((r) => !chat.rooms.has(r.name));
  return html`<section class="lobby" aria-labelledby="lobby-title">
    <h2 id="lobby-title">Welcome, ${chat.me}. Pick a room to join:</h2>
    <ul class="joinable">${rooms.map((r) => html`<li key=${r.name}><span># ${r.name}</span>
      <span class="meta">${r.members} members, ${r.online} online</span>
      <button type="button" class="primary" data-join=${r.name} onClick=${() => chat.join(r.name).catch((err) => chat.notice(err.message, "warning"))}>Join</button></li>`)}
    </ul>${!rooms.length && html`<p class="meta">There are no rooms yet.</p>`}</section>`;
}

export function Shell({ chat }) {
  const [drawer, setDrawer] = useState(null); // "nav" | "members" on narrow screens
  const [dialog, setDialog] = useState(null);
  const conv = chat.currentConv;
  const openDialog = (kind, arg) => setDialog([kind, arg]);
  const title = conv ? (conv.kind === "room" ? `# ${conv.key}` : `@ ${conv.key}`) : "Parlour";
  useEffect(() => {
    const n = chat.totalUnread;
    document.title = n ? `(${n}) Parlour` : "Parlour";
  });
  return html`
    <div class=${`shell${drawer ? ` drawer-${drawer}` : ""}`}>
      <a class="skip" href="#composer">Skip to the message box</a>
      <header class="topbar">
        <button type="button" class="icon menu" aria-label="Conversations" aria-expanded=${drawer === "nav"}
          onClick=${() => setDrawer(drawer === "nav" ? null : "nav")}>☰</button>
        <h1 class="title" id="conv-title">${title}</h1>
        <${Link} chat=${chat} />
        ${conv?.kind === "room" && html`<button type="button" class="small members-toggle" aria-label="Members"
          aria-expanded=${drawer === "members"} onClick=${() => setDrawer(drawer === "members" ? null : "members")}>People</button>`}
        ${conv?.kind === "room" && html`<button type="button" class="small" onClick=${() => {
          if (confirm(`Leave #${conv.key}?`)) chat.leave(conv.key).catch((err) => chat.notice(err.message));
        }}>Leave</button>`}
        <details class="user-menu">
          <summary aria-label="Account menu"><span class="me">${chat.me}</span></summary>
          <div class="menu" onClick=${(e) => { e.currentTarget.parentElement.open = false; }}>
            <button type="button" onClick=${() => openDialog("settings")}>Settings</button>
            ${chat.role === "admin" && html`<button type="button" id="open-admin" onClick=${() => openDialog("admin")}>Administration</button>`}
            <button type="button" id="sign-out" onClick=${() => chat.signOut()}>Sign out</button>
          </div>
        </details>
      </header>
      <div class="scrim" onClick=${() => setDrawer(null)}></div>
      <${Sidebar} chat=${chat} onPick=${() => setDrawer(null)} openDialog=${openDialog} />
      <main class="main" id="main">
        ${conv ? html`<${Conversation} key=${conv.id} chat=${chat} conv=${conv} />`
          : html`<${Lobby} chat=${chat} />`}
      </main>
      <${Members} chat=${chat} conv=${conv} openDialog=${openDialog} />
      <div class="notices" aria-live="polite">
        ${chat.notices.map((n) => html`<div key=${n.id} class=${`notice ${n.kind}`} role="status">
          <span>${n.text}</span><button type="button" class="close" aria-label="Dismiss" onClick=${() => chat.dismiss(n.id)}>×</button></div>`)}
      </div>
      <${Dialogs} chat=${chat} dialog=${dialog} close=${() => setDialog(null)} openDialog=${openDialog} />
    </div>`;
}
