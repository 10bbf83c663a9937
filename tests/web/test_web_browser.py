"""The web client in real headless Chromium (Playwright), two and three users in separate
browser contexts against a real server (memory store) started in the test."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from browser_helpers import (
    ADMIN_PASSWORD,
    PHONE,
    Bot,
    expect,
    join,
    message,
    needs_chromium,
    open_conv,
    pages,
    send,
    seqs,
    shot,
    sign_in,
    sign_up,
)

if TYPE_CHECKING:
    from playwright.async_api import Browser

from browser_helpers import chat_server

pytestmark = needs_chromium()


def badge(page, conv: str):  # type: ignore[no-untyped-def]
    return page.locator(f"[data-conv='{conv}'] .badge.unread")


async def test_two_users_talk_and_unread_counts_move(browser: Browser) -> None:
    async with chat_server() as srv, pages(browser) as p:
        assert srv.web is not None
        alice = await p.new(srv.web.url)
        bob = await p.new(srv.web.url)
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        for page in (alice, bob):
            await join(page, "general")
            await join(page, "random")
        await expect(bob.locator("#conv-title")).to_have_text("# random")
        await open_conv(alice, "room:general")
        for text in ("first", "hey @bob, look", "third"):
            await send(alice, text)
        await expect(message(alice, 3)).to_contain_text("third")
        # bob is in #random: #general counts three unread, one of them mentions him
        await expect(badge(bob, "room:general")).to_have_text("3")
        await expect(bob.locator("[data-conv='room:general'] .badge.mention")).to_have_text("@1")
        await expect(bob).to_have_title("(3) Parlour")
        await open_conv(bob, "room:general")
        await expect(bob.locator("#new-messages")).to_be_visible()
        await expect(badge(bob, "room:general")).to_have_count(0)
        await expect(bob).to_have_title("Parlour")
        assert await seqs(bob) == [1, 2, 3]
        await expect(message(bob, 2).locator(".mention.me")).to_have_text("@bob")
        await expect(message(bob, 2)).to_have_class(re.compile("mentioned"))
        # the new-messages line sits before the first unread message
        order = await bob.eval_on_selector_all(
            ".messages > *", "els => els.map(e => e.id || e.dataset.seq || '')"
        )
        assert order.index("new-messages") == order.index("1") - 1
        await send(bob, "hi alice")
        await expect(message(alice, 4)).to_contain_text("hi alice")
        await expect(badge(alice, "room:general")).to_have_count(0)  # alice is looking at it
        # members and who is online
        await expect(alice.locator("#member-list")).to_contain_text("bob")
        await expect(alice.locator("#online-list")).to_contain_text("bob")
        await alice.click("#recent-tab")
        await expect(alice.locator("#recent-list")).to_contain_text("bob")


async def test_dm_to_an_offline_user_edit_delete_keyboard_and_block(browser: Browser) -> None:
    async with chat_server() as srv, pages(browser) as p:
        assert srv.web is not None
        alice, bob, carol = [await p.new(srv.web.url) for _ in range(3)]
        await sign_up(carol, "carol")
        await carol.click(".user-menu summary")
        await carol.click("#sign-out")  # carol is offline from now on
        await expect(carol.locator("form.card")).to_be_visible()
        await sign_up(alice, "alice")
        await sign_up(bob, "bob")
        await join(alice, "general")
        await join(bob, "general")

        # a DM to carol, who is offline: delivered at her next sign-in
        await alice.click("#new-dm")
        await alice.fill("#dm-to", "carol")
        await alice.press("#dm-to", "Enter")
        await expect(alice.locator("#conv-title")).to_have_text("@ carol")
        await send(alice, "lunch tomorrow?")
        await expect(message(alice, 1)).to_contain_text("lunch tomorrow?")
        await sign_in(carol, "carol")
        await expect(badge(carol, "dm:alice")).to_have_text("1")
        await open_conv(carol, "dm:alice")
        await expect(message(carol, 1)).to_contain_text("lunch tomorrow?")

        # a draft stays with its conversation while another one is open
        await alice.fill("#composer", "half a thought")
        await open_conv(alice, "room:general")
        await expect(alice.locator("#composer")).to_have_value("")
        await open_conv(alice, "dm:carol")
        await expect(alice.locator("#composer")).to_have_value("half a thought")
        await alice.fill("#composer", "")

        # keyboard: Shift+Enter is a newline, Enter sends, ArrowUp edits the last own message
        await open_conv(alice, "room:general")
        await alice.fill("#composer", "line one")
        await alice.press("#composer", "Shift+Enter")
        await alice.keyboard.type("line two")
        await alice.press("#composer", "Enter")
        await expect(message(bob, 1).locator(".text")).to_have_text("line one\nline two")
        await alice.press("#composer", "ArrowUp")
        await expect(alice.locator("#editing")).to_be_visible()
        await expect(alice.locator("#composer")).to_have_value("line one\nline two")
        await alice.fill("#composer", "line one (fixed)")
        await alice.press("#composer", "Enter")
        await expect(message(bob, 1).locator(".text")).to_have_text("line one (fixed)")
        await expect(message(bob, 1).locator(".edited")).to_be_visible()
        await alice.press("#composer", "ArrowUp")
        await alice.press("#composer", "Escape")
        await expect(alice.locator("#editing")).to_have_count(0)
        # an edit started from the message's button steps in front of a draft, not over it
        await alice.fill("#composer", "not sent yet")
        await message(alice, 1).hover()
        await message(alice, 1).locator("button.edit").click()
        await expect(alice.locator("#composer")).to_have_value("line one (fixed)")
        await alice.press("#composer", "Escape")
        await expect(alice.locator("#composer")).to_have_value("not sent yet")
        await alice.fill("#composer", "")
        # delete: the other side sees a tombstone; bob cannot edit or delete alice's message
        await expect(message(bob, 1).locator("button")).to_have_count(0)
        await message(alice, 1).hover()
        await message(alice, 1).locator("button.delete").click()
        await expect(message(bob, 1).locator(".tombstone")).to_have_text("message deleted")

        # bob blocks alice: her next room message never reaches him; carol still sees it
        await join(carol, "general")
        await bob.click("#member-list >> text=alice")
        await bob.click("#block-toggle")
        await expect(bob.locator("dialog")).to_contain_text("alice is blocked")
        await bob.click("dialog .close")
        await send(alice, "can anyone hear me")
        await expect(message(carol, 2)).to_contain_text("can anyone hear me")
        await send(carol, "I can")
        await expect(message(bob, 3)).to_contain_text("I can")
        assert 2 not in await seqs(bob)


async def test_admin_moderation_and_the_banned_users_page(browser: Browser) -> None:
    async with chat_server() as srv, pages(browser) as p:
        assert srv.web is not None
        admin, mallory = await p.new(srv.web.url), await p.new(srv.web.url)
        await sign_in(admin, "admin", ADMIN_PASSWORD)  # the printed first password works
        await join(admin, "general")
        await sign_up(mallory, "mallory")
        await join(mallory, "general")

        # rooms: create, rename
        await admin.click(".user-menu summary")
        await admin.click("#open-admin")
        await admin.fill("#new-room", "ops")
        await admin.press("#new-room", "Enter")
        await expect(admin.locator("dialog table")).to_contain_text("ops")
        await admin.fill("input[aria-label='New name for ops']", "operations")
        await (
            admin.get_by_role("row", name=re.compile("ops"))
            .get_by_role("button", name="Rename")
            .click()
        )
        await expect(admin.locator("dialog table")).to_contain_text("operations")
        await admin.click("#admin-tab-broadcast")
        await admin.fill("#broadcast-text", "maintenance at noon")
        await admin.click("dialog form button[type=submit]")
        await expect(mallory.locator(".notice.broadcast")).to_contain_text("maintenance at noon")
        await admin.click("dialog .close")

        # kick: mallory's page says so and she may sign in again
        await admin.click("#member-list >> text=mallory")
        await admin.fill("#mod-reason", "calm down")
        await admin.click("#kick")
        await expect(mallory.locator("#ended")).to_contain_text("calm down")
        await expect(mallory.locator("#ended")).to_contain_text("admin")
        await admin.click("dialog .close")
        await sign_in(mallory, "mallory")

        # ban with a duration and a reason: the page says until when and why
        await admin.click("#member-list >> text=mallory")
        await admin.fill("#mod-reason", "spam")
        await admin.select_option("#ban-duration", "86400")
        await admin.click("#ban")
        await expect(mallory.locator("#ended")).to_contain_text("banned by admin until")
        await expect(mallory.locator("#ended")).to_contain_text("spam")
        await mallory.fill("input[name=password]", "password-123")
        await mallory.click("form.card button[type=submit]")
        await expect(mallory.locator("#auth-error")).to_contain_text("banned")
        await admin.click("dialog .close")

        # bans list, unban, audit log
        await admin.click(".user-menu summary")
        await admin.click("#open-admin")
        await admin.click("#admin-tab-bans")
        await expect(admin.locator("#bans")).to_contain_text("mallory")
        await admin.locator("#bans").get_by_role("button", name="Unban").click()
        await expect(admin.locator("dialog")).to_contain_text("Nobody is banned")
        await admin.click("#admin-tab-audit")
        for action in ("room_create", "room_rename", "broadcast", "kick", "ban", "unban"):
            await expect(admin.locator("#audit")).to_contain_text(action)
        await admin.click("dialog .close")
        await mallory.click("form.card button[type=submit]")
        await expect(mallory.locator("#conv-title")).to_be_visible()


HOSTILE = [
    "<img src=x onerror=window.__pwned=1>",
    "<script>window.__pwned=1</script>",
    "[click me](javascript:window.__pwned=1)",
    "[case](JaVaScRiPt:window.__pwned=1)",
    "[data](data:text/html,<script>window.__pwned=1</script>)",
    '<a href="javascript:window.__pwned=1">link</a>',
    "**<b>bold?</b>** and `<i>code</i>` and _<u>x</u>_",
    "</textarea><svg onload=window.__pwned=1>",
    "javascript:window.__pwned=1",
    "[ok](https://example.org/?q=<script>)",
]


async def test_hostile_content_renders_inert(browser: Browser) -> None:
    async with chat_server() as srv, pages(browser) as p:
        assert srv.web is not None
        admin, victim = await p.new(srv.web.url), await p.new(srv.web.url)
        await sign_in(admin, "admin", ADMIN_PASSWORD)
        await sign_up(victim, "victim")
        await join(admin, "general")
        await join(victim, "general")
        evil = await Bot.connect(srv.port)
        await evil.user("evil")
        await evil.request("join", room="general")
        await evil.flood("general", HOSTILE)
        await evil.request("dm", to="victim", text=HOSTILE[0], client_id="dm-evil")
        for seq in range(1, len(HOSTILE) + 1):
            await expect(message(victim, seq)).to_be_visible()
        # every payload is on screen as the text that was sent (markdown aside)
        await expect(message(victim, 1)).to_contain_text("<img src=x onerror=window.__pwned=1>")
        await expect(message(victim, 2)).to_contain_text("<script>window.__pwned=1</script>")
        await expect(message(victim, 6)).to_contain_text('<a href="javascript:')
        await expect(message(victim, 7).locator("strong")).to_have_text("<b>bold?</b>")
        # nothing became markup, and every link is http(s)
        for page in (victim, admin):
            markup = await page.eval_on_selector_all(
                ".messages img, .messages script, .messages svg, .messages iframe, "
                ".messages b, .messages u, .messages i",
                "els => els.length",
            )
            assert markup == 0
            hrefs = await page.eval_on_selector_all(".messages a", "els => els.map(e => e.href)")
            assert hrefs == ["https://example.org/?q=%3Cscript%3E"], hrefs
            for a in await page.eval_on_selector_all(
                ".messages a", "els => els.map(e => e.rel + ' ' + e.target)"
            ):
                assert "noopener" in a and "_blank" in a
        # reasons and announcements are text too
        await admin.click(".user-menu summary")
        await admin.click("#open-admin")
        await admin.click("#admin-tab-broadcast")
        await admin.fill("#broadcast-text", HOSTILE[7])
        await admin.click("dialog form button[type=submit]")
        await expect(victim.locator(".notice.broadcast")).to_contain_text("<svg onload=")
        await admin.click("dialog .close")
        await admin.click("#member-list >> text=victim")
        await admin.fill("#mod-reason", HOSTILE[0])
        await admin.click("#kick")
        await expect(victim.locator("#ended")).to_contain_text("<img src=x onerror=")
        await admin.click("dialog .close")
        await admin.click(".user-menu summary")
        await admin.click("#open-admin")
        await admin.click("#admin-tab-audit")
        await expect(admin.locator("#audit")).to_contain_text("<svg onload=")
        await sign_in(victim, "victim")
        await open_conv(victim, "dm:evil")
        await expect(message(victim, 1)).to_contain_text("<img src=x")
        for page in (victim, admin):
            assert await page.evaluate("window.__pwned") is None
            assert (
                await page.eval_on_selector_all("img, script:not([type=module])", "e => e.length")
                == 0
            )
        await evil.close()


async def test_history_loads_backwards_keeps_a_bounded_window_and_jumps_to_first_unread(
    browser: Browser,
) -> None:
    async with chat_server() as srv, pages(browser) as p:
        assert srv.web is not None
        bot = await Bot.connect(srv.port)
        await bot.user("talker")
        await bot.request("join", room="random")
        await bot.flood("random", [f"old message {i}" for i in range(1, 21)])
        reader = await p.new(srv.web.url)
        await sign_up(reader, "reader")
        await join(reader, "general")
        await join(reader, "random")  # reads up to 20
        await reader.click(".user-menu summary")
        await reader.click("#sign-out")
        await bot.flood("random", [f"message {i}" for i in range(21, 621)])
        # another browser (nothing kept locally): the read position is the server's
        reader = await p.new(srv.web.url)
        await sign_in(reader, "reader")  # lands in #general
        await expect(reader.locator("#conv-title")).to_have_text("# general")
        await expect(badge(reader, "room:random")).to_have_text("600")
        await open_conv(reader, "room:random")  # the window holds the newest 50
        await expect(reader.locator("#jump-unread")).to_be_visible()
        assert 21 not in await seqs(reader)
        await reader.click("#jump-unread")
        await expect(message(reader, 21)).to_be_visible()
        await expect(reader.locator("#new-messages")).to_be_visible()
        got = await seqs(reader)
        assert 21 in got and got == sorted(set(got))
        # scroll to the very top: older pages load by themselves, the window stays bounded
        for _ in range(60):
            await reader.eval_on_selector(".messages", "el => { el.scrollTop = 0; }")
            await reader.wait_for_timeout(50)
            got = await seqs(reader)
            assert len(got) <= 250 and got == list(range(got[0], got[-1] + 1))
            if got[0] == 1:
                break
        await expect(reader.locator(".messages .start")).to_contain_text("beginning of #random")
        # and down again to the newest
        for _ in range(60):
            await reader.eval_on_selector(".messages", "el => { el.scrollTop = el.scrollHeight; }")
            await reader.wait_for_timeout(50)
            got = await seqs(reader)
            assert len(got) <= 250 and got == list(range(got[0], got[-1] + 1))
            if got[-1] == 620:
                break
        assert got[-1] == 620
        await bot.close()


async def test_screenshots_light_dark_and_phone(browser: Browser) -> None:
    async with chat_server() as srv, pages(browser) as p:
        assert srv.web is not None
        bot = await Bot.connect(srv.port)
        await bot.user("bob")
        await bot.request("join", room="general")
        for dark in (False, True):
            tag = "dark" if dark else "light"
            page = await p.new(srv.web.url, dark=dark)
            await shot(page, f"signin-{tag}")
            await sign_in(page, "admin", ADMIN_PASSWORD)
            await join(page, "general")
            await bot.flood(
                "general",
                [
                    f"Hello from the {tag} theme, **bold**, _italic_, `code` and "
                    "https://example.org",
                    "a second line from bob @admin",
                ],
            )
            await send(page, "and a reply")
            await expect(page.locator(".messages article").last).to_contain_text("and a reply")
            await shot(page, f"room-{tag}")
            await page.click(".user-menu summary")
            await page.click("#open-admin")
            await shot(page, f"admin-{tag}")
            await page.click("dialog .close")
            await page.click(".user-menu summary")
            await page.click("#sign-out")  # admin may have one session at a time
            await expect(page.locator("form.card")).to_be_visible()
        phone = await p.new(srv.web.url, viewport=PHONE)
        await sign_up(phone, "phoneuser")
        await join(phone, "general")
        await send(phone, "typing on a small screen, with a long unbroken word: " + "x" * 80)
        await expect(phone.locator(".messages article").last).to_contain_text("small screen")
        width = await phone.evaluate("document.scrollingElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways ({width} px)"
        await expect(phone.locator(".sidebar")).not_to_be_in_viewport()
        await shot(phone, "room-phone")
        await phone.click(".topbar .menu")
        await expect(phone.locator(".sidebar")).to_have_css("transform", "none")  # slid in
        await shot(phone, "drawer-phone")
        await bot.close()


async def test_read_positions_are_the_servers_and_follow_the_user(browser: Browser) -> None:
    async with chat_server(duplicate_login="allow") as srv, pages(browser) as p:
        assert srv.web is not None
        bot = await Bot.connect(srv.port)
        await bot.user("bob")
        await bot.request("join", room="general")
        here = await p.new(srv.web.url)
        await sign_up(here, "alice")
        await join(here, "general")
        await join(here, "random")  # alice looks at #random
        there = await p.new(srv.web.url)  # a second session of alice, another browser
        await sign_in(there, "alice")
        await open_conv(there, "room:random")
        await bot.flood("general", ["one for alice", "and @alice, two"])
        await bot.request("dm", to="alice", text="psst", client_id="dm-1")
        for page in (here, there):
            await expect(badge(page, "room:general")).to_have_text("2")
            await expect(page.locator("[data-conv='room:general'] .badge.mention")).to_have_text(
                "@1"
            )
            await expect(badge(page, "dm:bob")).to_have_text("1")
        # reading #general in one browser clears it in the other (read_marker)
        await open_conv(there, "room:general")
        await expect(badge(there, "room:general")).to_have_count(0)
        await expect(badge(here, "room:general")).to_have_count(0)
        await expect(badge(here, "dm:bob")).to_have_text("1")
        # a third browser, nothing kept locally: the DM conversation and its count are there
        third = await p.new(srv.web.url)
        await sign_in(third, "alice")
        await expect(badge(third, "dm:bob")).to_have_text("1")
        await expect(badge(third, "room:general")).to_have_count(0)
        await open_conv(third, "dm:bob")
        await expect(message(third, 1)).to_contain_text("psst")
        await expect(badge(here, "dm:bob")).to_have_count(0)
        await bot.close()


async def test_a_reload_keeps_the_session_with_a_token_never_the_password(
    browser: Browser,
) -> None:
    async with chat_server() as srv, pages(browser) as p:
        assert srv.web is not None
        page = await p.new(srv.web.url)
        await sign_up(page, "reloader")
        await join(page, "general")
        await send(page, "before the reload")
        kept = await page.evaluate("sessionStorage.getItem('parlour.session')")
        assert kept is not None and "password" not in kept and "reloader" in kept
        await page.reload()
        # back in without the form, in the same account, with the history
        await expect(page.locator("#conv-title")).to_be_visible()
        assert await page.evaluate("window.parlour.me") == "reloader"
        assert await page.evaluate("window.parlour.auth.password") is None
        await open_conv(page, "room:general")
        await expect(message(page, 1)).to_contain_text("before the reload")
        # signing out revokes the token and forgets it: a reload shows the form
        await page.click(".user-menu summary")
        await page.click("#sign-out")
        await expect(page.locator("input[name=username]")).to_be_visible()
        assert await page.evaluate("sessionStorage.getItem('parlour.session')") is None
        await page.reload()
        await expect(page.locator("input[name=username]")).to_be_visible()
        # a revoked token kept elsewhere (a copied tab) gets the form with a reason
        await page.evaluate(f"sessionStorage.setItem('parlour.session', {json.dumps(kept)})")
        await page.reload()
        await expect(page.locator("input[name=username]")).to_be_visible()
        await expect(page.locator("form.card")).to_contain_text("session has ended")
