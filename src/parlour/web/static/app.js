// Parlour's web client: plain ES modules, Preact + htm, served by `parlour serve` itself.
import { html, render, useState, useEffect } from "./html.js";
import { Chat, savedSession } from "./chat.js";
import { SignIn } from "./views/signin.js";
import { Shell } from "./views/shell.js";

const scheme = location.protocol === "https:" ? "wss:" : "ws:";
const chat = new Chat(`${scheme}//${location.host}/ws`);
window.parlour = chat; // for the browser's console (and the tests)
// leaving while files are going up (or waiting to be posted) asks first
window.addEventListener("beforeunload", (e) => {
  if (chat.files.busy) e.preventDefault();
});
const saved = savedSession(); // a reload: back in with this tab's session token
if (saved) chat.signIn(saved.username, null, false, saved.token);

function App() {
  const [, setVersion] = useState(0);
  useEffect(() => chat.subscribe(() => setVersion((v) => v + 1)), []);
  return chat.me ? html`<${Shell} chat=${chat} />` : html`<${SignIn} chat=${chat} />`;
}

const root = document.getElementById("app");
root.textContent = "";
render(html`<${App} />`, root);
