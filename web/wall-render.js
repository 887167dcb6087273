/*
 * wall-render.js: turning untrusted posts into the wall's DOM: cards, badges, avatars, times.
 *
 * Everything from the network reaches the DOM only through textContent and setAttribute
 * (never innerHTML), URLs are used only when they are absolute http(s), names and texts are
 * bidi-isolated (<bdi>, dir="auto") so an override character cannot flip what is around it,
 * and links open elsewhere with rel="noopener nofollow noreferrer". Not here: what is shown
 * when (wall.js, pacing.js) or the legend (wall-legend.js).
 */

import {
  NEUTRAL_COLOUR, element, httpUrlOrNull, normalizeTag, outboundLink, readableTextColour, safeColour,
} from "./safe.js";

const chatColours = new Map(); // tag -> colour from the server's chat list
let showImages = true; // false with ?images=off: no avatars, no post images, nothing loaded from other hosts

/** Whether cards show images (avatars and post images) from now on. */
export function setImages(on) {
  showImages = Boolean(on);
}

/** Use these chats' colours for badges from now on (a Map of tag -> {colour}). */
export function setChatColours(chats) {
  chatColours.clear();
  for (const [tag, chat] of chats) chatColours.set(tag, safeColour(chat && chat.colour));
}

/** A post's Q/A marker as {role: "Q"|"A", n}, or null when it has none or a malformed one. */
export function qaOf(post) {
  const qa = post && post.qa;
  if (!qa || typeof qa !== "object" || (qa.role !== "Q" && qa.role !== "A")) return null;
  const n = Number(qa.n);
  return Number.isInteger(n) && n >= 0 && n < 1000 ? { role: qa.role, n } : null;
}

