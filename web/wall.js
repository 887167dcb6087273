/*
 * wall.js: the projector wall, one live feed of every chat in the room.
 *
 * Start-up: GET /api/chats (event, chat colours, slots) and /api/feed?limit=30 (recent
 * history), render them, then open the /ws websocket with since=<cursor> so nothing
 * posted in between is lost. When the socket closes, errors or goes silent it reconnects
 * with capped exponential backoff plus jitter, resuming with since=<newest id received>: posts
 * received but still waiting for their turn on screen stay queued, so a resume neither loses
 * nor repeats one. A bounded Set of ids makes sure no post is ever shown twice.
 *
 * Live posts are paced (pacing.js): released one at a time, far enough apart that each stays
 * on screen at least ?min_seconds= (default 8) before newer cards push it off. Other query
 * options: ?chats=a,b, ?profile=, ?theme=dark|light|auto, ?motion=reduced, ?images=off (docs/wall.md).
 * Cards are drawn by wall-render.js and placed by glide.js (a new one on top moves the others by a
 * transform, never by a layout shift), the chat legend by wall-legend.js. New posts are announced
 * to screen readers in one polite sentence at most every ANNOUNCE_EVERY_MS.
 */

import { Announcer, Stack } from "./glide.js";
import { Pacer } from "./pacing.js";
import { Legend } from "./wall-legend.js";
import { buildCard, colourBadge, describeTime, isPost, setChatColours, setImages } from "./wall-render.js";
import { compareIds, element, normalizeTag } from "./safe.js";

const HISTORY_LIMIT = 30; // posts fetched at start-up
const MAX_CARDS = 40; // cards kept on the wall; older ones are removed
const MAX_REMEMBERED_IDS = 5000; // ids kept for dedupe, far more than the wall shows
const MAX_WAITING = 200; // posts queued for their turn; past it the oldest are skipped (and the wall says so)
const DEFAULT_MIN_SECONDS = 8;
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 15000;
const PING_EVERY_MS = 20000;
// A socket with no frame at all (not even a pong) for this long is treated as half-open.
const SILENCE_LIMIT_MS = 2.5 * PING_EVERY_MS;
const CLOCK_REFRESH_MS = 15000;
const DIRECTORY_REFRESH_MS = 60_000; // how often "live now" / "next ..." in the legend is brought up to date
const CONNECTION_LABELS = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…", refused: "Not connected" };
const DEFAULT_PROFILE = "wall"; // paced and fair between chats; "full" (every post) exists on every server
const WAITING_TEXT = "Waiting for the first posts…"; // until the first card (index.html says the same)
const ANNOUNCE_EVERY_MS = 3000; // screen readers hear "N new posts from #a, #b" at most this often

const query = new URLSearchParams(window.location.search);

const page = {
  root: document.documentElement,
  colourScheme: document.querySelector('meta[name="color-scheme"]'),
  eventName: document.getElementById("event-name"),
  eventHashtag: document.getElementById("event-hashtag"),
  connection: document.getElementById("connection"),
  connectionLabel: document.getElementById("connection-label"),
  feed: document.getElementById("feed"),
  pinned: document.getElementById("pinned"),
  pinnedSlot: document.getElementById("pinned-post"),
  waiting: document.getElementById("waiting"),
  posts: document.getElementById("posts"),
  empty: document.getElementById("empty"),
  notice: document.getElementById("notice"),
  announce: document.getElementById("announce"),
  join: document.getElementById("join"),
  joinCode: document.getElementById("join-code"),
  joinLink: document.getElementById("join-link"),
};

const options = {
  filter: chatFilter(query.get("chats")), // tags asked for in ?chats=, or null for all
  // the wall reads the paced "wall" stream unless told otherwise (e.g. "full" for everything)
  profile: query.get("profile") || DEFAULT_PROFILE,
  minMs: 1000 * nonNegative(query.get("min_seconds"), DEFAULT_MIN_SECONDS),
  theme: ["dark", "light", "auto"].includes(query.get("theme")) ? query.get("theme") : "dark",
  reducedMotion: query.get("motion") === "reduced",
  images: query.get("images") !== "off", // ?images=off: no avatars or post images, nothing from other hosts
};

