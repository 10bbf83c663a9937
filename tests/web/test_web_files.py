"""Files in chat in the web client (issue 13), in real headless Chromium against a real server:
uploads by the attach button, by drag and drop and by paste, progress, cancel, resume after a
dropped connection, refusals before any byte is sent, previews and downloads on the other
side (the bytes checked), hostile file names, deleted messages."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from browser_helpers import (
    PHONE,
    chat_server,
    expect,
    join,
    message,
    needs_chromium,
    open_conv,
    pages,
    playwright_api,
    send,
    shot,
    sign_up,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Request, Route

pytestmark = needs_chromium()


def png(width: int, height: int) -> bytes:
    """A real PNG (a colour gradient), made without Pillow."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = bytearray()
    for y in range(height):
        raw.append(0)
        for x in range(width):
            raw += bytes((x * 255 // width, y * 255 // height, 160))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(raw)))
        + chunk(b"IEND", b"")
    )


def text_file(size: int) -> bytes:
    line = b"The quick brown fox jumps over the lazy dog. 0123456789\n"
    return (line * (size // len(line) + 1))[:size]


async def pick(page: Page, name: str, mime: str, data: bytes) -> None:
    """Attach a file with the attach button (the browser's file chooser)."""
    async with page.expect_file_chooser() as chooser:
        await page.click("#attach")
    await (await chooser.value).set_files(files=[{"name": name, "mimeType": mime, "buffer": data}])


async def drop(page: Page, name: str, mime: str, data: bytes) -> None:
    """Drag a file over the conversation and drop it (a DataTransfer with a File)."""
    transfer = await page.evaluate_handle(
        """([name, type, b64]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, { type }));
            return dt;
        }""",
        [name, mime, base64.b64encode(data).decode()],
    )
    await page.dispatch_event("section.conversation", "dragenter", {"dataTransfer": transfer})
    await expect(page.locator(".drop-hint")).to_be_visible()
    await page.dispatch_event("section.conversation", "dragover", {"dataTransfer": transfer})
    await page.dispatch_event("section.conversation", "drop", {"dataTransfer": transfer})
    await expect(page.locator(".drop-hint")).to_have_count(0)


async def download(page: Page, link: Any) -> tuple[str, bytes]:
    async with page.expect_download() as info:
        await link.click()
    got = await info.value
    path = await got.path()
    return got.suggested_filename, Path(path).read_bytes()


class Traffic:
    """The files requests a page makes (method and path), and a gate that holds PATCHes."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        self.hold_from: int | None = None  # hold PATCHes from this (1-based) one on
        self.held = asyncio.Event()
        self.release = asyncio.Event()
        self.drop: set[int] = set()  # answer these PATCHes with a dropped connection
        self.expire: set[int] = set()  # answer these PATCHes 401 (the token expired)
        self.bearers: list[str] = []  # the Authorization of every PATCH
        self.patches = 0

    async def attach(self, page: Page) -> None:
        page.on("request", self._request)
        await page.route("**/files/uploads/*", self._route)

    def _request(self, request: Request) -> None:
        path = request.url.split("://", 1)[1].split("/", 1)[1]
        if path.startswith("files/"):
            self.seen.append((request.method, "/" + path.split("?", 1)[0]))

    async def _route(self, route: Route) -> None:
        if route.request.method == "PATCH":
            self.patches += 1
            n = self.patches
            self.bearers.append(route.request.headers.get("authorization", ""))
            if n in self.expire:
                await route.fulfill(status=401, headers={"WWW-Authenticate": "Bearer"})
                return
            if n in self.drop:
                await route.abort("connectionreset")
                return
            if self.hold_from is not None and n >= self.hold_from:
                self.held.set()
                await self.release.wait()
        # the page may have given up on this request meanwhile (a cancelled upload)
        with contextlib.suppress(playwright_api.Error):
            await route.continue_()

    def methods(self) -> list[str]:
        return [m for m, _ in self.seen]


async def users(p: Any, url: str, room: str = "general") -> tuple[Page, Page]:
    alice, bob = await p.new(url), await p.new(url)
    for page in (alice, bob):
        # Playwright turns on file-chooser interception when a listener appears, without
        # waiting for it: a keyboard press right after expect_file_chooser() could beat it
        # (the native chooser opens, no event). A listener from the start keeps it on.
        page.on("filechooser", lambda _: None)
    await sign_up(alice, "alice")
    await sign_up(bob, "bob")
    await join(alice, room)
    await join(bob, room)
    await expect(alice.locator("#attach")).to_be_visible()
    return alice, bob


async def test_button_and_drop_uploads_with_progress_previews_and_downloads(
    browser: Browser, tmp_path: Path
) -> None:
    image = png(480, 360)
    notes = text_file(300_000)
    async with chat_server(data_dir=tmp_path) as srv, pages(browser) as p:
        assert srv.web is not None
        alice, bob = await users(p, srv.web.url)
        traffic = Traffic()
        await traffic.attach(alice)

        # an image by the button, posted with a caption
        await pick(alice, "holiday.png", "image/png", image)
        item = alice.locator("#uploads li.upload")
        await expect(item).to_have_attribute("data-state", "done")
        await expect(item).to_contain_text("holiday.png")
        await expect(alice.locator("#composer")).to_have_attribute(
            "placeholder", "Add a caption (optional)"
        )
        await send(alice, "the view from the hotel")
        await expect(alice.locator("#uploads")).to_have_count(0)
        shown = message(bob, 1)
        await expect(shown.locator(".text")).to_have_text("the view from the hotel")
        thumb = shown.locator(".attachment.image .thumb img")
        await expect(thumb).to_have_attribute("alt", "holiday.png")
        await expect(thumb).to_have_js_property("complete", True)
        thumb_width = await thumb.evaluate("img => img.naturalWidth")
        assert 0 < thumb_width <= 320  # the server's thumbnail, not the 480 px original
        await expect(shown.locator(".attachment")).to_contain_text("image/png")
        await shot(bob, "files-preview")
        # the preview opens the full image (keyboard: it is a button)
        await shown.locator(".thumb").focus()
        await bob.keyboard.press("Enter")
        full = bob.locator("dialog .viewer img.full")
        await expect(full).to_have_js_property("complete", True)
        assert await full.evaluate("img => img.naturalWidth") == 480
        await bob.keyboard.press("Escape")
        await expect(bob.locator("dialog")).to_have_count(0)
        name, got = await download(bob, shown.locator("a.file-name"))
        assert (name, got) == ("holiday.png", image)

        # a text file dropped on the conversation, progress on the way, no caption
        await alice.evaluate("window.parlour.files.chunkSize = 65536")
        traffic.patches = 0
        traffic.hold_from = 2
        await drop(alice, "notes.txt", "text/plain", notes)
        await asyncio.wait_for(traffic.held.wait(), 15)
        bar = alice.locator("#uploads progress")
        await expect(bar).to_be_visible()
        await expect(bar).to_have_attribute("value", "65536")
        await expect(bar).to_have_attribute("max", str(len(notes)))
        await expect(alice.locator("#uploads .status")).to_contain_text("64 KB of 293 KB (21%)")
        await shot(alice, "files-progress")
        await send(alice, "")  # Send with an upload still going: posted when it is done
        await expect(alice.locator("#uploads .status")).to_contain_text("64 KB")
        traffic.release.set()
        shown = message(bob, 2)
        link = shown.locator(".attachment.file a.file-name")
        await expect(link).to_have_text("notes.txt")
        await expect(shown.locator(".text")).to_have_count(0)
        await expect(shown.locator(".attachment")).to_contain_text("293 KB")
        await expect(shown.locator(".attachment a.open")).to_be_visible()  # text is inline
        name, got = await download(bob, link)
        assert (name, got) == ("notes.txt", notes)
        # a phone: previews, links and the tray fit the screen
        await bob.set_viewport_size(PHONE)
        await pick(bob, "a file with a rather long name, " + "x" * 60 + ".txt", "text/plain", notes)
        await expect(bob.locator("#uploads li.upload")).to_have_attribute("data-state", "done")
        width = await bob.evaluate("document.scrollingElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways ({width} px)"
        await shot(bob, "files-phone")
        # after a reload the files come with the history
        await bob.reload()
        again = message(bob, 1).locator(".thumb img")
        await expect(again).to_have_js_property("complete", True)
        assert await again.evaluate("img => img.naturalWidth") == thumb_width
        await expect(message(bob, 2).locator("a.file-name")).to_have_text("notes.txt")
        # one PATCH for the image (4 MB chunks), 5 of 64 KB for the text file
        assert traffic.methods().count("PATCH") == 1 + 5
        assert traffic.methods().count("POST") == 2


async def test_paste_cancel_and_resume_after_a_dropped_connection(
    browser: Browser, tmp_path: Path
) -> None:
    data = text_file(200_000)
    async with chat_server(data_dir=tmp_path) as srv, pages(browser) as p:
        assert srv.web is not None
        alice, bob = await users(p, srv.web.url)
        traffic = Traffic()
        await traffic.attach(alice)
        await alice.evaluate("window.parlour.files.chunkSize = 65536")

        # cancel: the upload stops and the server forgets it (tus DELETE)
        traffic.hold_from = 2
        await pick(alice, "cancel-me.txt", "text/plain", data)
        await asyncio.wait_for(traffic.held.wait(), 15)
        async with alice.expect_response(lambda r: r.request.method == "DELETE") as deleted:
            await alice.get_by_role("button", name="Cancel the upload of cancel-me.txt").click()
        assert (await deleted.value).status == 204
        await expect(alice.locator("#uploads")).to_have_count(0)
        traffic.release.set()

        # a dropped connection in the middle: HEAD for the offset, then on from there
        traffic.hold_from = None
        traffic.seen.clear()
        traffic.patches = 0
        traffic.drop = {2}
        await alice.focus("#composer")
        await alice.evaluate(
            """(b64) => {
                const dt = new DataTransfer();
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], "resumed.txt", { type: "text/plain" }));
                const paste = new ClipboardEvent("paste", { clipboardData: dt, bubbles: true,
                  cancelable: true });
                document.getElementById("composer").dispatchEvent(paste);
            }""",
            base64.b64encode(data).decode(),
        )
        await expect(alice.locator("#uploads li.upload")).to_have_attribute("data-state", "done")
        methods = traffic.methods()
        assert methods[:3] == ["POST", "PATCH", "PATCH"] and "HEAD" in methods, methods
        await send(alice, "this one made it")
        link = message(bob, 1).locator("a.file-name")
        await expect(link).to_have_text("resumed.txt")
        _, got = await download(bob, link)
        assert got == data

        # in a DM: the link stays down past the retries; Retry goes on from the server's offset
        await alice.click("#new-dm")
        await alice.fill("#dm-to", "bob")
        await alice.press("#dm-to", "Enter")
        await expect(alice.locator("#composer")).to_have_attribute("aria-label", "Message bob")
        await alice.evaluate("window.parlour.files.retryDelays = [0]")
        traffic.seen.clear()
        traffic.patches = 0
        traffic.drop = {2, 3}
        await pick(alice, "dm.txt", "text/plain", data)
        item = alice.locator("#uploads li.upload")
        await expect(item).to_have_attribute("data-state", "failed")
        await expect(item.get_by_role("alert")).to_contain_text("Connection lost")
        await item.get_by_role("button", name="Retry the upload of dm.txt").click()
        await expect(item).to_have_attribute("data-state", "done")
        assert traffic.methods().count("POST") == 1  # the same upload, resumed
        assert traffic.methods().count("HEAD") == 2
        await send(alice, "for your eyes only")
        await open_conv(bob, "dm:alice")
        link = message(bob, 1).locator("a.file-name")
        await expect(link).to_have_text("dm.txt")
        _, got = await download(bob, link)
        assert got == data

        # the token expires in the middle (401): a new one over the chat, and on from the offset
        traffic.patches = 0
        traffic.drop = set()
        traffic.expire = {2}
        traffic.bearers.clear()
        traffic.seen.clear()
        await pick(alice, "late.txt", "text/plain", data)
        await expect(alice.locator("#uploads li.upload")).to_have_attribute("data-state", "done")
        first, _, after = traffic.bearers[:3]
        assert first.startswith("Bearer ") and after.startswith("Bearer ") and first != after
        assert traffic.methods()[:4] == ["POST", "PATCH", "PATCH", "HEAD"]
        await send(alice, "")
        link = message(bob, 2).locator("a.file-name")
        await expect(link).to_have_text("late.txt")
        _, got = await download(bob, link)
        assert got == data
        p.errors[:] = [e for e in p.errors if "status of 401" not in e]  # the browser logs it


async def test_refusals_before_any_byte_is_sent(browser: Browser, tmp_path: Path) -> None:
    async with (
        chat_server(
            data_dir=tmp_path, max_file_size=100_000, user_quota=150_000, max_concurrent_uploads=1
        ) as srv,
        pages(browser) as p,
    ):
        assert srv.web is not None
        alice, _ = await users(p, srv.web.url)
        traffic = Traffic()
        await traffic.attach(alice)
        # over the size limit: said at once, nothing sent
        await pick(alice, "huge.bin", "application/octet-stream", bytes(100_001))
        item = alice.locator("#uploads li.upload")
        await expect(item).to_have_attribute("data-state", "failed")
        await expect(item.get_by_role("alert")).to_contain_text("huge.bin is too large")
        await expect(item.locator(".retry")).to_have_count(0)
        await expect(alice.locator("button.send")).to_be_disabled()
        await alice.get_by_role("button", name="Remove huge.bin").click()
        await expect(alice.locator("#uploads")).to_have_count(0)
        # one unfinished upload at a time (the server's limit): the second file waits its turn
        async with alice.expect_file_chooser() as chooser:
            await alice.click("#attach")
        await (await chooser.value).set_files(
            files=[
                {"name": f"{n}.txt", "mimeType": "text/plain", "buffer": text_file(1000 + n)}
                for n in (1, 2)
            ]
        )
        await expect(alice.locator("#uploads li[data-state=done]")).to_have_count(2)
        await send(alice, "two at once")
        await expect(alice.locator(".messages .attachment")).to_have_count(2)
        await expect(alice.locator(".messages .text")).to_have_text(["two at once"])
        # when both were let through by file_token, the server refused the second at creation
        # (403, which the browser logs) and the page asked again and waited: expected here
        p.errors[:] = [e for e in p.errors if "status of 403" not in e]
        await expect(alice.locator("#uploads")).to_have_count(0)
        # an empty file is a file too
        await pick(alice, "empty.txt", "text/plain", b"")
        await expect(alice.locator("#uploads li.upload")).to_have_attribute("data-state", "done")
        await send(alice, "")
        await expect(message(alice, 3).locator(".attachment")).to_contain_text("0 B")
        # exactly the limit fits; then the quota is full: the server says so before any byte
        await pick(alice, "first.bin", "application/octet-stream", bytes(100_000))
        await expect(item).to_have_attribute("data-state", "done")
        await send(alice, "")
        await expect(message(alice, 4).locator(".attachment")).to_be_visible()
        before = len(traffic.seen)
        await pick(alice, "second.bin", "application/octet-stream", bytes(60_000))
        await expect(item).to_have_attribute("data-state", "failed")
        await expect(item.get_by_role("alert")).to_contain_text("quota")
        assert traffic.methods()[before:] == []


HOSTILE_NAME = "<img src=x onerror=window.__pwned=1>.html"
#: what the server keeps of it (no characters Windows refuses in names)
HOSTILE_KEPT = "_img src=x onerror=window.__pwned=1_.html"
HOSTILE_BODY = b"<!doctype html><script>parent.__pwned = 1</script><img src=x onerror=alert(1)>"
#: survives the server's sanitising as it is: entities and quotes must stay text
ENTITY_NAME = "&lt;b&gt;x&amp;y' onmouseover='window.__pwned=1'.svg"
SVG_BODY = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="parent.__pwned=1">'
    b"<script>parent.__pwned=1</script></svg>"
)


async def test_hostile_names_are_text_and_deleted_messages_drop_their_files(
    browser: Browser, tmp_path: Path
) -> None:
    async with chat_server(data_dir=tmp_path) as srv, pages(browser) as p:
        assert srv.web is not None
        alice, bob = await users(p, srv.web.url)
        # the attach button works from the keyboard
        await alice.focus("#composer")
        await alice.keyboard.press("Shift+Tab")
        await expect(alice.locator("#attach")).to_be_focused()
        async with alice.expect_file_chooser() as chooser:
            await alice.keyboard.press("Enter")
        await (await chooser.value).set_files(
            files=[{"name": HOSTILE_NAME, "mimeType": "text/html", "buffer": HOSTILE_BODY}]
        )
        await expect(alice.locator("#uploads .file-name")).to_have_text(HOSTILE_NAME)
        await expect(alice.locator("#uploads li.upload")).to_have_attribute("data-state", "done")
        await send(alice, "<b>caption</b>")
        await pick(alice, ENTITY_NAME, "image/svg+xml", SVG_BODY)
        await expect(alice.locator("#uploads li.upload")).to_have_attribute("data-state", "done")
        await send(alice, "")
        shown = message(bob, 1)
        link = shown.locator("a.file-name")
        await expect(link).to_have_text(HOSTILE_KEPT)
        await expect(shown.locator(".text")).to_have_text("<b>caption</b>")
        await expect(shown.locator("a.open")).to_have_count(0)  # HTML is never inline
        svg = message(bob, 2)
        await expect(svg.locator("a.file-name")).to_have_text(ENTITY_NAME)
        await expect(svg.locator("a.file-name")).to_have_attribute("download", ENTITY_NAME)
        await expect(svg.locator("a.open")).to_have_count(0)  # nor is SVG
        await expect(svg.locator(".thumb")).to_have_count(0)
        for page in (alice, bob):
            found = await page.eval_on_selector_all(".messages img, .messages b", "e => e.length")
            assert found == 0
        _, got = await download(bob, link)
        assert got == HOSTILE_BODY
        _, got = await download(bob, svg.locator("a.file-name"))
        assert got == SVG_BODY
        for page in (alice, bob):
            assert await page.evaluate("window.__pwned") is None
        # the message is deleted: the file goes from the view, and its URL stops working
        href = await link.get_attribute("href")
        assert href is not None
        served = await bob.request.get(href.replace("&download=1", ""))
        assert served.status == 200 and served.headers["content-disposition"].startswith(
            "attachment"
        )
        await message(alice, 1).hover()
        await message(alice, 1).locator("button.delete").click()
        await expect(shown.locator(".tombstone")).to_have_text("message deleted")
        await expect(shown.locator(".attachment")).to_have_count(0)
        assert (await bob.request.get(href)).status in (403, 404)
        assert await alice.evaluate("window.parlour.files.items.length") == 0
