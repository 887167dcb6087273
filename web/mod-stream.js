/*
 * mod-stream.js: the console's live feed: /api/feed history, then /ws?profile=full resuming from it.
 *
 * The same connection discipline as the wall (wall.js): when the socket closes, errors or
 * goes silent it reconnects with capped exponential backoff plus jitter, resuming with
 * since=<last id seen>, so nothing posted meanwhile is missed. After a `lag` frame (the server
 * skipped posts while the console was slow) the skipped posts are fetched back from /api/feed,
 * page by page, and handed on like live ones: a moderator sees every post. Frames are handed to
 * the handlers given to start(); a malformed frame is skipped.
 */

import { compareIds } from "./safe.js";

const HISTORY_LIMIT = 50;
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 15000;
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 2.5 * PING_EVERY_MS; // no frame at all (not even a pong) this long: half-open
const GAP_PAGE = 1000; // posts per /api/feed read when fetching back what a `lag` skipped (the API's most)
const GAP_PAGES = 20; // reads per `lag` at most: the console keeps far fewer cards than that

/**
 * A feed that calls handlers.{history, hello, posts, update, retract, pin, state}; stop() ends it for good.
 * history(items) gets the newest posts at start (and again after a `reset`); posts(items) gets live posts in
 * feed order, and also posts fetched back after a `lag`, older than some already given; state(name) is
 * "connecting", "live" or "reconnecting".
 */
export class FeedStream {
  constructor(handlers) {
    this.handlers = handlers;
    this.lastId = null;
    this.historyLoaded = false;
    this.socket = null;
    this.attempt = 0;
    this.timer = 0;
    this.lastFrameAt = 0;
    this.stopped = false;
    this.pinger = 0;
  }

  start() {
    this.pinger = window.setInterval(() => this.checkAlive(), PING_EVERY_MS);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.clearInterval(this.pinger);
    window.clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }

  async loadHistory() {
    const url = new URL("/api/feed", window.location.href);
    url.searchParams.set("limit", String(HISTORY_LIMIT));
    url.searchParams.set("profile", "full");
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error(`/api/feed: HTTP ${response.status}`);
    const history = await response.json();
    const items = Array.isArray(history.items) ? history.items : [];
    this.handlers.history(items);
    const last = items.length ? items[items.length - 1].id : null;
    if (typeof history.cursor === "string" && history.cursor) this.lastId = history.cursor;
    else if (typeof last === "string") this.lastId = last;
    this.historyLoaded = true;
  }

  /** /api/feed?since= of the full feed: {items, cursor, partial}. */
  async readFeed(since, limit) {
    const url = new URL("/api/feed", window.location.href);
    url.searchParams.set("since", since);
    url.searchParams.set("limit", String(limit));
    url.searchParams.set("profile", "full");
    const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) throw new Error(`/api/feed: HTTP ${response.status}`);
    return response.json();
  }

  /**
   * After a `lag`: the posts after `since` (the last id held when it came), page by page, until the read
   * reaches the posts that came live after the lag or the end of the feed.
   */
  async fetchGap(since) {
    let from = since;
    for (let pages = 0; pages < GAP_PAGES && !this.stopped; pages += 1) {
      const page = await this.readFeed(from, GAP_PAGE);
      const items = Array.isArray(page.items) ? page.items : [];
      this.handlers.posts(items);
      const more = page.partial === true || items.length >= GAP_PAGE;
      if (!more || typeof page.cursor !== "string" || !page.cursor) return;
      // read up to a post that came live after the lag: the rest came live too
      if (this.lastId !== since && compareIds(page.cursor, this.lastId) >= 0) return;
      from = page.cursor;
    }
    console.warn(`console: stopped fetching back the posts skipped after ${since} at ${from}`);
  }

  async connect() {
    this.timer = 0;
    if (this.stopped) return;
    this.handlers.state(this.attempt === 0 ? "connecting" : "reconnecting");
    try {
      if (!this.historyLoaded) await this.loadHistory();
    } catch (error) {
      console.warn(`console: could not load history (${error.message})`);
      this.scheduleReconnect();
      return;
    }
    if (this.stopped) return;
    const url = new URL("/ws", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    url.searchParams.set("profile", "full");
    if (this.lastId) url.searchParams.set("since", this.lastId);
    const socket = new WebSocket(url);
    this.socket = socket;
    this.lastFrameAt = Date.now();
    // Events of a socket already given up on must not touch the console.
    socket.addEventListener("message", (event) => {
      if (socket === this.socket) this.handleFrame(event.data);
    });
    socket.addEventListener("close", () => {
      if (socket === this.socket) this.scheduleReconnect();
    });
  }

  handleFrame(data) {
    this.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn("console: ignoring a frame that is not JSON");
      return;
    }
    const h = this.handlers;
    switch (frame && frame.type) {
      case "hello":
        if (!this.lastId && typeof frame.cursor === "string") this.lastId = frame.cursor;
        this.attempt = 0;
        h.hello(frame);
        h.state("live");
        break;
      case "posts": {
        const items = Array.isArray(frame.items) ? frame.items : [];
        const last = items.length ? items[items.length - 1] : null;
        if (last && typeof last.id === "string") this.lastId = last.id;
        h.posts(items);
        break;
      }
      case "update":
        h.update(Array.isArray(frame.items) ? frame.items : []);
        break;
      case "retract":
        h.retract(Array.isArray(frame.ids) ? frame.ids : []);
        break;
      case "pin":
        h.pin(frame.post && typeof frame.post === "object" ? frame.post : null);
        break;
      case "reset":
        // the gap is no longer all in the history: start again from the newest posts
        if (typeof frame.cursor === "string") this.lastId = frame.cursor;
        this.loadHistory().catch((error) => console.warn("console: could not reload history", error));
        break;
      case "lag":
        // the server skipped posts while this console was slow: fetch them back from the last one held
        if (this.lastId) {
          this.fetchGap(this.lastId).catch((error) => console.warn("console: could not fetch the skipped posts", error));
        }
        break;
      default:
        break; // pong, stats and future frame types need nothing here
    }
  }

  /** Capped exponential backoff with jitter, so a restarted server is not hit by every screen at once. */
  scheduleReconnect() {
    this.socket = null;
    if (this.timer || this.stopped) return;
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.handlers.state("reconnecting");
    this.timer = window.setTimeout(() => this.connect(), delay);
  }

  /** Keep-alive: the server answers each ping, so a long silence means the connection is dead. */
  checkAlive() {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - this.lastFrameAt > SILENCE_LIMIT_MS) {
      console.warn("console: no frame from the server for too long; reconnecting");
      this.scheduleReconnect();
      socket.close();
      return;
    }
    socket.send(JSON.stringify({ type: "ping" }));
  }
}
