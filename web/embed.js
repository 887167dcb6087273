/*
 * embed.js: the chatmixer feed widget for any web page, one file, no dependencies (docs/embed.md).
 *
 *   <script src="https://mixer.example/embed.js" data-chats="smbiz,edchat" data-profile="wall"
 *           data-theme="dark" data-max-items="20" data-height="480px" data-images="off" async></script>
 *
 * Each tag becomes one widget right after it, in an open shadow root that keeps the page's CSS out.
 * It reads /api/chats and /api/feed from the origin this file came from, then follows /ws with
 * since=<last id>, reconnecting with capped backoff: no post is lost or shown twice. On /embed
 * (the iframe variant) the options come from the query string (`data-query`). Network data reaches
 * the DOM only through textContent and setAttribute, URLs only when http(s), texts bidi-isolated.
 */
(() => {
"use strict";

const DEFAULTS = { profile: "wall", theme: "auto", maxItems: 20, height: "480px" };
const MAX_REMEMBERED_IDS = 5000;
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 15000;
const PING_EVERY_MS = 20000;
const SILENCE_LIMIT_MS = 2.5 * PING_EVERY_MS; // silent this long: a half-open socket
const GAP_LIMIT = 1000; // most posts fetched back after a lag frame
const NEUTRAL_COLOUR = "#607080";
const WAITING = "Waiting for the first posts…";
const ANNOUNCE_MS = 3000; // screen readers hear "N new posts from #a, #b" at most this often
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
.list{position:relative;flex:1;overflow-y:auto;margin:0;padding:6px 8px}
.post{position:absolute;top:6px;left:8px;right:8px;display:flex;gap:10px;padding:10px;border-radius:10px;
 background:var(--panel);overflow:clip}
.avatar{flex:none;width:36px;height:36px;border-radius:50%;object-fit:cover}
.initial{display:flex;align-items:center;justify-content:center;color:#fff;font-weight:700;font-size:16px}
.body{flex:1;min-width:0}
.head{display:flex;flex-wrap:wrap;align-items:baseline;gap:2px 6px}
.badge{max-width:100%;overflow:hidden;padding:0 6px;border-radius:999px;font-size:11px;font-weight:700;line-height:18px;
 white-space:nowrap;text-overflow:ellipsis}
.name{font-weight:700;unicode-bidi:isolate;overflow-wrap:anywhere}
.handle,.time{color:var(--muted);font-size:12px;unicode-bidi:isolate;overflow-wrap:anywhere}
.time{margin-inline-start:auto}
a{color:inherit;text-decoration:none}
a:hover .time,a:focus-visible .time,.quote a,.foot a{text-decoration:underline}
.text{display:-webkit-box;-webkit-box-orient:vertical;-webkit-line-clamp:5;overflow:hidden;margin:1px 0 0;padding-top:3px;
 white-space:pre-wrap;overflow-wrap:anywhere;unicode-bidi:isolate}
.open .text{display:block}
.more{padding:0;border:0;background:none;color:var(--link);font:inherit;font-size:12px;text-decoration:underline;
 cursor:pointer}
.quote{margin:2px 0 0;overflow:hidden;color:var(--muted);font-size:12px;white-space:nowrap;text-overflow:ellipsis}
.quote>*{unicode-bidi:isolate}
.empty{margin:auto;padding:16px;color:var(--muted);text-align:center}
.foot{padding:6px 12px;border-top:1px solid var(--edge);color:var(--muted);font-size:11px;text-align:end}
.foot a{color:var(--link)}
.imgs{display:flex;gap:6px;margin-top:6px}
.m{position:relative;flex:0 1 auto;min-width:0}
.m img{display:block;width:auto;max-width:100%;height:140px;border-radius:8px;object-fit:cover;background:var(--edge)}
.alt{position:absolute;left:4px;bottom:4px;padding:0 4px;border-radius:4px;background:#000c;color:#fff;font-size:10px;font-weight:700}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
@media (prefers-reduced-motion:no-preference){.new{animation:in .4s ease-out}.post{transition:translate .4s ease-out}}
.post.u{transition:none}
@keyframes in{from{opacity:0;transform:translateY(-6px)}}
`;

/* ---------- options: a bad value falls back to its default ---------- */

function normalizeTag(tag) {
  return String(tag).trim().replace(/^#+/, "").toLowerCase();
}

/** The tags asked for, normalised as the server does (one not on the feed is reported, not dropped). */
function parseChats(raw) {
  const tags = String(raw || "").split(",").map(normalizeTag).filter(Boolean);
  return tags.length ? [...new Set(tags)] : null;
}

function parseOptions(get, defaults = DEFAULTS) {
  const profile = String(get("profile") || "").trim();
  const theme = String(get("theme") || "").trim().toLowerCase();
  const max = Number.parseInt(get("max") ?? "", 10);
  const height = String(get("height") || "").trim();
  return {
    chats: parseChats(get("chats")),
    profile: /^[\w-]{1,40}$/.test(profile) ? profile : DEFAULTS.profile,
    theme: ["dark", "light", "auto"].includes(theme) ? theme : DEFAULTS.theme,
    maxItems: Number.isFinite(max) && max >= 1 ? Math.min(max, 100) : DEFAULTS.maxItems,
    images: String(get("images")).trim().toLowerCase() !== "off",
    height: /^\d{1,4}(\.\d{1,2})?$/.test(height) ? `${height}px`
      : /^\d{1,4}(\.\d{1,2})?(px|em|rem|vh|%)$/.test(height) ? height : defaults.height ?? DEFAULTS.height,
  };
}

/** The server this file came from (its src), so the widget works on a page of any origin. */
function serverOrigin(script) {
  try {
    const url = new URL(script.src, document.baseURI);
    if (url.protocol === "http:" || url.protocol === "https:") return url.origin;
  } catch { /* fall through */ }
  return window.location.origin;
}

/* ---------- pure helpers (as in wall.js) ---------- */

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

// A flag or a ZWJ emoji is one initial, as on the wall.
function initialOf(name) {
  const t = String(name || "").replace(/^[@\s\p{Cf}]+/u, "");
  return t ? (Intl.Segmenter ? [...new Intl.Segmenter().segment(t)][0].segment : [...t][0]).toLocaleUpperCase() : "?";
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

function element(tag, className, text, attributes = {}) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  for (const [name, value] of Object.entries(attributes)) el.setAttribute(name, value);
  return el;
}

/** A link that opens elsewhere and passes nothing on. */
function link(href, className, text) {
  return element("a", className, text, { href, rel: "noopener nofollow noreferrer", target: "_blank" });
}

function styleSheetFor(root) {
  if ("adoptedStyleSheets" in root && typeof CSSStyleSheet === "function") {
    // A constructed sheet is no inline style: a strict style-src CSP on the host page allows it.
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

  // English words, left to right on any page (each post: dir=auto).
  const box = element("section", `w ${options.theme}`, undefined, { dir: "ltr", lang: "en" });
  box.style.setProperty("--h", options.height);
  const title = element("span", "title", "chatmixer");
  const status = element("span", "status", undefined, { role: "status", "aria-live": "polite" });
  const statusLabel = element("span", "label");
  status.append(element("span", "dot", undefined, { "aria-hidden": "true" }), statusLabel);
  const top = element("header", "top");
  top.append(title, status);
  const list = element("div", "list", undefined, { role: "feed", "aria-label": "Posts" });
  const empty = element("p", "empty", WAITING);
  const said = element("p", "sr", undefined, { "aria-live": "polite" }); // the "N new posts" announcements
  const foot = element("footer", "foot");
  foot.append("live feed by ", link(`${origin}/`, "", "chatmixer"));
  box.append(top, list, empty, said, foot);
  box.setAttribute("aria-label", "chatmixer live feed");
  root.append(box);

  const state = {
    chats: new Map(), seen: new Set(), lastId: null, historyLoaded: false, profile: options.profile,
    socket: null, attempt: 0, timer: 0, lastFrameAt: 0, stopped: false, held: null, resets: 0,
  };
  const news = { n: 0, tags: new Set(), at: -1e9, timer: 0 };
  const sizes = new ResizeObserver(place);
  const placed = new Set();
  const intervals = [];

  function setStatus(name) {
    if (status.dataset.state == name) return; // a live region: once an outage, not each retry
    status.dataset.state = name;
    statusLabel.textContent = LABELS[name];
  }

  function colourBadge(badge, tag) {
    const colour = safeColour(state.chats.get(tag)?.colour);
    badge.style.backgroundColor = colour;
    badge.style.color = readableTextColour(colour);
  }

  function initialAvatar(author) {
    const span = element("span", "avatar initial", initialOf(author.name || author.handle), { "aria-hidden": "true" });
    span.style.backgroundColor = avatarColour(author.handle || author.name || "");
    return span;
  }

  function avatar(author) {
    const src = options.images && httpUrlOrNull(author.avatar);
    if (!src) return initialAvatar(author);
    const img = element("img", "avatar", undefined, { alt: "", referrerpolicy: "no-referrer", loading: "lazy" });
    img.addEventListener("error", () => img.replaceWith(initialAvatar(author)), { once: true });
    img.src = src;
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
    const to = link(href, "link");
    to.append(time);
    return to;
  }

  function card(post, arriving) {
    const author = post.author;
    const handle = String(author.handle || "").replace(/^@/, "");
    const article = element("article", arriving ? "post new" : "post");
    article.dataset.id = post.id;
    const head = element("div", "head");
    for (const raw of Array.isArray(post.chats) ? post.chats : []) {
      const tag = normalizeTag(raw);
      const badge = element("span", "badge", `#${tag}`, { title: `#${tag}` }); // whole, when cut short
      badge.dataset.tag = tag;
      colourBadge(badge, tag);
      head.append(badge);
    }
    head.append(element("bdi", "name", String(author.name || handle)));
    if (handle) head.append(element("bdi", "handle", `@${handle}`));
    head.append(timeOf(post));
    const text = element("p", "text", String(post.text ?? ""), { dir: "auto" }); // direction of its first letters
    if (typeof post.lang === "string" && /^[a-z]{2,3}(-[a-z0-9]{1,8})*$/i.test(post.lang)) {
      text.setAttribute("lang", post.lang);
    }
    // Long texts are cut at 5 lines; "Show more" (shown by place() when cut) opens the card.
    const more = element("button", "more", "Show more", { type: "button", "aria-expanded": "false" });
    more.hidden = true;
    more.onclick = () => {
      const open = article.classList.toggle("open");
      more.textContent = open ? "Show less" : "Show more";
      more.setAttribute("aria-expanded", open);
    };
    const body = element("div", "body");
    body.append(head, text, more);
    const quote = quoteLine(post);
    if (quote) body.append(quote);
    if (options.images) body.append(images(post));
    article.append(avatar(author), body);
    return article;
  }

  // Image attachments (or video/GIF previews), http(s) only, each box sized from the item (4:3 unknown).
  function images(post) {
    const row = element("div", "imgs");
    for (const a of Array.isArray(post.attachments) ? post.attachments : []) {
      if (!a || row.childElementCount > 3) continue;
      const still = a.kind === "video" || a.kind === "gifv";
      const src = (still || a.kind === "image") && (httpUrlOrNull(a.preview) || (!still && httpUrlOrNull(a.url)));
      if (!src) continue;
      const ratio = a.width > 0 && a.height > 0 ? Math.min(2.5, Math.max(0.4, a.width / a.height)) : 4 / 3;
      const alt = typeof a.alt === "string" ? a.alt.trim() : "";
      const frame = element("span", "m");
      const img = element("img", "", undefined, {
        alt, width: Math.round(ratio * 300), height: 300, loading: "lazy", decoding: "async", referrerpolicy: "no-referrer",
      });
      img.style.aspectRatio = `${ratio}`; // the reserved box, whatever the file's own shape
      img.src = src;
      img.addEventListener("error", () => frame.remove(), { once: true });
      frame.append(img);
      if (alt) {
        frame.append(element("span", "alt", "ALT", { title: alt, "aria-hidden": "true" })); // the alt says it
      }
      row.append(frame);
    }
    return row;
  }

  // A quote post's line naming the post it quotes: a link when its URL is http(s).
  function quoteLine(post) {
    if (typeof post.quote_of !== "string" || !post.quote_of) return null;
    const href = httpUrlOrNull(post.quote_url);
    const line = element("p", "quote", "\u21AA quoting ");
    line.append(href ? link(href, "", href.replace(/^https?:\/\//, "")) : element("span", "", "a post"));
    return line;
  }

  function remember(id) {
    state.seen.add(id);
    if (state.seen.size > MAX_REMEMBERED_IDS) state.seen.delete(state.seen.values().next().value);
  }

  /**
   * Cards are absolutely placed and moved with `translate`: a new one on top moves the others by a
   * transform, never by a layout shift. Scrolled down, what is being read stays where it is.
   */
  function place() {
    const cards = [...list.children];
    for (const old of placed) {
      if (old.isConnected) continue;
      sizes.unobserve(old); // a card gone from the list is forgotten, not kept alive
      placed.delete(old);
    }
    // "Show more" only under a text cut short: every text measured first, then set (one layout)
    const cut = cards.map((c) => c.querySelector(".text")).map((t) => t.scrollHeight > t.clientHeight + 1);
    cards.forEach((c, i) => { c.querySelector(".more").hidden = !cut[i] && !c.matches(".open"); });
    const scrolled = list.scrollTop;
    const anchor = scrolled > 0 && cards.find((c) => placed.has(c) && +c.dataset.y + c.offsetHeight > scrolled);
    const was = anchor && +anchor.dataset.y;
    for (const c of cards) {
      if (placed.has(c) && !anchor) continue;
      c.classList.add("u"); // new, or the list is scrolled: no transition
      placed.add(c);
      sizes.observe(c);
    }
    let y = 0;
    for (const c of cards) {
      c.dataset.y = y;
      c.style.translate = `0 ${y}px`;
      y += c.offsetHeight + 8;
    }
    if (anchor) list.scrollTop = scrolled + +anchor.dataset.y - was;
    void list.offsetHeight; // a style flush: placed with no transition, gliding from then on
    for (const c of cards) c.classList.remove("u");
  }

  // One polite sentence at most every ANNOUNCE_MS.
  function announce(posts) {
    for (const post of posts) {
      news.n += 1;
      for (const tag of Array.isArray(post.chats) ? post.chats : []) news.tags.add(`#${normalizeTag(tag)}`);
    }
    if (!news.n || news.timer) return;
    news.timer = window.setTimeout(() => {
      const from = news.tags.size ? ` from ${[...news.tags].slice(0, 4).join(", ")}` : "";
      said.textContent = `${news.n} new post${news.n > 1 ? "s" : ""}${from}`;
      Object.assign(news, { n: 0, at: Date.now(), timer: 0 }).tags.clear();
    }, Math.max(800, news.at + ANNOUNCE_MS - Date.now()));
  }

  /** Show posts (any order): newest on top, each id at most once, at most maxItems cards. */
  function render(items, arriving) {
    const shown = [];
    for (const post of Array.isArray(items) ? items : []) {
      if (!isPost(post) || state.seen.has(post.id)) continue;
      remember(post.id);
      if (!state.lastId || compareIds(post.id, state.lastId) > 0) state.lastId = post.id;
      // Cards are newest first; a post fetched back after a lag may belong further down.
      let before = list.firstElementChild;
      while (before && compareIds(before.dataset.id, post.id) > 0) before = before.nextElementSibling;
      if (!before && list.childElementCount >= options.maxItems) continue; // older than all we keep
      list.insertBefore(card(post, arriving), before);
      shown.push(post);
    }
    while (list.childElementCount > options.maxItems) list.lastElementChild.remove();
    empty.hidden = list.childElementCount > 0;
    place();
    if (arriving) announce(shown);
  }

  function update(items) {
    for (const post of Array.isArray(items) ? items : []) {
      if (!isPost(post)) continue;
      for (const old of list.children) {
        if (old.dataset.id === post.id) {
          old.replaceWith(card(post, false));
          place();
          break;
        }
      }
    }
  }

  function retract(ids) {
    const gone = new Set(Array.isArray(ids) ? ids.map(String) : []);
    for (const old of [...list.children]) if (gone.has(old.dataset.id)) old.remove(); // its images too
    empty.hidden = list.childElementCount > 0;
    place();
  }

  function applyDirectory(event, chats) {
    if (event && typeof event === "object" && event.name) {
      title.textContent = String(event.name);
      box.setAttribute("aria-label", `${event.name}: live feed`);
    }
    if (!Array.isArray(chats)) return;
    // A data-chats naming no chat of this feed would wait forever: say so and list the chats.
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

  /** Whether the server answers: then a failed CORS read means this page's origin is refused. */
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

  /**
   * After a reset: the newest posts, carrying on from its cursor. Frames arriving meanwhile are held, then
   * applied (posts only when newer than the history read): none lost to the reload, none shown twice.
   */
  async function reloadHistory(cursor) {
    if (typeof cursor == "string" && cursor) state.lastId = cursor;
    const reload = ++state.resets;
    state.held ||= [];
    let history;
    try {
      history = await fetchJson(url("/api/feed", { limit: options.maxItems }));
    } catch (error) {
      console.warn("chatmixer widget: could not reload the history after a reset", error);
    }
    if (reload != state.resets) return; // a later reset applies what is held
    const held = state.held;
    state.held = null;
    const newest = typeof history?.cursor == "string" && history.cursor;
    if (history) {
      list.replaceChildren();
      state.seen.clear();
      state.lastId = null;
      render(history.items, false);
      if (newest) state.lastId = newest;
    }
    for (const frame of held) {
      if (frame.type == "posts" && newest && Array.isArray(frame.items)) {
        frame.items = frame.items.filter((post) => isPost(post) && compareIds(post.id, newest) > 0);
      }
      apply(frame);
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
    if (state.held && frame.type != "hello" && frame.type != "reset") state.held.push(frame);
    else apply(frame);
  }

  function apply(frame) {
    const handlers = { // pong, stats, pin and frame types of the future need nothing
      hello() {
        applyDirectory(frame.event, frame.chats);
        if (!state.lastId && typeof frame.cursor === "string") state.lastId = frame.cursor;
        state.attempt = 0;
        setStatus("live");
      },
      posts: () => render(frame.items, true),
      update: () => update(frame.items),
      retract: () => retract(frame.ids),
      reset: () => reloadHistory(frame.cursor),
      lag: () => state.lastId && fetchGap(state.lastId),
    };
    if (Object.hasOwn(handlers, frame.type)) handlers[frame.type]();
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

  /** Capped backoff with jitter, so a restarted server is not hit by every widget at once. */
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
      scheduleReconnect("reconnecting"); // a half-open socket may take minutes to close
      socket.close();
      return;
    }
    socket.send(JSON.stringify({ type: "ping" }));
  }

  /** Close the socket and timers for good (the host left the page, or `chatmixer-stop` was sent). */
  function stop() {
    state.stopped = true;
    window.clearTimeout(state.timer);
    window.clearTimeout(news.timer);
    sizes.disconnect();
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

/* ---------- start: the tag(s) this run belongs to ---------- */

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
      // The iframe variant (/embed?..): its query string and the frame's height.
      const query = new URLSearchParams(window.location.search);
      // Without a usable height of its own the widget fills the frame (its default here).
      options = parseOptions((name) => query.get(name), { height: "100vh" });
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