const state = {
  seenIds: new Set(), // insertion ordered, so the oldest can be forgotten first
  lastId: null, // the newest id of the posts received (or the history cursor): where a resume starts
  pinned: null, // the pinned post, or null
  directoryLoaded: false,
  historyLoaded: false,
  socket: null,
  attempt: 0, // consecutive failed connection attempts, for the backoff
  reconnectTimer: 0,
  pumpTimer: 0,
  lastFrameAt: 0,
  held: null, // while the history reloads after a `reset`: the frames that arrived meanwhile, applied after it
  resets: 0, // reloads started; only the latest one's answer is applied
};

const pacer = new Pacer(MAX_WAITING);
const stack = new Stack(page.posts);
const announcer = new Announcer(page.announce, ANNOUNCE_EVERY_MS);
setImages(options.images);
const legend = new Legend(
  document.getElementById("legend"),
  options.filter,
  document.getElementById("legend-pages"),
  document.getElementById("legend-stale"),
);

function nonNegative(raw, fallback) {
  const value = Number(raw);
  return raw !== null && raw !== "" && Number.isFinite(value) && value >= 0 ? value : fallback;
}

function chatFilter(raw) {
  const tags = (raw || "").split(",").map(normalizeTag).filter(Boolean);
  return tags.length ? new Set(tags) : null;
}

/* ---------- looks: theme and motion follow the query, else the viewer's system ---------- */

function watchMedia(queryText, apply) {
  const media = window.matchMedia(queryText);
  apply(media.matches);
  media.addEventListener("change", () => apply(media.matches));
}

function applyTheme(light) {
  const theme = light ? "light" : "dark";
  page.root.dataset.theme = theme;
  if (page.colourScheme) page.colourScheme.setAttribute("content", theme);
}

if (options.theme === "auto") watchMedia("(prefers-color-scheme: light)", applyTheme);
else applyTheme(options.theme === "light");

if (options.reducedMotion) page.root.dataset.motion = "reduced";
else watchMedia("(prefers-reduced-motion: reduce)", (reduce) => { page.root.dataset.motion = reduce ? "reduced" : "full"; });

/* ---------- posts: history at once, live ones paced ---------- */

function rememberId(id) {
  state.seenIds.add(id);
  if (state.seenIds.size > MAX_REMEMBERED_IDS) {
    state.seenIds.delete(state.seenIds.values().next().value);
  }
}

/** The posts among `items` not seen before, in order; each is remembered so it is never taken twice. */
function freshPosts(items) {
  const fresh = [];
  for (const post of Array.isArray(items) ? items : []) {
    if (!isPost(post) || state.seenIds.has(post.id)) continue;
    rememberId(post.id);
    // A post that joined the filter late comes under its older id: the resume point stays the newest id.
    if (!state.lastId || compareIds(post.id, state.lastId) > 0) state.lastId = post.id;
    fresh.push(post);
  }
  if (legend.takePosts(fresh)) legend.render();
  return fresh;
}

function showCards(posts, arriving) {
  if (!posts.length) return;
  const batch = document.createDocumentFragment();
  for (const post of posts.slice(-MAX_CARDS).reverse()) batch.append(buildCard(post, arriving));
  page.posts.prepend(batch);
  while (page.posts.childElementCount > MAX_CARDS) page.posts.lastElementChild.remove();
  page.empty.hidden = true;
  stack.place();
  if (arriving) announcer.add(posts, performance.now());
}

/** History (feed order, oldest first): shown at once, newest on top. */
function showHistory(items) {
  showCards(freshPosts(items), false);
}

/** Live posts (feed order): queued, then released by `pump` at the pace the wall can show them. */
function receivePosts(items) {
  for (const post of freshPosts(items)) pacer.push(post);
  pump();
}

