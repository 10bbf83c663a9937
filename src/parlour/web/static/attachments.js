// Files in chat, the views (the logic is in files.js, the tus client in tus.js): the attach
// button, the drop zone over the conversation, the upload tray (progress, cancel, retry)
// and a message's attachment (an image preview that opens the full image, or a download
// link with name, size and type). Nothing is drawn unless the server announces uploads
// (`upload_url` in its hello limits). Every name is a text node or an attribute value.
import { html, useState, useRef, useEffect } from "./html.js";
import { bytes } from "./format.js";
import { available } from "./files.js";
import { Dialog } from "./views/dialogs.js";

export { available };

// ------------------------------------------------------------------ a message's file

export function AttachmentList({ chat, message }) {
  const a = message.attachment;
  if (!a || message.deleted || !chat) return null;
  return html`<${Attachment} chat=${chat} a=${a} />`;
}

// A short badge for a file's kind: its extension ("PDF", "TXT"), or "FILE".
export function badge(name) {
  const dot = name.lastIndexOf(".");
  const ext = dot > 0 ? name.slice(dot + 1) : "";
  return /^[\p{L}\p{N}]{1,4}$/u.test(ext) ? ext.toUpperCase() : "FILE";
}

function describe(a) {
  return `${bytes(a.size)} · ${a.type || "unknown type"}`;
}

function Attachment({ chat, a }) {
  const [viewing, setViewing] = useState(false);
  const token = chat.files.accessToken();
  const name = a.name || "file";
  const download = token ? chat.files.url(a.id, token, { download: true }) : undefined;
  const link = html`<a class="file-name" href=${download} download=${name}
    aria-label=${`Download ${name}, ${bytes(a.size)}`} aria-disabled=${token ? undefined : "true"}>${name}</a>`;
  const meta = html`<span class="meta">${describe(a)}</span>`;
  if (a.thumbnail) {
    return html`<figure class="attachment image" data-file=${a.id}>
      <${Thumb} chat=${chat} a=${a} token=${token} onOpen=${() => setViewing(true)} />
      <figcaption>${link} ${meta}</figcaption>
      ${viewing && html`<${ImageViewer} chat=${chat} a=${a} close=${() => setViewing(false)} />`}
    </figure>`;
  }
  const open = a.inline && token
    ? html`<a class="open" href=${chat.files.url(a.id, token)} target="_blank" rel="noopener noreferrer"
        aria-label=${`Open ${name} in a new tab`}>Open</a>` : null;
  return html`<div class="attachment file" data-file=${a.id}>
    <span class="file-icon" aria-hidden="true">${badge(name)}</span>${link} ${meta} ${open}</div>`;
}

// The thumbnail: its URL is fixed when first drawn (a renewed token does not reload it); if
// it fails to load (an expired token), it is asked for once more with a fresh one.
function Thumb({ chat, a, token, onOpen }) {
  const [src, setSrc] = useState(null);
  const tries = useRef(0);
  useEffect(() => {
    if (!src && token) setSrc(chat.files.url(a.id, token, { thumbnail: true }));
  }, [src, token]);
  const failed = () => {
    if (tries.current >= 1) return;
    tries.current += 1;
    chat.files.token().then(() => setSrc(null)).catch(() => {});
  };
  return html`<button type="button" class="thumb" onClick=${onOpen} aria-label=${`View image ${a.name}`}>
    ${src ? html`<img src=${src} alt=${a.name} onLoad=${() => chat.emit()} onError=${failed} />`
      : html`<span class="thumb-wait" aria-hidden="true"></span>`}</button>`;
}

function ImageViewer({ chat, a, close }) {
  const token = chat.files.accessToken();
  const [src] = useState(() => (token ? chat.files.url(a.id, token) : null));
  return html`<${Dialog} title=${a.name} onClose=${close} wide=${true}>
    <div class="viewer">${src && html`<img class="full" src=${src} alt=${a.name} />`}</div>
    <p class="meta">${describe(a)} ${token && html` · <a href=${chat.files.url(a.id, token, { download: true })}
      download=${a.name}>Download</a>`}</p></${Dialog}>`;
}

