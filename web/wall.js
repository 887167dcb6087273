/*
 * wall.js: the projector wall, one live feed of every chat in the room.
 *
 * Start-up: GET /api/chats (event name, chat colours) and /api/feed?limit=30 (recent
 * history), render them, then open the /ws websocket with since=<cursor> so nothing
 * posted in between is lost. When the socket closes, errors or goes silent it reconnects
 * with capped exponential backoff plus jitter, resuming with since=<last id rendered>.
 * A bounded Set of ids makes sure no post is ever shown twice.
 *
 * Everything from the network is untrusted: it reaches the DOM only through textContent
 * and setAttribute (never innerHTML), URLs are used only when they are http(s), and names
 * and texts are bidi-isolated so an override character cannot flip the layout around it.
 */

const HISTORY_LIMIT = 30; // posts fetched at start-up
const MAX_CARDS = 40; // cards kept on the wall; older ones are removed
const MAX_REMEMBERED_IDS = 5000; // ids kept for dedupe, far more than the wall shows
const RECONNECT_BASE_MS = 500;
const RECONNECT_CAP_MS = 15000;
const PING_EVERY_MS = 20000;
// A socket with no frame at all (not even a pong) for this long is treated as half-open.
const SILENCE_LIMIT_MS = 2.5 * PING_EVERY_MS;
const CLOCK_REFRESH_MS = 15000;
const NEUTRAL_COLOUR = "#607080"; // badge colour of a chat the server did not describe

const page = {
  eventName: document.getElementById("event-name"),
  eventHashtag: document.getElementById("event-hashtag"),
  connection: document.getElementById("connection"),
  connectionLabel: document.getElementById("connection-label"),
  posts: document.getElementById("posts"),
  empty: document.getElementById("empty"),
  legend: document.getElementById("legend"),
};

const DIRECTORY_REFRESH_MS = 60_000; // how often "live now" / "next ..." in the legend is brought up to date

const state = {
  slots: new Map(), // tag -> {live, next_start, next_end} from /api/chats
  chats: new Map(), // tag -> {tag, title, colour}
  filter: chatFilterFromLocation(), // tags asked for in ?chats=, or null for all
  // ?profile=: the wall reads the paced "wall" stream unless told otherwise (e.g. "full" for everything)
  profile: new URLSearchParams(window.location.search).get("profile") || "wall",
  seenIds: new Set(), // insertion ordered, so the oldest can be forgotten first
  lastId: null, // id of the newest post rendered (or the history cursor): where a resume starts
  historyLoaded: false,
  socket: null,
  attempt: 0, // consecutive failed connection attempts, for the backoff
  reconnectTimer: 0,
  lastFrameAt: 0,
};

const CONNECTION_LABELS = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };

/* ---------- small pure helpers ---------- */