/** How many cards fit in the feed, from the cards shown (or a typical card height before any). */
function cardCapacity() {
  const rem = parseFloat(getComputedStyle(page.root).fontSize) || 16;
  const top = page.posts.getBoundingClientRect().top;
  const room = page.feed.getBoundingClientRect().bottom - top - 2 * rem; // the faded bottom edge hardly counts
  const cards = [...page.posts.children].slice(0, 12);
  const gap = parseFloat(getComputedStyle(page.posts).rowGap) || 0;
  const typical = cards.length
    ? cards.reduce((sum, card) => sum + card.getBoundingClientRect().height, 0) / cards.length + gap
    : 7 * rem;
  return Math.max(1, Math.floor(room / typical));
}

/** Release the next waiting post if its turn has come, and set a timer for the one after. */
function pump() {
  window.clearTimeout(state.pumpTimer);
  state.pumpTimer = 0;
  const capacity = cardCapacity();
  // A card leaves the screen after `capacity` newer ones: spacing them so keeps each up for minMs.
  const spacing = options.minMs / capacity;
  page.posts.dataset.capacity = String(capacity);
  page.posts.dataset.spacingMs = String(Math.round(spacing));
  for (;;) {
    const now = performance.now();
    const { post, waitMs } = pacer.next(now, spacing);
    if (post) {
      page.posts.dataset.releasedAt = String(now); // when the pacer let it go (tests compare these)
      showCards([post], true);
      continue;
    }
    if (waitMs !== null) state.pumpTimer = window.setTimeout(pump, Math.ceil(waitMs));
    break;
  }
  showWaiting();
}

function showWaiting() {
  const parts = [];
  if (pacer.size) parts.push(`${pacer.size} more ${pacer.size === 1 ? "post" : "posts"} coming up`);
  if (pacer.dropped) parts.push(`${pacer.dropped} skipped to keep up`);
  page.waiting.hidden = !parts.length;
  page.waiting.textContent = parts.join(" · ");
}

/** Replace shown or waiting posts by their new version (an edit, a new chat, a boost count). */
function updatePosts(items) {
  for (const post of Array.isArray(items) ? items : []) {
    if (!isPost(post)) continue;
    pacer.replace(post);
    const card = [...page.posts.children].find((c) => c.dataset.id === post.id);
    if (card) {
      card.replaceWith(buildCard(post, false));
      stack.place();
    }
    if (state.pinned && state.pinned.id === post.id) showPinned(post);
    if (legend.takePosts([post])) legend.render();
  }
}

function retractPosts(ids) {
  const gone = new Set(Array.isArray(ids) ? ids : []);
  pacer.remove(gone);
  for (const card of [...page.posts.children]) {
    if (gone.has(card.dataset.id)) card.remove(); // its images go with it
  }
  stack.place();
  if (state.pinned && gone.has(state.pinned.id)) showPinned(null);
  if (legend.forget(gone)) legend.render();
  page.empty.hidden = page.posts.childElementCount > 0;
  showWaiting();
}

/** The pinned post in its own area above the feed; null takes it away. */
function showPinned(post) {
  const next = isPost(post) ? post : null;
  if (JSON.stringify(next) === JSON.stringify(state.pinned) && page.pinned.hidden === !next) return; // a resume's hello
  state.pinned = next;
  page.pinnedSlot.replaceChildren(...(state.pinned ? [buildCard(state.pinned, true)] : []));
  page.pinned.hidden = !state.pinned;
}

function refreshTimes() {
  const now = Date.now();
  for (const time of document.querySelectorAll("time[data-created]")) {
    time.textContent = describeTime(Number(time.dataset.created), now);
  }
}

/* ---------- the event, its chats and the join code ---------- */

