/*
 * mod-api.js: the moderator's session and the moderation API (/api/mod/..., docs/moderation.md).
 *
 * The token and the moderator's name are kept in sessionStorage: they last as long as the
 * tab, are never written to disk for later visits, and are not shared with other tabs.
 * Every call sends `Authorization: Bearer <token>` and `X-Moderator: <name>`; a failed call
 * throws an ApiError carrying the HTTP status and the server's own text (the reason).
 */

const STORAGE_KEY = "chatmixer.mod.session";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** The saved {token, name}, or null. */
export function loadSession() {
  try {
    const saved = JSON.parse(window.sessionStorage.getItem(STORAGE_KEY) || "null");
    if (saved && typeof saved.token === "string" && saved.token && typeof saved.name === "string") return saved;
  } catch {
    // a damaged entry is as good as none
  }
  return null;
}

export function saveSession(session) {
  window.sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ token: session.token, name: session.name }));
}

export function clearSession() {
  window.sessionStorage.removeItem(STORAGE_KEY);
}

/**
 * The moderator's name as typed, without control or format characters, at most 80 characters;
 * null when nothing is left. It travels percent-encoded (see `api`), so "Zoë" stays "Zoë".
 */
export function moderatorName(name) {
  const plain = String(name).normalize("NFC").replace(/[\p{Cc}\p{Cf}]/gu, "").trim();
  return plain ? Array.from(plain).slice(0, 80).join("") : null;
}

/** Call the API: JSON in and out; throws ApiError (status 0 when the server could not be reached). */
export async function api(session, method, path, body) {
  return (await apiTagged(session, method, path, body)).data;
}

/** As `api`, with extra request headers (`If-Match`); gives {data, etag}: the answer and its ETag header (or null). */
export async function apiTagged(session, method, path, body, extra = {}) {
  const headers = {
    ...extra,
    Accept: "application/json",
    Authorization: `Bearer ${session.token}`,
    "X-Moderator": encodeURIComponent(session.name), // a header carries ASCII only: UTF-8, percent-encoded
  };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "the server cannot be reached");
  }
  const text = await response.text();
  if (!response.ok) throw new ApiError(response.status, describeFailure(response.status, text));
  try {
    return { data: text ? JSON.parse(text) : {}, etag: response.headers.get("ETag") };
  } catch {
    throw new ApiError(response.status, "the server's answer is not JSON");
  }
}

function describeFailure(status, text) {
  if (status === 401) return "wrong token";
  if (status === 404 && text.startsWith("moderation is off")) {
    return "moderation is off on this server: set [moderation] token";
  }
  const reason = text.replace(/^\d{3}: /, "").trim().slice(0, 500);
  return reason || `HTTP ${status}`;
}