/** First user-perceived character of a name, upper-cased, for the avatar fallback. */
export function initialOf(name) {
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
export function describeTime(createdMs, nowMs) {
  const age = nowMs - createdMs;
  if (Math.abs(age) < 45_000) return "just now";
  if (age > 0 && age < 3_600_000) return `${Math.max(1, Math.round(age / 60_000))} min ago`;
  const then = new Date(createdMs);
  const sameDay = then.toDateString() === new Date(nowMs).toDateString();
  return sameDay ? clockFormat.format(then) : dateClockFormat.format(then);
}

export function isPost(item) {
  return item !== null && typeof item === "object" && typeof item.id === "string" && item.id !== ""
    && item.author !== null && typeof item.author === "object";
}

export function colourBadge(badge, tag) {
  const colour = chatColours.get(tag) || NEUTRAL_COLOUR;
  badge.style.backgroundColor = colour;
  badge.style.color = readableTextColour(colour);
}

export function buildBadge(tag) {
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
  const src = showImages ? httpUrlOrNull(author.avatar) : null;
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
  const link = outboundLink(href, "post-link");
  link.append(time);
  return link;
}

const MAX_IMAGES = 4;

/**
 * The images a post shows, as {src, alt, width, height}: its image attachments (the preview when
 * there is one) and the previews of its videos and GIFs, only http(s); a post from before
 * attachments shows its first `media` URL. Width and height keep a sane aspect ratio (4:3 unknown).
 */
export function imagesOf(post) {
  const found = [];
  const attachments = Array.isArray(post.attachments) ? post.attachments
    : (Array.isArray(post.media) ? post.media.slice(0, 1) : []).map((url) => ({ kind: "image", url }));
  for (const item of attachments) {
    if (!item || typeof item !== "object" || found.length >= MAX_IMAGES) continue;
    const still = item.kind === "video" || item.kind === "gifv";
    const src = httpUrlOrNull(item.preview) || (item.kind === "image" ? httpUrlOrNull(item.url) : null);
    if (!src || (!still && item.kind !== "image")) continue;
    const width = Number(item.width), height = Number(item.height);
    const known = width > 0 && height > 0 && Number.isFinite(width / height);
    const ratio = known ? Math.min(2.5, Math.max(0.4, width / height)) : 4 / 3;
    found.push({ src, alt: typeof item.alt === "string" ? item.alt.trim() : "", width: Math.round(ratio * 300), height: 300 });
  }
  return found;
}

/** A row of a post's images, each in a box reserved from its size before it loads, with an ALT badge when described. */
function buildImages(post) {
  const images = showImages ? imagesOf(post) : [];
  if (!images.length) return null;
  const row = element("div", "post-images");
  for (const { src, alt, width, height } of images) {
    const frame = element("span", "post-image");
    const img = element("img", "post-media");
    img.setAttribute("alt", alt);
    img.setAttribute("width", String(width));
    img.setAttribute("height", String(height));
    img.style.aspectRatio = `${width} / ${height}`; // the reserved box, even when the file's own shape differs
    img.setAttribute("loading", "lazy");
    img.setAttribute("decoding", "async");
    img.setAttribute("referrerpolicy", "no-referrer");
    img.addEventListener("error", () => frame.remove(), { once: true });
    img.setAttribute("src", src);
    frame.append(img);
    if (alt) {
      const badge = element("span", "alt-badge", "ALT");
      badge.setAttribute("aria-hidden", "true"); // the image's alt already says it
      badge.setAttribute("title", alt);
      frame.append(badge);
    }
    row.append(frame);
  }
  return row;
}

/** The line under a quote post naming the post it quotes (a link when its URL is http(s)), or null. */
export function buildQuote(post) {
  if (typeof post.quote_of !== "string" || post.quote_of === "") return null;
  const href = httpUrlOrNull(post.quote_url);
  const line = element("p", "post-quote", "\u21AA quoting ");
  const target = element("bdi", "", href ? href.replace(/^https?:\/\//, "") : "a post");
  if (!href) {
    line.append(target);
    return line;
  }
  const link = outboundLink(href, "post-quote-link");
  link.append(target);
  line.append(link);
  return line;
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
    if (href) parts.push(outboundLink(href, "post-also-on", `also on ${String(other.source || "another network")}`));
  }
  if (!parts.length) return null;
  const line = element("footer", "post-extras");
  line.append(...parts);
  return line;
}

/** A post's card (an <article>): badges, Q/A label, author, time (a link to it), text, quote line, images, avatar. */
export function buildCard(post, arriving) {
  const author = post.author;
  const handle = String(author.handle || "").replace(/^@/, "");
  const card = element("article", arriving ? "post post-arriving" : "post");
  card.dataset.id = post.id;

  const head = element("header", "post-head");
  const badges = element("span", "badges");
  for (const tag of Array.isArray(post.chats) ? post.chats : []) badges.append(buildBadge(normalizeTag(tag)));
  head.append(badges);
  const qa = qaOf(post);
  if (qa) {
    const label = element("span", `qa qa-${qa.role.toLowerCase()}`, `${qa.role}${qa.n}`);
    label.setAttribute("title", qa.role === "Q" ? `Question ${qa.n}` : `Answer to question ${qa.n}`);
    head.append(label);
  }
  // <bdi> isolates each name: a right-to-left override inside one cannot reorder its neighbours.
  const name = element("bdi", "author-name", String(author.name || handle));
  const handleEl = element("bdi", "author-handle", handle ? `@${handle}` : "");
  head.append(name, handleEl, buildTime(post));

  // The text straight in its paragraph, whose dir="auto" takes the direction from its first letters (and isolates it):
  // inside a <bdi> they would not count, and a Hebrew post would be laid out left to right.
  const text = element("p", "post-text", String(post.text ?? ""));
  text.setAttribute("dir", "auto");
  if (typeof post.lang === "string" && /^[a-z]{2,3}(-[a-z0-9]{1,8})*$/i.test(post.lang)) {
    text.setAttribute("lang", post.lang);
  }

  const body = element("div", "post-body");
  body.append(head, text);
  const quote = buildQuote(post);
  if (quote) body.append(quote);
  const images = buildImages(post);
  if (images) body.append(images);
  const extras = buildExtras(post);
  if (extras) body.append(extras);
  card.append(buildAvatar(author), body);
  return card;
}