function applyEvent(event) {
  if (!event || typeof event !== "object") return;
  const name = String(event.name || "chatmixer");
  page.eventName.textContent = name;
  document.title = name;
  const hashtag = String(event.hashtag || "").replace(/^#+/, "");
  page.eventHashtag.textContent = hashtag ? `#${hashtag}` : "";
  showJoin(typeof event.link === "string" ? event.link : "");
}

/** The QR code the server draws for the event's link (GET /qr.svg), with the link beside it; hidden without one. */
function showJoin(link) {
  let url = null;
  try {
    url = link ? new URL(link) : null;
  } catch {
    url = null;
  }
  if (!url || (url.protocol !== "https:" && url.protocol !== "http:")) {
    page.join.hidden = true;
    page.joinCode.removeAttribute("src");
    return;
  }
  // The link in the query only keys the browser's cache: a new link after a restart gets a new image.
  const src = `/qr.svg?for=${encodeURIComponent(url.href)}`;
  if (page.joinCode.getAttribute("src") !== src) page.joinCode.setAttribute("src", src);
  // Shown without the scheme, with line-break chances after each "/" so it wraps where people read it.
  const shown = (url.host + url.pathname + url.search).replace(/\/$/, "");
  page.joinLink.replaceChildren(...shown.split(/(?<=\/)/).flatMap((part) => [part, document.createElement("wbr")]));
  page.joinLink.lastChild.remove();
  page.join.hidden = false;
}

page.joinCode.addEventListener("error", () => { page.join.hidden = true; });

/** Take the chat list (tag, title, colour): badges everywhere take the colours, the legend is redrawn. */
function applyChats(chats, withSlots) {
  if (!Array.isArray(chats)) return;
  legend.setChats(chats, withSlots);
  setChatColours(legend.chats);
  for (const badge of document.querySelectorAll(".badge[data-tag]")) colourBadge(badge, badge.dataset.tag);
  sayIfNoChatMatches(chats);
}

/** A ?chats= filter naming no chat of this feed would wait forever: say so, and which chats there are. */
function sayIfNoChatMatches(chats) {
  const here = chats.map((chat) => normalizeTag((chat && chat.tag) || "")).filter(Boolean);
  const miss = options.filter && here.length > 0 && !here.some((tag) => options.filter.has(tag));
  const tags = (list) => list.map((tag) => `#${tag}`).join(", ");
  page.empty.textContent = miss
    ? `None of the chats ${tags([...options.filter])} is on this feed. Chats here: ${tags(here)}.`
    : WAITING_TEXT;
  page.empty.dataset.miss = String(Boolean(miss));
}

function setConnectionState(name) {
  // A live region: said again, even the same words, each time it is written; an outage is one "Reconnecting…".
  if (page.connection.dataset.state === name) return;
  page.connection.dataset.state = name;
  page.connectionLabel.textContent = CONNECTION_LABELS[name];
  // cut off from the stream, the legend's rates are the last known: marked so until it is back
  legend.setStale(name === "reconnecting" || name === "refused");
}

/* ---------- network ---------- */

function apiUrl(path, params) {
  const url = new URL(path, window.location.href);
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) url.searchParams.set(key, value);
  }
  if (options.filter) url.searchParams.set("chats", [...options.filter].join(","));
  if (path !== "/api/chats") url.searchParams.set("profile", options.profile);
  return url;
}

/** A 4xx answer other than 408 / 429: asking again the same way would get the same answer. */
class Refused extends Error {
  constructor(url, status, reason) {
    super(`${url.pathname}: HTTP ${status}${reason ? ` (${reason})` : ""}`);
    this.status = status;
    this.reason = reason;
  }
}

async function fetchJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429) {
    throw new Refused(url, response.status, (await response.text()).trim().slice(0, 200));
  }
  if (!response.ok) throw new Error(`${url.pathname}: HTTP ${response.status}`);
  return response.json();
}

/** A notice above the posts, in large type, for whoever runs the projector: what is wrong with this wall's address. */
function showNotice(text) {
  page.notice.textContent = text;
  page.notice.hidden = false;
}

/**
 * The recent history of the profile asked for. A profile the server does not have (400) falls back to the
 * default "wall", or to "full" (every server has it) when the server has no "wall" either, and the wall says so.
 */
