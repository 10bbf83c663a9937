// Times, days and durations for display (the browser's locale and time zone).
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFmt = new Intl.DateTimeFormat(undefined, {
  weekday: "long", year: "numeric", month: "long", day: "numeric",
});
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export const time = (ts) => timeFmt.format(new Date(ts * 1000));
export const full = (ts) => fullFmt.format(new Date(ts * 1000));

export function dayKey(ts) {
  const d = new Date(ts * 1000);
  return `${d.getFullYear()}-${d.getMonth()}-${d.getDate()}`;
}

export function dayLabel(ts, now = Date.now() / 1000) {
  const key = dayKey(ts);
  if (key === dayKey(now)) return "Today";
  if (key === dayKey(now - 86400)) return "Yesterday";
  return dayFmt.format(new Date(ts * 1000));
}

export function ago(ts, now = Date.now() / 1000) {
  if (ts == null) return "never";
  const s = Math.max(0, now - ts);
  if (s < 60) return "just now";
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return full(ts);
}

export function until(ts) {
  return ts == null ? "permanently" : `until ${full(ts)}`;
}

// A size for people: "0 B", "512 B", "1.5 KB", "20 MB" (units of 1024, as file managers
// mostly show them).
const UNITS = ["B", "KB", "MB", "GB", "TB"];
const sizeFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export function bytes(n) {
  if (!Number.isFinite(n) || n < 0) return "?";
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : sizeFmt.format(value)} ${UNITS[unit]}`;
}
