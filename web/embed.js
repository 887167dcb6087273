/*
 * embed.js: the chatmixer feed widget for any web page, one file, no dependencies.
 *
 *   <script src="https://mixer.example/embed.js" data-chats="smbiz,edchat" data-profile="wall"
 *           data-theme="dark" data-max-items="20" data-height="480px" async></script>
 *
 * Each such tag becomes one independent widget, inserted right after the tag, inside an
 * open shadow root whose `:host { all: initial !important }` keeps the host page's CSS out.
 * The server is the origin this file was loaded from: the widget reads /api/chats and
 * /api/feed from it (CORS, checked against the server's Origin allowlist), then follows
 * /ws with since=<last id>, reconnecting with capped exponential backoff plus jitter, so
 * no post is lost or shown twice. On /embed (the iframe variant) the options come from the
 * page's query string instead (`data-query` on the tag). docs/embed.md has the details.
 *
 * Everything from the network is untrusted: it reaches the DOM only through textContent and
 * setAttribute, URLs only when http(s), names and texts bidi-isolated.
 */
(() => {
"use strict";

const DEFAULTS = { profile: "wall", theme: "auto", maxItems: 20, height: "480px" };
const MAX_REMEMBERED_IDS = 5000;
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 15000;
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 2.5 * PING_EVERY_MS; // no frame at all for this long: a half-open socket
const GAP_LIMIT = 1000; // most posts fetched back after a lag frame
const NEUTRAL_COLOUR = "#607080";
const WAITING = "Waiting for the first posts…";
const LABELS = {
  connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…",
  offline: "Offline: cannot reach the feed", blocked: "This site is not allowed to show this feed",
};

const CSS = `
:host{all:initial!important;display:block!important;box-sizing:border-box!important;
 width:100%!important;max-width:100%!important;visibility:visible!important;opacity:1!important}
*{box-sizing:border-box}
.w{--bg:#0f141d;--panel:#18202d;--edge:#273246;--text:#eef2f8;--muted:#9aa7bd;--link:#7dd3fc;--live:#4ade80;--warn:#fbbf24;
 display:flex;flex-direction:column;height:var(--h);min-height:120px;overflow:hidden;border:1px solid var(--edge);
 border-radius:12px;background:var(--bg);color:var(--text);text-align:start;
 font:14px/1.4 system-ui,"Segoe UI",Roboto,"Helvetica Neue","Liberation Sans","DejaVu Sans",sans-serif}
.w.light{--bg:#fff;--panel:#f4f6fa;--edge:#dde3ec;--text:#17202e;--muted:#5b667a;--link:#0b63b6;--live:#15803d;--warn:#b45309}
@media (prefers-color-scheme:light){.w.auto{--bg:#fff;--panel:#f4f6fa;--edge:#dde3ec;--text:#17202e;--muted:#5b667a;
 --link:#0b63b6;--live:#15803d;--warn:#b45309}}
.top{display:flex;align-items:center;gap:8px;padding:10px 12px;border-bottom:1px solid var(--edge)}
.title{flex:1;min-width:0;overflow:hidden;font-weight:700;font-size:15px;white-space:nowrap;text-overflow:ellipsis}
.status{display:flex;align-items:center;gap:6px;color:var(--muted);font-size:12px;white-space:nowrap}
.dot{width:8px;height:8px;border-radius:50%;background:var(--warn)}
.status[data-state=live] .dot{background:var(--live)}
.status[data-state=offline] .dot,.status[data-state=blocked] .dot{background:#ef4444}
.status[data-state=blocked],.status[data-state=offline]{white-space:normal;color:var(--text)}
.list{flex:1;overflow-y:auto;margin:0;padding:6px 8px;list-style:none}
.post{display:flex;gap:10px;margin:4px 0;padding:10px;border-radius:10px;background:var(--panel)}
.avatar{flex:none;width:36px;height:36px;border-radius:50%;object-fit:cover}
.initial{display:flex;align-items:center;justify-content:center;color:#fff;font-weight:700;font-size:16px}
.body{flex:1;min-width:0}
.head{display:flex;flex-wrap:wrap;align-items:baseline;gap:2px 6px}
.badge{padding:0 6px;border-radius:999px;font-size:11px;font-weight:700;line-height:18px}
.name{font-weight:700;unicode-bidi:isolate;overflow-wrap:anywhere}
.handle,.time{color:var(--muted);font-size:12px;unicode-bidi:isolate;overflow-wrap:anywhere}
.time{margin-inline-start:auto}
a{color:inherit;text-decoration:none}
a:hover .time,a:focus-visible .time{color:var(--link);text-decoration:underline}
.text{margin:4px 0 0;white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:isolate}
.quote{margin:2px 0 0;overflow:hidden;color:var(--muted);font-size:12px;white-space:nowrap;text-overflow:ellipsis}
.quote>*{unicode-bidi:isolate}
.empty{margin:auto;padding:16px;color:var(--muted);text-align:center}
.foot{padding:6px 12px;border-top:1px solid var(--edge);color:var(--muted);font-size:11px;text-align:end}
.foot a{color:var(--link)}
@media (prefers-reduced-motion:no-preference){.new{animation:in .4s ease-out}}
@keyframes in{from{opacity:0;transform:translateY(-6px)}}
`;

/* ---------- options: a bad value falls back to its default, never throws ---------- */

function normalizeTag(tag) {
  return String(tag).trim().replace(/^#+/, "").toLowerCase();
}

function parseChats(raw) {
  const tags = String(raw || "").split(",").map(normalizeTag).filter((t) => /^[\p{L}\p{N}_]{1,64}$/u.test(t));
  return tags.length ? [...new Set(tags)] : null;
}

function parseOptions(get) {
  const profile = String(get("profile") || "").trim();
  const theme = String(get("theme") || "").trim().toLowerCase();
  const max = Number.parseInt(get("max") ?? "", 10);
  const height = String(get("height") || "").trim();
  return {
    chats: parseChats(get("chats")),
    profile: /^[\w-]{1,40}$/.test(profile) ? profile : DEFAULTS.profile,
    theme: ["dark", "light", "auto"].includes(theme) ? theme : DEFAULTS.theme,
    maxItems: Number.isFinite(max) && max >= 1 ? Math.min(max, 100) : DEFAULTS.maxItems,
    height: /^\d{1,4}(\.\d{1,2})?$/.test(height) ? `${height}px`
      : /^\d{1,4}(\.\d{1,2})?(px|em|rem|vh|%)$/.test(height) ? height : DEFAULTS.height,
  };
}

/** The server this file came from: its own src, so the widget works on a page of any origin. */
function serverOrigin(script) {
  try {
    const url = new URL(script.src, document.baseURI);
    if (url.protocol === "http:" || url.protocol === "https:") return url.origin;
  } catch { /* fall through */ }
  return window.location.origin;
}

/* ---------- small pure helpers (as in wall.js) ---------- */

function httpUrlOrNull(value) {
  if (typeof value !== "string" || value === "") return null;
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function safeColour(value) {
  return typeof value === "string" && /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(value) ? value : NEUTRAL_COLOUR;
}

/** Black or white, whichever contrasts more with the hex background (WCAG relative luminance). */
function readableTextColour(hex) {
  let digits = hex.slice(1);
  if (digits.length === 3) digits = [...digits].map((d) => d + d).join("");
  const linear = [0, 2, 4].map((i) => {
    const c = parseInt(digits.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  return (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) ? "#000000" : "#ffffff";
}

function initialOf(name) {
  const trimmed = String(name || "").replace(/^[@\s\p{Cf}]+/u, "");
  return trimmed ? [...trimmed][0].toLocaleUpperCase() : "?";
}

function avatarColour(seed) {
  let hash = 0;
  for (const ch of String(seed)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 45% 36%)`;
}

/** Feed ids "<ms>-<seq>" compared as numbers: negative when a is older than b. */
function compareIds(a, b) {
  const [am, as = "0"] = String(a).split("-");
  const [bm, bs = "0"] = String(b).split("-");
  const ms = BigInt(am) - BigInt(bm);
  const diff = ms !== 0n ? ms : BigInt(as) - BigInt(bs);
  return diff < 0n ? -1 : diff > 0n ? 1 : 0;
}

function isPost(item) {
  return item !== null && typeof item === "object" && typeof item.id === "string"
    && /^\d{1,20}(-\d{1,20})?$/.test(item.id) && item.author !== null && typeof item.author === "object";
}

const clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateClock = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

function describeTime(createdMs, nowMs) {
  const age = nowMs - createdMs;
  if (Math.abs(age) < 45_000) return "just now";
  if (age > 0 && age < 3_600_000) return `${Math.max(1, Math.round(age / 60_000))} min ago`;
  const then = new Date(createdMs);
  return then.toDateString() === new Date(nowMs).toDateString() ? clock.format(then) : dateClock.format(then);
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function styleSheetFor(root) {
  if ("adoptedStyleSheets" in root && typeof CSSStyleSheet === "function") {
    // A constructed sheet is not inline style, so a strict style-src CSP on the host page still allows it.
    try {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
      return;
    } catch { /* older browsers: fall back to a <style> element */ }
  }
  root.append(element("style", "", CSS));
}

/* ---------- one widget ---------- */

function mount(script, options) {
  const origin = serverOrigin(script);
  const host = document.createElement("chatmixer-feed");
  script.after(host);
  const root = host.attachShadow({ mode: "open" });
  styleSheetFor(root);

  const box = element("section", `w ${options.theme}`);
  box.style.setProperty("--h", options.height);
  const title = element("span", "title", "chatmixer");
  const status = element("span", "status");
  status.setAttribute("role", "status");
  status.setAttribute("aria-live", "polite");
  const statusDot = element("span", "dot");
  statusDot.setAttribute("aria-hidden", "true");
  const statusLabel = element("span", "label");
  status.append(statusDot, statusLabel);
  const top = element("header", "top");
  top.append(title, status);
  const list = element("div", "list");
  list.setAttribute("role", "feed");
  list.setAttribute("aria-label", "Posts");
  const empty = element("p", "empty", WAITING);
  const foot = element("footer", "foot");
  const home = element("a", "", "chatmixer");
  home.setAttribute("href", `${origin}/`);
  home.setAttribute("rel", "noopener nofollow");
  home.setAttribute("target", "_blank");
  foot.append("live feed by ", home);
  box.append(top, list, empty, foot);
  box.setAttribute("aria-label", "chatmixer live feed");
  root.append(box);

  const state = {
    chats: new Map(), seen: new Set(), lastId: null, historyLoaded: false, profile: options.profile,
    socket: null, attempt: 0, timer: 0, lastFrameAt: 0, stopped: false,
  };
  const intervals = [];

  function setStatus(name) {
    status.dataset.state = name;
    statusLabel.textContent = LABELS[name];
  }

  function colourBadge(badge, tag) {
    const colour = safeColour(state.chats.get(tag)?.colour);
    badge.style.backgroundColor = colour;
    badge.style.color = readableTextColour(colour);
  }

  function initialAvatar(author) {
    const span = element("span", "avatar initial", initialOf(author.name || author.handle));
    span.setAttribute("aria-hidden", "true");
    span.style.backgroundColor = avatarColour(author.handle || author.name || "");
    return span;
  }

  function avatar(author) {
    const src = httpUrlOrNull(author.avatar);
    if (!src) return initialAvatar(author);
    const img = element("img", "avatar");
    img.setAttribute("alt", "");
    img.setAttribute("referrerpolicy", "no-referrer");
    img.setAttribute("loading", "lazy");
    img.addEventListener("error", () => img.replaceWith(initialAvatar(author)), { once: true });
    img.setAttribute("src", src);
    return img;
  }

  function timeOf(post) {
    const created = Number(post.created);
    const time = element("time", "time");
    if (Number.isFinite(created) && created > 0) {
      time.dataset.created = String(created);
      time.setAttribute("datetime", new Date(created).toISOString());
      time.textContent = describeTime(created, Date.now());
    }
    const href = httpUrlOrNull(post.url);
    if (!href) return time;
    const link = element("a", "link");
    link.setAttribute("href", href);
    link.setAttribute("rel", "noopener nofollow noreferrer");
    link.setAttribute("target", "_blank");
    link.append(time);
    return link;
  }

  function card(post, arriving) {
    const author = post.author;
    const handle = String(author.handle || "").replace(/^@/, "");
    const article = element("article", arriving ? "post new" : "post");
    article.dataset.id = post.id;
    const head = element("div", "head");
    for (const raw of Array.isArray(post.chats) ? post.chats : []) {
      const tag = normalizeTag(raw);
      const badge = element("span", "badge", `#${tag}`);
      badge.dataset.tag = tag;
      colourBadge(badge, tag);
      head.append(badge);
    }
    head.append(element("bdi", "name", String(author.name || handle)));
    if (handle) head.append(element("bdi", "handle", `@${handle}`));
    head.append(timeOf(post));
    const text = element("p", "text");
    text.setAttribute("dir", "auto");
    if (typeof post.lang === "string" && /^[a-z]{2,3}(-[a-z0-9]{1,8})*$/i.test(post.lang)) {
      text.setAttribute("lang", post.lang);
    }
    text.append(element("bdi", "", String(post.text ?? "")));
    const body = element("div", "body");
    body.append(head, text);
    const quote = quoteLine(post);
    if (quote) body.append(quote);
    article.append(avatar(author), body);
    return article;
  }

  // A quote post's line naming the post it quotes: a link when its URL is http(s), text in any case.
  function quoteLine(post) {
    if (typeof post.quote_of !== "string" || !post.quote_of) return null;
    const href = httpUrlOrNull(post.quote_url);
    const line = element("p", "quote", "\u21AA quoting ");
    const target = element(href ? "a" : "span", "", href ? href.replace(/^https?:\/\//, "") : "a post");
    if (href) {
      target.setAttribute("href", href);
      target.setAttribute("rel", "noopener nofollow noreferrer");
      target.setAttribute("target", "_blank");
    }
    line.append(target);
    return line;
  }

  function remember(id) {
    state.seen.add(id);
    if (state.seen.size > MAX_REMEMBERED_IDS) state.seen.delete(state.seen.values().next().value);
  }

  /** Show posts (any order): newest on top, each id at most once, at most maxItems cards. */
  function render(items, arriving) {
    for (const post of Array.isArray(items) ? items : []) {
      if (!isPost(post) || state.seen.has(post.id)) continue;
      remember(post.id);
      if (!state.lastId || compareIds(post.id, state.lastId) > 0) state.lastId = post.id;
      // Cards are newest first; a post fetched back after a lag may belong further down.
      let before = list.firstElementChild;
      while (before && compareIds(before.dataset.id, post.id) > 0) before = before.nextElementSibling;
      if (!before && list.childElementCount >= options.maxItems) continue; // older than all we keep
      list.insertBefore(card(post, arriving), before);
    }
    while (list.childElementCount > options.maxItems) list.lastElementChild.remove();
    empty.hidden = list.childElementCount > 0;
  }

  function update(items) {
    for (const post of Array.isArray(items) ? items : []) {
      if (!isPost(post)) continue;
      for (const old of list.children) {
        if (old.dataset.id === post.id) {
          old.replaceWith(card(post, false));
          break;
        }
      }
    }
  }

  function retract(ids) {
    const gone = new Set(Array.isArray(ids) ? ids.map(String) : []);
    for (const old of [...list.children]) if (gone.has(old.dataset.id)) old.remove();
    empty.hidden = list.childElementCount > 0;
  }

  function applyDirectory(event, chats) {
    if (event && typeof event === "object" && event.name) {
      title.textContent = String(event.name);
      box.setAttribute("aria-label", `${event.name}: live feed`);
    }
    if (!Array.isArray(chats)) return;
    // A data-chats naming no chat of this feed would wait forever: say so, and which chats there are.
    const here = chats.map((chat) => normalizeTag(chat?.tag ?? "")).filter(Boolean);
    const tags = (list) => list.map((tag) => `#${tag}`).join(", ");
    empty.textContent = options.chats && here.length && !options.chats.some((tag) => here.includes(tag))
      ? `None of the chats ${tags(options.chats)} is on this feed. Chats here: ${tags(here)}.` : WAITING;
    state.chats.clear();
    for (const chat of chats) {
      if (chat && typeof chat === "object" && chat.tag) state.chats.set(normalizeTag(chat.tag), chat);
    }
    for (const badge of list.querySelectorAll(".badge")) colourBadge(badge, badge.dataset.tag);
  }

  function refreshTimes() {
    const now = Date.now();
    for (const time of list.querySelectorAll("time[data-created]")) {
      time.textContent = describeTime(Number(time.dataset.created), now);
    }
  }

  /* ---------- network ---------- */

  function url(path, params) {
    const u = new URL(path, origin);
    for (const [key, value] of Object.entries(params)) if (value != null) u.searchParams.set(key, value);
    if (options.chats) u.searchParams.set("chats", options.chats.join(","));
    if (path !== "/api/chats") u.searchParams.set("profile", state.profile);
    return u;
  }

  async function fetchJson(u) {
    const response = await fetch(u, { cache: "no-store", credentials: "omit" });
    if (response.status === 400 && state.profile !== "full" && u.searchParams.has("profile")) {
      // Most likely a profile this server does not have: "full" always exists.
      console.warn(`chatmixer widget: profile ${state.profile} refused; showing the full feed`);
      state.profile = "full";
      u.searchParams.set("profile", "full");
      return fetchJson(u);
    }
    if (!response.ok) throw new Error(`${u.pathname}: HTTP ${response.status}`);
    return response.json();
  }

  /** Whether the server answers at all: then a failed CORS read means this page's origin is refused. */
  async function serverAnswers() {
    try {
      await fetch(new URL("/healthz", origin), { mode: "no-cors", cache: "no-store", credentials: "omit" });
      return true;
    } catch {
      return false;
    }
  }

  async function loadHistory() {
    const [directory, history] = await Promise.all([
      fetchJson(url("/api/chats", {})),
      fetchJson(url("/api/feed", { limit: options.maxItems })),
    ]);
    applyDirectory(directory.event, directory.chats);
    render(history.items, false);
    if (typeof history.cursor === "string" && history.cursor && !state.lastId) state.lastId = history.cursor;
    state.historyLoaded = true;
  }

  async function reloadHistory() {
    try {
      const history = await fetchJson(url("/api/feed", { limit: options.maxItems }));
      list.replaceChildren();
      state.seen.clear();
      state.lastId = null;
      render(history.items, false);
      if (!state.lastId && typeof history.cursor === "string") state.lastId = history.cursor;
    } catch (error) {
      console.warn("chatmixer widget: could not reload the history after a reset", error);
    }
  }

  /** After a lag frame: fetch the posts the server skipped, from the last id held. */
  async function fetchGap(since) {
    try {
      const gap = await fetchJson(url("/api/feed", { since, limit: GAP_LIMIT }));
      render(gap.items, true);
    } catch (error) {
      console.warn("chatmixer widget: could not fetch the posts skipped during a lag", error);
    }
  }

  function handleFrame(data) {
    state.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // not JSON: skipped
    }
    if (!frame || typeof frame !== "object") return;
    switch (frame.type) {
      case "hello":
        applyDirectory(frame.event, frame.chats);
        if (!state.lastId && typeof frame.cursor === "string") state.lastId = frame.cursor;
        state.attempt = 0;
        setStatus("live");
        break;
      case "posts":
        render(frame.items, true);
        break;
      case "update":
        update(frame.items);
        break;
      case "retract":
        retract(frame.ids);
        break;
      case "reset":
        reloadHistory();
        break;
      case "lag":
        if (state.lastId) fetchGap(state.lastId);
        break;
      default:
        break; // pong, stats, pin and frame types of the future
    }
  }

  function openSocket() {
    const u = url("/ws", { since: state.lastId });
    u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(u);
    state.socket = socket;
    state.lastFrameAt = Date.now();
    socket.addEventListener("message", (event) => {
      if (socket === state.socket && typeof event.data === "string") handleFrame(event.data);
    });
    socket.addEventListener("close", () => {
      if (socket === state.socket) scheduleReconnect("reconnecting");
    });
  }

  async function connect() {
    state.timer = 0;
    if (state.stopped) return;
    if (!host.isConnected) return stop();
    if (!state.historyLoaded) {
      try {
        await loadHistory();
      } catch (error) {
        const blocked = error instanceof TypeError && (await serverAnswers());
        console.warn(`chatmixer widget: could not load the feed from ${origin} (${error.message})`);
        scheduleReconnect(blocked ? "blocked" : "offline");
        return;
      }
    }
    if (!state.stopped) openSocket();
  }

  /** Capped exponential backoff with jitter, so a restarted server is not hit by every widget at once. */
  function scheduleReconnect(why) {
    state.socket = null;
    if (state.timer || state.stopped) return;
    const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** state.attempt);
    state.attempt += 1;
    setStatus(why);
    state.timer = window.setTimeout(connect, ceiling / 2 + Math.random() * (ceiling / 2));
  }

  function keepAlive() {
    if (!host.isConnected) return stop();
    const socket = state.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    if (Date.now() - state.lastFrameAt > SILENCE_LIMIT_MS) {
      scheduleReconnect("reconnecting"); // forget it now: a half-open socket may take minutes to close
      socket.close();
      return;
    }
    socket.send(JSON.stringify({ type: "ping" }));
  }

  /** Close the socket and timers for good (the host element left the page, or `chatmixer-stop` was sent). */
  function stop() {
    state.stopped = true;
    window.clearTimeout(state.timer);
    for (const id of intervals) window.clearInterval(id);
    const socket = state.socket;
    state.socket = null;
    if (socket) socket.close();
  }

  host.addEventListener("chatmixer-stop", stop);
  intervals.push(window.setInterval(keepAlive, PING_EVERY_MS), window.setInterval(refreshTimes, 30000));
  setStatus("connecting");
  connect();
  return host;
}

/* ---------- start: find the tag(s) this run belongs to ---------- */

function ownScripts() {
  const current = document.currentScript;
  if (current && !current.dataset.chatmixerStarted) return [current];
  // Without currentScript (some loaders): every tag of this file not started yet.
  return [...document.querySelectorAll("script[src]")].filter(
    (s) => /\/embed\.js(\?|#|$)/.test(s.src) && !s.dataset.chatmixerStarted,
  );
}

for (const script of ownScripts()) {
  script.dataset.chatmixerStarted = "1";
  try {
    let options;
    if (script.hasAttribute("data-query")) {
      // The iframe variant (/embed?chats=..): the page's query string, and the frame's full height.
      const query = new URLSearchParams(window.location.search);
      options = parseOptions((name) => query.get(name));
      if (!query.get("height")) options.height = "100vh";
      document.documentElement.style.margin = document.body.style.margin = "0";
    } else {
      options = parseOptions((name) => script.getAttribute(name === "max" ? "data-max-items" : `data-${name}`));
    }
    mount(script, options);
  } catch (error) {
    console.error("chatmixer widget: could not start", error);
  }
}
})();