async function fetchHistory() {
  const asked = options.profile;
  for (;;) {
    try {
      return await fetchJson(apiUrl("/api/feed", { limit: HISTORY_LIMIT }));
    } catch (error) {
      if (!(error instanceof Refused) || error.status !== 400 || options.profile === "full") throw error;
      options.profile = options.profile === DEFAULT_PROFILE ? "full" : DEFAULT_PROFILE;
      console.warn(`wall: profile ${asked} refused (${error.reason}); trying ${options.profile}`);
      showNotice(`Unknown profile “${asked}”: showing the “${options.profile}” feed instead.`);
    }
  }
}

/** Chats and event, then the recent history over HTTP; then the websocket takes over from the history's cursor. */
async function loadHistory() {
  // The header and legend do not wait for the feed: they show even when the feed cannot be had.
  if (!state.directoryLoaded) {
    const directory = await fetchJson(apiUrl("/api/chats", {}));
    applyEvent(directory.event);
    applyChats(directory.chats, true);
    state.directoryLoaded = true;
  }
  const history = await fetchHistory();
  showHistory(history.items);
  if (typeof history.cursor === "string" && history.cursor) state.lastId = history.cursor;
  state.historyLoaded = true;
}

/**
 * After a `reset` (the gap is gone from the history): start over from the newest posts, and carry on from the
 * reset's `cursor` (a resume meanwhile asks from there). Frames arriving while the history reloads are held and
 * applied after it, posts only when newer than the history read: a live post in that window is neither wiped
 * by the reload nor shown twice.
 */
async function reloadHistory(cursor) {
  if (typeof cursor === "string" && cursor) state.lastId = cursor;
  const reload = ++state.resets;
  state.held = state.held || [];
  let history = null;
  try {
    history = await fetchJson(apiUrl("/api/feed", { limit: HISTORY_LIMIT }));
  } catch (error) {
    console.warn("wall: could not reload the history after a reset", error);
  }
  if (reload !== state.resets) return; // a later reset reloads again and applies what is held then
  const held = state.held;
  state.held = null;
  const newest = history && typeof history.cursor === "string" && history.cursor ? history.cursor : null;
  if (history) {
    pacer.clear();
    page.posts.replaceChildren();
    stack.place();
    state.seenIds.clear();
    showHistory(history.items);
    if (newest) state.lastId = newest;
  }
  for (const frame of held) {
    if (frame.type === "posts" && newest && Array.isArray(frame.items)) {
      frame.items = frame.items.filter((post) => isPost(post) && compareIds(post.id, newest) > 0);
    }
    applyFrame(frame);
  }
  showWaiting();
}

/** The directory's live state and next slots, refreshed every minute; the legend shows them. */
async function refreshDirectory() {
  try {
    const directory = await fetchJson(apiUrl("/api/chats", {}));
    applyChats(directory.chats, true);
  } catch (error) {
    console.warn("wall: could not refresh the chat directory", error);
  }
}

function socketUrl() {
  const url = apiUrl("/ws", { since: state.lastId });
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url;
}

function handleFrame(data) {
  state.lastFrameAt = Date.now();
  let frame;
  try {
    frame = JSON.parse(data);
  } catch {
    console.warn("wall: ignoring a frame that is not JSON");
    return;
  }
  if (!frame || typeof frame !== "object") return;
  if (state.held && frame.type !== "hello" && frame.type !== "reset") state.held.push(frame);
  else applyFrame(frame);
}

function applyFrame(frame) {
  switch (frame.type) {
    case "hello":
      applyEvent(frame.event);
      applyChats(frame.chats, false);
      showPinned(frame.pinned);
      if (!state.lastId && typeof frame.cursor === "string") state.lastId = frame.cursor;
      state.attempt = 0;
      setConnectionState("live");
      break;
    case "posts":
      receivePosts(frame.items);
      break;
    case "update":
      updatePosts(frame.items);
      break;
    case "pin":
      showPinned(frame.post);
      break;
    case "stats":
      if (frame.profile === undefined || frame.profile === options.profile) legend.takeStats(frame.chats, Date.now());
      break;
    case "reset":
      reloadHistory(frame.cursor);
      break;
    case "retract":
      retractPosts(frame.ids);
      break;
    case "lag":
      // The wall only shows the newest posts, so skipped ones are not fetched back.
      console.info(`wall: fell behind, the server skipped ${Number(frame.skipped) || 0} posts`);
      break;
    default:
      break; // pong and future frame types need nothing here
  }
}

