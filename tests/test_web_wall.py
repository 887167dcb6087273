"""The projector wall (web/index.html + wall.js) in real headless Chromium against the real app and Redis.

Posts go straight into the merged feed stream, so these tests cover the page and the
server's /api/feed, /ws and resume path together, but not the merge stage.
Set MIXER_SCREENSHOTS=1 to also write docs/screenshots/wall.png.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path

import msgpack
import redis.asyncio as aioredis
from playwright.async_api import Dialog, Locator, Page, Route, expect

from mixer.codec import EDIT_FIELD, RETRACT_FIELD
from mixer.keys import Keys
from mixer.models import Author, Post
from mixer.settings import DEMO_RECORDING

from . import browser
from .browser import LiveServer, png_bytes, publish
from .helpers import make_post

# pytest finds fixtures among a module's attributes: this makes the shared browser fixtures usable here.
chromium_page = browser.chromium_page
live_server = browser.live_server

SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "wall.png"
CARDS = "article.post"
WAIT_MS = 10_000  # for anything that should show up promptly
RECONNECT_WAIT_MS = 30_000  # a reconnect waits out the backoff


def now_ms() -> int:
    return int(time.time() * 1000)


def wall_post(
    key: str,
    chats: tuple[str, ...] = ("smbiz",),
    text: str = "",
    *,
    name: str = "Alice",
    handle: str = "alice",
    avatar: str | None = None,
    url: str | None = None,
    media: tuple[str, ...] = (),
    created: int | None = None,
) -> Post:
    base = make_post(key, chats, created=created or now_ms(), text=text)
    return dataclasses.replace(
        base, author=Author(handle=handle, name=name, avatar=avatar), url=url or base.url, media=media
    )


def card(page: Page, post_id: str) -> Locator:
    return page.locator(f'{CARDS}[data-id="{post_id}"]')


async def open_wall(page: Page, server: LiveServer) -> None:
    # these tests write the full feed; the shaped streams have their own tests
    await page.goto(server.url.rstrip("/") + "/?profile=full")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)


async def shown_ids(page: Page) -> list[str]:
    return await page.locator(CARDS).evaluate_all("cards => cards.map(c => c.dataset.id)")


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
    dialogs: list[str] = []

    async def record_and_dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    page.on("dialog", record_and_dismiss)
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
    await expect(page.locator(CARDS)).to_have_count(4, timeout=WAIT_MS)

    await expect(card(page, ids[0]).locator(".post-text")).to_have_text(script_text)
    await expect(card(page, ids[0]).locator(".author-name")).to_have_text("<b>Mallory</b>")
    await expect(card(page, ids[1]).locator(".post-text")).to_have_text(img_text)
    await expect(card(page, ids[1]).locator(".badge").nth(1)).to_have_text("#" + evil_tag)
    assert await card(page, ids[3]).locator(".post-text").text_content() == bidi_text

    # Nothing from the text became markup: the only elements are the wall's own.
    assert await page.locator(f"{CARDS} img, {CARDS} script, {CARDS} b").count() == 0
    assert await page.locator("script").count() == 1  # wall.js itself
    # A javascript: URL is never a link, an avatar or a media source.
    assert await page.locator("a[href]").evaluate_all("links => links.map(a => a.href)") == [
        "https://example.test/x:bidi",
        "https://example.test/x:img",
        "https://example.test/x:script",
    ]
    for link in await page.locator("a[href]").all():
        assert await link.get_attribute("rel") == "noopener nofollow noreferrer"

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


def recorded_night(limit: int, chats: set[str]) -> list[Post]:
    """The first posts of a busy hour of the demo recording, re-timed to end just now, chats narrowed to ``chats``."""
    lines = [line for line in DEMO_RECORDING.read_text().splitlines() if line and not line.startswith("#")]
    posts = [Post.from_dict(json.loads(line)) for line in lines]
    busy_hour = 1_551_463_200_000  # 2019-03-01 18:00 UTC, the chat hour with the most posts
    chosen = [p for p in posts if busy_hour <= p.created < busy_hour + 3_600_000][:limit]
    shift = now_ms() - 150_000 - chosen[-1].created
    return [
        dataclasses.replace(
            p, created=p.created + shift, at=p.at + shift, chats=tuple(c for c in p.chats if c in chats)
        )
        for p in chosen
    ]


async def test_wall_shows_a_realistic_night_and_can_screenshot_it(
    live_server: LiveServer, chromium_page: Page, redis: aioredis.Redis, keys: Keys
) -> None:
    """Also the source of docs/screenshots/wall.png when MIXER_SCREENSHOTS=1."""
    page = chromium_page
    await page.set_viewport_size({"width": 1920, "height": 1080})
    avatar = png_bytes(96, 96, (255, 196, 120), (200, 90, 60))
    shop = png_bytes(320, 320, (90, 170, 220), (30, 60, 120))
    await page.route(
        "https://images.example.test/**",
        lambda route: route.fulfill(body=shop if "shop" in route.request.url else avatar, content_type="image/png"),
    )
    night = recorded_night(12, {c.tag for c in live_server.settings.chats})
    history_ids = await publish(redis, keys, *night[:-2])
    await open_wall(page, live_server)
    await expect(page.locator(CARDS)).to_have_count(len(history_ids), timeout=WAIT_MS)

    others = [
        wall_post(
            "mastodon:https://mastodon.example/@rosa/1",
            ("smbiz", "edchat"),
            "Q2: We run a tiny bakery and a Friday baking club for kids. Half our regulars found us through "
            "the club, not Instagram. #smbiz #edchat",
            name="Rosa Martínez",
            handle="rosa@mastodon.example",
            avatar="https://images.example.test/rosa.png",
            media=("https://images.example.test/shop.png",),
        ),
        wall_post(
            "bluesky:at://did:plc:journo/app.bsky.feed.post/1",
            ("journchat",),
            "A1: Local newsrooms that publish their corrections log get more tips, not fewer. #journchat",
            name="Dev Okafor",
            handle="devokafor.bsky.social",
        ),
    ]
    live_ids = await publish(redis, keys, *night[-2:], *others)
    await expect(card(page, live_ids[-1])).to_be_visible(timeout=WAIT_MS)
    await expect(page.locator(CARDS)).to_have_count(len(history_ids) + len(live_ids))
    await expect(card(page, live_ids[-2]).locator(".badge")).to_have_text(["#smbiz", "#edchat"])
    await expect(card(page, live_ids[-2]).locator("img.post-media")).to_be_visible()

    if os.environ.get("MIXER_SCREENSHOTS") == "1":
        await page.emulate_media(reduced_motion="reduce")  # no card caught mid-animation
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=SCREENSHOT)


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
