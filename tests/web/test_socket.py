"""Chromium's own websocket against the server: it always negotiates permessage-deflate and compresses what it
sends, so this is the path every browser takes through a parked socket (``mixer.fanout.parked``)."""

from __future__ import annotations

from playwright.async_api import Page

from mixer.fanout.appkeys import SOCKETS
from mixer.fanout.parked import Parked
from tests import browser
from tests.browser import LiveServer
from tests.helpers import eventually

chromium_page = browser.chromium_page
live_server = browser.live_server

OPEN = """(url) => new Promise((resolve, reject) => {
  const ws = new WebSocket(url);
  window.pongs = 0;
  window.sock = ws;
  ws.onmessage = (event) => {
    const type = JSON.parse(event.data).type;
    if (type === "hello") ws.send(JSON.stringify({ type: "ping" }));
    if (type === "pong") { window.pongs += 1; resolve(ws.extensions); }
  };
  ws.onerror = () => reject(new Error("websocket error"));
  setTimeout(() => reject(new Error("no pong in 8 s")), 8000);
})"""

MORE = """() => new Promise((resolve, reject) => {
  const ws = window.sock;
  ws.onmessage = (event) => {
    if (JSON.parse(event.data).type !== "pong") return;
    window.pongs += 1;
    if (window.pongs === 3) { ws.onclose = (e) => resolve([window.pongs, e.code, e.wasClean]); ws.close(1000); }
    else ws.send(JSON.stringify({ type: "ping", again: "ping ".repeat(100) }));
  };
  ws.send(JSON.stringify({ type: "ping", again: "ping ".repeat(100) }));
  setTimeout(() => reject(new Error("no pongs in 8 s")), 8000);
})"""


async def test_chromiums_compressed_pings_reach_a_parked_socket_and_are_answered(
    live_server: LiveServer, chromium_page: Page
) -> None:
    page = chromium_page
    await page.goto(live_server.url + "healthz")
    extensions = await page.evaluate(OPEN, live_server.url.replace("http://", "ws://") + "ws")
    assert "permessage-deflate" in extensions
    assert live_server._runner is not None
    app = live_server._runner.app
    [socket] = app[SOCKETS]
    assert isinstance(socket, Parked)
    assert socket._inflater is not None  # what it sent came compressed, and was inflated
    # more messages on the same compression context, then a clean close
    assert await page.evaluate(MORE) == [3, 1000, True]
    await eventually(lambda: not app[SOCKETS])  # and the socket is gone on the server too
