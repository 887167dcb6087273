/*
 * safe.js: the rules every same-origin page (the wall, the console) follows with untrusted
 * network data, in one place: URLs only when absolute http(s), chat colours only when hex,
 * text only through textContent, links that open elsewhere and pass nothing on. The widget
 * (embed.js) keeps its own copy, since it must stay one self-contained file.
 */

export const NEUTRAL_COLOUR = "#607080"; // badge colour of a chat the server did not describe

/** The URL as a string if it is absolute http(s), else null (javascript:, data:, relative...). */
export function httpUrlOrNull(value) {
  if (typeof value !== "string" || value === "") return null;
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

/** A chat colour from the server as '#rgb' / '#rrggbb', or the neutral colour if it is anything else. */
export function safeColour(value) {
  return typeof value === "string" && /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(value) ? value : NEUTRAL_COLOUR;
}

/** Black or white, whichever contrasts more with the hex background (WCAG relative luminance). */
export function readableTextColour(hex) {
  let digits = hex.slice(1);
  if (digits.length === 3) digits = [...digits].map((d) => d + d).join("");
  const linear = [0, 2, 4].map((i) => {
    const c = parseInt(digits.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2];
  return (luminance + 0.05) / 0.05 >= 1.05 / (luminance + 0.05) ? "#000000" : "#ffffff";
}

/** Feed ids ("<ms>-<seq>") compared as numbers: negative when `a` is older than `b`; anything else counts as 0-0. */
export function compareIds(a, b) {
  const parts = (id) => {
    const match = /^(\d{1,20})(?:-(\d{1,20}))?$/.exec(String(id));
    return match ? [BigInt(match[1]), BigInt(match[2] || 0)] : [0n, 0n];
  };
  const [aMs, aSeq] = parts(a);
  const [bMs, bSeq] = parts(b);
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq < bSeq ? -1 : aSeq > bSeq ? 1 : 0;
}

/** A chat tag as the server writes it: trimmed, no leading '#', lower case. */
export function normalizeTag(tag) {
  return String(tag).trim().replace(/^#+/, "").toLowerCase();
}

/** A new element with an optional class and text (set as text, never parsed as markup). */
export function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/** An <a> to an http(s) URL that opens elsewhere and passes no referrer or ranking to it. */
export function outboundLink(href, className, text) {
  const link = element("a", className, text);
  link.setAttribute("href", href);
  link.setAttribute("rel", "noopener nofollow noreferrer");
  link.setAttribute("target", "_blank");
  return link;
}
