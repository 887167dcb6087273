"""The projector wall (web/index.html + wall*.js) in real headless Chromium against the real app and Redis.

Most posts go straight into the merged feed stream (as the merge stage writes it), so these
tests cover the page and the server's /api/feed, /ws and resume path together; the
moderator tests run the real merge stage too. Set MIXER_SCREENSHOTS=1 to also write
docs/screenshots/wall.png and wall-light.png.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgpack
import pytest
import redis.asyncio as aioredis
import segno
from playwright.async_api import Locator, Page, Route, WebSocketRoute, expect

from mixer.codec import EDIT_FIELD, FIELD, RETRACT_FIELD
from mixer.config import ConfigError, load_settings
from mixer.fanout.pages import qr_code_svg
from mixer.keys import Keys
from mixer.merge.qa import qa_tags
from mixer.models import Attachment, Post
from mixer.settings import ChatSettings
from tests import browser
from tests.browser import (
    LiveServer,
    Night,
    box_of,
    browser_settings,
    looks_the_same_without,
    moderated_night,
    pixels_apart,
    png_bytes,
    publish,
    publish_join,
    record_dialogs,
    reset_during_reload,
    zalgo,
)
from tests.helpers import ROOT, live_all_day_now, recorded_night, wall_post

# pytest finds fixtures among a module's attributes: this makes the shared browser fixtures usable here.
chromium_page = browser.chromium_page
live_server = browser.live_server

SCREENSHOTS = ROOT / "docs" / "screenshots"
CARDS = "#posts article.post"  # the feed's cards (the pinned post is a card too, outside #posts)
WAIT_MS = 10_000  # for anything that should show up promptly
RECONNECT_WAIT_MS = 30_000  # a reconnect waits out the backoff
STATS_WAIT_MS = 5_000  # the test servers send stats every second
MOD_TOKEN = "m0d"
MOD_HEADERS = {"Authorization": f"Bearer {MOD_TOKEN}", "X-Moderator": "Dana"}
JOIN_LINK = "https://example.org/join/chatmixer"
EN_DASH = "\u2013"  # in the legend's "7\u201312 of 25"


async def publish_merged(redis: aioredis.Redis, stream: str, *posts: Post) -> list[str]:
    """Append posts to ``stream`` as the merge stage writes them (with their Q/A numbering); returns their ids."""
    ids = []
    for post in posts:
        item = post.to_dict()
        del item["id"]
        if (qa := qa_tags(post.text)) is not None:
            item["qa"] = {"role": qa[0], "n": qa[1]}
        entry_id = await redis.xadd(stream, {FIELD: msgpack.packb(item, use_bin_type=True)})
        ids.append(entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id))
    return ids


def card(page: Page, post_id: str) -> Locator:
    return page.locator(f'{CARDS}[data-id="{post_id}"]')


def wall_url(server: LiveServer, **query: str) -> str:
    # By default these tests read the full feed (the shaped streams have their own tests) and show
    # each post at once (the pacing test sets its own min_seconds).
    return server.url.rstrip("/") + "/?" + urlencode({"profile": "full", "min_seconds": "0"} | query)


async def open_wall(page: Page, server: LiveServer, **query: str) -> None:
    await page.goto(wall_url(server, **query))
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


async def shown_ids(page: Page) -> list[str]:
    return await page.locator(CARDS).evaluate_all("cards => cards.map(c => c.dataset.id)")


@pytest.fixture
async def linked_server(redis_url: str, keys: Keys) -> AsyncIterator[LiveServer]:
    """The app with ``[event] link`` set, so the wall shows a join QR code."""
    server = LiveServer(browser_settings(keys.prefix, event_link=JOIN_LINK), redis_url)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def night(redis_url: str, keys: Keys) -> AsyncIterator[Night]:
    """The app with moderation on and a running merge stage."""
    async with moderated_night(browser_settings(keys.prefix, moderation_token=MOD_TOKEN), redis_url, keys) as night:
        yield night


async def test_accents_drawn_over_the_line_are_whole_in_names_and_texts_and_piled_marks_stay_in_their_card(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    # Clipped at their lines, a Vietnamese Ẫ showed as Â, Ổ as Ố, Ḯ as Ï: another letter. And an avatar's initial,
    # a letter with all its marks, drew a column of piled marks over the cards above and below.
    page = chromium_page
    await open_wall(page, live_server)
    before, marked, accents = await publish(
        redis,
        keys,
        wall_post("x:before", text="an older post"),
        wall_post("x:zalgo", text=zalgo("stacked"), name=zalgo("Zed")),
        wall_post("x:accents", text="Ẫ Ổ Ǻ Ḯ ǘ Tiếng Việt\nunder: Ạ Ỵ ą ç ğ ų", name="Bùi Ẫn Ổ", handle="ẫn"),
    )
    await expect(page.locator(CARDS)).to_have_count(3, timeout=WAIT_MS)
    assert await shown_ids(page) == [accents, marked, before]
    await page.wait_for_function("() => document.getAnimations().length === 0")  # the cards have glided into place
    gap = await page.locator(CARDS).nth(1).evaluate("c => c.getBoundingClientRect().top") - (
        await page.locator(CARDS).nth(0).evaluate("c => c.getBoundingClientRect().bottom")
    )
    assert await looks_the_same_without(page, await box_of(card(page, accents), bottom=gap - 1), card(page, marked))
    assert await looks_the_same_without(page, await box_of(card(page, before), top=gap - 1), card(page, marked))

    seen = await card(page, accents).screenshot()
    await card(page, accents).evaluate("""card => [card, ...card.querySelectorAll("*")].forEach(
      (el) => el.style.setProperty("overflow", "visible", "important"))""")
    assert await pixels_apart(page, seen, await card(page, accents).screenshot()) == 0


# The event's name and hashtag in the header: [the name cut short, the hashtag cut short, the hashtag in sight].
HEADER_SEEN = """() => {
  const [name, hashtag] = ["event-name", "event-hashtag"].map((id) => document.getElementById(id));
  const shown = name.parentElement.getBoundingClientRect(), box = hashtag.getBoundingClientRect();
  return [name.scrollWidth > name.clientWidth, hashtag.scrollWidth > hashtag.clientWidth,
          box.top >= shown.top && box.bottom <= shown.bottom];
}"""


async def test_on_a_phone_the_event_name_is_whole_and_a_hashtag_with_no_room_beside_it_is_left_out_not_cut(
    live_server: LiveServer, chromium_page: Page
) -> None:
    # At 390 px both were cut short, "#chatmix… #cha…", though the name alone fits.
    page = chromium_page
    for width, hashtag_in_sight in ((390, False), (700, True)):
        await page.set_viewport_size({"width": width, "height": 844})
        await open_wall(page, live_server)
        await expect(page.locator("#event-hashtag")).to_have_text("#chatmixer")
        assert await page.evaluate(HEADER_SEEN) == [False, False, hashtag_in_sight], width


async def test_live_posts_appear_on_top_with_their_chat_badge_in_the_chat_colour(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await open_wall(page, live_server)
    await expect(page.locator("#event-name")).to_have_text("#chatmixer night")
    await expect(page.locator("#event-hashtag")).to_have_text("#chatmixer")

    smbiz_id, edchat_id = await publish(
        redis,
        keys,
        wall_post("x:1", ("smbiz",), "Who runs their shop's socials themselves?"),
        wall_post("x:2", ("edchat",), "Exit tickets changed my Fridays.", name="Bob Teacher", handle="bobt"),
    )

    await expect(card(page, edchat_id)).to_contain_text("Exit tickets changed my Fridays.", timeout=WAIT_MS)
    await expect(card(page, smbiz_id)).to_be_visible()
    assert await shown_ids(page) == [edchat_id, smbiz_id], "newest post first"

    smbiz_badge = card(page, smbiz_id).locator(".badge")
    await expect(smbiz_badge).to_have_text("#smbiz")
    await expect(smbiz_badge).to_have_css("background-color", "rgb(79, 195, 247)")
    await expect(smbiz_badge).to_have_css("color", "rgb(0, 0, 0)")  # black reads better on light blue
    edchat = card(page, edchat_id)
    await expect(edchat.locator(".badge")).to_have_css("background-color", "rgb(255, 183, 77)")
    await expect(edchat.locator(".author-name")).to_have_text("Bob Teacher")
    await expect(edchat.locator(".author-handle")).to_have_text("@bobt")
    await expect(edchat.locator(".post-time")).to_have_text("just now")

    legend = page.locator("#legend .legend-item")
    await expect(legend).to_have_count(len(live_server.settings.chats))
    await expect(legend.first).to_contain_text("Small business marketing")


async def test_post_in_two_chats_shows_both_badges_in_their_colours(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await open_wall(page, live_server)
    (post_id,) = await publish(
        redis, keys, wall_post("x:both", ("smbiz", "edchat"), "Teaching kids to run a lemonade stand")
    )

    badges = card(page, post_id).locator(".badge")
    await expect(badges).to_have_text(["#smbiz", "#edchat"], timeout=WAIT_MS)
    await expect(badges.nth(0)).to_have_css("background-color", "rgb(79, 195, 247)")
    await expect(badges.nth(1)).to_have_css("background-color", "rgb(255, 183, 77)")
    await expect(page.locator(CARDS)).to_have_count(1)


async def test_history_loads_first_then_live_posts_with_no_duplicates_across_the_boundary(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    history = await publish(redis, keys, *(wall_post(f"x:h{i}", text=f"history {i}") for i in range(3)))
    between: list[str] = []

    async def publish_while_history_is_in_flight(route: Route) -> None:
        # Lands after the history snapshot but before the websocket opens: only the resume can deliver it.
        response = await route.fetch()
        between.extend(await publish(redis, keys, wall_post("x:between", text="posted between history and live")))
        await route.fulfill(response=response)

    await page.route("**/api/feed?*", publish_while_history_is_in_flight)
    await open_wall(page, live_server)
    await expect(page.locator(CARDS)).to_have_count(4, timeout=WAIT_MS)

    live = await publish(redis, keys, *(wall_post(f"x:l{i}", text=f"live {i}") for i in range(2)))
    await expect(card(page, live[-1])).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator(CARDS)).to_have_count(6)
    assert await shown_ids(page) == list(reversed(history + between + live))


async def test_hostile_posts_render_as_literal_text_and_run_nothing(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    dialogs = record_dialogs(page)
    # A hostile pinned post, stored as the merge stage stores a pin: every new wall gets it in its hello.
    pin_text = "<script>alert(3)</script> \u202epinned"
    pin_name = "\u202e<img src=x onerror=alert(4)>"
    hostile_pin = wall_post("x:pin", text=pin_text, name=pin_name, url="javascript:alert(5)").to_dict()
    await redis.set(keys.pinned, msgpack.packb(hostile_pin | {"id": "1-1"}))
    await open_wall(page, live_server)

    script_text = "<script>alert(1)</script>"
    img_text = "<img src=x onerror=alert(1)>"
    bidi_text = "price: \u202e0001$ only today"
    evil_tag = "<img/src=x/onerror=alert(1)>"
    ids = await publish(
        redis,
        keys,
        wall_post("x:script", text=script_text, name="<b>Mallory</b>"),
        wall_post("x:img", ("smbiz", evil_tag), img_text),
        wall_post(
            "x:js",
            text="click me",
            url="javascript:alert(1)",
            avatar="javascript:alert(1)",
            media=("javascript:alert(1)", "data:image/png;base64,AAAA"),
        ),
        wall_post("x:bidi", text=bidi_text, name="\u202eevil name", handle="bidi"),
    )
    question_text = "<img src=x onerror=alert(6)> \u202ewhat is 01$?"
    ids += await publish_merged(redis, keys.feed, wall_post("x:q", text=f"Q4: {question_text}"))
    await expect(page.locator(CARDS)).to_have_count(5, timeout=WAIT_MS)

    await expect(card(page, ids[0]).locator(".post-text")).to_have_text(script_text)
    await expect(card(page, ids[0]).locator(".author-name")).to_have_text("<b>Mallory</b>")
    await expect(card(page, ids[1]).locator(".post-text")).to_have_text(img_text)
    await expect(card(page, ids[1]).locator(".badge").nth(1)).to_have_text("#" + evil_tag)
    assert await card(page, ids[3]).locator(".post-text").text_content() == bidi_text
    pinned = page.locator("#pinned article.post")
    assert await pinned.locator(".post-text").text_content() == pin_text
    assert await pinned.locator(".author-name").text_content() == pin_name
    question = page.locator('.legend-item[data-tag="smbiz"] .legend-question-text')
    assert await question.text_content() == question_text
    await expect(question).to_have_attribute("dir", "auto")
    assert await question.evaluate("el => el.tagName") == "BDI"

    # Nothing from the text became markup: the only elements are the wall's own.
    hostile_places = f"{CARDS}, #pinned, #legend"
    assert await page.locator(hostile_places).locator("img, script, b").count() == 0
    assert await page.locator("script").count() == 1  # wall.js itself (its modules are imports, not elements)
    # A javascript: URL is never a link, an avatar or a media source.
    assert await page.locator("a[href]").evaluate_all("links => links.map(a => a.href)") == [
        "https://example.test/x:q",
        "https://example.test/x:bidi",
        "https://example.test/x:img",
        "https://example.test/x:script",
    ]
    for link in await page.locator("a[href]").all():
        assert await link.get_attribute("rel") == "noopener nofollow noreferrer"
        assert await link.get_attribute("target") == "_blank"

    # The override is confined to its own element: the text is dir=auto, the name isolated in <bdi>,
    # so the @handle after an overridden name still sits to its right.
    bidi_card = card(page, ids[3])
    await expect(bidi_card.locator(".post-text")).to_have_attribute("dir", "auto")
    name_box = await bidi_card.locator(".author-name").bounding_box()
    handle_box = await bidi_card.locator(".author-handle").bounding_box()
    assert name_box is not None and handle_box is not None
    assert handle_box["x"] >= name_box["x"] + name_box["width"]
    assert await bidi_card.locator(".author-name").evaluate("el => el.tagName") == "BDI"
    await expect(bidi_card.locator(".avatar-fallback")).to_have_text("E")  # the override itself is skipped

    await page.evaluate("() => new Promise(requestAnimationFrame)")  # let any stray handler run first
    assert dialogs == []


async def test_a_right_to_left_post_reads_right_to_left_and_a_left_to_right_one_left_to_right(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    # The text's own first letters set its direction (dir="auto"), so a Hebrew post starts at the right edge.
    page = chromium_page
    await open_wall(page, live_server)
    hebrew_text = "זהו פוסט ארוך בעברית בלבד שמטרתו לבדוק יישור מימין לשמאל בכרטיס של הקיר " * 3
    hebrew, arabic, english = await publish(
        redis,
        keys,
        wall_post("x:he", text=hebrew_text),
        wall_post("x:ar", text="مرحبا بالجميع في #smbiz الليلة! Welcome everyone"),
        wall_post("x:en", text="Welcome everyone: مرحبا"),
    )
    for post_id, direction in ((hebrew, "rtl"), (arabic, "rtl"), (english, "ltr")):
        text = card(page, post_id).locator(".post-text")
        await expect(text).to_be_visible(timeout=WAIT_MS)
        assert await text.evaluate(f"el => el.matches(':dir({direction})')"), (post_id, direction)
    # its last line ends at the right edge, where a right-to-left paragraph starts
    ends = (
        await card(page, hebrew)
        .locator(".post-text")
        .evaluate(
            """el => {
            const range = document.createRange();
            range.selectNodeContents(el);
            const lines = [...range.getClientRects()];
            return [Math.round(lines[lines.length - 1].right), Math.round(el.getBoundingClientRect().right)];
        }"""
        )
    )
    assert abs(ends[0] - ends[1]) <= 2, ends


async def test_avatar_falls_back_to_the_authors_initial_when_missing_or_broken(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await open_wall(page, live_server)
    missing, broken = await publish(
        redis,
        keys,
        wall_post("x:noavatar", name="zoë Example", handle="zoe"),
        wall_post("x:broken", name="", handle="@quinn", avatar=f"{live_server.url}static/no-such-avatar.png"),
    )

    await expect(card(page, missing).locator(".avatar-fallback")).to_have_text("Z", timeout=WAIT_MS)
    # The image 404s: it is replaced by the initial of the handle (the name is empty).
    await expect(card(page, broken).locator(".avatar-fallback")).to_have_text("Q", timeout=WAIT_MS)
    await expect(card(page, broken).locator("img")).to_have_count(0)


async def test_avatar_and_media_images_show_when_they_load(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    image = png_bytes(64, 64, (240, 160, 60), (120, 40, 140))
    await page.route(
        "https://images.example.test/**", lambda route: route.fulfill(body=image, content_type="image/png")
    )
    await open_wall(page, live_server)
    (post_id,) = await publish(
        redis,
        keys,
        wall_post(
            "x:pics",
            text="Our new shop front!",
            avatar="https://images.example.test/avatar.png",
            media=("https://images.example.test/shop.png",),
        ),
    )
    shown = card(page, post_id)
    await expect(shown.locator("img.avatar-image")).to_have_attribute(
        "src", "https://images.example.test/avatar.png", timeout=WAIT_MS
    )
    await expect(shown.locator("img.post-media")).to_be_visible()
    assert await shown.locator("img.post-media").evaluate("img => img.complete && img.naturalWidth") == 64
    await expect(shown.locator(".avatar-fallback")).to_have_count(0)


async def test_wall_reconnects_after_a_server_restart_and_shows_the_post_published_meanwhile_once(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await open_wall(page, live_server)
    (before,) = await publish(redis, keys, wall_post("x:before", text="before the restart"))
    await expect(card(page, before)).to_be_visible(timeout=WAIT_MS)

    port = live_server.port
    await live_server.stop()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    (meanwhile,) = await publish(redis, keys, wall_post("x:meanwhile", text="published while the server was down"))
    await live_server.start()
    assert live_server.port == port

    await expect(card(page, meanwhile)).to_be_visible(timeout=RECONNECT_WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    (after,) = await publish(redis, keys, wall_post("x:after", text="after the restart"))
    await expect(card(page, after)).to_be_visible(timeout=WAIT_MS)
    assert await shown_ids(page) == [after, meanwhile, before]


async def test_wall_resumes_after_a_network_drop_and_shows_what_it_missed_once(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    network_up = True
    refused = asyncio.Event()
    open_routes: list[tuple[WebSocketRoute, WebSocketRoute]] = []

    async def through_the_network(ws: WebSocketRoute) -> None:
        # Every /ws of the page passes through here; while the "network" is down it fails at once.
        if network_up:
            open_routes.append((ws, ws.connect_to_server()))
        else:
            refused.set()
            await ws.close(code=1001)

    await page.route_web_socket(re.compile(r"/ws\?"), through_the_network)
    await open_wall(page, live_server)
    (before,) = await publish(redis, keys, wall_post("x:before-drop", text="before the drop"))
    await expect(card(page, before)).to_be_visible(timeout=WAIT_MS)

    network_up = False
    for page_side, server_side in open_routes:
        await page_side.close(code=1001)
        await server_side.close()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    (meanwhile,) = await publish(redis, keys, wall_post("x:during-drop", text="posted while the wall was cut off"))
    await asyncio.wait_for(refused.wait(), RECONNECT_WAIT_MS / 1000)  # the wall tried, and failed, to reconnect
    network_up = True

    await expect(card(page, meanwhile)).to_be_visible(timeout=RECONNECT_WAIT_MS)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    (after,) = await publish(redis, keys, wall_post("x:after-drop", text="after the drop"))
    await expect(card(page, after)).to_be_visible(timeout=WAIT_MS)
    assert await shown_ids(page) == [after, meanwhile, before]


async def test_a_post_arriving_while_the_wall_reloads_after_a_reset_is_shown_once_and_a_resume_asks_from_the_cursor(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    async def open_feed() -> Page:
        await open_wall(chromium_page, live_server)
        return chromium_page

    await reset_during_reload(chromium_page, redis, keys, open_feed, CARDS)


# Posts per chat published to the full feed before each of four stats frames: the legend's rates and sparklines.
NIGHT_RATES = {
    "pstweetchat": (9, 6, 11, 8),
    "powershell": (3, 4, 2, 5),
    "smbiz": (4, 2, 3, 5),
    "edchat": (1, 3, 2, 4),
    "journchat": (0, 1, 2, 1),
    "pshsummit": (1, 0, 1, 2),
}


SHOP_PHOTOS = (
    Attachment(
        "image",
        "https://images.example.test/shop.png",
        alt="The bakery's counter, bread rolls in baskets",
        width=1200,
        height=900,
    ),
    Attachment("image", "https://images.example.test/shop-club.png", width=900, height=900),
)


def night_extras() -> list[Post]:
    """Posts of the other chats of the night, with questions and answers, an avatar and two photos (one described)."""
    return [
        wall_post(
            "x:smbiz-q2",
            ("smbiz",),
            "Q2: Where did your last ten customers first hear about you? #smbiz",
            name="Small Biz Chat",
            handle="smbizchat",
        ),
        wall_post(
            "mastodon:https://mastodon.example/@rosa/1",
            ("smbiz", "edchat"),
            "A2: We run a tiny bakery and a Friday baking club for kids. Half our regulars found us through "
            "the club, not Instagram. #smbiz #edchat",
            name="Rosa Martínez",
            handle="rosa@mastodon.example",
            avatar="https://images.example.test/rosa.png",
        ),
        wall_post(
            "x:edchat-q1",
            ("edchat",),
            "Q1: What is one routine that saves your Fridays? #edchat",
            name="EdChat hosts",
            handle="edchat",
        ),
        wall_post(
            "bluesky:at://did:plc:journo/app.bsky.feed.post/1",
            ("journchat",),
            "A1: Local newsrooms that publish their corrections log get more tips, not fewer. #journchat",
            name="Dev Okafor",
            handle="devokafor.bsky.social",
        ),
    ]


def with_photos(posts: list[Post]) -> list[Post]:
    """``posts`` with Rosa's bakery post carrying ``SHOP_PHOTOS``, moved last (on top of the wall)."""
    rosa = [p.replace(attachments=SHOP_PHOTOS) for p in posts if "rosa" in p.key]
    return [p for p in posts if "rosa" not in p.key] + rosa


