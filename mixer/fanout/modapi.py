"""The moderation HTTP API under ``/api/mod/``, behind the ``[moderation] token`` bearer token.

Decisions go into the actions stream that the merge stage (the feed's only writer)
reads with the chat streams, so each reaches every screen with the next merge round,
well within a second; each is also appended to the audit log (who, what, when). Rules
(blocklists, profanity, approval mode) are stored in Redis and take effect at once.
Wrong tokens are throttled per address (``mixer.fanout.throttle``); a malformed id, key, chat
or body is a 400 with the reason before anything is written. Routes:

- ``POST /api/mod/{hide,unhide,pin,unpin,approve,reject}`` with ``{"key": ...}`` or ``{"id": feed id}``;
- ``POST /api/mod/block`` ``{"account": "x:bob", "chat": optional, "key"/"id": optional post to hide}``;
- ``GET /api/mod/rules``, ``PUT /api/mod/rules`` (the whole rules object; with ``If-Match``, only over the rules
  read), ``POST /api/mod/approval`` ``{"on": bool}``;
- ``GET /api/mod/queue`` (posts waiting for approval), ``GET /api/mod/audit?limit=``;
- ``GET /api/mod/changes?after=`` (waits for the next change to the queue or the audit log).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import msgpack
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import WatchError

from mixer.codec import ACTION_FIELD, dumps
from mixer.fanout.params import parse_count, parse_id, stream_id
from mixer.fanout.throttle import AuthThrottle, check_bearer
from mixer.keys import CHANGES_MAXLEN, Keys
from mixer.models import LIMITS, TAG, normalize_tag
from mixer.rules import Rules
from mixer.settings import Settings
from mixer.streams import text

AUDIT_MAXLEN = 10_000
CHANGES_WAIT_MS = 5_000  # a console's wait for a change, at most (under the Redis pool's 10 s socket timeout)
MAX_WAITING = 8  # consoles waiting at once (each holds a pooled Redis connection); more are answered at once
POST_ACTIONS = ("hide", "unhide", "pin", "unpin", "approve", "reject")


def rules_etag(rules: Rules) -> str:
    """The ``ETag`` of the rules in force: a PUT with ``If-Match`` replaces only the rules it was written from."""
    return '"' + hashlib.sha256(rules.to_json().encode()).hexdigest()[:32] + '"'


class _Stale(Exception):
    """The rules changed since the moderator read them (``If-Match`` names other rules)."""


def moderator_name(header: str) -> str:
    """The ``X-Moderator`` header as a name: percent-encoded UTF-8 decoded (``Zo%C3%AB`` is "Zoë"; plain ASCII
    stays as it is), control and format characters dropped, at most 80 characters; "moderator" when empty."""
    name = unquote(header, errors="replace")
    name = "".join(ch for ch in name if unicodedata.category(ch) not in ("Cc", "Cf", "Cs")).strip()
    return unicodedata.normalize("NFC", name)[:80] or "moderator"


class ModApi:
    """Request handlers; ``routes()`` lists them for ``create_app``."""

    def __init__(self, settings: Settings, keys: Keys, redis: Any, config_rules: Rules, throttle: AuthThrottle) -> None:
        self.settings = settings
        self.throttle = throttle  # wrong tokens per address, shared with the webhook
        self.keys = keys
        self._redis = redis  # a zero-argument callable returning the app's client (it exists only once started)
        self.config_rules = config_rules
        self._waiting = 0  # consoles waiting on /api/mod/changes
        self._closing = asyncio.Event()  # set on shutdown: waiting consoles are answered at once

    @property
    def redis(self) -> aioredis.Redis:
        client: aioredis.Redis = self._redis()
        return client

    def routes(self) -> list[web.RouteDef]:
        return [
            *(web.post(f"/api/mod/{name}", self.post_action) for name in POST_ACTIONS),
            web.post("/api/mod/block", self.block),
            web.get("/api/mod/rules", self.get_rules),
            web.put("/api/mod/rules", self.put_rules),
            web.post("/api/mod/approval", self.approval),
            web.get("/api/mod/queue", self.queue),
            web.get("/api/mod/audit", self.audit),
            web.get("/api/mod/changes", self.changes),
        ]

    def _check(self, request: web.Request) -> str:
        """The moderator's name (``X-Moderator`` or "moderator"); 404 when moderation is off, 401 without the token,
        429 while the address is throttled for wrong ones (``mixer.fanout.throttle``)."""
        token = self.settings.moderation_token
        if not token:
            raise web.HTTPNotFound(text="moderation is off: set [moderation] token (MIXER_MODERATION_TOKEN)")
        check_bearer(request, token, self.throttle)
        return moderator_name(request.headers.get("X-Moderator", ""))

    async def _body(self, request: web.Request, known: tuple[str, ...] | None = None) -> dict[str, Any]:
        """The request's JSON object; with ``known``, a key not in it is a 400 (a misspelt field is never ignored)."""
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body must be a JSON object") from None
        except RecursionError:
            raise web.HTTPBadRequest(
                text="the body must be a JSON object this server reads: nested too deeply"
            ) from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object")
        if known is not None and (unknown := sorted(k for k in body if k not in known)):
            raise web.HTTPBadRequest(
                text=f"unknown key(s) {', '.join(map(repr, unknown))}: expected {', '.join(map(repr, known))}"
            )
        return body

    async def _key(self, body: dict[str, Any]) -> str:
        """The post key a request names, by ``key`` or by feed ``id``."""
        if isinstance(body.get("key"), str) and body["key"]:
            key = str(body["key"])
            if len(key) > LIMITS.key or not key.isprintable():  # (a lone surrogate is not printable: Redis refuses it)
                raise web.HTTPBadRequest(
                    text=f"'key' must be a post key: printable text, at most {LIMITS.key} characters"
                )
            return key
        if "id" in body:
            feed_id = stream_id(body["id"]) if isinstance(body["id"], str) else None
            if feed_id is None:
                raise web.HTTPBadRequest(text="'id' must be a feed id such as 1700000000000-0")
            reply: Any = await self.redis.xrange(self.keys.feed, min=feed_id, max=feed_id, count=1)
            for _, fields in reply:
                for raw in fields.values():
                    post = msgpack.unpackb(raw, raw=False)
                    if isinstance(post, dict) and isinstance(post.get("key"), str):
                        return str(post["key"])
            raise web.HTTPNotFound(text=f"no post with id {body['id']} in the feed")
        raise web.HTTPBadRequest(text="name the post by 'key' or 'id'")

    async def _record(self, who: str, request: web.Request, action: dict[str, Any]) -> None:
        """Send an action to the merge stage and write it to the audit log, in one transaction."""
        entry = {"who": who, "from": request.remote or "", "at": int(time.time() * 1000), **action}
        entry.pop("post", None)
        async with self.redis.pipeline(transaction=True) as tx:
            tx.xadd(self.keys.mod_actions, {ACTION_FIELD: msgpack.packb(action, use_bin_type=True)}, maxlen=10_000)
            tx.xadd(self.keys.mod_audit, {ACTION_FIELD: dumps(entry)}, maxlen=AUDIT_MAXLEN, approximate=True)
            tx.xadd(self.keys.mod_changes, {"c": "audit"}, maxlen=CHANGES_MAXLEN, approximate=True)
            await tx.execute()

    async def post_action(self, request: web.Request) -> web.Response:
        who = self._check(request)
        name = request.path.rsplit("/", 1)[1]
        body = await self._body(request, ("key", "id"))  # (unpin needs neither: the one pinned post goes)
        key = "" if name == "unpin" else await self._key(body)
        action: dict[str, Any] = {"action": name, "key": key}
        if name in ("approve", "reject"):  # a double click or another moderator's decision: said, not audited
            raw = await self.redis.hget(self.keys.mod_queue, key)
            if raw is None:
                raise web.HTTPNotFound(text=f"{key} is not waiting for approval")
            if name == "approve":
                action["post"] = msgpack.unpackb(raw, raw=False)
        await self._record(who, request, action)
        return web.json_response({"ok": True, "action": name, "key": key}, status=202)

    async def current_rules(self) -> Rules:
        return self._in_force(await self.redis.get(self.keys.mod_rules))

    def _in_force(self, stored: str | bytes | None) -> Rules:
        """The rules stored in Redis (a moderator's), else the config's."""
        return Rules.from_json(stored) if stored is not None else self.config_rules

    async def _set_rules(self, who: str, request: web.Request, rules: Rules, what: str) -> None:
        await self.redis.set(self.keys.mod_rules, rules.to_json())
        await self._record(who, request, {"action": "rules", "key": "", "detail": what})

    async def _change_rules(
        self, who: str, request: web.Request, change: Callable[[dict[str, Any]], dict[str, Any]], what: str
    ) -> Rules:
        """The rules in force, changed by ``change`` (of their dict form) and stored: read and written under WATCH
        and tried again when another moderator's edit came in between, so two edits at once both take effect.
        ValueError (nothing stored) when the rules refuse the change."""
        async with self.redis.pipeline(transaction=True) as tx:
            while True:
                await tx.watch(self.keys.mod_rules)
                current = self._in_force(await tx.get(self.keys.mod_rules))
                rules = Rules.from_dict(change(current.to_dict()))
                tx.multi()  # type: ignore[no-untyped-call]
                tx.set(self.keys.mod_rules, rules.to_json())
                try:
                    await tx.execute()
                except WatchError:
                    continue  # (execute has reset the pipeline: watch again)
                break
        await self._record(who, request, {"action": "rules", "key": "", "detail": what})
        return rules

    async def get_rules(self, request: web.Request) -> web.Response:
        self._check(request)
        rules = await self.current_rules()
        return web.json_response(rules.to_dict(), headers={"ETag": rules_etag(rules)})

    async def put_rules(self, request: web.Request) -> web.Response:
        """Replace the rules; with ``If-Match`` (the ``ETag`` of a GET) only while they are still the ones read, else
        412: so a form saved after another moderator's edit does not silently undo that edit."""
        who = self._check(request)
        try:
            rules = Rules.from_dict(await self._body(request))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"bad rules: {exc}") from None
        if (match := request.headers.get("If-Match")) is None:
            await self._set_rules(who, request, rules, "rules replaced")
        else:
            tags = {tag.strip() for tag in match.split(",")}

            def replace(data: dict[str, Any]) -> dict[str, Any]:
                if "*" not in tags and rules_etag(Rules.from_dict(data)) not in tags:
                    raise _Stale
                return rules.to_dict()

            try:
                await self._change_rules(who, request, replace, "rules replaced")
            except _Stale:
                raise web.HTTPPreconditionFailed(
                    text="the rules changed since you read them (another moderator's edit): "
                    "read them again (GET /api/mod/rules) and make your change to those"
                ) from None
        return web.json_response(rules.to_dict(), headers={"ETag": rules_etag(rules)})

    async def approval(self, request: web.Request) -> web.Response:
        who = self._check(request)
        on = (await self._body(request, ("on",))).get("on")
        if not isinstance(on, bool):
            raise web.HTTPBadRequest(text="'on' must be true or false")
        rules = await self._change_rules(
            who, request, lambda data: {**data, "approval": on}, f"approval {'on' if on else 'off'}"
        )
        return web.json_response(rules.to_dict())

    async def block(self, request: web.Request) -> web.Response:
        who = self._check(request)
        body = await self._body(request, ("account", "chat", "key", "id"))
        account, chat = body.get("account"), body.get("chat")
        if not isinstance(account, str) or not account:
            raise web.HTTPBadRequest(text="'account' names who to block, like 'x:handle' or 'handle'")
        if chat is not None:
            chat = normalize_tag(chat) if isinstance(chat, str) else ""
            if not TAG.match(chat):  # as the rules store it: "#SMBiz" adds to the rules of "smbiz"
                raise web.HTTPBadRequest(
                    text="'chat' is a chat tag such as 'edchat' (leave it out to block everywhere)"
                )
        # the post to hide is found first: a bad or unknown one blocks no one
        hide = await self._key(body) if body.get("key") or body.get("id") is not None else None

        def add(data: dict[str, Any]) -> dict[str, Any]:
            if chat is not None:
                per = data["chats"].setdefault(chat, {"words": [], "accounts": []})
                per["accounts"] = [*per["accounts"], account]
            else:
                data["accounts"] = [*data["accounts"], account]
            return data

        try:
            rules = await self._change_rules(who, request, add, f"block {account}" + (f" in #{chat}" if chat else ""))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"cannot block {account!r}: {exc}") from None
        if hide is not None:
            await self._record(who, request, {"action": "hide", "key": hide})
        return web.json_response(rules.to_dict())

    async def queue(self, request: web.Request) -> web.Response:
        self._check(request)
        held = await self.redis.hgetall(self.keys.mod_queue)
        posts = sorted((msgpack.unpackb(raw, raw=False) for raw in held.values()), key=lambda p: p.get("created", 0))
        return web.Response(body=dumps({"items": posts}), content_type="application/json")

    async def changes(self, request: web.Request) -> web.Response:
        """``GET /api/mod/changes?after=<id>``: the id of the newest change to the approval queue or the audit log,
        as soon as there is one newer than ``after`` (or ``after`` again after ``CHANGES_WAIT_MS``). Without a
        ``after``, the newest id at once; a malformed one is a 400. A console loops on it and refreshes when the id
        moves."""
        self._check(request)
        after = parse_id(request.query["after"], "after") if request.query.get("after") else ""
        if not after:
            newest: Any = await self.redis.xrevrange(self.keys.mod_changes, count=1)
            return web.json_response({"id": text(newest[0][0]) if newest else "0-0"})
        if self._waiting >= MAX_WAITING:
            return web.json_response({"id": after})
        self._waiting += 1
        read = asyncio.ensure_future(self.redis.xread({self.keys.mod_changes: after}, count=100, block=CHANGES_WAIT_MS))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({read, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._waiting -= 1
            closing.cancel()
            if not read.done():
                read.cancel()  # (redis-py drops that connection rather than reuse it mid-reply)
        got: Any = read.result() if read.done() and not read.cancelled() else None
        return web.json_response({"id": text(got[0][1][-1][0]) if got else after})

    @property
    def waiting(self) -> int:
        """Consoles waiting on ``/api/mod/changes`` right now."""
        return self._waiting

    async def shutdown(self, app: web.Application) -> None:
        """On the app's shutdown: answer every waiting console now, so shutdown does not wait out their waits."""
        self._closing.set()

    async def audit(self, request: web.Request) -> web.Response:
        self._check(request)
        limit = parse_count(request.query.get("limit"), "limit", 100, 1, 1000)
        reply: Any = await self.redis.xrevrange(self.keys.mod_audit, count=limit)
        items = [{"id": text(eid), **json.loads(fields[ACTION_FIELD])} for eid, fields in reply]
        return web.Response(body=dumps({"items": items}), content_type="application/json")
