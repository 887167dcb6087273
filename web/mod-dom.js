/*
 * mod-dom.js: safe rendering for the moderator console (mod.html).
 *
 * Everything from the network is untrusted: it reaches the DOM only through textContent
 * and setAttribute (never innerHTML), URLs become links only when they are http(s), chat
 * colours only when they are hex colours, and names and texts are bidi-isolated (<bdi>,
 * dir="auto") so an override character cannot flip the layout around them. The same
 * rules as the wall's, from safe.js.
 */

import { element, httpUrlOrNull, normalizeTag, outboundLink, readableTextColour, safeColour } from "./safe.js";

/** Whether a frame item looks like a Post: an id, a key and an author object. */
export function isPost(item) {
  return item !== null && typeof item === "object" && typeof item.id === "string" && item.id !== ""
    && typeof item.key === "string" && item.author !== null && typeof item.author === "object";
}

/** A link to an http(s) URL that opens elsewhere and passes on nothing; null for any other URL. */
export function safeLink(url, className, text) {
  const href = httpUrlOrNull(url);
  return href ? outboundLink(href, className, text) : null;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", second: "2-digit",
});

/** A local clock time (with the date when it is not today), or "" for anything that is not a time. */
export function localTime(ms) {
  const value = Number(ms);
  if (!Number.isFinite(value) || value <= 0) return "";
  const then = new Date(value);
  return then.toDateString() === new Date().toDateString() ? timeFormat.format(then) : dateTimeFormat.format(then);
}

/** A <time> element for ms since the epoch (empty when the value is not a time). */
export function timeElement(ms, className) {
  const time = element("time", className, localTime(ms));
  if (time.textContent) time.setAttribute("datetime", new Date(Number(ms)).toISOString());
  return time;
}

/** A chat badge in the chat's colour (colours: tag -> {colour}); the tag shown as text. */
export function chatBadge(tag, chats) {
  const clean = normalizeTag(tag);
  const badge = element("span", "badge", `#${clean}`);
  badge.dataset.tag = clean;
  const colour = safeColour(chats.get(clean)?.colour);
  badge.style.backgroundColor = colour;
  badge.style.color = readableTextColour(colour);
  return badge;
}

/** The account a block names for this post's author: "source:handle" (handle without a leading "@"). */
export function accountOf(post) {
  const handle = String(post.author?.handle || "").replace(/^@/, "");
  const source = String(post.source || "");
  return source && /^[a-z0-9_.-]+$/i.test(source) ? `${source}:${handle}` : handle;
}

const CUT_LINES = 6; // a longer text is cut there (mod.css), with "Show all" to read it whole
let textCount = 0; // numbers the texts, for their toggles' aria-controls

/** Each text's "Show all" toggle appears only while the text is cut short, and again when a resize cuts it. */
const cutTexts = new ResizeObserver((entries) => {
  for (const { target: text } of entries) {
    if (!text.isConnected) {
      cutTexts.unobserve(text); // its card left the console
      continue;
    }
    text.nextElementSibling.hidden = text.dataset.open !== "true" && text.scrollHeight <= text.clientHeight + 1;
  }
});

/** The text's "Show all" / "Show less" toggle (hidden until the text is seen to be cut short). */
function cutToggle(text) {
  text.id = `post-text-${++textCount}`;
  text.style.setProperty("--cut-lines", String(CUT_LINES));
  const toggle = element("button", "btn post-more", "Show all");
  toggle.type = "button";
  toggle.hidden = true;
  toggle.setAttribute("aria-expanded", "false");
  toggle.setAttribute("aria-controls", text.id);
  toggle.addEventListener("click", () => {
    const open = text.dataset.open !== "true";
    text.dataset.open = String(open);
    toggle.setAttribute("aria-expanded", String(open));
    toggle.textContent = open ? "Show less" : "Show all";
  });
  cutTexts.observe(text);
  return toggle;
}

/**
 * The body of a post as the console shows it: chat badges, author name and @handle, source,
 * time (a link to the post when its URL is http(s)), the text (cut at CUT_LINES lines, with a toggle to read
 * it whole), and the post key.
 */
export function postBody(post, chats) {
  const author = post.author || {};
  const handle = String(author.handle || "").replace(/^@/, "");
  const head = element("header", "post-head");
  const badges = element("span", "badges");
  for (const tag of Array.isArray(post.chats) ? post.chats : []) badges.append(chatBadge(tag, chats));
  const name = element("bdi", "author-name", String(author.name || handle));
  const handleEl = element("bdi", "author-handle", handle ? `@${handle}` : "");
  const source = element("span", "post-source", String(post.source || "?"));
  const time = timeElement(post.created, "post-time");
  const link = safeLink(post.url, "post-link");
  if (link) link.append(time);
  head.append(badges, name, handleEl, source, link || time);

  // dir="auto" reads the direction from the text's first letters (not from inside a <bdi>, so none here)
  const text = element("p", "post-text", String(post.text ?? ""));
  text.setAttribute("dir", "auto");
  const key = element("code", "post-key", String(post.key));
  key.setAttribute("title", "post key");
  const media = Array.isArray(post.media) ? post.media.filter((url) => httpUrlOrNull(url)).length : 0;
  const foot = element("footer", "post-foot");
  foot.append(key);
  if (media) foot.append(element("span", "post-media-count", media === 1 ? "1 image" : `${media} images`));
  const body = element("div", "post-body");
  body.append(head, text, cutToggle(text), foot);
  return body;
}

/**
 * Mark a button busy while its request runs, or not: pressing it again does nothing (``isBusy``) and it looks
 * disabled, but it is not `disabled`, which would take the keyboard focus away to <body> at every press.
 */
export function setBusy(button, busy) {
  for (const name of ["aria-disabled", "aria-busy"]) {
    if (busy) button.setAttribute(name, "true");
    else button.removeAttribute(name);
  }
}

/** Whether a button's request is still running (``setBusy``). */
export function isBusy(button) {
  return button.getAttribute("aria-busy") === "true";
}

/** A button that runs ``action``; while it runs the button is busy, then ``status`` says done or why not. */
export function actionButton(label, className, status, action) {
  const button = element("button", `btn ${className}`, label);
  button.type = "button";
  button.addEventListener("click", async () => {
    if (isBusy(button)) return;
    setBusy(button, true);
    status.dataset.state = "pending";
    status.textContent = `${label}…`;
    const note = (text) => {
      status.textContent = `${label}… ${text}`;
    };
    try {
      const done = await action(note);
      status.dataset.state = "done";
      status.textContent = typeof done === "string" ? done : `${label}: done`;
    } catch (error) {
      status.dataset.state = "error";
      status.textContent = `${label} failed: ${error.message}`;
    } finally {
      setBusy(button, false);
    }
  });
  return button;
}
