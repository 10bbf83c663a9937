// Right column: the room's members, online first, and who was active in the last hour.
import { html, useState } from "../html.js";
import { ago } from "../format.js";

export function Members({ chat, conv, openDialog }) {
  const [recent, setRecent] = useState(false);
  if (!conv || conv.kind !== "room") {
    return html`<aside class="members" aria-label="Members"><p class="meta">Direct conversation with ${conv?.key}</p></aside>`;
  }
  const names = [...conv.members].filter((n) => !chat.blocks.has(n));
  names.sort((a, b) => (conv.online.has(b) - conv.online.has(a)) || a.localeCompare(b));
  const person = (name) => html`<button type="button" class="person" onClick=${() => openDialog("user", name)}>
    <span class=${conv.online.has(name) ? "dot on" : "dot"} aria-hidden="true"></span>${name}
    <span class="visually-hidden">${conv.online.has(name) ? " (online)" : " (offline)"}</span></button>`;
  return html`
    <aside class="members" aria-label=${`Members of #${conv.key}`}>
      <div class="tabs" role="tablist">
        <button type="button" role="tab" aria-selected=${!recent} onClick=${() => setRecent(false)}>
          Members (${conv.membersTotal || names.length})</button>
        <button type="button" role="tab" aria-selected=${recent} id="recent-tab"
          onClick=${() => { setRecent(true); chat.refreshMembers(conv).catch(() => {}); }}>Last hour</button>
      </div>
      ${!recent && html`<ul class="people" id="member-list">
        ${names.map((n) => html`<li key=${n}>${person(n)}</li>`)}
        ${conv.membersTruncated && html`<li class="meta">…and more</li>`}
      </ul>`}
      ${recent && html`<ul class="people" id="recent-list">
        ${(conv.recent || []).map((u) => html`<li key=${u.username}>${person(u.username)}
          <span class="meta">logged in ${ago(u.login_ts)}</span></li>`)}
      </ul>`}
    </aside>`;
}