// A pending message's file (uploaded, the message on its way).
export function PendingFile({ attachment }) {
  return html`<p class="attachment pending-file"><span class="file-icon" aria-hidden="true">${badge(attachment.name)}</span> ${attachment.name}
    <span class="meta"> ${bytes(attachment.size)}</span></p>`;
}

// ------------------------------------------------------------------ uploading

export function AttachButton({ chat, conv, disabled }) {
  const input = useRef(null);
  const picked = (e) => {
    const files = [...e.target.files];
    e.target.value = ""; // the same file may be picked again
    if (files.length) chat.files.add(conv, files);
  };
  return html`<button type="button" class="attach" id="attach" aria-label="Attach files"
      title="Attach files (or drop them on the conversation, or paste an image)" disabled=${disabled}
      onClick=${() => input.current?.click()}>+</button>
    <input ref=${input} type="file" multiple hidden id="file-input" tabindex="-1" aria-hidden="true" onChange=${picked} />`;
}

function carriesFiles(e) {
  return Boolean(e.dataTransfer && [...e.dataTransfer.types].includes("Files"));
}

// Drag and drop of files onto the conversation: handlers for its element, and whether files
// are being dragged over it (the hint is drawn).
export function useDropZone(chat, conv) {
  const [over, setOver] = useState(false);
  const depth = useRef(0);
  if (!chat.files.enabled) return [{}, false];
  const handlers = {
    onDragEnter: (e) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      depth.current += 1;
      setOver(true);
    },
    onDragOver: (e) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    },
    onDragLeave: (e) => {
      if (!carriesFiles(e)) return;
      depth.current = Math.max(0, depth.current - 1);
      if (!depth.current) setOver(false);
    },
    onDrop: (e) => {
      if (!carriesFiles(e)) return;
      e.preventDefault();
      depth.current = 0;
      setOver(false);
      const files = [...e.dataTransfer.files];
      if (files.length) chat.files.add(conv, files);
    },
  };
  return [handlers, over];
}

// Pasting files (a screenshot) into the message box uploads them.
export function pasted(chat, conv, e) {
  const files = [...(e.clipboardData?.files || [])];
  if (!files.length || !chat.files.enabled) return;
  e.preventDefault();
  chat.files.add(conv, files);
}

const STATUS = {
  waiting: () => "Waiting…",
  checking: () => "Starting…",
  uploading: (i) => `${bytes(i.sent)} of ${bytes(i.size)} (${i.size ? Math.floor((i.sent * 100) / i.size) : 100}%)`,
  retrying: () => "Connection lost, trying again…",
  done: (i) => (i.commit ? "Sending…" : "Uploaded: Send posts it"),
  failed: (i) => i.error,
};

export function UploadTray({ chat, conv }) {
  const items = chat.files.uploadsOf(conv);
  if (!items.length) return null;
  return html`<ul class="uploads" id="uploads" aria-label="Files to send">
    ${items.map((item) => html`<${UploadItem} key=${item.key} chat=${chat} item=${item} />`)}</ul>`;
}

function UploadItem({ chat, item }) {
  const busy = item.state !== "failed" && item.state !== "done";
  const status = STATUS[item.state](item);
  return html`<li class=${`upload ${item.state}`} data-state=${item.state}>
    <span class="file-name">${item.name}</span>
    <span class="meta size">${bytes(item.size)}</span>
    ${busy && html`<progress max=${item.size || 1} value=${item.sent} aria-label=${`Upload of ${item.name}`}></progress>`}
    <span class=${`status${item.state === "failed" ? " error" : ""}`} role=${item.state === "failed" ? "alert" : undefined}>${status}</span>
    <span class="buttons">
      ${item.state === "failed" && item.canRetry && html`<button type="button" class="small retry"
        aria-label=${`Retry the upload of ${item.name}`} onClick=${() => chat.files.retry(item)}>Retry</button>`}
      <button type="button" class="small cancel" aria-label=${`${busy ? "Cancel the upload of" : "Remove"} ${item.name}`}
        onClick=${() => chat.files.cancel(item)}>${busy ? "Cancel" : "Remove"}</button>
    </span>
  </li>`;
}
