"""No password or token in anything chatmixer prints or logs: ``redact`` itself, each place that prints a URL or a
token, and real processes (`mixer merge` joining a run, `mixer ingest` logging an X server's reply). And no log line
that input can forge or make unencodable: ``escaped``, the formatter, and hostile keys sent to `mixer replay` and to
`mixer serve`'s webhook."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web

from mixer.config import render_settings, secrets_of
from mixer.keys import Keys
from mixer.redact import RedactingFormatter, escaped, redact, url_secret
from mixer.runtime import RunInfo, ingest_line, merge_line, publish, redis_problem, redis_url_problem
from mixer.settings import Settings
from mixer.tools.loadtest.options import check_url
from mixer.tools.record import RecordOptions, header
from tests.helpers import make_post
from tests.processes import free_port, mixer_env, read_until, start_mixer

PASSWORD = "s3cretpw-7f9c"
TOKEN = "tok-0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"redis://:{PASSWORD}@db:6379/0", "redis://***@db:6379/0"),
        (f"rediss://user:{PASSWORD}@db.example:6380/2", "rediss://***@db.example:6380/2"),
        ("redis://user:p@ss@db/0", "redis://***@db/0"),  # an '@' inside the password
        (f"unix:///run/redis.sock?db=0&password={PASSWORD}", "unix:///run/redis.sock?db=0&password=***"),
        (
            f"https://m.example/api/v1/streaming?access_token={TOKEN}&x=1",
            "https://m.example/api/v1/streaming?access_token=***&x=1",
        ),
        (f"GET failed: {{'Authorization': 'Bearer {TOKEN}'}}", "GET failed: {'Authorization': 'Bearer ***'}"),
        (f"from redis://:{PASSWORD}@a/0 to redis://:{PASSWORD}@b/1", "from redis://***@a/0 to redis://***@b/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("unix:///tmp/r/redis.sock", "unix:///tmp/r/redis.sock"),
        ("ws://127.0.0.1:8080/ws?chats=a", "ws://127.0.0.1:8080/ws?chats=a"),
        ("https://x.example/a@b", "https://x.example/a@b"),  # an '@' in the path is not a password
        ("a bearer token is required", "a bearer token is required"),
        ("", ""),
    ],
)
def test_redact_hides_credentials_in_urls_and_text_and_nothing_else(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_hides_every_named_secret_wherever_it_is_and_ignores_empty_ones() -> None:
    assert redact(f"x: HTTP 401 b'bad token {TOKEN}'", TOKEN, "") == "x: HTTP 401 b'bad token ***'"
    assert redact("nothing here", "") == "nothing here"


def test_the_log_formatter_redacts_messages_and_tracebacks() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s", (TOKEN,)))
    log = logging.getLogger("test_redact.formatter")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("connecting to %s", f"redis://:{PASSWORD}@db/0")
        try:
            raise RuntimeError(f"server said: unknown token {TOKEN}")
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    assert "WARNING connecting to redis://***@db/0" in text and "unknown token ***" in text
    assert PASSWORD not in text and TOKEN not in text and "Traceback" in text


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("redis://:ab/cd@127.0.0.1:6379/0", "ab/cd"),
        ("redis://:ab cd@h/0", "ab cd"),
        ("redis://user:p@ss@h/0", "p@ss"),
        ("redis://token@h/0", "token"),
        ("redis://h:6379/0", ""),
        ("not a url @ all", ""),
        ("https://mastodon.social/@chatmixer", ""),  # a profile link: no user in it
        ("https://user:pw@mastodon.social/@chatmixer", "pw"),
    ],
)
def test_url_secret_reads_a_password_a_parser_would_refuse(url: str, secret: str) -> None:
    assert url_secret(url) == secret


def test_config_output_and_errors_never_show_a_password_a_parser_would_refuse(tmp_path: Path) -> None:
    for password in ("ab/cd", "ab cd", "ab#cd", "ab?cd"):
        url = f"redis://:{password}@127.0.0.1:6379/0"
        run = subprocess.run(
            [sys.executable, "-m", "mixer", "config"], env={**os.environ, "MIXER_REDIS_URL": url},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 2 and "percent-encode it" in run.stderr, run.stderr
        assert password not in run.stderr + run.stdout and "cd@" not in run.stderr
        replay = subprocess.run(
            [sys.executable, "-m", "mixer", "replay", str(tmp_path / "none.jsonl"), "--redis", url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert replay.returncode == 2 and password not in replay.stderr and "'ab'" not in replay.stderr, replay.stderr


def test_secrets_of_settings_are_its_tokens_and_redis_password() -> None:
    settings = Settings(redis_url=f"redis://:{PASSWORD}@db/0", webhook_token=TOKEN, x_bearer_token="x-bearer")
    assert set(secrets_of(settings)) == {PASSWORD, TOKEN, "x-bearer"}
    assert PASSWORD not in repr(settings) and TOKEN not in repr(settings)  # a logged Settings shows neither


async def test_every_line_that_names_the_redis_shows_no_password() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    settings = Settings(redis_url=url)
    lines = [
        render_settings(settings),
        ingest_line(settings, url, [], 1.0, False),
        merge_line(settings, url),
        redis_url_problem(f"http://:{PASSWORD}@db/0") or "",
        redis_url_problem(f"redis://:{PASSWORD}@db:port/0") or "",
        await redis_problem(url, patience=1) or "",
        "\n".join(header(RecordOptions(), [], url, Keys(), 0)),
    ]
    for line in lines:
        assert PASSWORD not in line and "***@" in line, line


def test_a_rendered_url_keeps_its_host_and_says_the_password_is_not_shown() -> None:
    rendered = render_settings(Settings(redis_url=f"redis://:{PASSWORD}@db.example:6380/2"))
    line = 'url = "redis://***@db.example:6380/2"  # credentials not shown: give the whole value as MIXER_REDIS_URL'
    assert line in rendered.splitlines()


def test_the_load_tester_never_repeats_a_password_given_in_its_url() -> None:
    for url in (f"http://u:{PASSWORD}@127.0.0.1/ws", f"ws://u:{PASSWORD}@192.0.2.7:8080/ws"):
        with pytest.raises(ValueError) as info:
            check_url(url)
        assert PASSWORD not in str(info.value)


async def test_a_tool_joining_a_run_names_its_redis_without_the_password(tmp_path: Path, redis_url: str) -> None:
    keys = Keys(f"redact-join-{os.getpid()}")
    runtime = tmp_path / "rt"
    with_password = redis_url.replace("redis://", f"redis://:{PASSWORD}@", 1)  # this Redis has none: AUTH fails
    publish(runtime / "chatmixer", RunInfo(with_password, os.getpid(), "Night", keys.prefix))
    env = mixer_env(None, keys, "smbiz", XDG_RUNTIME_DIR=str(runtime))
    proc = await start_mixer("merge", env=env)
    try:
        first = await read_until(proc, "using the Redis of the mixer run")
    finally:
        proc.terminate()
        out, _ = await asyncio.wait_for(proc.communicate(), 30)  # the rest it printed, up to its exit
    text = "".join(first) + out.decode()
    assert "using the Redis of the mixer run" in text and "redis://***@" in text
    assert PASSWORD not in text


@asynccontextmanager
async def echoing_x_api() -> AsyncIterator[str]:
    """An X API that refuses every request with a body repeating the bearer token it was sent."""

    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"title": "Unauthorized", "detail": request.headers["Authorization"]}, status=401)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_a_token_a_server_echoes_never_reaches_the_log(redis_url: str, keys: Keys) -> None:
    async with echoing_x_api() as api:
        env = mixer_env(redis_url, keys, "smbiz", MIXER_X_BEARER_TOKEN=TOKEN, MIXER_X_API=api)
        proc = await start_mixer("ingest", env=env)
        try:
            lines = await read_until(proc, "HTTP 401")
        finally:
            proc.terminate()
            await proc.wait()
    text = "".join(lines)
    assert "***" in lines[-1] and TOKEN not in text, text


HOSTILE_KEYS = {"a\nFORGED line": 1, "\ud800": 2, "\x1b[31mred": 3, "b\u2028c": 4, "\x85": 5}
SHOWN_KEYS = "keys \\ud800, \\x1b[31mred, \\x85, a\\nFORGED line, b\\u2028c"  # sorted as shown


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x00\x1b[2J\x7f", "\\x00\\x1b[2J\\x7f"),
        ("\x85\x9f", "\\x85\\x9f"),  # C1: U+0085 is NEL, a line break to many viewers
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\ud800 \udfff", "\\ud800 \\udfff"),
        ("caf\u00e9 \U0001f600 \u00a0 C:\\new", "caf\u00e9 \U0001f600 \u00a0 C:\\new"),  # printable text as it is
    ],
)
def test_escaped_writes_controls_surrogates_and_line_separators_as_visible_escapes(text: str, shown: str) -> None:
    assert escaped(text) == shown and escaped(shown) == shown


def test_the_log_formatter_keeps_each_record_one_utf8_line_whatever_its_arguments_hold() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test_redact.escapes")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("str %s, repr %r, cut %.5s, int %d, float %.1f", "a\nb", "c\nd", "ab\ncdef", 7, 0.25)
        log.warning("exception: %s", ValueError("key x\ud800\nFORGED"))
        log.warning("path %s", Path("night\u2028.jsonl"))
        log.warning("mapping %(a)s %(n)d", {"a": "\x85", "n": 3})
        log.warning('no arguments, as aiohttp\'s access log: GET / "curl\x1b[2J"')
        try:
            raise RuntimeError("boom\x1b[2J")
        except RuntimeError:
            log.exception("failed on %s", "x\ny")
    finally:
        log.removeHandler(handler)
    lines = out.getvalue().encode("utf-8").decode("utf-8").splitlines()  # encodable: no lone surrogate is left
    assert lines[:5] == [
        "WARNING str a\\nb, repr 'c\\nd', cut ab\\nc, int 7, float 0.2",
        "WARNING exception: key x\\ud800\\nFORGED",
        "WARNING path night\\u2028.jsonl",
        "WARNING mapping \\x85 3",
        'WARNING no arguments, as aiohttp\'s access log: GET / "curl\\x1b[2J"',
    ]
    assert lines[5] == "ERROR failed on x\\ny" and lines[6] == "Traceback (most recent call last):"  # lines kept
    assert lines[-1] == "RuntimeError: boom\\x1b[2J"


def test_a_record_given_to_other_handlers_is_left_as_logged(caplog: pytest.LogCaptureFixture) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter("%(message)s"))
    log = logging.getLogger("test_redact.others")
    log.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="test_redact.others"):
            log.info("got %s", "a\nb")
    finally:
        log.removeHandler(handler)
    assert out.getvalue() == "got a\\nb\n" and caplog.records[0].getMessage() == "got a\nb"


def _lines_naming(text: str, part: str) -> list[str]:
    return [line for line in text.splitlines() if part in line]


def test_a_replayed_record_with_hostile_keys_is_one_log_line_with_visible_escapes(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    night = tmp_path / "night.jsonl"
    good = json.dumps(make_post("x:1").to_dict())
    night.write_text(json.dumps(HOSTILE_KEYS) + "\n" + good + "\n")
    env = mixer_env(redis_url, keys, "smbiz")
    run = subprocess.run(
        [sys.executable, "-m", "mixer", "replay", "--speed", "0", str(night)], env=env, capture_output=True, timeout=60
    )
    said = run.stderr.decode("utf-8")  # strict: a lone surrogate would not decode
    assert run.returncode == 0, said
    [line] = _lines_naming(said, "skipped malformed record")
    assert line.endswith(f"WARNING mixer.ingest.recorded: skipped malformed record {night}:1: unrecognised record: "
                         f"{SHOWN_KEYS}")  # fmt: skip
    assert _lines_naming(said, "FORGED") == [line]


async def test_a_webhook_record_with_hostile_keys_is_one_log_line_and_a_json_answer(
    tmp_path: Path, redis: aioredis.Redis, keys: Keys, redis_url: str
) -> None:
    port = free_port()
    env = mixer_env(redis_url, keys, "smbiz", MIXER_WEBHOOK_TOKEN=TOKEN)
    with (tmp_path / "serve.log").open("wb") as out:
        proc = await start_mixer("serve", "--no-merge", "--port", str(port), env=env, log=out)
        try:
            async with aiohttp.ClientSession() as http:
                await _answering(http, f"http://127.0.0.1:{port}/healthz")
                body = json.dumps(HOSTILE_KEYS).encode()  # ASCII: the surrogate travels as the JSON escape \ud800
                async with http.post(
                    f"http://127.0.0.1:{port}/api/posts",
                    data=body,
                    headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
                ) as resp:
                    status, answer = resp.status, json.loads((await resp.read()).decode("utf-8"))
        finally:
            proc.terminate()
            await proc.wait()
    said = (tmp_path / "serve.log").read_bytes().decode("utf-8")  # strict: a lone surrogate would not decode
    assert status == 400 and answer["errors"] == [{"index": 0, "reason": f"unrecognised record: {SHOWN_KEYS}"}]
    [line] = _lines_naming(said, "webhook from")
    assert line.endswith(
        f"WARNING mixer.ingest.webhook: webhook from 127.0.0.1: record 0 skipped: unrecognised record: {SHOWN_KEYS} "
        '({"a\\nFORGED line": 1, "\\ud800": 2, "\\u001b[31mred": 3, "b\\u2028c": 4, "\\x85": 5})'
    )
    assert _lines_naming(said, "FORGED") == [line]


async def _answering(http: aiohttp.ClientSession, url: str) -> None:
    """Until ``url`` answers (the server is starting)."""
    async with asyncio.timeout(30):
        while True:
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)  # not listening yet