function openSocket() {
  const socket = new WebSocket(socketUrl());
  state.socket = socket;
  state.lastFrameAt = Date.now();
  // Events of a socket already given up on (see dropSocket) must not touch the wall.
  socket.addEventListener("message", (event) => {
    if (socket === state.socket) handleFrame(event.data);
  });
  socket.addEventListener("close", () => {
    if (socket === state.socket) scheduleReconnect();
  });
  // An "error" is always followed by "close", which does the reconnecting.
}

/** Forget the current socket now (a half-open one may take minutes to report its close) and reconnect. */
function dropSocket() {
  const socket = state.socket;
  if (!socket) return;
  scheduleReconnect();
  socket.close();
}

/** (Re)connect: history first if it never loaded, then the websocket; failures retry with backoff. */
async function connect() {
  state.reconnectTimer = 0;
  setConnectionState(state.attempt === 0 ? "connecting" : "reconnecting");
  try {
    if (!state.historyLoaded) await loadHistory();
  } catch (error) {
    if (error instanceof Refused) {
      // Retrying would be refused the same way, forever: stop, and say why on the screen.
      console.error(`wall: the server refused this wall (${error.message})`);
      showNotice(`The server refused this wall: ${error.reason || `HTTP ${error.status}`}. Check the address.`);
      setConnectionState("refused");
      return;
    }
    console.warn(`wall: could not load history (${error.message})`);
    scheduleReconnect();
    return;
  }
  openSocket();
}

/** Capped exponential backoff with jitter, so a restarted server is not hit by every wall at once. */
function scheduleReconnect() {
  state.socket = null;
  if (state.reconnectTimer) return;
  const ceiling = Math.min(RECONNECT_CAP_MS, RECONNECT_BASE_MS * 2 ** state.attempt);
  const delay = ceiling / 2 + Math.random() * (ceiling / 2);
  state.attempt += 1;
  setConnectionState("reconnecting");
  state.reconnectTimer = window.setTimeout(connect, delay);
}

/** Keep-alive: the server answers each ping, so a long silence means the connection is dead. */
function checkSocketAlive() {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  if (Date.now() - state.lastFrameAt > SILENCE_LIMIT_MS) {
    console.warn("wall: no frame from the server for too long; reconnecting");
    dropSocket();
    return;
  }
  socket.send(JSON.stringify({ type: "ping" }));
}

window.addEventListener("online", () => {
  // The network is back: do not wait out the backoff.
  if (state.reconnectTimer) {
    window.clearTimeout(state.reconnectTimer);
    state.attempt = 0;
    connect();
  }
});
window.setInterval(checkSocketAlive, PING_EVERY_MS);
window.setInterval(refreshTimes, CLOCK_REFRESH_MS);
window.setInterval(refreshDirectory, DIRECTORY_REFRESH_MS);
/*
 * The feed never stays scrolled ("the page never scrolls"): the browser scrolls it to show a link focused with
 * Tab, which is right while the link has focus; once focus leaves the feed the newest cards come back on top.
 */
function unscrollFeed() {
  if (!page.feed.contains(document.activeElement) && page.feed.scrollTop !== 0) page.feed.scrollTop = 0;
}
page.feed.addEventListener("focusout", (event) => {
  if (!page.feed.contains(event.relatedTarget)) page.feed.scrollTop = 0;
});
page.feed.addEventListener("scroll", unscrollFeed); // find-in-page and the like scroll without focus

window.addEventListener("resize", pump);
connect();