async def test_wall_shows_a_realistic_night_and_can_screenshot_it(
    linked_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    """Also the source of docs/screenshots/wall.png and wall-light.png when MIXER_SCREENSHOTS=1."""
    server = linked_server
    dark = chromium_page
    light = await dark.context.new_page()
    avatar = png_bytes(96, 96, (255, 196, 120), (200, 90, 60))
    shop = png_bytes(320, 320, (90, 170, 220), (30, 60, 120))
    wall_stream = keys.shaped("wall")  # the paced profile the wall shows by default

    night = recorded_night(12, {c.tag for c in server.settings.chats})
    history_ids = await publish_merged(redis, wall_stream, *night[:-2])
    host_reminder = night[0].to_dict() | {"id": history_ids[0]}
    await redis.set(keys.pinned, msgpack.packb(host_reminder))
    await redis.hset(keys.shaped_drops("wall"), mapping={"pstweetchat": 23, "powershell": 6, "smbiz": 4})
    for page, theme in ((dark, "dark"), (light, "light")):
        await page.set_viewport_size({"width": 1920, "height": 1080})
        await page.route(
            "https://images.example.test/**",
            lambda route: route.fulfill(body=shop if "shop" in route.request.url else avatar, content_type="image/png"),
        )
        await open_wall(page, server, profile="wall", theme=theme)
        await expect(page.locator(CARDS)).to_have_count(len(history_ids), timeout=WAIT_MS)

    # A few minutes of the night in twenty seconds: the full feed's posts give the legend its rates.
    for frame in range(4):
        posts = [
            wall_post(f"x:rate-{tag}-{frame}-{i}", (tag,), f"{tag} post {i}")
            for tag, counts in NIGHT_RATES.items()
            for i in range(counts[frame])
        ]
        await publish(redis, keys, *posts)
        await dark.wait_for_function(
            """(want) => {
                const line = document.querySelector('.legend-item[data-tag="pstweetchat"] polyline');
                return (line ? line.getAttribute("points").split(" ").length : 0) >= want;
            }""",
            arg=frame + 1,
            timeout=STATS_WAIT_MS,
        )

    live_ids = await publish_merged(redis, wall_stream, *night[-2:], *with_photos(night_extras()))
    for page in (dark, light):
        await expect(card(page, live_ids[-1])).to_be_visible(timeout=WAIT_MS)
        await expect(page.locator(CARDS)).to_have_count(len(history_ids) + len(live_ids))
        await expect(card(page, live_ids[-1]).locator(".badge")).to_have_text(["#smbiz", "#edchat"])
        await expect(card(page, live_ids[-1]).locator("img.post-media")).to_have_count(2)
        await expect(card(page, live_ids[-1]).locator(".alt-badge")).to_have_text("ALT")
        await expect(card(page, live_ids[-1]).locator(".qa")).to_have_text("A2")
        await expect(page.locator('.legend-item[data-tag="smbiz"] .legend-question .qa')).to_have_text("Q2")
        await expect(page.locator('.legend-item[data-tag="pstweetchat"] .legend-more')).to_have_text(
            "+23 more from #pstweetchat"
        )
        await expect(page.locator("#pinned article.post")).to_contain_text("include the hashtag")
        await page.wait_for_function("() => [...document.images].every((img) => img.complete && img.naturalWidth)")

    if os.environ.get("MIXER_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for page, name in ((dark, "wall.png"), (light, "wall-light.png")):
            await page.emulate_media(reduced_motion="reduce")  # no card caught mid-animation
            await page.screenshot(path=SCREENSHOTS / name)
    await light.close()


async def test_an_update_refreshes_a_shown_card_and_a_retraction_removes_it(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await open_wall(page, live_server)
    first, second = await publish(redis, keys, wall_post("x:up", text="before"), wall_post("x:gone", text="doomed"))
    await expect(card(page, second)).to_be_visible(timeout=WAIT_MS)
    updated = {**wall_post("x:up", text="after the edit").to_dict(), "id": first, "boosts": 3, "similar": 2}
    await redis.xadd(keys.feed, {EDIT_FIELD: msgpack.packb(updated)})
    await redis.xadd(keys.feed, {RETRACT_FIELD: msgpack.packb({"ids": [second], "keys": ["x:gone"]})})
    await expect(card(page, first).locator(".post-text")).to_have_text("after the edit", timeout=WAIT_MS)
    await expect(card(page, first).locator(".post-boosts")).to_contain_text("3")
    await expect(card(page, first).locator(".post-similar")).to_have_text("+2 similar")
    await expect(card(page, second)).to_have_count(0, timeout=WAIT_MS)


async def test_a_filtered_wall_shows_a_post_that_joins_its_chat_late_and_resumes_from_the_newest_id(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    sockets: list[str] = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    await open_wall(page, live_server, chats="powershell")
    late = wall_post("x:late", ("pstweetchat",), "asked in #pstweetchat, tagged #powershell a minute later")
    late_id, newest = await publish(redis, keys, late, wall_post("x:newest", ("powershell",), "on time"))
    await expect(card(page, newest)).to_be_visible(timeout=WAIT_MS)
    await publish_join(redis, keys, late, late_id, ["powershell"])
    await expect(card(page, late_id).locator(".badge")).to_have_text(["#pstweetchat", "#powershell"], timeout=WAIT_MS)
    assert await shown_ids(page) == [late_id, newest]  # a new card, on top as it arrived

    await live_server.stop()  # the wall resumes from the newest id it holds, not the late post's older one
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    await live_server.start()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=RECONNECT_WAIT_MS)
    assert f"since={newest}" in sockets[-1], sockets
    (after,) = await publish(redis, keys, wall_post("x:after", ("powershell",), "after the resume"))
    await expect(card(page, after)).to_be_visible(timeout=WAIT_MS)
    assert await shown_ids(page) == [after, late_id, newest]


async def test_a_wall_whose_chats_filter_names_no_chat_of_the_feed_says_so_and_which_chats_there_are(
    live_server: LiveServer, chromium_page: Page
) -> None:
    page = chromium_page
    await open_wall(page, live_server, chats="SmBiz,nosuchchat")  # one of them is here: the usual wait
    await expect(page.locator("#empty")).to_have_text("Waiting for the first posts…")
    await open_wall(page, live_server, chats="nosuchchat,#Other")
    chats_here = ", ".join(f"#{chat.tag}" for chat in browser.TEST_CHATS)
    await expect(page.locator("#empty")).to_have_text(
        f"None of the chats #nosuchchat, #other is on this feed. Chats here: {chats_here}."
    )
    await expect(page.locator("#empty")).to_be_visible()


async def test_an_unknown_profile_is_asked_for_once_then_the_wall_says_so_and_shows_the_default_feed(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    asked: list[str] = []
    page.on(
        "request",
        lambda request: (
            asked.append(request.url) if "/api/feed?" in request.url and "profile=bogus" in request.url else None
        ),
    )
    await open_wall(page, live_server, profile="bogus")
    await expect(page.locator("#notice")).to_have_text("Unknown profile “bogus”: showing the “wall” feed instead.")
    await expect(page.locator("#notice")).to_be_visible()
    await expect(page.locator("#event-name")).to_have_text("#chatmixer night")
    await expect(page.locator("#legend .legend-item")).to_have_count(len(live_server.settings.chats))
    assert len(asked) == 1, asked  # a 400 is not asked again and again

    # The default "wall" profile is what the wall now follows: its legend takes that profile's stats.
    await publish(redis, keys, wall_post("x:p1", ("smbiz",), "one"))
    await expect(page.locator('.legend-item[data-tag="smbiz"] .legend-rate')).to_have_text(
        re.compile(r"^\d+/min$"), timeout=STATS_WAIT_MS
    )
    assert len(asked) == 1, asked


async def test_tabbing_to_a_link_low_in_the_feed_shows_it_and_the_feed_scrolls_back_to_the_newest_when_focus_leaves(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await open_wall(page, live_server, motion="reduced")
    ids = await publish(redis, keys, *(wall_post(f"x:t{i}", text=f"post number {i}") for i in range(20)))
    await expect(page.locator(CARDS)).to_have_count(20, timeout=WAIT_MS)

    for _ in range(40):  # Tab on until a link far below the fold has focus: keyboard access reaches every card
        await page.keyboard.press("Tab")
        if await page.evaluate("() => document.activeElement.closest('article')?.dataset.id") == ids[0]:
            break
    feed = page.locator("#feed")
    assert await feed.evaluate("feed => feed.scrollTop") > 0, "the focused link was scrolled into view"
    assert await page.evaluate(
        "() => { const r = document.activeElement.getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= window.innerHeight; }"
    ), "the focused link is on screen"

    await page.evaluate("() => document.activeElement.blur()")
    await page.wait_for_function("() => document.getElementById('feed').scrollTop === 0", timeout=WAIT_MS)
    # Scrolled by anything but focus (find in page, a script), it comes straight back.
    await feed.evaluate("feed => { feed.scrollTop = 300; }")
    await page.wait_for_function("() => document.getElementById('feed').scrollTop === 0", timeout=WAIT_MS)


async def test_a_legend_of_more_chats_than_fit_shows_the_live_one_first_and_the_others_in_turns(
    redis_url: str, keys: Keys, chromium_page: Page
) -> None:
    always = live_all_day_now()
    chats = (*(ChatSettings(f"chat{i:02}", f"Chat number {i}", "#4fc3f7") for i in range(24)),)
    chats += (ChatSettings("latecomer", "Listed last, live now", "#ffb74d", schedule=always),)
    server = LiveServer(browser_settings(keys.prefix, chats=chats), redis_url)
    await server.start()
    try:
        page = chromium_page
        await page.set_viewport_size({"width": 1920, "height": 1080})
        await open_wall(page, server)
        rows = page.locator("#legend .legend-item")
        await expect(rows).to_have_count(25)
        await expect(rows.first).to_have_attribute("data-tag", "latecomer")
        pager = page.locator("#legend-pages")
        await expect(pager).to_have_text(re.compile(rf"^1{EN_DASH}\d+ of 25$"))
        first_page = await page.locator("#legend .legend-item:visible").evaluate_all("r => r.map(x => x.dataset.tag)")
        assert 3 < len(first_page) < 25 and first_page[0] == "latecomer"
        assert await page.evaluate(
            """() => {
                const bottom = document.querySelector(".legend").getBoundingClientRect().bottom;
                return [...document.querySelectorAll("#legend .legend-item:not([hidden])")]
                    .every((row) => row.getBoundingClientRect().bottom <= bottom + 0.5);
            }"""
        ), "every row shown fits whole"

        # The next page comes by itself; the live chat stays, the others are the next ones in order.
        await expect(pager).not_to_have_text(re.compile(f"^1{EN_DASH}"), timeout=12_000)
        second_page = await page.locator("#legend .legend-item:visible").evaluate_all("r => r.map(x => x.dataset.tag)")
        assert second_page[0] == "latecomer"
        assert second_page[1] == f"chat{len(first_page) - 1:02}", (first_page, second_page)
        start = len(first_page)
        await expect(pager).to_have_text(f"{start + 1}{EN_DASH}{start + len(second_page) - 1} of 25")
    finally:
        await server.stop()


async def test_the_legend_says_which_chats_are_live_now_and_when_the_others_come_next(
    live_server: LiveServer, chromium_page: Page
) -> None:
    page = chromium_page
    await open_wall(page, live_server)
    smbiz = page.locator('.legend-item[data-tag="smbiz"] .legend-when')
    journchat = page.locator('.legend-item[data-tag="journchat"] .legend-when')
    await expect(smbiz).to_have_text("live now", timeout=WAIT_MS)
    await expect(smbiz).to_have_class("legend-when legend-live")
    await expect(journchat).to_have_text(re.compile(r"^next Mon|^next Tue"), timeout=WAIT_MS)
    await expect(page.locator('.legend-item[data-tag="edchat"] .legend-when')).to_have_count(0)
    await expect(page.locator("#up-next")).to_have_text(re.compile(r"^Up next: #journchat, (Mon|Tue) "))


async def test_a_slot_a_week_or_more_away_shows_its_date_and_a_nearer_one_its_weekday(
    live_server: LiveServer, chromium_page: Page
) -> None:
    page = chromium_page
    now = time.time()
    far, near = now + 28 * 86400, now + 2 * 86400  # a monthly chat four weeks off; a weekly one in two days

    async def move_slots(route: Route) -> None:
        response = await route.fetch()
        directory = await response.json()
        for chat in directory["chats"]:
            when = {"journchat": far, "blogchat": near}.get(chat["tag"])
            if when is not None:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
                chat.update(live=False, next_start=stamp, next_end=stamp)
        await route.fulfill(response=response, json=directory)

    await page.route("**/api/chats*", move_slots)
    await open_wall(page, live_server)
    # The date as the viewer's browser writes it (its time zone, its locale's month names).
    month, day = await page.evaluate(
        """(t) => [new Date(t).toLocaleDateString(undefined, {month: "short"}),
                   new Date(t).toLocaleDateString(undefined, {day: "numeric"})]""",
        far * 1000,
    )
    dated = re.compile(rf"^next \w+,? ({month} {day}|{day} {month}), \d{{1,2}}:\d\d")
    await expect(page.locator('.legend-item[data-tag="journchat"] .legend-when')).to_have_text(dated, timeout=WAIT_MS)
    await expect(page.locator('.legend-item[data-tag="blogchat"] .legend-when')).to_have_text(
        re.compile(r"^next \w+ \d{1,2}:\d\d( [AP]M)?$")
    )
    await expect(page.locator("#up-next")).to_have_text(re.compile(r"^Up next: #blogchat, \w+ \d"))


async def background(page: Page) -> str:
    return await page.evaluate("() => getComputedStyle(document.body).backgroundColor")


async def test_dark_is_the_default_theme_and_light_or_auto_really_change_the_background(
    live_server: LiveServer, chromium_page: Page
) -> None:
    page = chromium_page
    dark, light = "rgb(11, 15, 23)", "rgb(238, 241, 246)"
    await open_wall(page, live_server)
    assert await background(page) == dark
    await open_wall(page, live_server, theme="light")
    assert await background(page) == light
    assert await page.evaluate("() => getComputedStyle(document.body).color") == "rgb(11, 18, 32)"
    await page.emulate_media(color_scheme="light")
    await open_wall(page, live_server, theme="auto")
    assert await background(page) == light
    await page.emulate_media(color_scheme="dark")  # auto follows a change while the wall is open
    await page.wait_for_function("() => document.documentElement.dataset.theme === 'dark'")
    assert await background(page) == dark


async def test_legend_shows_each_chats_live_rate_a_sparkline_and_how_many_posts_the_profile_left_out(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    # The shaping stage's count of smbiz posts the paced "wall" profile left out.
    await redis.hset(keys.shaped_drops("wall"), mapping={"smbiz": 12})
    await open_wall(page, live_server, profile="wall")
    await publish(redis, keys, *(wall_post(f"x:r{i}", ("smbiz",), f"busy {i}") for i in range(3)))

    smbiz = page.locator('.legend-item[data-tag="smbiz"]')
    await expect(smbiz.locator(".legend-rate")).to_have_text("3/min", timeout=STATS_WAIT_MS)
    await expect(smbiz.locator(".legend-more")).to_have_text("+12 more from #smbiz")
    await expect(smbiz.locator("svg.sparkline circle")).to_have_count(1)
    await expect(page.locator('.legend-item[data-tag="edchat"] .legend-rate')).to_have_text("0/min")
    await expect(page.locator('.legend-item[data-tag="edchat"] .legend-more')).to_have_count(0)

    # The next stats frame adds a point: the line is drawn through both.
    line = smbiz.locator("svg.sparkline polyline")
    await expect(line).to_have_attribute(
        "points", re.compile(r"^[\d.]+,[\d.]+( [\d.]+,[\d.]+)+$"), timeout=STATS_WAIT_MS
    )
    await expect(smbiz.locator("svg.sparkline polygon")).to_have_count(1)  # the area under the line
    assert await smbiz.locator("svg.sparkline").evaluate("svg => svg.namespaceURI") == "http://www.w3.org/2000/svg"


async def test_during_an_outage_the_legends_rates_and_sparklines_are_marked_paused_until_the_stream_is_back(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    # They kept showing the last rates as if live while the wall said "Reconnecting…".
    page = chromium_page
    await open_wall(page, live_server)
    await publish(redis, keys, *(wall_post(f"x:r{i}", ("smbiz",), f"busy {i}") for i in range(3)))
    smbiz = page.locator('.legend-item[data-tag="smbiz"]')
    await expect(smbiz.locator(".legend-rate")).to_have_text("3/min", timeout=STATS_WAIT_MS)
    await expect(page.locator("#legend-stale")).to_be_hidden()
    await expect(smbiz.locator(".legend-figures[data-stale]")).to_have_count(0)

    await live_server.stop()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=WAIT_MS)
    await expect(page.locator("#legend-stale")).to_be_visible()
    await expect(page.locator("#legend-stale")).to_have_text("Rates paused")
    figures = smbiz.locator(".legend-figures")
    await expect(figures).to_have_attribute("data-stale", "")
    assert float(await figures.evaluate("el => getComputedStyle(el).opacity")) < 0.6, "dimmed"
    await expect(smbiz.locator(".legend-rate")).to_have_text("3/min")  # the last known, still readable
    await expect(figures).to_have_text(re.compile(r"3/min\s*\(last known, not live\)"))
    await expect(smbiz.locator("svg.sparkline")).to_have_attribute("aria-label", re.compile(r", not live$"))

    await live_server.start()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=RECONNECT_WAIT_MS)
    await expect(page.locator("#legend-stale")).to_be_hidden()
    await expect(figures).not_to_have_attribute("data-stale", "")
    await expect(smbiz.locator("svg.sparkline")).to_have_attribute("aria-label", re.compile(r"last 10 minutes$"))


async def test_a_dark_chat_colours_sparkline_is_drawn_in_the_text_colour_on_the_dark_theme(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await live_server.stop()
    dark = ChatSettings("nightchat", "Black as night", "#000000")
    live_server.settings = dataclasses.replace(live_server.settings, chats=(dark, *live_server.settings.chats))
    await live_server.start()
    await open_wall(page, live_server)
    await publish(redis, keys, wall_post("x:n1", ("nightchat", "smbiz"), "a post in both"))
    lines = page.locator(".legend-item[data-tag] svg.sparkline")
    night = page.locator('.legend-item[data-tag="nightchat"] svg.sparkline')
    await expect(night).to_have_count(1, timeout=STATS_WAIT_MS)
    strokes = await lines.evaluate_all(
        """svgs => svgs.map(svg => {
            const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
            line.setAttribute("class", "sparkline-line");
            svg.append(line);  // (a first sample draws only a dot: the line's style is what is asked)
            return [svg.closest(".legend-item").dataset.tag, getComputedStyle(line).stroke];
        })"""
    )
    colours = dict(strokes)
    text = await page.evaluate("() => getComputedStyle(document.body).color")
    assert colours["nightchat"] == text  # not rgb(0, 0, 0) on the dark background
    assert colours["smbiz"] != text  # a light chat colour keeps its own


@pytest.mark.parametrize("width, height", [(1920, 1080), (1280, 720), (1024, 768)])
async def test_at_every_wall_size_each_sparkline_keeps_a_usable_width_in_one_column_clear_of_a_three_digit_rate(
    live_server: LiveServer, chromium_page: Page, width: int, height: int
) -> None:
    page = chromium_page
    await live_server.stop()  # with a 43-character tag, as a real config has: its rate and line go on the next line
    long_tag = ChatSettings("averyveryveryverylongchattagthatgoesonandon", "A very long tag", "#607d8b")
    live_server.settings = dataclasses.replace(live_server.settings, chats=(long_tag, *live_server.settings.chats))
    await live_server.start()
    await page.set_viewport_size({"width": width, "height": height})
    await open_wall(page, live_server)
    await expect(page.locator("#legend .legend-item .legend-rate")).to_have_count(len(live_server.settings.chats))
    boxes = await page.evaluate(
        """() => {
            const legend = document.querySelector("#legend");
            // The busiest rate a night sees (redrawn on the next stats frame: measure the rows as they are now).
            for (const rate of legend.querySelectorAll(".legend-rate")) rate.textContent = "247/min";
            return [...legend.querySelectorAll(".legend-item:not([hidden])")].map((row) => {
                const rate = row.querySelector(".legend-rate").getBoundingClientRect();
                const spark = row.querySelector("svg.sparkline").getBoundingClientRect();
                const item = row.getBoundingClientRect();
                return {
                    tag: row.dataset.tag, rateRight: rate.right, rateTop: rate.top, rateBottom: rate.bottom,
                    sparkLeft: spark.left, sparkRight: spark.right, sparkTop: spark.top, sparkBottom: spark.bottom,
                    itemRight: item.right,
                };
            });
        }"""
    )
    assert any(box["tag"] == long_tag.tag for box in boxes), boxes  # live chats first, then the first page
    for box in boxes:
        assert box["sparkRight"] - box["sparkLeft"] >= 40, box  # a line that reads, not a mark at the edge
        assert box["rateRight"] <= box["sparkLeft"], box  # side by side, never on top of each other
        assert box["rateTop"] < box["sparkBottom"] and box["sparkTop"] < box["rateBottom"], box  # on one line
        assert box["sparkRight"] <= box["itemRight"] + 0.5, box
    assert len({round(box["sparkLeft"]) for box in boxes}) == 1, boxes  # one column


async def test_each_chat_shows_its_current_question_and_answers_carry_their_number(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await publish_merged(redis, keys.feed, wall_post("x:q1", ("smbiz",), "Q1: How did you find your first customers?"))
    await open_wall(page, live_server)
    question = page.locator('.legend-item[data-tag="smbiz"] .legend-question')
    await expect(question).to_have_text("Q1How did you find your first customers?", timeout=WAIT_MS)

    q2, a2, other = await publish_merged(
        redis,
        keys.feed,
        wall_post("x:q2", ("smbiz",), "Q2: Which tool saves you the most time each week?"),
        wall_post("x:a2", ("smbiz",), "A2: a shared calendar, honestly", name="Bob", handle="bob"),
        wall_post("x:eq1", ("edchat",), "Q1) What do exit tickets tell you?"),
    )
    await expect(question.locator(".qa")).to_have_text("Q2", timeout=WAIT_MS)
    await expect(question.locator(".legend-question-text")).to_have_text(
        "Which tool saves you the most time each week?"
    )
    await expect(page.locator('.legend-item[data-tag="edchat"] .legend-question')).to_contain_text("Q1")
    await expect(page.locator('.legend-item[data-tag="journchat"] .legend-question')).to_have_count(0)
    await expect(card(page, a2).locator(".qa")).to_have_text("A2")
    await expect(card(page, q2).locator(".qa")).to_have_text("Q2")
    await expect(card(page, other).locator(".qa")).to_have_text("Q1")

    # A hidden question is no longer the current one: the one before it is again.
    await redis.xadd(keys.feed, {RETRACT_FIELD: msgpack.packb({"ids": [q2], "keys": ["x:q2"]})})
    await expect(question.locator(".qa")).to_have_text("Q1", timeout=WAIT_MS)
    await expect(question.locator(".legend-question-text")).to_have_text("How did you find your first customers?")
    # With the last of its questions hidden, the chat shows none.
    await expect(page.locator('.legend-item[data-tag="edchat"] .legend-question')).to_have_count(1)
    await redis.xadd(keys.feed, {RETRACT_FIELD: msgpack.packb({"ids": [other], "keys": ["x:eq1"]})})
    await expect(page.locator('.legend-item[data-tag="edchat"] .legend-question')).to_have_count(0, timeout=WAIT_MS)


async def mod_action(server: LiveServer, action: str, body: dict[str, Any]) -> float:
    """POST /api/mod/<action>; returns the monotonic time it was sent."""
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{server.url}api/mod/{action}", json=body, headers=MOD_HEADERS) as resp:
            assert resp.status == 202, await resp.text()
    return started


async def test_a_moderators_pin_and_hide_reach_the_open_wall_within_a_second_and_a_new_wall_shows_the_pin(
    night: Night, chromium_page: Page
) -> None:
    server, publisher = night.server, night.publisher
    page = chromium_page
    await open_wall(page, server)
    await publisher.publish([wall_post("x:pin", text="Welcome! Tonight's questions come at :00, :15, :30")])
    await publisher.publish([wall_post("x:hide", text="something regrettable", name="Mallory")])
    await expect(page.locator(CARDS)).to_have_count(2, timeout=WAIT_MS)
    pin_id, hide_id = reversed(await shown_ids(page))

    pinned = "#pinned:not([hidden]) article.post"
    started = await mod_action(server, "pin", {"id": pin_id})
    await page.wait_for_selector(pinned, timeout=WAIT_MS)
    took = time.monotonic() - started
    assert took < 1.0, f"the pin took {took:.2f} s to reach the wall"
    await expect(page.locator(pinned)).to_contain_text("Welcome! Tonight's questions")
    await expect(page.locator("#pinned .pinned-title")).to_have_text("Pinned")

    started = await mod_action(server, "hide", {"id": hide_id})
    await page.wait_for_selector(f'{CARDS}[data-id="{hide_id}"]', state="detached", timeout=WAIT_MS)
    took = time.monotonic() - started
    assert took < 1.0, f"the hide took {took:.2f} s to reach the wall"

    second = await page.context.new_page()
    try:
        await open_wall(second, server)
        await expect(second.locator(pinned)).to_contain_text("Welcome!")  # from the hello
        await expect(second.locator(CARDS)).to_have_count(1)
    finally:
        await second.close()

    started = await mod_action(server, "unpin", {})
    await page.wait_for_selector("#pinned", state="hidden", timeout=WAIT_MS)
    took = time.monotonic() - started
    assert took < 1.0, f"the unpin took {took:.2f} s to reach the wall"
    await expect(page.locator("#pinned article")).to_have_count(0)


def qr_modules(svg: bytes) -> set[tuple[int, int]]:
    """The dark modules (column, row) of a segno SVG, read back from its path (quiet zone included)."""
    root = ET.fromstring(svg)
    (path,) = [el for el in root.iter() if el.get("class") == "qrline"]
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for op, a, b in re.findall(r"([Mmh])(-?[\d.]+)(?: (-?[\d.]+))?", path.get("d", "")):
        if op == "M":
            x, y = float(a), float(b)
        elif op == "m":
            x, y = x + float(a), y + float(b)
        else:
            dark |= {(int(x) + i, int(y)) for i in range(int(a))}
            x += float(a)
    return dark


def test_the_qr_code_svg_encodes_exactly_the_link() -> None:
    svg = qr_code_svg(JOIN_LINK)
    assert ET.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"
    assert b"<script" not in svg
    expected = segno.make(JOIN_LINK, error="m", micro=False)
    want = {(c + 4, r + 4) for r, row in enumerate(expected.matrix) for c, v in enumerate(row) if v}
    assert qr_modules(svg) == want  # the same modules as the code for the link, inside a 4-module quiet zone
    assert qr_modules(qr_code_svg("https://example.org/other")) != want


async def test_qr_route_serves_the_links_code_and_is_404_without_a_link(
    linked_server: LiveServer, live_server: LiveServer
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{linked_server.url}qr.svg") as resp:
            assert resp.status == 200
            assert resp.content_type == "image/svg+xml"
            assert "max-age" in resp.headers["Cache-Control"]
            assert resp.headers["Content-Security-Policy"] == "default-src 'none'"
            assert await resp.read() == qr_code_svg(JOIN_LINK)
        async with http.get(f"{live_server.url}qr.svg") as resp:
            assert resp.status == 404
        async with http.get(f"{linked_server.url}api/chats") as resp:
            assert (await resp.json())["event"]["link"] == JOIN_LINK


async def test_the_wall_shows_the_join_qr_code_with_its_link_only_when_a_link_is_set(
    linked_server: LiveServer, live_server: LiveServer, chromium_page: Page
) -> None:
    page = chromium_page
    await open_wall(page, linked_server)
    join = page.locator("#join")
    await expect(join).to_be_visible()
    await expect(join.locator(".join-caption")).to_have_text("Join: example.org/join/chatmixer")
    await page.wait_for_function("() => document.getElementById('join-code').naturalWidth > 0")

    await open_wall(page, live_server)
    await expect(page.locator("#event-name")).to_have_text("#chatmixer night")
    await expect(join).to_be_hidden()
    assert await page.locator("#join-code").get_attribute("src") is None


def test_event_link_must_be_an_http_url_and_a_bad_one_names_the_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "mixer.toml"
    config.write_text('[event]\nname = "Night"\nlink = "javascript:alert(1)"\n')
    with pytest.raises(ConfigError) as bad:
        load_settings(config, {})
    assert (bad.value.line, bad.value.key) == (3, "event.link")
    config.write_text(f'[event]\nname = "Night"\nlink = "{JOIN_LINK}"\n')
    assert load_settings(config, {}).event_link == JOIN_LINK
    assert load_settings(config, {"MIXER_EVENT_LINK": ""}).event_link == ""


async def animation_and_transition(locator: Locator) -> list[str]:
    return await locator.evaluate(
        "el => { const s = getComputedStyle(el); return [s.animationName, s.transitionProperty]; }"
    )


async def test_reduced_motion_turns_off_every_animation_and_transition(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await open_wall(page, live_server)
    (moving,) = await publish(redis, keys, wall_post("x:m1", text="slides in"))
    assert (await animation_and_transition(card(page, moving)))[0] == "post-arrive"
    assert (await animation_and_transition(page.locator(".connection-dot")))[1] == "background-color"

    await page.emulate_media(reduced_motion="reduce")
    await open_wall(page, live_server)
    (still,) = await publish(redis, keys, wall_post("x:m2", text="just appears"))
    assert await animation_and_transition(card(page, still)) == ["none", "none"]
    assert await animation_and_transition(page.locator(".connection-dot")) == ["none", "none"]
    assert await page.evaluate("() => getComputedStyle(document.documentElement).scrollBehavior") == "auto"

    await page.emulate_media(reduced_motion="no-preference")
    await open_wall(page, live_server, motion="reduced")  # asked for in the query, whatever the system says
    (asked,) = await publish(redis, keys, wall_post("x:m3", text="also still"))
    assert await animation_and_transition(card(page, asked)) == ["none", "none"]


async def test_pacer_releases_posts_in_order_spaced_out_and_counts_what_it_drops(
    live_server: LiveServer, chromium_page: Page
) -> None:
    page = chromium_page
    await open_wall(page, live_server)
    steps = await page.evaluate(
        """async () => {
            const { Pacer } = await import("/static/pacing.js");
            const pacer = new Pacer(3);
            const steps = [];
            const step = (now) => { const r = pacer.next(now, 100); steps.push([r.post && r.post.id, r.waitMs]); };
            step(0);
            for (const id of ["a", "b", "c"]) pacer.push({ id });
            step(0); step(40); step(100); step(150);
            pacer.push({ id: "d" }); pacer.push({ id: "e" }); pacer.push({ id: "f" });  // full: the oldest goes
            pacer.remove(new Set(["e"]));
            pacer.replace({ id: "d", edited: true });
            step(300); step(400); step(500);
            return { steps, dropped: pacer.dropped, size: pacer.size };
        }"""
    )
    assert steps["steps"] == [
        [None, None],  # nothing waits
        ["a", 0],
        [None, 60],  # 100 ms apart: 60 ms to go
        ["b", 0],
        [None, 50],
        ["d", 0],  # c was dropped to make room, e retracted
        ["f", 0],
        [None, None],
    ]
    assert (steps["dropped"], steps["size"]) == (1, 0)


async def test_a_burst_is_released_one_by_one_at_the_pace_that_keeps_each_post_up_for_min_seconds(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    page = chromium_page
    await open_wall(page, live_server, min_seconds="0.6")
    # Record each card's insertion time, the spacing the wall used, and the "waiting" line.
    await page.evaluate(
        """() => {
            const posts = document.getElementById("posts");
            window.inserted = [];
            window.waitingSeen = [];
            new MutationObserver((changes) => {
                const { spacingMs, capacity, releasedAt } = posts.dataset;
                for (const change of changes) for (const node of change.addedNodes) {
                    window.inserted.push([node.dataset.id, Number(releasedAt), Number(spacingMs), Number(capacity)]);
                }
            }).observe(posts, { childList: true });
            const waiting = document.getElementById("waiting");
            new MutationObserver(() => window.waitingSeen.push(waiting.textContent))
                .observe(waiting, { childList: true, characterData: true, subtree: true });
        }"""
    )
    burst = await publish(redis, keys, *(wall_post(f"x:burst{i}", text=f"burst {i}") for i in range(8)))
    await expect(page.locator(CARDS)).to_have_count(len(burst), timeout=WAIT_MS)
    inserted: list[list[Any]] = await page.evaluate("() => window.inserted")

    assert [row[0] for row in inserted] == burst, "each post shown once, in feed order"
    for (_, before, _, _), (_, at, spacing, capacity) in itertools.pairwise(inserted):
        assert spacing == round(600 / capacity) > 0
        # The pacer's own clock readings (the observer itself may run late on a busy machine); spacing is rounded.
        assert at - before >= spacing - 1, f"released {at - before:.0f} ms apart, less than {spacing} ms"
    least = min(row[2] for row in inserted[1:])
    assert inserted[-1][1] - inserted[0][1] >= (len(burst) - 1) * least * 0.95, "the burst was spread out"
    assert any(
        re.fullmatch(r"\d+ more posts? coming up", text) for text in await page.evaluate("() => window.waitingSeen")
    )
    await expect(page.locator("#waiting")).to_be_hidden()
    assert await shown_ids(page) == list(reversed(burst))
