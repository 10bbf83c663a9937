// Desktop notifications for mentions and direct messages while the tab is hidden, only if the
// user allowed them (Settings). The text is given to the browser as plain text.
export function canNotify() {
  return typeof Notification !== "undefined";
}

export function notifyPermission() {
  return canNotify() ? Notification.permission : "unsupported";
}

export async function askPermission() {
  if (!canNotify()) return "unsupported";
  return Notification.requestPermission();
}

export function notify(title, body, tag) {
  if (!canNotify() || Notification.permission !== "granted" || !document.hidden) return;
  try {
    const n = new Notification(title, { body: body.slice(0, 200), tag });
    n.onclick = () => {
      window.focus();
      n.close();
    };
  } catch {
    /* some browsers only allow notifications from a service worker */
  }
}
