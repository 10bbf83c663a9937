// A small markdown subset for message text: **bold**, *italic* / _italic_, `code`,
// [text](url), bare http(s) links and @mentions. It returns Preact nodes built from strings,
// so user text is always a text node: there is no HTML path. Links keep only http:, https:
// and mailto: targets; anything else (javascript:, data:, ...) stays literal text.
import { html } from "./html.js";

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

export function safeUrl(raw) {
  let url;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
}

// Order matters: code first (nothing is parsed inside it), then links, then emphasis.
const TOKEN = new RegExp(
  [
    "`([^`\\n]+)`", // 1 code
    "\\[([^\\]\\n]{1,300})\\]\\(([^)\\s]{1,2000})\\)", // 2 text, 3 url
    "(https?:\\/\\/[^\\s<>()\\[\\]]+[^\\s<>()\\[\\].,;:!?'\"])", // 4 bare link
    "\\*\\*([^*\\n](?:[^\\n]*?[^*\\n])?)\\*\\*", // 5 bold
    "(?<![\\w*])\\*([^*\\s](?:[^*\\n]*?[^*\\s])?)\\*(?![\\w*])", // 6 italic *x*
    "(?<![\\w_])_([^_\\s](?:[^_\\n]*?[^_\\s])?)_(?![\\w_])", // 7 italic _x_
    "(?<![\\w@])@([A-Za-z0-9_.\\-]{1,32})", // 8 mention
  ].join("|"),
  "g",
);

function link(href, label, key) {
  return html`<a key=${key} href=${href} target="_blank" rel="noopener noreferrer nofollow ugc">${label}</a>`;
}

// Returns [nodes, mentionsMe].
export function renderText(text, me, depth = 0) {
  const out = [];
  let mentioned = false;
  let last = 0;
  const meLower = me ? me.toLowerCase() : null;
  const re = new RegExp(TOKEN.source, "g");
  let m;
  while ((m = re.exec(text)) !== null) {
    if (m.index > last) out.push(text.slice(last, m.index));
    const key = out.length;
    if (m[1] !== undefined) {
      out.push(html`<code key=${key}>${m[1]}</code>`);
    } else if (m[2] !== undefined) {
      const href = safeUrl(m[3]);
      if (href && depth === 0) {
        const [inner, men] = renderText(m[2], me, depth + 1);
        mentioned ||= men;
        out.push(link(href, inner, key));
      } else out.push(m[0]);
    } else if (m[4] !== undefined) {
      const href = safeUrl(m[4]);
      out.push(href && depth === 0 ? link(href, m[4], key) : m[4]);
    } else if (m[5] !== undefined || m[6] !== undefined || m[7] !== undefined) {
      const inner = m[5] ?? m[6] ?? m[7];
      const [nodes, men] = depth < 3 ? renderText(inner, me, depth + 1) : [[inner], false];
      mentioned ||= men;
      out.push(m[5] !== undefined
        ? html`<strong key=${key}>${nodes}</strong>`
        : html`<em key=${key}>${nodes}</em>`);
    } else if (m[8] !== undefined) {
      const self = meLower !== null && m[8].toLowerCase() === meLower;
      mentioned ||= self;
      out.push(html`<span key=${key} class=${self ? "mention me" : "mention"}>@${m[8]}</span>`);
    }
    last = re.lastIndex;
  }
  if (last < text.length) out.push(text.slice(last));
  return [out, mentioned];
}

export function mentions(text, me) {
  if (!me || !text) return false;
  const re = new RegExp(`(?<![\\w@])@${me.replace(/[.\-]/g, "\\$&")}(?![A-Za-z0-9_.\\-])`, "i");
  return re.test(text);
}
