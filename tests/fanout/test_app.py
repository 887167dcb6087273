from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import aiohttp
import msgpack
import pytest
import redis.asyncio as aioredis

from mixer.codec import EDIT_FIELD, FIELD, PIN_FIELD, RETRACT_FIELD, pack_post
from mixer.config_schema import SCHEMA, check_value
from mixer.fanout import feedapi, parked
from mixer.fanout.app import create_app
from mixer.fanout.appkeys import HUB
from mixer.keys import Keys
from tests.helpers import make_post
from tests.servers import add_to_feed, receive_posts, running_app, settings_for


async def test_hello_then_live_posts_carry_their_chats(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello"
            assert hello["event"] == {"name": "Test night", "hashtag": "chatmixer"}
            assert [c["tag"] for c in hello["chats"]] == ["smbiz", "edchat", "journchat"]
            assert hello["chats"][0]["colour"] == "#4fc3f7"
            ids = await add_to_feed(redis, keys, make_post("x:1", ("smbiz", "edchat")))
            [item] = await receive_posts(ws, 1)
            assert item["id"] == ids[0]
            assert item["chats"] == ["smbiz", "edchat"]
            assert item["author"] == {"handle": "alice", "name": "Alice", "avatar": None}


async def test_chats_filter_sends_only_matching_posts(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url + "?chats=EdChat") as ws:
            await ws.receive_json(timeout=5)
            await add_to_feed(redis, keys, make_post("a", ("smbiz",)), make_post("b", ("edchat", "smbiz")))
            await add_to_feed(redis, keys, make_post("c", ("journchat",)), make_post("d", ("edchat",)))
            items = await receive_posts(ws, 2)
            assert [i["key"] for i in items] == ["b", "d"]


async def test_since_returns_exactly_the_missed_posts(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    ids = await add_to_feed(redis, keys, *(make_post(f"k{i}") for i in range(5)))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{srv.ws_url}?since={ids[1]}") as ws:
            await ws.receive_json(timeout=5)
            history = await receive_posts(ws, 3)
            assert [i["id"] for i in history] == ids[2:]
            live = await add_to_feed(redis, keys, make_post("k5"))
            assert [i["id"] for i in await receive_posts(ws, 1)] == live
        async with http.get(f"{srv.url}/api/feed?since={ids[0]}&limit=2") as resp:
            body = await resp.json()
            assert [i["id"] for i in body["items"]] == ids[1:3]
            assert body["cursor"] == ids[2]
        async with http.get(f"{srv.url}/api/feed?limit=2") as resp:
            assert [i["key"] for i in (await resp.json())["items"]] == ["k4", "k5"]


async def test_api_feed_limit_counts_posts_as_shown_on_every_profile_and_with_chats(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    """Boosts, edits, retractions and pins are feed entries too: ``limit`` counts the posts a screen shows."""
    shown: dict[str, list[str]] = {"full": [], "wall": [], "edchat": []}
    feed_ids: dict[str, str] = {}
    for n in range(40):
        chats = ("smbiz",) if n % 2 else ("edchat",)
        post = make_post(f"k{n}", chats, text=f"post {n}")
        feed_id = feed_ids[post.key] = (await redis.xadd(keys.feed, {FIELD: pack_post(post)})).decode()
        stored = {**post.to_dict(), "id": feed_id}  # the post index, as the merge stage keeps it
        await redis.xadd(keys.shaped("wall"), {FIELD: msgpack.packb({**stored, "ref": feed_id})})
        if n % 5 == 4:  # hidden by a moderator: history leaves it out
            stored["hidden"] = True
        else:
            shown["full"] += [post.key]
            shown["edchat"] += [post.key] if "edchat" in chats else []
        await redis.hset(keys.index, post.key, msgpack.packb(stored))
        for stream in (keys.feed, keys.shaped("wall")):  # an edit, a hide, a pin after every post
            await redis.xadd(stream, {EDIT_FIELD: msgpack.packb({**post.to_dict(), "id": feed_id})})
            await redis.xadd(stream, {RETRACT_FIELD: msgpack.packb({"ids": [feed_id], "keys": [post.key]})})
            await redis.xadd(stream, {PIN_FIELD: msgpack.packb({"post": None})})
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        for query, expected in (
            ("limit=10", shown["full"][-10:]),
            ("limit=10&chats=edchat", shown["edchat"][-10:]),
            ("limit=10&profile=wall", shown["full"][-10:]),
            ("limit=3&profile=wall&chats=edchat", shown["edchat"][-3:]),
        ):
            async with http.get(f"{srv.url}/api/feed?{query}") as resp:
                items = (await resp.json())["items"]
            assert [i["key"] for i in items] == expected, query
            # a shaped profile's card says its full-feed id, in history as when it was sent live
            assert [i.get("ref") for i in items] == [feed_ids[i["key"]] if "wall" in query else None for i in items]


async def test_api_feed_reads_a_bounded_number_of_entries_per_request_and_its_cursor_goes_on_from_there(
    redis: aioredis.Redis, keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feedapi, "FEED_SCAN_MAX", 100)
    [rare] = await add_to_feed(redis, keys, make_post("rare", ("journchat",)))
    busy = await add_to_feed(redis, keys, *(make_post(f"b{n}") for n in range(150)))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(f"{srv.url}/api/feed?chats=journchat&limit=5") as resp:
            body = await resp.json()
            assert body["items"] == []  # the rare post lies beyond the 100 newest entries
            assert body["partial"] is True and body["before"] == busy[50]  # where reading back stopped
        async with http.get(f"{srv.url}/api/feed?chats=journchat&limit=5&before={body['before']}") as resp:
            body = await resp.json()
            assert [i["id"] for i in body["items"]] == [rare]
            assert body["partial"] is False and body["before"] is None  # the start of the feed
            assert body["cursor"] == busy[49]  # the newest entry this page read
        async with http.get(f"{srv.url}/api/feed?chats=journchat&limit=5&since=0-0") as resp:
            body = await resp.json()
            assert [i["id"] for i in body["items"]] == [rare]
            assert body["cursor"] == busy[98]  # 100 entries read: the rare post and 99 others
            assert body["partial"] is True
        async with http.get(f"{srv.url}/api/feed?chats=journchat&limit=5&since={body['cursor']}") as resp:
            assert await resp.json() == {"items": [], "cursor": busy[-1], "partial": False, "reset": False}


async def test_bad_query_is_refused_with_400(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        for query in ("since=abc", "format=xml"):
            async with http.get(f"{srv.url}/ws?{query}") as resp:
                assert resp.status == 400
        async with http.get(f"{srv.url}/api/feed?limit=lots") as resp:
            assert resp.status == 400


async def test_health_and_readiness(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(srv.url + "/readyz") as resp:
            assert resp.status == 200, await resp.text()
        async with http.get(srv.url + "/") as resp:
            assert resp.status == 200
            assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
            assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_static_serves_our_assets_and_nothing_else_in_the_web_folder(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        for path in ("/static/wall.js", "/static/wall.css", "/static/mod.js"):
            async with http.get(srv.url + path) as resp:
                assert resp.status == 200, path
                assert "script-src 'self'" in resp.headers["Content-Security-Policy"]
        for path in ("/static/__init__.py", "/static/index.html", "/static/..%2Fpyproject.toml", "/static/nope.js"):
            async with http.get(srv.url + path) as resp:
                assert resp.status == 404, path


async def test_the_webhook_route_without_an_ingest_side_says_so(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, webhook_token="s3cret")
    async with running_app(settings, redis_url, build=create_app) as srv, aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer s3cret"}
        async with http.post(srv.url + "/api/posts", json={"text": "hi"}, headers=headers) as resp:
            assert resp.status == 503
            assert "no webhook ingest" in await resp.text()
        async with http.get(srv.url + "/api/stats") as resp:
            assert (await resp.json())["webhook"] == {}


async def test_ping_gets_pong_and_msgpack_format_works(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    import msgpack

    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url + "?format=msgpack") as ws:
            hello = msgpack.unpackb(await ws.receive_bytes(timeout=5))
            assert hello["type"] == "hello"
            await ws.send_str(json.dumps({"type": "ping"}))
            assert msgpack.unpackb(await ws.receive_bytes(timeout=5)) == {"type": "pong"}
            await add_to_feed(redis, keys, make_post("m"))
            frame = msgpack.unpackb(await ws.receive_bytes(timeout=5))
            assert frame["type"] == "posts" and frame["items"][0]["key"] == "m"


async def _stalled_client(port: int) -> socket.socket:
    """A websocket client that completes the handshake, reads its hello, and then never reads again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(
        sock,
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    received = b""
    while b'"type":"hello"' not in received:
        chunk = await loop.sock_recv(sock, 4096)
        assert chunk, "server closed the handshake"
        received += chunk
    return sock


async def test_a_client_that_never_reads_does_not_delay_another(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, backlog_bytes=256 * 1024, cutoff_seconds=0.3)
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        hub = srv.app[HUB]
        stalled = await _stalled_client(int(srv.url.rsplit(":", 1)[1]))
        try:
            # since=0-0: the healthy client gets every post whenever its subscription lands
            async with http.ws_connect(srv.ws_url + "?since=0-0") as ws:
                await ws.receive_json(timeout=5)
                text = "x" * 2000
                total = 3000  # ~6 MB: far beyond the stalled client's socket buffers and backlog limit
                reader = asyncio.create_task(receive_posts(ws, total))  # the healthy client reads as it goes
                for start in range(0, total, 20):
                    await add_to_feed(redis, keys, *(make_post(f"p{i}", text=text) for i in range(start, start + 20)))
                items = await reader
                assert [i["key"] for i in items] == [f"p{i}" for i in range(total)]
                # the feed keeps moving: once the stalled client has been full for cutoff_seconds it is closed
                for n in range(400):
                    if hub.counters["cut_off"]:
                        break
                    await add_to_feed(redis, keys, make_post(f"q{n}"))
                    assert [i["key"] for i in await receive_posts(ws, 1)] == [f"q{n}"]
            assert hub.counters["posts_skipped"] > 0
            assert hub.counters["cut_off"] == 1
        finally:
            stalled.close()


async def test_metrics_are_prometheus_text_with_connections_and_deliveries(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.receive_json(timeout=5)
            await add_to_feed(redis, keys, make_post("m:1", ("smbiz",)))
            await receive_posts(ws, 1)
            async with http.get(srv.url + "/metrics") as resp:
                assert resp.status == 200 and resp.content_type == "text/plain"
                # the exposition format's media type, as Prometheus' own client libraries send it
                assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
                body = await resp.text()
    assert 'mixer_connections{profile="full"} 1' in body
    assert 'mixer_posts_sent_total{profile="full"} 1' in body
    assert 'mixer_write_errors_total{profile="full"} 0' in body
    assert 'mixer_chat_posts_total{chat="smbiz"} 1' in body
    assert "mixer_redis_up 1" in body and "# TYPE mixer_redis_rtt_seconds gauge" in body


async def test_metrics_say_whether_a_merge_stage_leads_and_how_old_the_newest_feed_entry_is(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    # no leader used to look like a quiet night: readyz 200, nothing in the metrics, a wall that stopped moving
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/metrics") as resp:
            body = await resp.text()
        assert "mixer_merge_leader 0" in body
        assert "mixer_feed_newest_age_seconds" not in body  # an empty feed has no newest entry
        await add_to_feed(redis, keys, make_post("m:1", ("smbiz",)))
        await redis.set(keys.merge_lease, "a-holder", px=5000)
        async with http.get(srv.url + "/metrics") as resp:
            body = await resp.text()
    assert "mixer_merge_leader 1" in body
    age = float(body.split("\nmixer_feed_newest_age_seconds ")[1].split()[0])
    assert 0 <= age < 60


async def test_an_empty_query_value_reads_as_its_default_on_every_route(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    """``since=`` always read as no since; ``limit=``, ``profile=`` and ``format=`` too, as URL builders send them."""
    ids = await add_to_feed(redis, keys, *(make_post(f"e{i}") for i in range(3)))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/api/feed?since=&before=&limit=&chats=&profile=") as resp:
            assert resp.status == 200, await resp.text()
            assert [i["id"] for i in (await resp.json())["items"]] == ids
        async with http.ws_connect(srv.ws_url + "?since=&chats=&profile=&format=") as ws:
            hello = await ws.receive_json(timeout=5)
            assert hello["type"] == "hello" and hello["profile"] == "full"
        async with http.get(srv.url + "/events?since=&chats=&profile=") as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")


async def test_pages_and_their_modules_are_revalidated_on_every_load(keys: Keys, redis_url: str) -> None:
    """A page or module a browser kept must not outlive an upgrade; the ETag keeps a reload to a 304."""
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        for path in ("/", "/mod", "/embed", "/embed/builder", "/static/wall.js", "/static/wall-render.js"):
            async with http.get(srv.url + path) as resp:
                assert resp.status == 200 and resp.headers["Cache-Control"] == "no-cache", path
                etag = resp.headers["ETag"]
            async with http.get(srv.url + path, headers={"If-None-Match": etag}) as resp:
                assert resp.status == 304, path
        async with http.get(srv.url + "/embed.js") as resp:  # its own, documented, five minutes
            assert resp.headers["Cache-Control"] == "public, max-age=300"


async def test_browsers_from_other_origins_are_refused_unless_allowed(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, origins=("https://blog.example",))
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.get(srv.url + "/ws", headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
        async with http.get(srv.url + "/events", headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403
        async with http.ws_connect(srv.ws_url, headers={"Origin": "https://blog.example"}) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
        async with http.ws_connect(srv.ws_url) as ws:  # not a browser: no Origin header
            assert (await ws.receive_json(timeout=5))["type"] == "hello"


async def test_an_allowed_origin_is_matched_as_a_browser_sends_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    origins = check_value(SCHEMA["server"]["origins"], ["https://Blog.Example:443/", "http://127.0.0.1:8080"])
    settings = settings_for(keys.prefix, origins=origins)
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        for origin in ("https://blog.example", "http://127.0.0.1:8080"):
            async with http.ws_connect(srv.ws_url, headers={"Origin": origin}) as ws:
                assert (await ws.receive_json(timeout=5))["type"] == "hello"
        async with http.get(srv.url + "/ws", headers={"Origin": "http://127.0.0.1:8081"}) as resp:
            assert resp.status == 403


async def test_connection_limits_per_address_and_in_total(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    async with running_app(settings_for(keys.prefix, max_per_ip=2), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as first, http.ws_connect(srv.ws_url) as second:
            await first.receive_json(timeout=5)
            await second.receive_json(timeout=5)
            async with http.get(srv.url + "/ws") as resp:
                assert resp.status == 429
        async with http.ws_connect(srv.ws_url) as again:  # the two closed: room again
            assert (await again.receive_json(timeout=5))["type"] == "hello"
    async with running_app(settings_for(keys.prefix, max_connections=1), redis_url) as srv:
        async with aiohttp.ClientSession() as http, http.ws_connect(srv.ws_url) as ws:
            await ws.receive_json(timeout=5)
            async with http.get(srv.url + "/events") as resp:
                assert resp.status == 503


async def test_a_resume_from_a_trimmed_gap_says_reset_instead_of_a_silent_hole(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    ids = await add_to_feed(redis, keys, *(make_post(f"t{i}") for i in range(6)))
    await redis.xtrim(keys.feed, maxlen=2, approximate=False)  # t0..t3 are gone
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{srv.ws_url}?since={ids[1]}") as ws:
            await ws.receive_json(timeout=5)
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "reset" and frame["cursor"] == ids[-1]
        async with http.ws_connect(f"{srv.ws_url}?since={ids[4]}") as ws:  # nothing after it was trimmed
            await ws.receive_json(timeout=5)
            assert [i["key"] for i in await receive_posts(ws, 1)] == ["t5"]
        ms = ids[-1].partition("-")[0]
        beyond = f"{int(ms) + 60_000}-0"  # a post this feed never had: the feed went back since the client saw it
        async with http.ws_connect(f"{srv.ws_url}?since={beyond}") as ws:
            await ws.receive_json(timeout=5)
            frame = await ws.receive_json(timeout=5)
            assert frame["type"] == "reset" and frame["cursor"] == ids[-1]


async def test_a_resume_gets_the_pins_and_retractions_in_its_gap_not_only_the_posts(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    ids = await add_to_feed(redis, keys, make_post("shown"), make_post("gap"))
    pinned = {**make_post("shown").to_dict(), "id": ids[0]}
    # The hello read the pin just before the merge stage wrote the unpin (and a hide) that the gap holds.
    await redis.set(keys.pinned, msgpack.packb(pinned))
    await redis.xadd(keys.feed, {PIN_FIELD: msgpack.packb({"post": None})})
    await redis.xadd(keys.feed, {RETRACT_FIELD: msgpack.packb({"ids": [ids[0]], "keys": ["shown"]})})
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(f"{srv.ws_url}?since={ids[0]}") as ws:
            assert (await ws.receive_json(timeout=5))["pinned"]["id"] == ids[0]
            frames = []
            while not frames or frames[-1]["type"] != "retract":  # the gap, to its end
                frames.append(await ws.receive_json(timeout=5))
            # (written only now: written sooner, it may be in the gap, its posts frame before the pin and retract)
            [live] = await add_to_feed(redis, keys, make_post("live"))
            while frames[-1]["type"] != "posts" or frames[-1]["items"][-1]["id"] != live:
                frames.append(await ws.receive_json(timeout=5))
    kinds = [(f["type"], f.get("post", f.get("ids", [i["key"] for i in f.get("items", [])]))) for f in frames]
    assert kinds[:3] == [("posts", ["gap"]), ("pin", None), ("retract", [ids[0]])]
    assert [k for k in kinds if k[0] == "posts"] == [("posts", ["gap"]), ("posts", ["live"])]  # live once, after


async def test_the_hello_shows_the_pinned_post_as_the_profiles_own_stream_last_said_it(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    post = make_post("pinned").to_dict()
    await redis.set(keys.pinned, msgpack.packb({**post, "id": "5-0"}))

    async def hellos(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        pins = {}
        for profile in ("full", "wall"):
            async with http.ws_connect(f"{url}?profile={profile}") as ws:
                pins[profile] = (await ws.receive_json(timeout=5))["pinned"]
        return pins

    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        pins = await hellos(http, srv.ws_url)  # the shaping stage passed no pin yet: the feed's stands in
        assert pins["full"]["id"] == pins["wall"]["id"] == "5-0"
        await redis.set(keys.shaped_pinned("wall"), msgpack.packb({**post, "id": "9-0", "ref": "5-0"}))
        pins = await hellos(http, srv.ws_url)
        assert (pins["full"]["id"], pins["wall"]["id"]) == ("5-0", "9-0")  # under the id the wall's cards have
        await redis.set(keys.shaped_pinned("wall"), msgpack.packb(None))  # the wall's stream said: unpinned
        pins = await hellos(http, srv.ws_url)
        assert pins["wall"] is None and pins["full"]["id"] == "5-0"


async def test_permessage_deflate_is_off_unless_the_client_asks(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url, compress=0) as ws:
            assert ws.compress == 0
        async with http.ws_connect(srv.ws_url, compress=15) as ws:  # asks for it
            assert ws.compress == 15
            await ws.receive_json(timeout=5)
            await add_to_feed(redis, keys, make_post("z:1"))  # shared, uncompressed frames still read fine
            assert [i["key"] for i in await receive_posts(ws, 1)] == ["z:1"]


async def test_a_burst_of_new_clients_all_get_their_hello(redis: aioredis.Redis, keys: Keys, redis_url: str) -> None:
    unlimited = aiohttp.TCPConnector(limit=0)  # aiohttp's client would otherwise cap the burst at 100
    async with (
        running_app(settings_for(keys.prefix), redis_url) as srv,
        aiohttp.ClientSession(connector=unlimited) as http,
    ):

        async def one() -> str:
            async with http.ws_connect(srv.ws_url) as ws:
                return str((await ws.receive_json(timeout=20))["type"])

        # more at once than the app's Redis pool holds: they wait for a connection, none fails
        assert await asyncio.gather(*(one() for _ in range(200))) == ["hello"] * 200


async def test_stats_frames_come_every_stats_seconds_with_each_chats_rate_and_total(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    settings = settings_for(keys.prefix, stats_seconds=0.2)  # the default (5 s) would outlast the timeouts below
    async with running_app(settings, redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            await ws.receive_json(timeout=5)  # hello
            await add_to_feed(redis, keys, make_post("s:1", ("smbiz",)))
            await receive_posts(ws, 1)  # the hub has it: the stats frames from here on count it
            stats = []
            while len(stats) < 2:
                frame = await ws.receive_json(timeout=2)
                if frame["type"] == "stats":
                    stats.append(frame)
    assert [s["profile"] for s in stats] == ["full", "full"]
    assert stats[-1]["chats"]["smbiz"] == {"per_minute": 1, "total": 1, "more": 0}


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The coroutines a task is suspended in, outermost first."""
    chain, coro = [], task.get_coro()
    while coro is not None and hasattr(coro, "cr_await"):
        chain.append(coro.__qualname__)
        coro = coro.cr_await
    return chain


async def test_an_idle_websocket_holds_no_middleware_coroutines(
    keys: Keys, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every coroutine an idle websocket is suspended in is memory each connection holds (docs/benchmarks.md, "Idle
    websockets"): on aiohttp's path (a socket that could not be parked) the /ws handler runs right under aiohttp's
    dispatch, no middleware between (the /api/* guard wraps its routes one by one); a parked one holds none at all
    (tests/fanout/test_parked.py)."""
    monkeypatch.setattr(parked, "PARKING", False)
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        async with http.ws_connect(srv.ws_url) as ws:
            assert (await ws.receive_json(timeout=5))["type"] == "hello"
            chains = [_awaiting(task) for task in asyncio.all_tasks()]
            chain = next(c for c in chains if "ws_handler" in c)
    assert chain[chain.index("ws_handler") - 1] == "Application._handle"


async def test_a_limit_beyond_its_range_reads_as_the_nearest_and_says_so_when_refused(
    redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    await add_to_feed(redis, keys, *(make_post(f"n{n}") for n in range(3)))
    async with running_app(settings_for(keys.prefix), redis_url) as srv, aiohttp.ClientSession() as http:
        for limit, count in (("0", 1), ("100000", 3)):
            async with http.get(f"{srv.url}/api/feed?limit={limit}") as resp:
                assert len((await resp.json())["items"]) == count, limit
        async with http.get(f"{srv.url}/api/feed?limit=-1") as resp:
            assert resp.status == 400
            assert await resp.text() == "limit must be ASCII digits: 1 to 1000, and beyond reads as the nearest"
