// A room or DM: the message window (loads older pages when scrolled up, newer ones when
// scrolled down, never more than WINDOW_MAX in the DOM), the new-messages line, jump buttons
// and the composer.
import { html, useState, useRef, useEffect, useLayoutEffect } from "../html.js";
import { renderText } from "../markdown.js";
import { time, full, dayKey, dayLabel } from "../format.js";
import {
  AttachButton, AttachmentList, PendingFile, UploadTray, pasted, useDropZone,
} from "../attachments.js";

const NEAR = 240; // px from an edge at which the next page is asked for

function Message({ chat, conv, m, compact, onEdit }) {
  const mine = m.from === chat.me;
  const canDelete = !m.deleted && (mine || (chat.role === "admin" && conv.kind === "room"));
  let body;
  let mentioned = false;
  if (m.deleted) body = html`<p class="text tombstone">message deleted</p>`;
  else if (!m.text && m.attachment) body = null; // a file without a caption
  else {
    const [nodes, me] = renderText(m.text, chat.me);
    mentioned = me && !mine;
    body = html`<p class="text">${nodes}</p>`;
  }
  const del = async () => {
    if (!confirm("Delete this message?")) return;
    try {
      await chat.remove(conv, m.seq);
    } catch (err) {
      chat.notice(err.message, "warning");
    }
  };
  const cls = `msg${compact ? " compact" : ""}${mine ? " own" : ""}${mentioned ? " mentioned" : ""}`;
  return html`
    <article class=${cls} data-seq=${m.seq} aria-label=${`${m.from}, ${full(m.ts)}`}>
      ${!compact && html`<header>
        <span class="from">${m.from}</span>
        <time datetime=${new Date(m.ts * 1000).toISOString()} title=${full(m.ts)}>${time(m.ts)}</time>
      </header>`}
      ${compact && html`<time class="side" datetime=${new Date(m.ts * 1000).toISOString()} title=${full(m.ts)}>${time(m.ts)}</time>`}
      ${body}
      ${m.edited && !m.deleted && html`<span class="edited">(edited)</span>`}
      <${AttachmentList} chat=${chat} message=${m} />
      ${(mine && !m.deleted) || canDelete ? html`<div class="actions">
        ${mine && !m.deleted && html`<button type="button" class="edit" onClick=${() => onEdit(m)}
          aria-label=${`Edit your message of ${time(m.ts)}`}>Edit</button>`}
        ${canDelete && html`<button type="button" class="delete" onClick=${del}
          aria-label=${`Delete message of ${time(m.ts)}`}>Delete</button>`}
      </div>` : null}
    </article>`;
}

function Pending({ chat, conv, item }) {
  const label = { sending: "sending…", sent: "sent", queued: "waiting for the connection…", failed: item.error || "failed" }[item.state];
  return html`
    <article class=${`msg own pending ${item.state}`} aria-label="Your message, not delivered yet">
      <header><span class="from">${chat.me}</span><span class="state">${label}</span></header>
      ${item.text && html`<p class="text">${renderText(item.text, chat.me)[0]}</p>`}
      ${item.attachment && html`<${PendingFile} attachment=${item.attachment} />`}
      ${item.state === "failed" && html`<div class="actions visible">
        <button type="button" onClick=${() => chat.retry(conv, item)}>Retry</button>
        <button type="button" onClick=${() => chat.discard(conv, item)}>Discard</button></div>`}
    </article>`;
}

