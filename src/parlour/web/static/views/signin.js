// Welcome: sign in or sign up. The password stays in memory only (for reconnects).
import { html, useState, useRef, useEffect } from "../html.js";
import { until } from "../format.js";

export function SignIn({ chat }) {
  const [mode, setMode] = useState("signin");
  const [name, setName] = useState(chat.lastUser || "");
  const [password, setPassword] = useState("");
  const [confirm, setConfirm] = useState("");
  const [local, setLocal] = useState(null);
  const first = useRef(null);
  const busy = chat.phase === "connecting";
  useEffect(() => first.current?.focus(), [mode]);

  const submit = (ev) => {
    ev.preventDefault();
    setLocal(null);
    if (!/^[A-Za-z0-9_.\-]{1,32}$/.test(name)) {
      setLocal("User names are 1–32 letters, digits, '_', '-' or '.'.");
      return;
    }
    if (mode === "signup" && password !== confirm) {
      setLocal("The two passwords differ.");
      return;
    }
    chat.signIn(name, password, mode === "signup");
  };

  const ended = chat.ended;
  let banner = null;
  if (ended?.code === "banned") {
    const why = ended.reason ? `: ${ended.reason}` : "";
    banner = `You were banned${ended.by ? ` by ${ended.by}` : ""} ${until(ended.until)}${why}`;
  } else if (ended?.code === "kicked") {
    banner = `You were disconnected by ${ended.by || "an administrator"}${ended.reason ? `: ${ended.reason}` : ""}. You may sign in again.`;
  } else if (ended?.code === "logged_out") {
    banner = ended.reason;
  }
  const error = local || (ended && chat.authError === ended.reason ? null : chat.authError);
  const signup = mode === "signup";
  const min = chat.limits?.password_min_length || 8;

  return html`
    <main class="welcome">
      <form class="card" onSubmit=${submit} aria-labelledby="welcome-title">
        <h1 id="welcome-title"><span class="logo" aria-hidden="true"></span> Parlour</h1>
        ${banner && html`<p class="alert" role="alert" id="ended">${banner}</p>`}
        <div class="tabs" role="tablist">
          <button type="button" role="tab" aria-selected=${!signup} onClick=${() => setMode("signin")}>Sign in</button>
          <button type="button" role="tab" aria-selected=${signup} onClick=${() => setMode("signup")}>Create account</button>
        </div>
        <label>User name
          <input ref=${first} name="username" autocomplete="username" required maxlength="32"
            value=${name} onInput=${(e) => setName(e.target.value)} /></label>
        <label>Password
          <input name="password" type="password" required maxlength="1024"
            autocomplete=${signup ? "new-password" : "current-password"}
            minlength=${signup ? min : 1}
            value=${password} onInput=${(e) => setPassword(e.target.value)} /></label>
        ${signup && html`<label>Repeat password
          <input name="confirm" type="password" required autocomplete="new-password"
            value=${confirm} onInput=${(e) => setConfirm(e.target.value)} /></label>`}
        ${error && html`<p class="error" role="alert" id="auth-error">${error}</p>`}
        <button class="primary" type="submit" disabled=${busy}>
          ${busy ? "Connecting…" : signup ? "Create account" : "Sign in"}</button>
        ${signup && html`<p class="hint">At least ${min} characters.</p>`}
      </form>
    </main>`;
}