/** The URL as a string if it is absolute http(s), else null (javascript:, data:, relative...). */
function httpUrlOrNull(value) {
  if (typeof value !== "string" || value === "") return null;
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/** A chat colour from the server as '#rgb' / '#rrggbb', or the neutral colour if it is anything else. */
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

function normalizeTag(tag) {
  return String(tag).trim().replace(/^#+/, "").toLowerCase();
}

function chatFilterFromLocation() {
  const raw = new URLSearchParams(window.location.search).get("chats");
  const tags = (raw || "").split(",").map(normalizeTag).filter(Boolean);
  return tags.length ? new Set(tags) : null;
}

/** First user-perceived character of a name, upper-cased, for the avatar fallback. */
function initialOf(name) {
  // Skip leading "@", spaces and invisible format characters (bidi overrides, zero-width joiners...).
  const trimmed = String(name || "").replace(/^[@\s\p{Cf}]+/u, "");
  if (!trimmed) return "?";
  const first = typeof Intl.Segmenter === "function"
    ? new Intl.Segmenter().segment(trimmed)[Symbol.iterator]().next().value.segment
    : [...trimmed][0];
  return first.toLocaleUpperCase();
}

/** A stable, dark-enough hue per handle, so fallback avatars differ from one another. */
function fallbackAvatarColour(seed) {
  let hash = 0;
  for (const ch of String(seed)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return `hsl(${hash % 360} 45% 36%)`;
}

const clockFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateClockFormat = new Intl.DateTimeFormat(undefined, {
  day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
});

/** "just now", "5 min ago", a clock time today, or date and time for older posts. */
function describeTime(createdMs, nowMs) {
  const age = nowMs - createdMs;
  if (Math.abs(age) < 45_000) return "just now";
  if (age > 0 && age < 3_600_000) return `${Math.max(1, Math.round(age / 60_000))} min ago`;
  const then = new Date(createdMs);
  const sameDay = then.toDateString() === new Date(nowMs).toDateString();
  return sameDay ? clockFormat.format(then) : dateClockFormat.format(then);
}

function isPost(item) {
  return item !== null && typeof item === "object" && typeof item.id === "string" && item.id !== ""
    && item.author !== null && typeof item.author === "object";
}

/* ---------- rendering: every network string goes through textContent / setAttribute ---------- */

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function colourBadge(badge, tag) {
  const colour = safeColour(state.chats.get(tag)?.colour);
  badge.style.backgroundColor = colour;
  badge.style.color = readableTextColour(colour);
}

function buildBadge(tag) {
  const badge = element("span", "badge", `#${tag}`);
  badge.dataset.tag = tag;
  colourBadge(badge, tag);
  return badge;
}

function buildInitialAvatar(author) {
  const fallback = element("span", "avatar avatar-fallback", initialOf(author.name || author.handle));
  fallback.setAttribute("aria-hidden", "true");
  fallback.style.backgroundColor = fallbackAvatarColour(author.handle || author.name || "");
  return fallback;
}

function buildAvatar(author) {
  const src = httpUrlOrNull(author.avatar);
  if (!src) return buildInitialAvatar(author);
  const img = element("img", "avatar avatar-image");
  img.setAttribute("alt", "");
  img.setAttribute("referrerpolicy", "no-referrer");
  img.setAttribute("decoding", "async");
  img.addEventListener("error", () => img.replaceWith(buildInitialAvatar(author)), { once: true });
  img.setAttribute("src", src);
  return img;
}

function buildTime(post) {
  const created = Number(post.created);
  const time = element("time", "post-time");
  if (Number.isFinite(created) && created > 0) {
    time.dataset.created = String(created);
    time.setAttribute("datetime", new Date(created).toISOString());
    time.textContent = describeTime(created, Date.now());
  }
  const href = httpUrlOrNull(post.url);
  if (!href) return time;
  const link = element("a", "post-link");
  link.setAttribute("href", href);
  link.setAttribute("rel", "noopener nofollow noreferrer");
  link.setAttribute("target", "_blank");
  link.append(time);
  return link;
}

function buildMedia(media) {
  const src = Array.isArray(media) ? media.map(httpUrlOrNull).find(Boolean) : null;
  if (!src) return null;
  const img = element("img", "post-media");
  img.setAttribute("alt", "");
  img.setAttribute("loading", "lazy");
  img.setAttribute("referrerpolicy", "no-referrer");
  img.addEventListener("error", () => img.remove(), { once: true });
  img.setAttribute("src", src);
  return img;
}

function buildCard(post, arriving) {
  const author = post.author;
  const handle = String(author.handle || "").replace(/^@/, "");
  const card = element("article", arriving ? "post post-arriving" : "post");
  card.dataset.id = post.id;

  const head = element("header", "post-head");
  const badges = element("span", "badges");
  for (const tag of Array.isArray(post.chats) ? post.chats : []) badges.append(buildBadge(normalizeTag(tag)));
  // <bdi> isolates each name: a right-to-left override inside one cannot reorder its neighbours.
  const name = element("bdi", "author-name", String(author.name || handle));
  const handleEl = element("bdi", "author-handle", handle ? `@${handle}` : "");
  head.append(badges, name, handleEl, buildTime(post));

  const text = element("p", "post-text");
  text.setAttribute("dir", "auto");
  if (typeof post.lang === "string" && /^[a-z]{2,3}(-[a-z0-9]{1,8})*$/i.test(post.lang)) {
    text.setAttribute("lang", post.lang);
  }
  text.append(element("bdi", "", String(post.text ?? "")));

  const body = element("div", "post-body");
  body.append(head, text);
  const extras = buildExtras(post);
  if (extras) body.append(extras);
  card.append(buildAvatar(author), body);
  const media = buildMedia(post.media);
  if (media) card.append(media);
  return card;
}

/** Boost counts, collapsed repeats and the same post on other networks, when the server reports them. */
function buildExtras(post) {
  const parts = [];
  const boosts = Number(post.boosts) || 0;
  const similar = Number(post.similar) || 0;
  if (boosts > 0) parts.push(element("span", "post-boosts", `\u{1F501} ${boosts}`));
  if (similar > 0) parts.push(element("span", "post-similar", `+${similar} similar`));
  for (const other of Array.isArray(post.also_on) ? post.also_on : []) {
    const href = httpUrlOrNull(other && other.url);
    if (!href) continue;
    const link = element("a", "post-also-on", `also on ${String(other.source || "another network")}`);
    link.setAttribute("href", href);
    link.setAttribute("rel", "noopener nofollow noreferrer");
    link.setAttribute("target", "_blank");
    parts.push(link);
  }
  if (!parts.length) return null;
  const line = element("footer", "post-extras");
  line.append(...parts);
  return line;
}

/** Replace shown cards by their new version (an edit, a new chat, a boost count); unknown ids are ignored. */
function updatePosts(items) {
  for (const post of Array.isArray(items) ? items : []) {
    if (!isPost(post)) continue;
    const card = [...page.posts.children].find((c) => c.dataset.id === post.id);
    if (card) card.replaceWith(buildCard(post, false));
  }
}

function rememberId(id) {
  state.seenIds.add(id);
  if (state.seenIds.size > MAX_REMEMBERED_IDS) {
    state.seenIds.delete(state.seenIds.values().next().value);
  }
}

/** Render posts given in feed order (oldest first): newest ends up on top, each id at most once. */
function renderPosts(items, arriving) {
  const fresh = [];
  for (const post of Array.isArray(items) ? items : []) {
    if (!isPost(post) || state.seenIds.has(post.id)) continue;
    rememberId(post.id);
    state.lastId = post.id;
    fresh.push(post);
  }
  if (!fresh.length) return;
  const batch = document.createDocumentFragment();
  for (const post of fresh.slice(-MAX_CARDS).reverse()) batch.append(buildCard(post, arriving));
  page.posts.prepend(batch);
  while (page.posts.childElementCount > MAX_CARDS) page.posts.lastElementChild.remove();
  page.empty.hidden = true;
}

function retractPosts(ids) {
  const gone = new Set(Array.isArray(ids) ? ids : []);
  for (const card of [...page.posts.children]) {
    if (gone.has(card.dataset.id)) card.remove();
  }
  page.empty.hidden = page.posts.childElementCount > 0;
}

/** "live now" or "next Mon 20:00" (the viewer's local time) for a chat's slot from /api/chats; null without one. */
function describeSlot(slot) {
  if (!slot) return null;
  if (slot.live === true) return { live: true, text: "live now" };
  const start = Date.parse(slot.next_start);
  if (!Number.isFinite(start)) return null;
  const day = new Date(start).toLocaleDateString(undefined, { weekday: "short" });
  const time = new Date(start).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return { live: false, text: `next ${day} ${time}` };
}

/** "Up next: #tag, Mon 20:00" above the legend: the chat whose slot starts soonest and is not live. */
function showUpNext() {
  let next = null;
  for (const [tag, slot] of state.slots) {
    if (state.filter && !state.filter.has(tag)) continue;
    const start = slot && slot.live !== true ? Date.parse(slot.next_start) : NaN;
    if (Number.isFinite(start) && (!next || start < next.start)) next = { tag, start };
  }
  let line = document.getElementById("up-next");
  if (!line) {
    line = element("p", "up-next");
    line.id = "up-next";
    page.legend.before(line);
  }
  line.hidden = !next;
  if (next) line.textContent = `Up next: #${next.tag}, ${describeSlot(state.slots.get(next.tag)).text.replace(/^next /, "")}`;
}

async function reloadHistory() {
  try {
    const history = await fetchJson(apiUrl("/api/feed", { limit: HISTORY_LIMIT }));
    page.posts.replaceChildren();
    state.seenIds.clear();
    renderPosts(history.items, false);
  } catch (error) {
    console.warn("wall: could not reload the history after a reset", error);
  }
}

function rememberSlots(chats) {
  state.slots = new Map();
  for (const chat of Array.isArray(chats) ? chats : []) {
    if (chat && chat.tag) state.slots.set(normalizeTag(chat.tag), chat);
  }
}

/** The directory's live state and next slots, refreshed every minute; the legend shows them. */
async function refreshDirectory() {
  try {
    const directory = await fetchJson(apiUrl("/api/chats", {}));
    rememberSlots(directory.chats);
    applyChats(directory.chats);
  } catch (error) {
    console.warn("wall: could not refresh the chat directory", error);
  }
}

function refreshTimes() {
  const now = Date.now();
  for (const time of page.posts.querySelectorAll("time[data-created]")) {
    time.textContent = describeTime(Number(time.dataset.created), now);
  }
}

function applyEvent(event) {
  if (!event || typeof event !== "object") return;
  const name = String(event.name || "chatmixer");
  page.eventName.textContent = name;
  document.title = name;
  const hashtag = String(event.hashtag || "").replace(/^#+/, "");
  page.eventHashtag.textContent = hashtag ? `#${hashtag}` : "";
}

/** Take the chat directory (tag, title, colour): rebuild the legend and recolour existing badges. */
function applyChats(chats) {
  if (!Array.isArray(chats)) return;
  state.chats.clear();
  for (const chat of chats) {
    if (chat && typeof chat === "object" && chat.tag) state.chats.set(normalizeTag(chat.tag), chat);
  }
  const entries = [];
  for (const [tag, chat] of state.chats) {
    if (state.filter && !state.filter.has(tag)) continue;
    const item = element("li", "legend-item");
    item.dataset.tag = tag;
    item.append(buildBadge(tag), element("span", "legend-name", String(chat.title || tag)));
    const when = describeSlot(state.slots.get(tag));
    if (when) item.append(element("span", when.live ? "legend-when legend-live" : "legend-when", when.text));
    entries.push(item);
  }
  page.legend.replaceChildren(...entries);
  showUpNext();
  for (const badge of page.posts.querySelectorAll(".badge[data-tag]")) colourBadge(badge, badge.dataset.tag);
}

function setConnectionState(name) {
  page.connection.dataset.state = name;
  page.connectionLabel.textContent = CONNECTION_LABELS[name];
}

/* ---------- network ---------- */

function apiUrl(path, params) {
  const url = new URL(path, window.location.href);
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) url.searchParams.set(key, value);
  }
  if (state.filter) url.searchParams.set("chats", [...state.filter].join(","));
  if (path !== "/api/chats") url.searchParams.set("profile", state.profile);
  return url;
}

async function fetchJson(url) {
  const response = await fetch(url, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!response.ok) throw new Error(`${url.pathname}: HTTP ${response.status}`);
  return response.json();
}

/** Chats, event and recent history over HTTP; then the websocket takes over from the history's cursor. */
async function loadHistory() {
  const [directory, history] = await Promise.all([
    fetchJson(apiUrl("/api/chats", {})),
    fetchJson(apiUrl("/api/feed", { limit: HISTORY_LIMIT })),
  ]);
  applyEvent(directory.event);
  rememberSlots(directory.chats);
  applyChats(directory.chats);
  renderPosts(history.items, false);
  if (typeof history.cursor === "string" && history.cursor) state.lastId = history.cursor;
  state.historyLoaded = true;
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
  switch (frame && frame.type) {
    case "hello":
      applyEvent(frame.event);
      applyChats(frame.chats);
      if (!state.lastId && typeof frame.cursor === "string") state.lastId = frame.cursor;
      state.attempt = 0;
      setConnectionState("live");
      break;
    case "posts":
      renderPosts(frame.items, true);
      break;
    case "update":
      updatePosts(frame.items);
      break;
    case "reset":
      // The posts missed while away are no longer in the history: show the newest ones afresh.
      reloadHistory();
      break;
    case "retract":
      retractPosts(frame.ids);
      break;
    case "lag":
      // The wall only shows the newest posts, so skipped ones are not fetched back.
      console.info(`wall: fell behind, the server skipped ${Number(frame.skipped) || 0} posts`);
      break;
    default:
      break; // pong, stats and future frame types need nothing here
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

window.setInterval(checkSocketAlive, PING_EVERY_MS);
window.setInterval(refreshTimes, CLOCK_REFRESH_MS);
window.setInterval(refreshDirectory, DIRECTORY_REFRESH_MS);
connect();