function MessageList({ chat, conv, onEdit }) {
  const list = useRef(null);
  const anchor = useRef(null);
  const shown = useRef({ id: null, generation: -1 });
  const [jumpTarget, setJumpTarget] = useState(null);

  const measure = () => {
    const el = list.current;
    if (!el) return;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    chat.following = atBottom && conv.atEnd;
    let found = null;
    for (const child of el.querySelectorAll("article[data-seq]")) {
      if (child.offsetTop + child.offsetHeight > el.scrollTop) {
        found = { seq: child.dataset.seq, offset: child.offsetTop - el.scrollTop };
        break;
      }
    }
    anchor.current = found;
    return atBottom;
  };

  const onScroll = () => {
    const el = list.current;
    const atBottom = measure();
    if (el.scrollTop < NEAR && conv.hasMore && !conv.loading) chat.loadOlder(conv);
    else if (el.scrollHeight - el.scrollTop - el.clientHeight < NEAR && !conv.atEnd && !conv.loading) chat.loadNewer(conv);
    if (atBottom && conv.atEnd && !document.hidden) chat.seen(conv);
  };

  useLayoutEffect(() => {
    const el = list.current;
    if (!el) return;
    const fresh = shown.current.id !== conv.id || shown.current.generation !== conv.generation;
    shown.current = { id: conv.id, generation: conv.generation };
    if (fresh) {
      const target = jumpTarget ?? (conv.marker !== null ? conv.marker + 1 : null);
      setJumpTarget(null);
      const first = target !== null
        ? [...el.querySelectorAll("article[data-seq]")].find((a) => Number(a.dataset.seq) >= target)
        : null;
      if (first && first !== el.lastElementChild) {
        el.scrollTop = Math.max(0, first.offsetTop - 48);
        chat.following = false;
      } else {
        el.scrollTop = el.scrollHeight;
        chat.following = conv.atEnd;
      }
    } else if (chat.following) {
      el.scrollTop = el.scrollHeight;
    } else if (anchor.current) {
      const a = el.querySelector(`article[data-seq="${anchor.current.seq}"]`);
      if (a) el.scrollTop = a.offsetTop - anchor.current.offset;
    }
    measure();
    if (chat.following && !document.hidden) chat.seen(conv);
    // a short window that does not fill the view: ask for more at once
    if (el.scrollHeight <= el.clientHeight + NEAR && conv.hasMore && !conv.loading) chat.loadOlder(conv);
  });

  useEffect(() => {
    const visible = () => {
      if (!document.hidden && chat.following) chat.seen(conv);
    };
    document.addEventListener("visibilitychange", visible);
    return () => document.removeEventListener("visibilitychange", visible);
  }, [conv]);

  const items = [];
  let prev = null;
  let markerDrawn = false;
  for (const m of conv.msgs) {
    if (conv.kind === "room" && chat.blocks.has(m.from)) continue;
    const day = dayKey(m.ts);
    if (!prev || dayKey(prev.ts) !== day) {
      items.push(html`<div class="day" role="separator" key=${`d${day}`}><span>${dayLabel(m.ts)}</span></div>`);
      prev = null;
    }
    if (!markerDrawn && conv.marker !== null && m.seq > conv.marker && m.from !== chat.me) {
      markerDrawn = true;
      items.push(html`<div class="new-line" role="separator" key="new" id="new-messages"><span>New messages</span></div>`);
      prev = null;
    }
    const compact = prev && prev.from === m.from && m.ts - prev.ts < 300 && !prev.deleted;
    items.push(html`<${Message} key=${m.seq} chat=${chat} conv=${conv} m=${m} compact=${compact} onEdit=${onEdit} />`);
    prev = m;
  }
  const firstUnread = chat.firstUnread(conv);

  const jumpUnread = async () => {
    if (firstUnread === null) return;
    const inWindow = conv.msgs.length && conv.msgs[0].seq <= firstUnread;
    if (inWindow) {
      const a = list.current.querySelector("#new-messages");
      if (a) list.current.scrollTop = Math.max(0, a.offsetTop - 16);
      return;
    }
    setJumpTarget(firstUnread);
    await chat.jump(conv, firstUnread);
  };
  const jumpLatest = async () => {
    if (conv.atEnd) {
      list.current.scrollTop = list.current.scrollHeight;
      chat.following = true;
      chat.seen(conv);
      chat.emit();
    } else await chat.jump(conv, null);
  };

  const empty = !conv.msgs.length && !conv.pending.length && !conv.loading;
  return html`
    <div class="list-wrap">
      ${conv.marker !== null && html`
        <div class="jump-unread">
          <button type="button" id="jump-unread" onClick=${jumpUnread}>Jump to first unread</button>
          <button type="button" class="link" onClick=${() => { conv.marker = null; chat.seen(conv); chat.emit(); }}>Mark as read</button>
        </div>`}
      <div class="messages" role="log" aria-label=${conv.kind === "room" ? `Messages in #${conv.key}` : `Conversation with ${conv.key}`}
        aria-busy=${conv.loading} tabindex="0" ref=${list} onScroll=${onScroll}>
        ${conv.hasMore && html`<p class="loading-older">${conv.loading ? "Loading older messages…" : "Scroll up for older messages"}</p>`}
        ${!conv.hasMore && conv.msgs.length > 0 && html`<p class="start">This is the beginning of ${conv.kind === "room" ? `#${conv.key}` : `your conversation with ${conv.key}`}.</p>`}
        ${empty && html`<p class="start">No messages yet. Say hello!</p>`}
        ${items}
        ${conv.atEnd && conv.pending.map((p) => html`<${Pending} key=${p.client_id} chat=${chat} conv=${conv} item=${p} />`)}
        ${!conv.atEnd && html`<p class="loading-newer">${conv.loading ? "Loading newer messages…" : "Scroll down for newer messages"}</p>`}
      </div>
      ${(!conv.atEnd || !chat.following) && conv.msgs.length > 0 && html`
        <button type="button" class="jump-latest" id="jump-latest" onClick=${jumpLatest}>Jump to latest ↓</button>`}
    </div>`;
}

// Mounted once per conversation (the Conversation is keyed by conv.id), so its state starts
// from that conversation's draft synchronously: nothing resets the text after the user has
// started typing. The draft outlives switching away and back.
function Composer({ chat, conv, editing, setEditing }) {
  const [text, setDraft] = useState(() => conv.draft || "");
  const setText = (value) => {
    if (!editing) conv.draft = value;
    setDraft(value);
  };
  const area = useRef(null);
  const max = chat.limits?.max_text || 4000;
  useEffect(() => {
    if (editing) {
      setDraft(editing.text || ""); // the edited text is not the conversation's draft
      area.current?.focus();
    }
  }, [editing]);
  useLayoutEffect(() => { area.current?.focus(); }, []);

  const uploads = chat.files.enabled ? chat.files.uploadsOf(conv) : [];
  const sendable = uploads.some((i) => i.state !== "failed" && !i.commit);
  const submit = async () => {
    const value = text.replace(/\s+$/, "");
    if (value.length > max) return;
    if (!editing && sendable) {
      chat.files.commit(conv, value.trim() ? value : ""); // the text is the first file's caption
      setText("");
      return;
    }
    if (!value.trim()) return;
    if (editing) {
      try {
        await chat.edit(conv, editing.seq, value);
        setEditing(null);
        setDraft(conv.draft || ""); // the draft the edit stood in front of comes back
      } catch (err) {
        chat.notice(err.message, "warning");
      }
      return;
    }
    chat.send(conv, value);
    setText("");
  };
  const onKey = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit();
    } else if (e.key === "ArrowUp" && !text && !editing) {
      const last = chat.lastOwn(conv);
      if (last) {
        e.preventDefault();
        setEditing(last);
      }
    } else if (e.key === "Escape" && editing) {
      e.preventDefault();
      setEditing(null);
      setDraft(conv.draft || "");
    }
  };
  const where = conv.kind === "room" ? `#${conv.key}` : conv.key;
  const placeholder = editing ? "Edit your message"
    : sendable ? "Add a caption (optional)" : `Message ${where}`;
  const rows = Math.min(8, text.split("\n").length);
  return html`
    <form class="composer" onSubmit=${(e) => { e.preventDefault(); submit(); }}>
      ${editing && html`<p class="editing" id="editing">Editing your message — Enter to save, Esc to cancel</p>`}
      <${UploadTray} chat=${chat} conv=${conv} />
      <div class="row">
        ${chat.files.enabled && html`<${AttachButton} chat=${chat} conv=${conv} disabled=${!!editing} />`}
        <textarea ref=${area} id="composer" rows=${rows} value=${text}
          aria-label=${editing ? "Edit message" : `Message ${where}`}
          placeholder=${placeholder}
          onInput=${(e) => setText(e.target.value)} onKeyDown=${onKey}
          onPaste=${(e) => { if (!editing) pasted(chat, conv, e); }}></textarea>
        <button type="submit" class="primary send"
          disabled=${(!text.trim() && !(sendable && !editing)) || text.length > max}>${editing ? "Save" : "Send"}</button>
      </div>
      ${text.length > max * 0.9 && html`<p class=${text.length > max ? "count over" : "count"}>${text.length} / ${max}</p>`}
    </form>`;
}

export function Conversation({ chat, conv }) {
  const [editing, setEditing] = useState(null);
  const [drop, over] = useDropZone(chat, conv);
  const where = conv.kind === "room" ? `#${conv.key}` : conv.key;
  return html`
    <section class=${`conversation${over ? " drop-over" : ""}`} ...${drop}
      aria-label=${conv.kind === "room" ? `Room ${conv.key}` : `Direct messages with ${conv.key}`}>
      ${over && html`<div class="drop-hint" aria-hidden="true"><span>Drop files to send them to ${where}</span></div>`}
      <${MessageList} chat=${chat} conv=${conv} onEdit=${setEditing} />
      <${Composer} chat=${chat} conv=${conv} editing=${editing} setEditing=${setEditing} />
    </section>`;
}
