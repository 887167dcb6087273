"""The moderator console (web/mod.html + mod*.js) in real headless Chromium, against the real app,
a running merge stage and Redis: a click in the console reaches an open wall page in the same browser.

Posts are published to the chat streams, so the merge stage judges them (blocklists, approval
mode) and applies the console's decisions. Set MIXER_SCREENSHOTS=1 to also write
docs/screenshots/console.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from playwright.async_api import Locator, Page, Route, WebSocketRoute, expect

from mixer.codec import FIELD, pack_post
from mixer.keys import Keys
from mixer.models import Author, Post
from mixer.settings import ChatSettings
from tests import browser
from tests.browser import (
    HeldResponse,
    LiveServer,
    Night,
    box_of,
    browser_settings,
    looks_the_same_without,
    moderated_night,
    pixels_apart,
    publish,
    record_dialogs,
    socket_frame_handled,
    watch_socket_frames,
    zalgo,
)
from tests.helpers import ROOT, make_post, now_ms, recorded_night, wall_post

chromium_page = browser.chromium_page
live_server = browser.live_server

TOKEN = "m0d-s3cret"
SCREENSHOT = ROOT / "docs" / "screenshots" / "console.png"
WAIT_MS = 10_000
WALL_MS = 1_000  # a decision must reach an open wall within a second


@pytest.fixture
async def night(redis_url: str, keys: Keys) -> AsyncIterator[Night]:
    """The app with moderation on (token ``TOKEN``) and a running merge stage."""
    async with moderated_night(browser_settings(keys.prefix, moderation_token=TOKEN), redis_url, keys) as night:
        yield night


def post(key: str, text: str, chats: tuple[str, ...] = ("smbiz",), *, handle: str = "alice", name: str = "") -> Post:
    base = make_post(key, chats, created=now_ms(), text=text)
    return base.replace(author=Author(handle=handle, name=name or handle.title()))


async def sign_in(page: Page, night: Night, name: str = "Dana") -> None:
    await page.goto(f"{night.url}/mod")
    await page.get_by_label("Token").fill(TOKEN)
    await page.get_by_label("Your name").fill(name)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#console")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


async def open_wall(page: Page, night: Night) -> Page:
    """A projector wall (every post, unshaped) in a second tab of the same browser."""
    wall = await page.context.new_page()
    await wall.goto(f"{night.url}/?profile=full")
    await expect(wall.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    return wall


# Run in a wall tab: note (in window.goneAt) when the card of the given feed id leaves the page.
WATCH_REMOVAL = """id => {
  const watcher = new MutationObserver(() => {
    if (!document.querySelector(`article.post[data-id="${id}"]`)) { window.goneAt = Date.now(); watcher.disconnect(); }
  });
  watcher.observe(document.body, { childList: true, subtree: true });
}"""


def incoming(page: Page, key: str) -> Locator:
    return page.locator(f'#incoming article.post[data-key="{key}"]')


def on_wall(wall: Page, text: str) -> Locator:
    return wall.locator("article.post", has_text=text)


async def mod_api(night: Night, method: str, path: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Moderator": "Eve"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, night.url + path, headers=headers, json=body) as resp,
    ):
        assert resp.status in (200, 202), await resp.text()
        return await resp.json()


async def test_a_wrong_token_is_refused_and_the_right_one_opens_the_console(night: Night, chromium_page: Page) -> None:
    page = chromium_page
    response = await page.goto(f"{night.url}/mod")
    assert response is not None
    csp = await response.header_value("content-security-policy")
    assert csp is not None and "frame-ancestors 'none'" in csp
    assert await response.header_value("x-frame-options") == "DENY"
    assert TOKEN not in await page.content()

    await page.get_by_label("Token").fill("not-the-token")
    await page.get_by_label("Your name").fill("Dana")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-error")).to_contain_text("wrong token", ignore_case=True, timeout=WAIT_MS)
    await expect(page.locator("#console")).to_be_hidden()

    await sign_in(page, night)
    await expect(page.locator("#moderator-name")).to_have_text("Dana")
    stored = await page.evaluate("() => [sessionStorage.length, localStorage.length]")
    assert stored == [1, 0], "the token is kept for this tab only"

    await page.reload()  # the tab's session survives a reload
    await expect(page.locator("#console")).to_be_visible(timeout=WAIT_MS)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("#login")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0


async def test_a_server_without_a_token_says_moderation_is_off(live_server: LiveServer, chromium_page: Page) -> None:
    page = chromium_page
    await page.goto(f"{live_server.url}mod")
    await page.get_by_label("Token").fill("anything")
    await page.get_by_label("Your name").fill("Dana")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#login-error")).to_contain_text(
        "moderation is off on this server: set [moderation] token", ignore_case=True, timeout=WAIT_MS
    )


async def test_a_moderators_hide_removes_a_post_from_an_open_wall_within_a_second(
    night: Night, chromium_page: Page
) -> None:
    page = chromium_page
    wall = await open_wall(page, night)
    await sign_in(page, night)
    await night.publish(post("x:oops", "something regrettable"), post("x:fine", "a fine answer", handle="bob"))
    await expect(on_wall(wall, "something regrettable")).to_have_count(1, timeout=WAIT_MS)
    card = incoming(page, "x:oops")
    await expect(card).to_contain_text("something regrettable", timeout=WAIT_MS)
    await expect(card.locator(".badge")).to_have_text(["#smbiz"])
    await expect(card.locator(".post-key")).to_have_text("x:oops")

    # Both tabs note the wall-clock time: the click in the console, the card leaving the wall.
    post_id = await card.get_attribute("data-id")
    await wall.evaluate(WATCH_REMOVAL, post_id)
    hide = card.get_by_role("button", name="Hide", exact=True)
    await hide.evaluate("b => b.addEventListener('click', () => { window.clickedAt = Date.now(); }, {capture: true})")
    await hide.click()
    await expect(card.get_by_role("status")).to_have_text("Hidden on every wall", timeout=WAIT_MS)
    await expect(on_wall(wall, "something regrettable")).to_have_count(0, timeout=WALL_MS)
    took_ms = await wall.evaluate("() => window.goneAt") - await page.evaluate("() => window.clickedAt")
    print(f"hide: off the open wall {took_ms} ms after the click in the console")
    assert took_ms < 1000
    await expect(on_wall(wall, "a fine answer")).to_have_count(1)
    await expect(card).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)  # greyed, with Unhide

    await card.get_by_role("button", name="Unhide", exact=True).click()
    await expect(on_wall(wall, "something regrettable")).to_have_count(1, timeout=WALL_MS + WAIT_MS)
    await expect(card).to_have_attribute("data-state", "shown")


async def test_pin_and_unpin_from_the_console_reach_an_open_wall_and_every_socket(
    night: Night, chromium_page: Page
) -> None:
    page = chromium_page
    wall = await open_wall(page, night)
    await sign_in(page, night)
    await night.publish(post("x:welcome", "Welcome to #chatmixer night!"))
    card = incoming(page, "x:welcome")
    async with aiohttp.ClientSession() as http, http.ws_connect(night.server.url + "ws?profile=full") as ws:
        await card.get_by_role("button", name="Pin", exact=True).click()
        await expect(wall.locator("#pinned")).to_contain_text("Welcome to #chatmixer night!", timeout=WALL_MS)
        while (frame := await ws.receive_json(timeout=10))["type"] != "pin":
            pass
        assert frame["post"]["key"] == "x:welcome"
        pinned = page.locator("#pinned")
        await expect(pinned).to_contain_text("Welcome to #chatmixer night!", timeout=WAIT_MS)
        await expect(card).to_have_attribute("data-pinned", "true")

        await pinned.get_by_role("button", name="Unpin").click()
        await expect(wall.locator("#pinned")).to_be_hidden(timeout=WALL_MS)
        while (frame := await ws.receive_json(timeout=10))["type"] != "pin":
            pass
        assert frame["post"] is None
        await expect(pinned).to_be_hidden(timeout=WAIT_MS)


async def test_in_approval_mode_a_new_post_waits_in_the_queue_until_approved(night: Night, chromium_page: Page) -> None:
    page = chromium_page
    wall = await open_wall(page, night)
    await sign_in(page, night)
    switch = page.get_by_role("switch", name="Approval mode")
    await expect(switch).to_have_attribute("aria-checked", "false")
    await switch.click()
    await expect(switch).to_have_attribute("aria-checked", "true", timeout=WAIT_MS)
    assert (await mod_api(night, "GET", "/api/mod/rules"))["approval"] is True

    await night.publish(post("x:held", "is this on topic?"), post("x:held2", "a second one", handle="bob"))
    queued = page.locator('#queue article[data-key="x:held"]')
    await expect(queued).to_contain_text("is this on topic?", timeout=WAIT_MS)
    await expect(page.locator("#queue article")).to_have_count(2)
    assert await on_wall(wall, "is this on topic?").count() == 0

    await queued.get_by_role("button", name="Approve").click()
    await expect(on_wall(wall, "is this on topic?")).to_have_count(1, timeout=WAIT_MS)
    await page.locator('#queue article[data-key="x:held2"]').get_by_role("button", name="Reject").click()
    await expect(page.locator("#queue article")).to_have_count(0, timeout=WAIT_MS)
    await expect(page.locator("#queue-empty")).to_be_visible()
    assert await on_wall(wall, "a second one").count() == 0


async def test_the_queue_a_screen_reader_follows_adds_a_new_held_post_without_reinserting_those_waiting(
    night: Night, chromium_page: Page
) -> None:
    # #queue is a polite live region: every item put into it again is read out again, with its buttons.
    page = chromium_page
    await sign_in(page, night)
    await page.get_by_role("switch", name="Approval mode").click()
    await expect(page.locator("#queue")).to_have_attribute("aria-live", "polite")
    await night.publish(post("x:first", "the first held post"))
    await expect(page.locator('#queue article[data-key="x:first"]')).to_be_visible(timeout=WAIT_MS)
    await page.evaluate(
        """() => {
            const queue = document.getElementById("queue");
            window.readAgain = [];
            new MutationObserver((records) => {
                for (const record of records) {
                    for (const node of record.removedNodes) window.readAgain.push(node.dataset.key);
                }
            }).observe(queue, { childList: true });
        }"""
    )
    for n in range(2, 4):
        await night.publish(post(f"x:held{n}", f"held post {n}", handle=f"user{n}"))
        await expect(page.locator("#queue article")).to_have_count(n, timeout=WAIT_MS)
    keys = "articles => articles.map((a) => a.dataset.key)"
    assert await page.locator("#queue article").evaluate_all(keys) == ["x:first", "x:held2", "x:held3"]
    await page.locator('#queue article[data-key="x:held2"]').get_by_role("button", name="Reject").click()
    await expect(page.locator("#queue article")).to_have_count(2, timeout=WAIT_MS)
    assert await page.locator("#queue article").evaluate_all(keys) == ["x:first", "x:held3"]
    assert await page.evaluate("() => window.readAgain") == ["x:held2"], "only the rejected post left the queue"


async def test_block_author_adds_the_account_to_the_rules_and_hides_the_post(night: Night, chromium_page: Page) -> None:
    page = chromium_page
    await sign_in(page, night)
    await night.publish(
        post("x:pitch", "buy my course", ("smbiz", "edchat"), handle="pitchbot"),
        post("x:troll", "you are all wrong", handle="@troll"),
    )
    pitch = incoming(page, "x:pitch")
    await pitch.get_by_role("button", name="Block author…").click()
    where = pitch.get_by_label("Where to block replay:pitchbot")
    await expect(where.locator("option")).to_have_text(["in every chat", "in #smbiz only", "in #edchat only"])
    await where.select_option(label="in #edchat only")
    await pitch.get_by_role("button", name="Block", exact=True).click()
    await expect(pitch.get_by_role("status")).to_have_text("Blocked replay:pitchbot in #edchat", timeout=WAIT_MS)
    await expect(pitch).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)

    troll = incoming(page, "x:troll")  # this one by keyboard alone
    await troll.get_by_role("button", name="Block author…").focus()
    await page.keyboard.press("Enter")
    await expect(troll.get_by_label("Where to block replay:troll")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(troll.get_by_role("button", name="Block", exact=True)).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(troll).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)
    rules = await mod_api(night, "GET", "/api/mod/rules")
    assert rules["accounts"] == ["replay:troll"]
    assert rules["chats"]["edchat"]["accounts"] == ["replay:pitchbot"]
    await expect(page.locator("#rules-accounts")).to_have_value("replay:troll")
    await expect(page.locator("#rules-chat-accounts-edchat")).to_have_value("replay:pitchbot")


async def test_a_word_added_to_the_blocklist_keeps_later_posts_off_the_wall_and_bad_rules_show_the_reason(
    night: Night, chromium_page: Page
) -> None:
    page = chromium_page
    wall = await open_wall(page, night)
    await sign_in(page, night)
    words = page.get_by_label("Blocked words and phrases")
    await words.fill("spoiler")
    await page.get_by_role("button", name="Save blocklist").click()
    await expect(page.locator("#rules-status")).to_contain_text("Saved", timeout=WAIT_MS)
    assert (await mod_api(night, "GET", "/api/mod/rules"))["words"] == ["spoiler"]

    await night.publish(post("x:spoil", "big SPOILER: the butler did it"))
    await night.publish(post("x:after", "no spoilers from me", handle="bob"))  # "spoilers" is another word
    await expect(on_wall(wall, "no spoilers from me")).to_have_count(1, timeout=WAIT_MS)
    assert await on_wall(wall, "the butler did it").count() == 0

    too_long = "x" * 150
    await words.fill(f"spoiler\n{too_long}")
    await page.get_by_role("button", name="Save blocklist").click()
    await expect(page.locator("#rules-error")).to_contain_text("longer than 100 characters", timeout=WAIT_MS)
    await expect(page.locator("#rules-error")).to_be_in_viewport()
    await expect(words).to_have_value(f"spoiler\n{too_long}")  # the edits are kept
    assert (await mod_api(night, "GET", "/api/mod/rules"))["words"] == ["spoiler"]


async def test_saving_the_blocklist_keeps_what_another_moderator_changed_since_the_form_was_filled(
    night: Night, chromium_page: Page
) -> None:
    ana = chromium_page
    await sign_in(ana, night, "Ana")
    bo = await ana.context.new_page()  # a tab of its own: its own session, as a second moderator's
    await sign_in(bo, night, "Bo")
    words = ana.get_by_label("Blocked words and phrases")
    await words.fill("old news")
    await ana.get_by_role("button", name="Save blocklist").click()
    await expect(bo.get_by_label("Blocked words and phrases")).to_have_value("old news", timeout=WAIT_MS)

    await words.fill("spoiler")  # Ana edits: "old news" out, "spoiler" in; not saved yet
    await night.publish(post("x:troll", "you are all wrong", ("smbiz", "edchat"), handle="troll"))
    troll = incoming(bo, "x:troll")
    await troll.get_by_role("button", name="Block author…").click()
    await troll.get_by_role("button", name="Block", exact=True).click()  # meanwhile Bo blocks an author
    await expect(troll).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)
    await expect(bo.locator("#rules-accounts")).to_have_value("replay:troll", timeout=WAIT_MS)
    await bo.locator('details[data-tag="edchat"] summary').click()
    await bo.get_by_label("Words blocked in #edchat").fill("mlm")  # and adds a word in #edchat
    await bo.get_by_role("button", name="Save blocklist").click()
    await expect(bo.locator("#rules-status")).to_contain_text("Saved", timeout=WAIT_MS)

    await ana.get_by_role("button", name="Save blocklist").click()
    await expect(ana.locator("#rules-status")).to_contain_text(
        "Saved, with the changes another moderator made meanwhile", timeout=WAIT_MS
    )
    rules = await mod_api(night, "GET", "/api/mod/rules")
    assert rules["words"] == ["spoiler"]
    assert rules["accounts"] == ["replay:troll"], "Bo's block is not undone by Ana's save"
    assert rules["chats"] == {"edchat": {"words": ["mlm"], "accounts": []}}
    await expect(ana.locator("#rules-accounts")).to_have_value("replay:troll")
    await expect(bo.get_by_label("Blocked words and phrases")).to_have_value("spoiler", timeout=WAIT_MS)
    await bo.close()


LONG_TAG = "averyveryveryverylongchattagthatgoesonandon"  # 43 characters, as a tester's config had


async def test_a_long_chat_tag_and_event_name_wrap_and_never_widen_the_console(
    redis_url: str, keys: Keys, chromium_page: Page
) -> None:
    chats = (*browser.TEST_CHATS, ChatSettings(LONG_TAG, "A very long chat title that goes on and on", "#607d8b"))
    settings = browser_settings(
        keys.prefix, moderation_token=TOKEN, chats=chats, event_name="The Grand Annual International Night " * 3
    )
    async with moderated_night(settings, redis_url, keys) as night:
        page = chromium_page
        await night.publish(post("x:long", "a post of the long chat", (LONG_TAG, "smbiz")))
        await sign_in(page, night)
        await expect(page.locator(".chat-rules", has_text=LONG_TAG)).to_be_visible(timeout=WAIT_MS)
        await expect(incoming(page, "x:long")).to_be_visible(timeout=WAIT_MS)
        for width, height in ((1440, 900), (1024, 768), (375, 667)):
            await page.set_viewport_size({"width": width, "height": height})
            sizes = await page.evaluate(
                """() => {
                    const rules = document.querySelector(".rules-column");
                    const words = document.getElementById("rules-words").getBoundingClientRect();
                    return {page: document.documentElement.scrollWidth, window: innerWidth,
                            rules: rules.scrollWidth, rulesBox: rules.clientWidth,
                            wordsRight: words.right, rulesRight: rules.getBoundingClientRect().right};
                }"""
            )
            assert sizes["page"] <= sizes["window"], (width, sizes)  # no sideways scrolling
            assert sizes["rules"] <= sizes["rulesBox"], (width, sizes)  # nothing in the Blocklist column pushed out
            assert sizes["wordsRight"] <= sizes["rulesRight"], (width, sizes)


async def test_a_post_with_unbroken_long_name_handle_and_text_never_widens_the_console(
    night: Night, chromium_page: Page
) -> None:
    # The longest name and handle a Post may carry (mixer.models.LIMITS), each one unbroken word, and a long URL.
    page = chromium_page
    long = post("x:wide", "see https://example.test/" + "a" * 1500, handle="h" * 300, name="N" * 200)
    await night.publish(post("x:plain", "a short one"), long)
    await sign_in(page, night)
    await expect(incoming(page, "x:wide")).to_be_visible(timeout=WAIT_MS)
    await incoming(page, "x:wide").get_by_role("button", name="Pin", exact=True).click()
    await expect(page.locator("#pinned")).to_be_visible(timeout=WAIT_MS)
    await incoming(page, "x:wide").get_by_role("button", name="Block author…").click()  # names the handle too
    for width, height in ((1440, 900), (375, 667)):
        await page.set_viewport_size({"width": width, "height": height})
        sizes = await page.evaluate(
            """() => {
                const column = document.querySelector(".incoming-column");
                const list = document.getElementById("incoming").getBoundingClientRect();
                const cards = [...document.querySelectorAll("#incoming article, #incoming article *, #pinned")];
                return {page: document.documentElement.scrollWidth, window: innerWidth,
                        column: column.scrollWidth, columnBox: column.clientWidth,
                        widest: Math.max(...cards.map((c) => c.getBoundingClientRect().right)), listRight: list.right};
            }"""
        )
        assert sizes["page"] <= sizes["window"], (width, sizes)  # no sideways scrolling
        assert sizes["column"] <= sizes["columnBox"], (width, sizes)  # nothing pushed out of Incoming
        assert sizes["widest"] <= sizes["listRight"] + 0.5, (width, sizes)  # every card, the pinned one too
    await expect(incoming(page, "x:wide").locator(".author-name")).to_have_text("N" * 200)  # wrapped, not cut


async def test_signing_in_with_the_keyboard_goes_on_from_the_top_of_the_console(
    night: Night, chromium_page: Page
) -> None:
    page = chromium_page
    await night.publish(post("x:k1", "one"), post("x:k2", "two"))
    await page.goto(f"{night.url}/mod")
    await expect(page.locator("#login-token")).to_be_focused()
    await page.keyboard.type(TOKEN)
    await page.keyboard.press("Tab")
    await page.keyboard.type("Kay")
    await page.keyboard.press("Enter")
    await expect(incoming(page, "x:k2")).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator("#console-title")).to_be_focused()  # not lost with the form that had it
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("switch", name="Approval mode")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Sign out")).to_be_focused()


async def test_skip_links_take_the_keyboard_past_the_incoming_posts_to_each_other_column(
    night: Night, chromium_page: Page
) -> None:
    page = chromium_page
    await night.publish(*(post(f"x:s{i}", f"post {i}") for i in range(5)))
    await sign_in(page, night)
    await expect(page.locator("#incoming article")).to_have_count(5, timeout=WAIT_MS)
    await page.locator("#console-title").focus()
    for _ in range(3):  # the approval switch, Sign out, then the first skip link
        await page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the approval queue")
    await expect(skip).to_be_focused()
    assert await skip.evaluate("a => a.getBoundingClientRect().left") >= 0, "seen once focused"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to the blocklist")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#rules-title")).to_be_focused()
    await page.keyboard.press("Tab")
    await expect(page.locator("#rules-words")).to_be_focused()  # past the posts in one step
    await page.locator("#console-title").focus()  # links left alone are out of sight
    lefts = await page.locator(".skip-links a").evaluate_all(
        "links => links.map((a) => a.getBoundingClientRect().right)"
    )
    assert all(right <= 0 for right in lefts), lefts


# Where a focused post sits in its column: [its top, its bottom, the column title's bottom, the column's bottom].
IN_VIEW = """post => {
  const column = post.closest(".column, .panel");
  const title = column.querySelector(".column-title").getBoundingClientRect();
  const box = post.getBoundingClientRect();
  return [box.top, box.bottom, title.bottom, column.getBoundingClientRect().bottom];
}"""


async def test_page_down_page_up_home_and_end_move_the_focus_from_post_to_post_in_sight(
    night: Night, chromium_page: Page
) -> None:
    # With up to 200 posts of four stops each, Tab alone took a keyboard moderator minutes to reach a post.
    page = chromium_page
    await night.publish(*(post(f"x:p{i}", f"post {i}") for i in range(30)))
    await sign_in(page, night)
    cards = page.locator("#incoming article.post")
    await expect(cards).to_have_count(30, timeout=WAIT_MS)
    await cards.nth(0).get_by_role("button", name="Hide", exact=True).focus()
    await page.keyboard.press("PageDown")
    await expect(cards.nth(1)).to_be_focused()  # the post itself: a screen reader reads it as any focused article
    await page.keyboard.press("PageDown")
    await expect(cards.nth(2)).to_be_focused()
    await page.keyboard.press("Tab")  # on to the post's own controls, in reading order
    inside = "post => post.contains(document.activeElement) && post !== document.activeElement"
    assert await cards.nth(2).evaluate(inside)
    await page.keyboard.press("PageUp")
    await expect(cards.nth(1)).to_be_focused()

    await page.keyboard.press("End")
    await expect(cards.nth(29)).to_be_focused()
    top, bottom, title, end = await cards.nth(29).evaluate(IN_VIEW)
    assert title <= top and bottom <= end + 1, (top, bottom, title, end)  # scrolled to, in sight
    await page.keyboard.press("PageDown")  # nothing after the last: it keeps the focus, the column stays
    await expect(cards.nth(29)).to_be_focused()
    await page.keyboard.press("Home")
    await expect(cards.nth(0)).to_be_focused()
    top, bottom, title, end = await cards.nth(0).evaluate(IN_VIEW)
    assert title <= top and bottom <= end + 1, (top, bottom, title, end)  # not under the sticky column title
    await page.keyboard.press("PageUp")
    await expect(cards.nth(0)).to_be_focused()
    # A post whose top is under the column's sticky title is scrolled into sight too.
    await cards.nth(6).evaluate("""post => {
      const column = post.closest(".column");
      const title = column.querySelector(".column-title").getBoundingClientRect();
      column.scrollTop += post.previousElementSibling.getBoundingClientRect().top - title.bottom + 10;
      post.focus();
    }""")
    await page.keyboard.press("PageUp")
    await expect(cards.nth(5)).to_be_focused()
    top, bottom, title, end = await cards.nth(5).evaluate(IN_VIEW)
    assert title <= top and bottom <= end + 1, (top, bottom, title, end)
    await expect(cards.locator(".status:not(:empty)")).to_have_count(0)  # moving is not announced by a status
    assert await page.locator("#incoming article[tabindex='0']").count() == 0, "no new Tab stop per post"

    # A field keeps its own keys: End in the "where to block" list picks its last choice.
    await cards.nth(3).get_by_role("button", name="Block author…").click()
    where = cards.nth(3).get_by_role("combobox")
    await expect(where).to_be_focused()
    await page.keyboard.press("End")
    await expect(where).to_be_focused()
    await expect(where).to_have_value("smbiz")

    # The approval queue is a list of posts too.
    await page.get_by_role("switch", name="Approval mode").click()
    await expect(page.get_by_role("switch", name="Approval mode")).to_have_attribute("aria-checked", "true")
    await night.publish(*(post(f"x:q{i}", f"held {i}") for i in range(3)))
    held = page.locator("#queue article.post")
    await expect(held).to_have_count(3, timeout=WAIT_MS)
    await held.nth(0).get_by_role("button", name="Approve").focus()
    await page.keyboard.press("End")
    await expect(held.nth(2)).to_be_focused()
    await page.keyboard.press("PageUp")
    await expect(held.nth(1)).to_be_focused()


NEW_POSTS = re.compile(r"^\d+ new posts?$")  # the button that shows the posts held above the list


# Scroll the incoming posts a little way down (the column on a wide screen, the page in one column); the
# pinned post is still in sight.
SCROLL_A_LITTLE = """() => {
  const column = document.querySelector(".incoming-column");
  const scroller = getComputedStyle(column).overflowY === "auto" ? column : document.scrollingElement;
  scroller.scrollTop = 40;
  return scroller.scrollTop;
}"""


async def test_posts_in_sight_stay_in_place_as_new_ones_arrive_above_them_with_a_post_pinned(
    night: Night, chromium_page: Page
) -> None:
    # Scrolled a little with a post pinned, each new post pushed every card down under the moderator's pointer,
    # about to press Hide: the browser kept the pinned post (or, in one column, the top bar) in place instead.
    # Scrolled, new posts now wait above the list (with the pointer and the focus away from it too); the button
    # that shows them is in sight and goes back to the top.
    page = chromium_page
    await night.publish(*(post(f"x:a{i}", f"post {i}") for i in range(12)))
    await sign_in(page, night)
    cards = page.locator("#incoming article.post")
    await expect(cards).to_have_count(12, timeout=WAIT_MS)
    await incoming(page, "x:a11").get_by_role("button", name="Pin", exact=True).click()
    await expect(page.locator("#pinned")).to_be_visible(timeout=WAIT_MS)
    new_posts = page.get_by_role("button", name=NEW_POSTS)
    for n, (width, height) in enumerate(((1280, 720), (390, 844))):
        await page.set_viewport_size({"width": width, "height": height})
        await page.mouse.move(width - 5, 5)  # the top bar's corner
        await page.evaluate("() => document.activeElement.blur()")
        assert await page.evaluate(SCROLL_A_LITTLE) == 40
        assert await page.locator("#pinned").evaluate("box => box.getBoundingClientRect().bottom > 0")
        watched = incoming(page, "x:a8")
        before = await watched.evaluate("card => card.getBoundingClientRect().top")
        await night.publish(post(f"x:new{n}a", "one new post"), post(f"x:new{n}b", "and another"))
        await expect(new_posts).to_have_text("2 new posts", timeout=WAIT_MS)
        await expect(new_posts).to_be_in_viewport()
        await expect(cards).to_have_count(12 + 2 * n)
        after = await watched.evaluate("card => card.getBoundingClientRect().top")
        assert abs(after - before) <= 1, (width, before, after)
        await new_posts.click()
        await expect(cards).to_have_count(14 + 2 * n)
        await expect(cards.first).to_have_attribute("data-key", f"x:new{n}b")
        await expect(cards.first).to_be_focused()
        assert await page.evaluate(SCROLL_A_LITTLE.replace("= 40", "= scroller.scrollTop")) == 0


# Run in the console: count each change a screen reader would hear from the "new posts" status line.
COUNT_ANNOUNCEMENTS = """() => {
  window.announced = [];
  const status = document.getElementById("new-posts-status");
  new MutationObserver(() => window.announced.push(status.textContent))
    .observe(status, { childList: true, characterData: true, subtree: true });
}"""


async def test_at_the_top_new_posts_wait_while_the_moderator_points_at_or_works_in_the_list(
    night: Night, chromium_page: Page
) -> None:
    # At the very top (scroll 0) each new post pushed every card down, about four a second at demo speed 20:
    # a moderator aiming at Hide on the top post hit the post that came in above it.
    page = chromium_page
    await page.set_viewport_size({"width": 1280, "height": 720})
    await watch_socket_frames(page)
    await night.publish(*(post(f"x:t{i}", f"earlier {i}") for i in range(6)))
    await sign_in(page, night)
    cards = page.locator("#incoming article.post")
    await expect(cards).to_have_count(6, timeout=WAIT_MS)
    await page.evaluate(COUNT_ANNOUNCEMENTS)
    new_posts = page.get_by_role("button", name=NEW_POSTS)
    hide = incoming(page, "x:t5").get_by_role("button", name="Hide", exact=True)
    await hide.hover()
    before = await hide.bounding_box()
    for i in range(3):
        await night.publish(post(f"x:n{i}", f"arrived while pointing {i}"))
        await socket_frame_handled(page, f"arrived while pointing {i}")
    await expect(new_posts).to_have_text("3 new posts")
    assert await hide.bounding_box() == before, "the post under the pointer stays where it is"
    await expect(cards).to_have_count(6)
    assert await new_posts.evaluate("b => b.closest('[aria-live], [role=status]') === null"), "not read per post"
    assert await page.evaluate("() => window.announced") == [
        "New posts are waiting: the new posts button above the list shows them"
    ], "announced once, politely (role=status), not per post"
    await mod_api(night, "POST", "/api/mod/hide", {"key": "x:n1"})  # another moderator hides one while it waits
    await socket_frame_handled(page, '"retract"')

    # The pointer leaves, the list is at the top: they flow in as before, newest on top.
    await page.mouse.move(1275, 5)
    await expect(cards).to_have_count(9)
    keys = await cards.evaluate_all("cards => cards.slice(0, 4).map(c => c.dataset.key)")
    assert keys == ["x:n2", "x:n1", "x:n0", "x:t5"]
    await expect(incoming(page, "x:n1")).to_have_attribute("data-state", "hidden")
    await expect(new_posts).to_be_hidden()

    # With the keyboard: the focus on a post holds new ones too; Shift+Tab from the first post reaches the button.
    await cards.first.focus()
    await night.publish(post("x:k0", "arrived while at a post"))
    await expect(new_posts).to_have_text("1 new post", timeout=WAIT_MS)
    await expect(cards).to_have_count(9)
    await page.keyboard.press("Shift+Tab")
    await expect(new_posts).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(cards.first).to_have_attribute("data-key", "x:k0")
    await expect(cards.first).to_be_focused()  # the newest post: PageDown and Tab go on from there
    await page.keyboard.press("PageDown")
    await expect(incoming(page, "x:n2")).to_be_focused()

    # The focus leaves the list (to the approval switch) at the top: held posts flow in.
    await night.publish(post("x:k1", "arrived before the focus left"))
    await expect(new_posts).to_have_text("1 new post", timeout=WAIT_MS)
    await page.get_by_role("switch", name="Approval mode").focus()
    await expect(cards.first).to_have_attribute("data-key", "x:k1")
    await expect(new_posts).to_be_hidden()


async def test_a_button_pressed_with_the_keyboard_keeps_the_focus_while_its_action_runs_and_after(
    night: Night, chromium_page: Page
) -> None:
    # A button disabled while its request runs loses the focus to <body>: the next key would act on nothing.
    page = chromium_page
    await night.publish(post("x:f1", "one"), post("x:f2", "two"))
    await sign_in(page, night)
    card = incoming(page, "x:f1")
    await expect(card).to_be_visible(timeout=WAIT_MS)

    pin = card.get_by_role("button", name="Pin", exact=True)
    await pin.focus()
    await page.keyboard.press("Enter")
    await expect(card).to_have_attribute("data-pinned", "true", timeout=WAIT_MS)
    await expect(card.locator(".status")).to_have_text("Pinned on every wall", timeout=WAIT_MS)
    await expect(pin).to_be_focused()

    await card.get_by_role("button", name="Hide", exact=True).focus()
    await page.keyboard.press("Enter")
    await expect(card).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)
    unhide = card.get_by_role("button", name="Unhide")
    await expect(unhide).to_be_focused()  # the button that undoes it, on the same card
    await page.keyboard.press("Enter")
    await expect(card).to_have_attribute("data-state", "shown", timeout=WAIT_MS)
    await expect(card.get_by_role("button", name="Hide", exact=True)).to_be_focused()  # the card moved up, with it

    switch = page.get_by_role("switch", name="Approval mode")
    await switch.focus()
    await page.keyboard.press("Space")
    await expect(switch).to_have_attribute("aria-checked", "true", timeout=WAIT_MS)
    await expect(page.locator("#approval-status")).to_have_text("New posts wait for approval", timeout=WAIT_MS)
    await page.keyboard.press("Space")  # the focus is still on the switch: the same key turns it off
    await expect(switch).to_have_attribute("aria-checked", "false", timeout=WAIT_MS)
    await expect(switch).to_be_focused()

    await page.locator("#rules-words").fill("spam")
    save = page.get_by_role("button", name="Save blocklist")
    await save.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#rules-status")).to_contain_text("Saved", timeout=WAIT_MS)
    await expect(save).to_be_focused()

    block = incoming(page, "x:f2").get_by_role("button", name="Block author…")
    await block.focus()
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    await expect(incoming(page, "x:f2").get_by_role("button", name="Block", exact=True)).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(incoming(page, "x:f2")).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)
    await expect(block).to_be_focused()  # back on the button that opened the form, as with Cancel


async def test_an_outage_is_heard_once_as_reconnecting_not_at_every_retry(night: Night, chromium_page: Page) -> None:
    page = chromium_page
    await sign_in(page, night)
    await page.evaluate(
        """() => {
            const label = document.getElementById("connection");
            window.heard = [];
            new MutationObserver(() => window.heard.push(label.textContent.trim()))
                .observe(label, { childList: true, characterData: true, subtree: true });
        }"""
    )
    await night.server.stop()
    for _ in range(3):  # three tries (0.5 s, 1 s, 2 s of backoff, with jitter)
        await page.wait_for_event("websocket", timeout=30_000)
    await night.server.start()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=30_000)
    assert await page.evaluate("() => window.heard") == ["Reconnecting…", "Live"]


async def test_a_decision_taken_while_the_server_restarts_is_sent_once_it_is_back(
    night: Night, chromium_page: Page
) -> None:
    page = chromium_page
    wall = await open_wall(page, night)
    await sign_in(page, night)
    await page.get_by_role("switch", name="Approval mode").click()
    await expect(page.get_by_role("switch", name="Approval mode")).to_have_attribute("aria-checked", "true")
    await night.publish(post("x:inflight", "approved during the restart"), post("x:hideme", "hidden during it"))
    queued = page.locator('#queue article[data-key="x:inflight"]')
    await expect(queued).to_be_visible(timeout=WAIT_MS)
    await page.locator('#queue article[data-key="x:hideme"]').get_by_role("button", name="Approve").click()
    await expect(incoming(page, "x:hideme")).to_be_visible(timeout=WAIT_MS)

    await night.server.stop()
    await queued.get_by_role("button", name="Approve").click()
    await incoming(page, "x:hideme").get_by_role("button", name="Hide").click()
    await expect(queued.get_by_role("status")).to_have_text(
        "Approve… waiting for the server to send it", timeout=WAIT_MS
    )
    await expect(incoming(page, "x:hideme").get_by_role("status")).to_contain_text("waiting for the server")
    await night.server.start()
    await expect(queued).to_have_count(0, timeout=WAIT_MS)  # approved: it left the queue
    await expect(on_wall(wall, "approved during the restart")).to_have_count(1, timeout=30_000)
    await expect(on_wall(wall, "hidden during it")).to_have_count(0, timeout=WAIT_MS)
    await expect(incoming(page, "x:hideme")).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)
    audit = await mod_api(night, "GET", "/api/mod/audit")
    assert [(e["action"], e["key"]) for e in audit["items"][:2]] in (
        [("hide", "x:hideme"), ("approve", "x:inflight")],
        [("approve", "x:inflight"), ("hide", "x:hideme")],
    ), "each decision is recorded once"


async def test_an_approve_sent_again_after_its_answer_was_lost_reads_as_done(night: Night, chromium_page: Page) -> None:
    # The first Approve reached the server and the connection dropped before its answer: the console sent it again,
    # the server said "is not waiting for approval", and the console showed a failure though it was applied once.
    page = chromium_page
    await sign_in(page, night)
    await page.get_by_role("switch", name="Approval mode").click()
    await expect(page.get_by_role("switch", name="Approval mode")).to_have_attribute("aria-checked", "true")
    await night.publish(post("x:lostanswer", "approved, answer lost"), post("x:other", "approved by another"))
    queued = page.locator('#queue article[data-key="x:lostanswer"]')
    other = page.locator('#queue article[data-key="x:other"]')
    await expect(other).to_be_visible(timeout=WAIT_MS)
    # As while the connection is down, the queue is not read again until the decision has its answer (a post
    # decided leaves the queue with its status line).
    queue_readable = asyncio.Event()

    async def queue_read(route: Route) -> None:
        await queue_readable.wait()
        await route.continue_()

    await page.route("**/api/mod/queue", queue_read)

    async def applied_then_dropped(route: Route) -> None:
        await route.fetch()  # the server applies it...
        await route.abort("connectionreset")  # ...and the answer never arrives

    await page.route("**/api/mod/approve", applied_then_dropped, times=1)
    await queued.get_by_role("button", name="Approve").click()
    await expect(queued.get_by_role("status")).to_have_text("Approved (it had reached the server)", timeout=WAIT_MS)
    queue_readable.set()
    await expect(queued).to_have_count(0, timeout=WAIT_MS)
    audit = await mod_api(night, "GET", "/api/mod/audit")
    assert [(e["action"], e["key"]) for e in audit["items"] if e["key"] == "x:lostanswer"] == [
        ("approve", "x:lostanswer")
    ], "applied once"

    # Sent again after another moderator decided it meanwhile: a failure still, in the server's words.
    async def decided_elsewhere_then_dropped(route: Route) -> None:
        await mod_api(night, "POST", "/api/mod/reject", {"key": "x:other"})
        await route.abort("connectionreset")

    queue_readable.clear()
    await page.route("**/api/mod/approve", decided_elsewhere_then_dropped, times=1)
    await other.get_by_role("button", name="Approve").click()
    await expect(other.get_by_role("status")).to_have_text(
        "Approve failed: x:other is not waiting for approval", timeout=WAIT_MS
    )
    queue_readable.set()

    # And on a first attempt, a post decided a moment before is a failure too.
    await night.publish(post("x:first", "decided before the click landed"))
    first = page.locator('#queue article[data-key="x:first"]')
    await expect(first).to_be_visible(timeout=WAIT_MS)

    async def decided_just_before(route: Route) -> None:
        await mod_api(night, "POST", "/api/mod/reject", {"key": "x:first"})
        await route.continue_()

    queue_readable.clear()
    await page.route("**/api/mod/approve", decided_just_before, times=1)
    await first.get_by_role("button", name="Approve").click()
    await expect(first.get_by_role("status")).to_have_text(
        "Approve failed: x:first is not waiting for approval", timeout=WAIT_MS
    )


async def test_with_reduced_motion_the_approval_switch_flips_without_sliding(night: Night, chromium_page: Page) -> None:
    page = chromium_page
    await sign_in(page, night)
    thumb = page.locator("#approval-switch .switch-thumb")
    assert await thumb.evaluate("el => getComputedStyle(el).transitionDuration") != "0s"
    await page.emulate_media(reduced_motion="reduce")
    assert await thumb.evaluate("el => getComputedStyle(el).transitionDuration") == "0s"
    track = page.locator("#approval-switch .switch-track")
    assert await track.evaluate("el => getComputedStyle(el).transitionDuration") == "0s"


async def test_the_audit_log_lists_each_action_with_the_moderators_name(night: Night, chromium_page: Page) -> None:
    page = chromium_page
    await sign_in(page, night, name="Zoë")
    await night.publish(post("x:a1", "first"))
    card = incoming(page, "x:a1")
    await card.get_by_role("button", name="Pin", exact=True).click()
    await expect(page.locator("#pinned")).to_be_visible(timeout=WAIT_MS)
    await card.get_by_role("button", name="Hide", exact=True).click()
    await expect(card).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)
    await page.get_by_role("switch", name="Approval mode").click()

    rows = page.locator("#audit tr")
    await expect(rows).to_have_count(3, timeout=WAIT_MS)
    await expect(rows.locator(".audit-action")).to_have_text(["rules", "hide", "pin"])  # newest first
    await expect(rows.locator(".audit-who")).to_have_text(["Zoë", "Zoë", "Zoë"])  # accents kept (percent-encoded)
    await expect(rows.nth(0)).to_contain_text("approval on")
    await expect(rows.nth(1)).to_contain_text("x:a1")
    await expect(rows.nth(1).locator(".audit-from")).to_have_text("127.0.0.1")

    # a hidden post can be brought back from its audit entry too
    await rows.nth(1).get_by_role("button", name="Unhide").click()
    await expect(rows.locator(".audit-action").first).to_have_text("unhide", timeout=WAIT_MS)
    await expect(card).to_have_attribute("data-state", "shown", timeout=WAIT_MS)


async def test_hostile_posts_render_as_literal_text_in_the_console(night: Night, chromium_page: Page) -> None:
    page = chromium_page
    dialogs = record_dialogs(page)
    await sign_in(page, night)
    script_text = "<script>alert(1)</script>"
    img_text = "<img src=x onerror=alert(1)>"
    bidi_text = "price: \u202e0001$ only today"
    js_post = post("x:js", "click me").replace(url="javascript:alert(1)")
    await night.publish(
        post("x:script", script_text, name="<b>Mallory</b>"),
        post("x:img", img_text),
        js_post,
        post("x:bidi", bidi_text, name="\u202eevil name", handle="bidi"),
        post("x:he", "שלום לכולם, זה הצ'אט של הערב", handle="dana"),
    )
    await expect(page.locator("#incoming article")).to_have_count(5, timeout=WAIT_MS)
    # each text takes its direction from its own first letters: a Hebrew one reads right to left
    assert await incoming(page, "x:he").locator(".post-text").evaluate("el => el.matches(':dir(rtl)')")
    assert await incoming(page, "x:bidi").locator(".post-text").evaluate("el => el.matches(':dir(ltr)')")
    await expect(incoming(page, "x:script").locator(".post-text")).to_have_text(script_text)
    await expect(incoming(page, "x:script").locator(".author-name")).to_have_text("<b>Mallory</b>")
    await expect(incoming(page, "x:img").locator(".post-text")).to_have_text(img_text)
    assert await incoming(page, "x:bidi").locator(".post-text").text_content() == bidi_text
    await expect(incoming(page, "x:bidi").locator(".post-text")).to_have_attribute("dir", "auto")
    assert await incoming(page, "x:bidi").locator(".author-name").evaluate("el => el.tagName") == "BDI"

    assert await page.locator("#incoming img, #incoming script, #incoming b").count() == 0
    assert await page.locator("script").count() == 1  # mod.js itself
    assert await incoming(page, "x:js").locator("a").count() == 0, "a javascript: URL is not a link"
    links = await page.locator("#incoming a[href]").evaluate_all("links => links.map(a => [a.href, a.rel])")
    assert sorted(links) == [
        [f"https://example.test/{key}", "noopener nofollow noreferrer"]
        for key in ("x:bidi", "x:he", "x:img", "x:script")
    ]
    await page.evaluate("() => new Promise(requestAnimationFrame)")  # let any stray handler run first
    assert dialogs == []


async def test_after_a_lag_the_console_fetches_back_every_skipped_post_page_by_page_in_order_and_once(
    night: Night, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    """The websocket is relayed through Playwright, which drops the posts frames of the gap and adds the `lag`.
    The posts go straight into the feed, more than one /api/feed page of them; the first page is held until a
    live post came, so the fetched ones must go below it."""
    # The console ignored `lag`: posts skipped while it was slow were never shown to a moderator.
    page = chromium_page
    relays: list[WebSocketRoute] = []
    dropping = {"on": False, "until": ""}
    all_dropped = asyncio.Event()

    def relay(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if dropping["on"] and isinstance(message, str) and json.loads(message)["type"] == "posts":
                if dropping["until"] and dropping["until"] in message:
                    all_dropped.set()
                return
            ws.send(message)

        server.on_message(to_page)
        relays.append(ws)

    await page.route_web_socket("**/ws?*", relay)
    await watch_socket_frames(page)
    await sign_in(page, night)
    (first,) = await publish(redis, keys, wall_post("x:first", text="seen live"))
    await expect(page.locator(f'#incoming article[data-id="{first}"]')).to_be_visible(timeout=WAIT_MS)

    dropping["on"] = True
    async with redis.pipeline(transaction=False) as pipe:
        for n in range(1, 1206):  # more than one page (1,000) of /api/feed
            pipe.xadd(keys.feed, {FIELD: pack_post(wall_post(f"x:skip{n}", text=f"skipped {n}"))})
        skipped = [entry.decode() for entry in await pipe.execute()]
    dropping["until"] = "skipped 1205"
    await asyncio.wait_for(all_dropped.wait(), WAIT_MS / 1000)
    dropping["on"] = False
    gap = HeldResponse()
    await gap.route(page, "**/api/feed?since=*")
    relays[-1].send(json.dumps({"type": "lag", "skipped": len(skipped)}))
    await asyncio.wait_for(gap.fetched.wait(), WAIT_MS / 1000)
    (after,) = await publish(redis, keys, wall_post("x:after", text="after the lag"))
    await socket_frame_handled(page, "after the lag")
    second_page = HeldResponse()
    await second_page.route(page, "**/api/feed?since=*")
    gap.release()
    await asyncio.wait_for(second_page.fetched.wait(), WAIT_MS / 1000)
    cards = page.locator("#incoming article")
    ids = "cards => cards.map(c => c.dataset.id)"
    assert await cards.evaluate_all(ids) == [after, *reversed(skipped[:1000])][:200], "the first page goes below"
    second_page.release()

    await expect(cards.first).to_have_attribute("data-id", after, timeout=WAIT_MS)
    await expect(cards.nth(1)).to_have_attribute("data-id", skipped[-1], timeout=WAIT_MS)
    await expect(cards).to_have_count(200)  # the console keeps the newest 200
    assert await cards.evaluate_all(ids) == [after, *reversed(skipped)][:200]


async def test_combining_marks_stay_inside_their_own_box_and_ordinary_accents_are_whole(
    night: Night, chromium_page: Page
) -> None:
    # Zalgo text and heavy diacritics: marks stacked on a letter painted over the posts around and the post's own
    # header, and the text cut short clipped the top of ordinary stacked accents (the hook of a Vietnamese Ổ).
    page = chromium_page
    await sign_in(page, night)
    now = now_ms()  # in this order, the marked post between the two others
    await night.publish(
        post("x:before", "an older post").replace(created=now - 2),
        post("x:zalgo", "\n".join(zalgo("stacked") for _ in range(8)), name=zalgo("Zed")).replace(created=now - 1),
        post("x:accents", "Ấ Ẫ Ổ Ǻ Ǿ Ḯ ǘ Tiếng Việt\nunder: Ạ Ỵ ą ç ğ ų", name="Ǻngström Ổ", handle="anh"),
    )
    await expect(page.locator("#incoming article")).to_have_count(3, timeout=WAIT_MS)
    order = await page.locator("#incoming article").evaluate_all("cards => cards.map((card) => card.dataset.key)")
    assert order == ["x:accents", "x:zalgo", "x:before"]
    accents, marked, before = incoming(page, "x:accents"), incoming(page, "x:zalgo"), incoming(page, "x:before")
    text, head = marked.locator(".post-text"), marked.locator(".post-head")
    gap = 7  # of the 7.5 px between two cards
    for state in ("cut", "open"):
        assert await looks_the_same_without(page, await box_of(accents, bottom=gap), marked), state
        assert await looks_the_same_without(page, await box_of(before, top=gap), marked), state
        assert await looks_the_same_without(page, await box_of(head), text), state
        room = await text.evaluate("t => parseFloat(getComputedStyle(t).paddingTop)")  # above its first line
        assert await looks_the_same_without(page, await box_of(text, top=-room), head), state
        if state == "cut":
            await marked.get_by_role("button", name="Show all").click()
            await expect(text).to_have_attribute("data-open", "true")

    # Clipping cuts nothing of ordinary accents, above the first line or under the last.
    seen = await accents.screenshot()
    await accents.evaluate("""card => [card, ...card.querySelectorAll("*")].forEach(
      (el) => el.style.setProperty("overflow", "visible", "important"))""")
    assert await pixels_apart(page, seen, await accents.screenshot()) == 0


async def test_a_long_post_is_cut_at_six_lines_and_show_all_reads_it_whole_with_its_state_said(
    night: Night, chromium_page: Page
) -> None:
    # A 10,000-character or 50-line post made one card many screens tall.
    page = chromium_page
    await sign_in(page, night)
    await night.publish(
        post("x:wide", ("spam " * 2000).strip()),
        post("x:tall", "\n".join(f"line {n}" for n in range(1, 51))),
        post("x:short", "a short post"),
    )
    await expect(page.locator("#incoming article")).to_have_count(3, timeout=WAIT_MS)
    line = "t => parseFloat(getComputedStyle(t).lineHeight)"
    line_height = await incoming(page, "x:short").locator(".post-text").evaluate(line)
    lines_tall = "t => t.clientHeight - parseFloat(getComputedStyle(t).paddingTop)"  # not the room for accents
    for key in ("x:wide", "x:tall"):
        text = incoming(page, key).locator(".post-text")
        assert await text.evaluate(lines_tall) <= 6 * line_height + 1
        toggle = incoming(page, key).get_by_role("button", name="Show all")
        await expect(toggle).to_be_visible()
        await expect(toggle).to_have_attribute("aria-expanded", "false")
        await expect(toggle).to_have_attribute("aria-controls", await text.get_attribute("id") or "no id")
    await expect(incoming(page, "x:short").locator(".post-more")).to_be_hidden()

    toggle = incoming(page, "x:tall").get_by_role("button", name="Show all")
    await toggle.focus()
    await page.keyboard.press("Enter")
    toggle = incoming(page, "x:tall").locator(".post-more")
    await expect(toggle).to_have_attribute("aria-expanded", "true")
    await expect(toggle).to_have_text("Show less")
    await expect(toggle).to_be_focused()
    text = incoming(page, "x:tall").locator(".post-text")
    lines = await text.evaluate(f"t => [t.scrollHeight - t.clientHeight, ({lines_tall})(t) / ({line})(t)]")
    assert lines[0] == 0 and round(lines[1]) == 50, lines
    await page.keyboard.press("Enter")
    await expect(toggle).to_have_attribute("aria-expanded", "false")
    assert await text.evaluate(lines_tall) <= 6 * line_height + 1


async def test_the_console_shows_a_realistic_night_and_can_screenshot_it(night: Night, chromium_page: Page) -> None:
    """Also the source of docs/screenshots/console.png when MIXER_SCREENSHOTS=1."""
    page = chromium_page
    await page.set_viewport_size({"width": 1440, "height": 900})
    recorded = recorded_night(9, ago_ms=30_000)
    await night.publish(*recorded)
    await sign_in(page, night, name="Dana")
    await expect(page.locator("#incoming article")).to_have_count(len(recorded), timeout=WAIT_MS)

    await page.get_by_label("Blocked words and phrases").fill("crypto giveaway\nbuy now")
    await page.get_by_label("Blocked accounts").fill("x:spammer")
    await page.get_by_role("button", name="Save blocklist").click()
    await expect(page.locator("#rules-status")).to_contain_text("Saved", timeout=WAIT_MS)
    pin_key, hide_key = recorded[0].key, recorded[3].key
    await incoming(page, pin_key).get_by_role("button", name="Pin", exact=True).click()
    await expect(page.locator("#pinned")).to_be_visible(timeout=WAIT_MS)
    await incoming(page, hide_key).get_by_role("button", name="Hide", exact=True).click()
    await expect(incoming(page, hide_key)).to_have_attribute("data-state", "hidden", timeout=WAIT_MS)
    await page.get_by_role("switch", name="Approval mode").click()
    await expect(page.locator("#audit tr")).to_have_count(4, timeout=WAIT_MS)
    question = post(
        "mastodon:https://mastodon.example/@rosa/1",
        "Q2: Which module do you reach for first when a script has to talk to a REST API? #pstweetchat",
        ("pstweetchat", "powershell"),
        handle="rosa@mastodon.example",
        name="Rosa Martínez",
    )
    await night.publish(question.replace(source="mastodon"))
    await expect(page.locator("#queue article")).to_have_count(1, timeout=WAIT_MS)

    if os.environ.get("MIXER_SCREENSHOTS") == "1":
        # the clicks above scrolled the incoming column down to the hidden post: show its top
        await page.evaluate("() => document.querySelectorAll('.column, .panel').forEach(el => el.scrollTop = 0)")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOT)
