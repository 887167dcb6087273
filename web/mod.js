/*
 * mod.js: the moderator console at /mod (mod.html), wiring its parts together.
 *
 * Sign-in checks the token with GET /api/mod/rules and keeps it in sessionStorage
 * (mod-api.js). Then: the incoming stream (every post of the full feed as it arrives,
 * over /ws with resume, mod-stream.js) with Hide / Unhide, Pin and Block author; the
 * pinned post on top with Unpin; the approval queue and the audit log, refreshed as soon
 * as either changes (a long poll on /api/mod/changes; every 15 s as well, to heal anything
 * missed) and right after each action; the blocklist form and approval switch
 * (mod-rules.js). A decision goes to the API; its effect comes back over the same feed
 * every wall reads, so what the console shows is what the walls show.
 */

import { ApiError, api, clearSession, loadSession, moderatorName, saveSession } from "./mod-api.js";
import { accountOf, actionButton, isBusy, isPost, localTime, postBody, setBusy } from "./mod-dom.js";
import { compareIds, element, normalizeTag } from "./safe.js";
import { RulesPanel } from "./mod-rules.js";
import { FeedStream } from "./mod-stream.js";

const MAX_CARDS = 200; // incoming cards kept; older ones are removed
const REFRESH_MS = 15000; // approval queue and audit log, besides the refresh on each change
const RETRY_MS = 2000; // after a failed or unanswered wait for changes
const AUDIT_LIMIT = 50;
const SEND_FOR_MS = 120000; // a decision is sent again this long while the server cannot take it
const SEND_RETRY_MS = 500; // its first retry; doubling up to SEND_RETRY_MAX_MS
const SEND_RETRY_MAX_MS = 4000;
const CONNECTION_LABELS = { connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…" };

const $ = (id) => document.getElementById(id);

const state = {
  session: null, // {token, name}
  chats: new Map(), // tag -> {tag, title, colour}
  cards: new Map(), // post key -> incoming card
  held: new Map(), // post key -> a new post held above the list while the moderator is at it (holdPosts)
  heldHidden: new Set(), // ids of held posts hidden meanwhile
  moved: new Set(), // cards given a newer version (unhidden) while held: moved to the top on release
  pointerIn: false, // the pointer is over the incoming column
  pinnedKey: null,
  stream: null,
  refresher: 0,
  auditTop: null, // id of the newest audit entry shown
  rulesSeen: undefined, // id of the newest "rules" audit entry applied (undefined: none read yet)
};

const context = {
  session: () => state.session,
  chats: state.chats,
  failed: (error) => {
    if (error instanceof ApiError && error.status === 401) signOut("The token is no longer accepted: sign in again.");
  },
};
const rules = new RulesPanel(context);

/* ---------- moderator actions ---------- */

/**
 * POST an action; a rejected token signs the moderator out. While the server cannot be reached or says it is
 * unavailable (restarting, Redis away: 502, 503, 504), the decision is sent again with backoff for up to
 * SEND_FOR_MS, saying so through ``note``: a click in that moment is not lost. A decision sent again may have
 * reached the server the first time (the answer was what got lost): an Approve or Reject sent again that the
 * server says is not waiting any more is done if the audit log shows it applied (``reachedEarlier``); the answer
 * then carries ``reached: true``.
 */
async function act(name, body, note = () => {}) {
  const session = state.session;
  const started = Date.now();
  let delay = SEND_RETRY_MS;
  let resent = false;
  try {
    for (;;) {
      try {
        return await api(session, "POST", `/api/mod/${name}`, body);
      } catch (error) {
        if (resent && (await reachedEarlier(session, name, body, error))) return { ok: true, reached: true };
        const unavailable = error instanceof ApiError && [0, 502, 503, 504].includes(error.status);
        if (!unavailable || state.session !== session || Date.now() - started + delay > SEND_FOR_MS) throw error;
        resent = true;
        note("waiting for the server to send it");
        await pause(delay);
        delay = Math.min(delay * 2, SEND_RETRY_MAX_MS);
      }
    }
  } catch (error) {
    context.failed(error);
    throw error;
  } finally {
    window.setTimeout(refreshLive, 150); // the audit log and queue show the decision soon after
  }
}

/**
 * Whether ``error``, the answer to a decision sent again, says the first sending was applied: a 404 or 409 to an
 * Approve or Reject, and the newest approve or reject of that post in the audit log is this one, by this moderator.
 * Anything else (another moderator's decision, nothing in the log) stays a failure.
 */
async function reachedEarlier(session, name, body, error) {
  if (!["approve", "reject"].includes(name) || !(error instanceof ApiError) || ![404, 409].includes(error.status)) {
    return false;
  }
  try {
    const audit = await api(session, "GET", `/api/mod/audit?limit=${AUDIT_LIMIT}`);
    const items = Array.isArray(audit.items) ? audit.items : [];
    const decision = items.find((e) => e && e.key === body.key && ["approve", "reject"].includes(e.action));
    return Boolean(decision) && decision.action === name && decision.who === session.name;
  } catch {
    return false; // the failure as the server said it is what the moderator sees
  }
}

/* ---------- incoming stream ---------- */

function statusLine() {
  const status = element("span", "status");
  status.setAttribute("role", "status");
  return status;
}

/** The "Block author" choice: everywhere or in one of the post's chats; blocking also hides the post. */
function blockForm(post, status, toggle) {
  const account = accountOf(post);
  const form = element("div", "block-form");
  form.hidden = true;
  const select = element("select");
  select.setAttribute("aria-label", `Where to block ${account}`);
  select.append(new Option("in every chat", ""));
  for (const tag of Array.isArray(post.chats) ? post.chats.map(normalizeTag) : []) {
    select.append(new Option(`in #${tag} only`, tag));
  }
  const label = element("span", "block-account");
  label.append("Block ", element("bdi", "", account));
  const confirm = actionButton("Block", "btn-danger", status, async (note) => {
    const chat = select.value;
    const answer = await act("block", { account, chat: chat || undefined, key: post.key }, note);
    rules.apply(answer);
    const pressed = form.contains(document.activeElement);
    form.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
    if (pressed) toggle.focus(); // as Cancel does: the form that had the focus is gone
    return `Blocked ${account}${chat ? ` in #${chat}` : ""}`;
  });
  const cancel = element("button", "btn", "Cancel");
  cancel.type = "button";
  cancel.addEventListener("click", () => {
    form.hidden = true;
    toggle.setAttribute("aria-expanded", "false");
    toggle.focus();
  });
  form.append(label, select, confirm, cancel);
  return form;
}

function buildIncomingCard(post) {
  const card = element("article", "post");
  card.tabIndex = -1; // PageDown, PageUp, Home and End move the focus from post to post (movePostFocus)
  card.setAttribute("aria-label", `Post by ${String(post.author.handle || "")}`);
  const status = statusLine();
  const actions = element("div", "post-actions");
  const hide = actionButton("Hide", "btn-hide", status, async (note) => {
    await act("hide", { key: card.dataset.key }, note);
    return "Hidden on every wall";
  });
  const unhide = actionButton("Unhide", "btn-unhide", status, async (note) => {
    await act("unhide", { key: card.dataset.key }, note);
    return "Back on every wall";
  });
  const pin = actionButton("Pin", "btn-pin", status, async (note) => {
    await act("pin", { key: card.dataset.key }, note);
    return "Pinned on every wall";
  });
  const blockToggle = element("button", "btn btn-block", "Block author…");
  blockToggle.type = "button";
  blockToggle.setAttribute("aria-expanded", "false");
  actions.append(hide, unhide, pin, blockToggle, status);
  const form = blockForm(post, status, blockToggle);
  blockToggle.addEventListener("click", () => {
    form.hidden = !form.hidden;
    blockToggle.setAttribute("aria-expanded", String(!form.hidden));
    if (!form.hidden) form.querySelector("select").focus();
  });
  card.append(element("span", "state-label"), postBody(post, state.chats), actions, form);
  fillCard(card, post);
  return card;
}

/** Point a card at (a new version of) its post and show it as shown. */
function fillCard(card, post) {
  card.dataset.key = post.key;
  card.dataset.id = post.id;
  card.querySelector(".post-body").replaceWith(postBody(post, state.chats));
  setCardHidden(card, false);
  card.dataset.pinned = String(post.key === state.pinnedKey);
}

function setCardHidden(card, hidden) {
  const hide = card.querySelector(".btn-hide");
  const unhide = card.querySelector(".btn-unhide");
  const pressed = document.activeElement === (hidden ? hide : unhide); // the button a keyboard just used goes away
  card.dataset.state = hidden ? "hidden" : "shown";
  card.querySelector(".state-label").textContent = hidden ? "Hidden" : "";
  hide.hidden = hidden;
  unhide.hidden = !hidden;
  card.querySelector(".btn-pin").disabled = hidden;
  if (pressed) (hidden ? unhide : hide).focus(); // the focus stays on the card, on the button that undoes it
}

/**
 * Posts, live (in feed order) or fetched back after a `lag` (older than some shown): each card in its place by id,
 * newest on top, a post at most once; a key already shown under an older id (an unhidden post) moves to its new
 * place as its new version. While the moderator is at the list (`holding`), a post that would go above every card
 * is held instead (`holdPost`): no card moves under the pointer.
 */
function addPosts(items, releasing = false) {
  const list = $("incoming");
  if (!releasing && state.held.size && !holding()) releaseHeld(); // the moderator left without an event saying so
  for (const post of items) {
    if (!isPost(post)) continue;
    const shown = state.cards.get(post.key);
    if (shown && compareIds(shown.dataset.id, post.id) >= 0) continue; // this version or a newer one is shown
    const held = state.held.get(post.key);
    if (held && compareIds(held.id, post.id) >= 0) continue;
    let next = list.firstElementChild;
    while (next && (next === shown || compareIds(next.dataset.id, post.id) > 0)) next = next.nextElementSibling;
    if (!next && !shown && list.childElementCount >= MAX_CARDS) continue; // older than every card kept
    const top = list.firstElementChild === shown ? shown.nextElementSibling : list.firstElementChild;
    if (!releasing && next && next === top && holding()) {
      holdPost(post, shown);
      continue;
    }
    let card = shown;
    if (card) fillCard(card, post);
    else card = buildIncomingCard(post);
    if (state.heldHidden.delete(post.id)) setCardHidden(card, true); // hidden while it was held
    state.cards.set(post.key, card);
    placeCard(card, next);
  }
  while (list.childElementCount > MAX_CARDS) {
    state.cards.delete(list.lastElementChild.dataset.key);
    state.moved.delete(list.lastElementChild);
    list.lastElementChild.remove();
  }
  showCounts();
}

/** Put a card before ``next`` (null: last); moving a card takes the focus away from it, so it is given back. */
function placeCard(card, next) {
  const focused = card.contains(document.activeElement) ? document.activeElement : null;
  if (card.nextElementSibling !== next || card.parentElement !== $("incoming")) $("incoming").insertBefore(card, next);
  if (focused && document.activeElement !== focused) focused.focus();
}

/* ---------- new posts held while the moderator is at the list ---------- */

function incomingScroller() {
  const column = $("incoming").closest(".incoming-column");
  return getComputedStyle(column).overflowY === "auto" ? column : document.scrollingElement;
}

/**
 * Whether new posts wait above the list rather than push every card down: while the pointer is over the incoming
 * column, the focus is in it (a keyboard or screen reader user at a post), or the list is scrolled down.
 */
function holding() {
  const column = $("incoming").closest(".incoming-column");
  return state.pointerIn || column.contains(document.activeElement) || incomingScroller().scrollTop >= 1;
}

/**
 * Hold a post newer than every card: offered by the "N new posts" button (the newest MAX_CARDS, as the list keeps).
 * A card shown under an older id (an unhidden post) takes its new version in place, and moves up on release.
 */
function holdPost(post, shown) {
  if (shown) {
    fillCard(shown, post);
    state.moved.add(shown);
    return;
  }
  state.held.set(post.key, post);
  if (state.held.size > MAX_CARDS) {
    const oldest = [...state.held.values()].reduce((a, b) => (compareIds(a.id, b.id) <= 0 ? a : b));
    state.held.delete(oldest.key);
    state.heldHidden.delete(oldest.id);
  }
  showHeld();
}

/** The held posts go on top of the list, in feed order; the cards unhidden meanwhile move to their place. */
function releaseHeld() {
  const list = $("incoming");
  for (const card of state.moved) {
    let next = list.firstElementChild;
    while (next && (next === card || compareIds(next.dataset.id, card.dataset.id) > 0)) next = next.nextElementSibling;
    placeCard(card, next);
  }
  state.moved.clear();
  const posts = [...state.held.values()].sort((a, b) => compareIds(a.id, b.id));
  state.held.clear();
  addPosts(posts, true);
  state.heldHidden.clear();
  showHeld();
}

/** The button says how many posts wait; a screen reader hears once that some do, not at every post. */
function showHeld() {
  const count = state.held.size;
  const button = $("new-posts");
  button.hidden = count === 0;
  button.textContent = count === 1 ? "1 new post" : `${count} new posts`;
  const status = $("new-posts-status");
  if (!count) status.textContent = "";
  else if (!status.textContent) status.textContent = "New posts are waiting: the new posts button above the list shows them";
}

/** When the moderator is no longer at the list and it is at the top, the held posts flow in. */
function releaseIfLeft() {
  if (state.held.size + state.moved.size && !holding()) releaseHeld();
}

{
  const column = $("incoming").closest(".incoming-column");
  column.addEventListener("pointerenter", () => {
    state.pointerIn = true;
  });
  column.addEventListener("pointerleave", () => {
    state.pointerIn = false;
    releaseIfLeft();
  });
  column.addEventListener("focusout", (event) => {
    if (!column.contains(event.relatedTarget)) releaseIfLeft(); // (the focus is on <body> meanwhile)
  });
  column.addEventListener("scroll", releaseIfLeft, { passive: true }); // scrolled back to the top
  window.addEventListener("scroll", releaseIfLeft, { passive: true }); // so, in one column on a phone
  $("new-posts").addEventListener("click", () => {
    releaseHeld();
    incomingScroller().scrollTop = 0;
    // the button is gone: the focus goes to the newest post, from where Tab and PageDown go on
    $("incoming").firstElementChild?.focus({ preventScroll: true });
  });
}

function updatePosts(items) {
  for (const post of items) {
    if (isPost(post) && state.held.get(post.key)?.id === post.id) state.held.set(post.key, post);
    const card = isPost(post) ? state.cards.get(post.key) : null;
    if (card && card.dataset.id === post.id) card.querySelector(".post-body").replaceWith(postBody(post, state.chats));
  }
}

/** A retracted post stays in the console, greyed, with Unhide. */
function retractPosts(ids) {
  const gone = new Set(ids);
  for (const post of state.held.values()) if (gone.has(post.id)) state.heldHidden.add(post.id);
  for (const card of state.cards.values()) {
    if (gone.has(card.dataset.id)) setCardHidden(card, true);
  }
  showCounts();
}

function showPinned(post) {
  const box = $("pinned");
  state.pinnedKey = isPost(post) ? post.key : null;
  for (const card of state.cards.values()) card.dataset.pinned = String(card.dataset.key === state.pinnedKey);
  if (!state.pinnedKey) {
    box.hidden = true;
    box.replaceChildren();
    return;
  }
  const status = statusLine();
  const unpin = actionButton("Unpin", "btn-unpin", status, async (note) => {
    await act("unpin", {}, note);
    return "Unpinned on every wall";
  });
  const actions = element("div", "post-actions");
  actions.append(unpin, status);
  box.replaceChildren(element("h3", "pinned-title", "Pinned on every wall"), postBody(post, state.chats), actions);
  box.hidden = false;
}

function showCounts() {
  const shown = [...state.cards.values()].filter((card) => card.dataset.state === "shown").length;
  const hidden = state.cards.size - shown;
  $("incoming-count").textContent = state.cards.size ? `${shown} shown${hidden ? `, ${hidden} hidden` : ""}` : "";
  $("incoming-empty").hidden = state.cards.size > 0;
}

function takeChats(chats) {
  if (!Array.isArray(chats)) return;
  state.chats.clear();
  for (const chat of chats) {
    if (chat && typeof chat === "object" && chat.tag) state.chats.set(normalizeTag(chat.tag), chat);
  }
}

function takeEvent(event) {
  if (!event || typeof event !== "object") return;
  const name = String(event.name || "");
  $("event-name").textContent = name;
  document.title = name ? `Moderation: ${name}` : "chatmixer moderation";
}

function setConnection(name) {
  if ($("connection").dataset.state === name) return; // a live region: an outage is said once, not at every retry
  $("connection").dataset.state = name;
  $("connection-label").textContent = CONNECTION_LABELS[name] || name;
}

/* ---------- approval queue and audit log ---------- */

function buildQueueItem(post) {
  const item = element("article", "post queued");
  item.tabIndex = -1; // as an incoming card: PageDown, PageUp, Home and End (movePostFocus)
  item.dataset.key = post.key;
  const status = statusLine();
  const actions = element("div", "post-actions");
  const approve = actionButton("Approve", "btn-approve btn-primary", status, async (note) => {
    const answer = await act("approve", { key: post.key }, note);
    return answer.reached ? "Approved (it had reached the server)" : "Approved: on its way to the walls";
  });
  const reject = actionButton("Reject", "btn-reject", status, async (note) => {
    const answer = await act("reject", { key: post.key }, note);
    return answer.reached ? "Rejected (it had reached the server)" : "Rejected";
  });
  actions.append(approve, reject, status);
  item.append(postBody(post, state.chats), actions);
  return item;
}

/**
 * Bring the queue up to date keeping the items (and their focus and status) that are still waiting, in place:
 * the queue is a live region, and an item taken out and put back would be read out again.
 */
function showQueue(items) {
  const list = $("queue");
  const current = new Map([...list.children].map((el) => [el.dataset.key, el]));
  const posts = items.filter((post) => post && typeof post === "object" && typeof post.key === "string");
  const next = posts.map((post) => {
    if (!post.id) post.id = post.key; // held posts have no feed id yet
    return isPost(post) ? current.get(post.key) || buildQueueItem(post) : null;
  }).filter(Boolean);
  const focused = list.contains(document.activeElement);
  const kept = new Set(next);
  for (const el of [...list.children]) if (!kept.has(el)) el.remove();
  // The queue keeps its order (oldest first), so the items left are in order and only new ones go in.
  next.forEach((el, i) => {
    if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
  });
  if (focused && !list.contains(document.activeElement) && list.firstElementChild) {
    list.firstElementChild.querySelector("button").focus();
  }
  $("queue-count").textContent = next.length ? `(${next.length})` : "";
  $("queue-empty").hidden = next.length > 0;
}

function auditRow(entry) {
  const row = element("tr");
  row.dataset.action = String(entry.action || "");
  const when = element("td");
  when.append(element("time", "", localTime(entry.at)));
  const who = element("td");
  who.append(element("bdi", "audit-who", String(entry.who || "")));
  if (entry.from) who.append(element("span", "audit-from", String(entry.from)));
  const detail = element("td", "audit-detail");
  if (entry.key) detail.append(element("code", "post-key", String(entry.key)));
  if (entry.detail) detail.append(element("bdi", "audit-note", String(entry.detail)));
  if (entry.action === "hide" && entry.key) {
    // a post hidden before this console opened is not in the incoming list: it can be brought back from here
    const status = statusLine();
    const key = String(entry.key);
    detail.append(actionButton("Unhide", "btn-small", status, async (note) => {
      await act("unhide", { key }, note);
      return "Back on every wall";
    }), status);
  }
  row.append(when, who, element("td", "audit-action", String(entry.action || "")), detail);
  return row;
}

function showAudit(items) {
  const entries = items.filter((entry) => entry && typeof entry === "object");
  const top = entries.length ? String(entries[0].id) : null;
  if (top !== state.auditTop) {
    state.auditTop = top;
    $("audit").replaceChildren(...entries.map(auditRow));
  }
  $("audit-empty").hidden = entries.length > 0;
  // Someone changed the rules (or approval mode): bring the switch and the form up to date.
  const newestRules = entries.find((entry) => entry.action === "rules");
  const rulesId = newestRules ? String(newestRules.id) : null;
  if (state.rulesSeen === undefined) state.rulesSeen = rulesId; // the rules were read at sign-in
  if (rulesId !== state.rulesSeen) {
    state.rulesSeen = rulesId;
    rules.reload().catch(context.failed);
  }
}

async function refreshLive() {
  if (!state.session) return;
  try {
    const [queue, audit] = await Promise.all([
      api(state.session, "GET", "/api/mod/queue"),
      api(state.session, "GET", `/api/mod/audit?limit=${AUDIT_LIMIT}`),
    ]);
    if (!state.session) return;
    showQueue(Array.isArray(queue.items) ? queue.items : []);
    showAudit(Array.isArray(audit.items) ? audit.items : []);
  } catch (error) {
    context.failed(error);
    if (!(error instanceof ApiError && error.status === 401)) console.warn(`console: refresh failed (${error.message})`);
  }
}

/* ---------- keyboard: from post to post ---------- */

const POST_KEYS = new Set(["PageDown", "PageUp", "Home", "End"]);

/**
 * In the incoming feed or the approval queue, PageDown and PageUp move the focus to the next or previous post of
 * that list, Home and End to its first or last: the post itself (not a Tab stop), from where Tab goes on to its
 * buttons. Moving the focus is all a screen reader is given, as for any focused article. A field keeps its keys.
 */
function movePostFocus(event) {
  if (!POST_KEYS.has(event.key) || event.altKey || event.ctrlKey || event.metaKey || event.shiftKey) return;
  if (event.defaultPrevented || event.target.closest("input, select, textarea")) return;
  const posts = [...event.currentTarget.children];
  const at = posts.findIndex((post) => post.contains(event.target));
  if (at < 0) return;
  const to = { PageDown: Math.min(at + 1, posts.length - 1), PageUp: Math.max(at - 1, 0), Home: 0 }[event.key]
    ?? posts.length - 1;
  event.preventDefault(); // the column would scroll instead, leaving the focus behind (or out of sight)
  posts[to].focus();
}

$("incoming").addEventListener("keydown", movePostFocus);
$("queue").addEventListener("keydown", movePostFocus);

/* ---------- sign in and out ---------- */

async function loadChats() {
  try {
    const response = await fetch("/api/chats", { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) return;
    const directory = await response.json();
    takeChats(directory.chats);
    takeEvent(directory.event);
  } catch (error) {
    console.warn("console: could not load the chat directory", error);
  }
}

function startConsole(session, currentRules) {
  state.session = session;
  $("moderator-name").textContent = session.name;
  const focusWasInForm = $("login").contains(document.activeElement) || document.activeElement === document.body;
  $("login").hidden = true;
  $("console").hidden = false;
  $("session-bar").hidden = false;
  // The sign-in form had the focus and is gone: Tab goes on from the top (approval switch, Sign out, the posts).
  if (focusWasInForm) $("console-title").focus();
  rules.apply(currentRules);
  state.stream = new FeedStream({
    history: (items) => addPosts(items),
    hello: (frame) => {
      takeEvent(frame.event);
      takeChats(frame.chats);
      showPinned(frame.pinned);
    },
    posts: addPosts,
    update: updatePosts,
    retract: retractPosts,
    pin: showPinned,
    state: setConnection,
  });
  state.stream.start();
  state.refresher = window.setInterval(refreshLive, REFRESH_MS);
  refreshLive();
  followChanges(session);
}

/** Wait for changes to the queue or the audit log (the server answers when there is one, or after a few
 * seconds with none) and refresh on each, until this session ends. */
async function followChanges(session) {
  let seen = null;
  while (state.session === session) {
    const asked = Date.now();
    try {
      const path = seen === null ? "/api/mod/changes" : `/api/mod/changes?after=${encodeURIComponent(seen)}`;
      const reply = await api(session, "GET", path);
      if (state.session !== session) return;
      const first = seen === null; // the first answer says where the changes are now
      const changed = !first && reply.id !== seen;
      seen = String(reply.id);
      if (changed) await refreshLive();
      else if (!first && Date.now() - asked < 500) await pause(RETRY_MS); // answered at once (busy): no spin
    } catch (error) {
      context.failed(error);
      await pause(RETRY_MS);
    }
  }
}

function pause(ms) {
  return new Promise((resolve) => window.setTimeout(resolve, ms));
}

function signOut(message) {
  clearSession();
  state.session = null;
  if (state.stream) state.stream.stop();
  state.stream = null;
  window.clearInterval(state.refresher);
  state.cards.clear();
  state.held.clear();
  state.heldHidden.clear();
  state.moved.clear();
  showHeld();
  state.auditTop = null;
  state.rulesSeen = undefined;
  rules.rules = null;
  rules.base = null;
  rules.dirty = false;
  for (const id of ["incoming", "queue", "audit", "pinned"]) $(id).replaceChildren();
  $("console").hidden = true;
  $("session-bar").hidden = true;
  $("login").hidden = false;
  $("login-token").value = "";
  $("login-error").textContent = message || "";
  $("login-token").focus();
}

/** Check a token against the server; starts the console, or says why not on the sign-in form. */
async function signIn(session) {
  const error = $("login-error");
  const submit = $("login-submit");
  setBusy(submit, true);
  error.textContent = "";
  try {
    const current = await api(session, "GET", "/api/mod/rules");
    saveSession(session);
    await loadChats();
    startConsole(session, current);
  } catch (failure) {
    // a refused token is forgotten; an unreachable server is not a reason to retype it
    if (failure instanceof ApiError && failure.status !== 0) clearSession();
    const reason = failure.message;
    error.textContent = `Cannot sign in: ${reason.charAt(0).toUpperCase()}${reason.slice(1)}.`;
  } finally {
    setBusy(submit, false);
  }
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (isBusy($("login-submit"))) return; // a sign-in is being checked
  const token = $("login-token").value.trim();
  const name = moderatorName($("login-name").value);
  if (!token || !name) {
    $("login-error").textContent = !token ? "Type the moderation token." : "Type your name.";
    return;
  }
  signIn({ token, name });
});
$("sign-out").addEventListener("click", () => signOut("Signed out."));

const saved = loadSession();
if (saved) {
  $("login-name").value = saved.name;
  signIn(saved);
} else {
  $("login-token").focus();
}
