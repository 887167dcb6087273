/*
 * wall-legend.js: the wall's side panel, one row per chat in the room.
 *
 * Each row: the chat's badge and title, "live now" or its next slot (from /api/chats), its
 * live posts per minute with a sparkline of the last ten minutes (from the server's `stats`
 * frames), "+N more from #chat" when the paced profile left posts of it out, and the chat's
 * current question (the latest "Q<n>" post). Above the list, "Up next". While the wall is cut off from the
 * stream (setStale), the rates and sparklines are the last ones known: they are dimmed, a "Rates paused" note
 * shows beside the title, and each says "not live" to screen readers, until the stream is back. Untrusted text goes
 * through textContent only. Not here: the posts themselves (wall-render.js, wall.js).
 *
 * Live chats come first. When the rows do not all fit, the live ones stay and the others are shown
 * in pages that take turns every PAGE_MS ("7–12 of 25" beside the title), so every chat is seen in
 * time and a live one is never out of sight (unless the live ones alone do not fit: then they take
 * turns too, first).
 */

import { buildSparkline } from "./sparkline.js";
import { buildBadge, qaOf } from "./wall-render.js";
import { element, normalizeTag, readableTextColour, safeColour } from "./safe.js";

const SPARK_WINDOW_MS = 10 * 60_000; // the sparkline covers the last ten minutes
const MAX_SAMPLES = 200; // a stats frame every 5 s fills ten minutes with 120
const QUESTIONS_KEPT = 20; // per chat, so hiding the current question brings back the one before
const PAGE_MS = 8000; // how long one page of chats stays up when they do not all fit

export class Legend {
  /**
   * A legend drawn into the <ul> `list`, showing only chats in `filter` (a Set, or null for all); `pager`
   * says which rows are up when they take turns, `staleNote` that the rates are paused. The rows fit in `list`'s
   * parent (its overflow is hidden).
   */
  constructor(list, filter, pager, staleNote) {
    this.list = list;
    this.filter = filter;
    this.pager = pager;
    this.staleNote = staleNote;
    this.stale = false; // the stream is down: the rates shown are the last known, not live
    this.pinned = 0; // the first rows (live chats) shown on every page
    this.pages = []; // [first, end) indices of the other rows on each page
    this.page = 0; // the page up now; kept across redraws
    window.setInterval(() => this.turnPage(), PAGE_MS);
    new ResizeObserver(() => this.paginate()).observe(list.parentElement);
    this.chats = new Map(); // tag -> {tag, title, colour}
    this.slots = new Map(); // tag -> {live, next_start, next_end}
    this.rates = new Map(); // tag -> {perMinute, more, samples: [{t, v}]}
    // tag -> [{id, n, text}] in feed order, the last QUESTIONS_KEPT questions seen in that chat: the last one is
    // current, and the one before takes its place when a moderator hides it
    this.questions = new Map();
  }

  /** Take the chat list (tag, title, colour) and, when given, the directory's slots; redraws. */
  setChats(chats, withSlots) {
    if (!Array.isArray(chats)) return;
    this.chats = new Map();
    for (const chat of chats) {
      if (chat && typeof chat === "object" && chat.tag) this.chats.set(normalizeTag(chat.tag), chat);
    }
    if (withSlots) this.slots = new Map(this.chats);
    this.render();
  }

  /** Take a `stats` frame's chats ({tag: {per_minute, total, more}}) seen at `now` (ms); redraws. */
  takeStats(chats, now) {
    if (!chats || typeof chats !== "object") return;
    for (const [rawTag, figures] of Object.entries(chats)) {
      if (!figures || typeof figures !== "object") continue;
      const tag = normalizeTag(rawTag);
      const perMinute = Math.max(0, Number(figures.per_minute) || 0);
      const entry = this.rates.get(tag) || { perMinute: 0, more: 0, samples: [] };
      entry.perMinute = perMinute;
      entry.more = Math.max(0, Math.floor(Number(figures.more) || 0));
      entry.samples.push({ t: now, v: perMinute });
      while (entry.samples.length > MAX_SAMPLES || entry.samples[0].t < now - SPARK_WINDOW_MS) entry.samples.shift();
      this.rates.set(tag, entry);
    }
    this.render(now);
  }

  /** Mark the rates and sparklines as the last known (the stream is down), or live again; redraws on a change. */
  setStale(stale) {
    if (stale === this.stale) return;
    this.stale = stale;
    this.render();
  }

  /** Note the questions among posts given in feed order; true when a chat's current question changed. */
  takePosts(posts) {
    let changed = false;
    for (const post of posts) {
      const qa = qaOf(post);
      if (!qa || qa.role !== "Q") continue;
      for (const tag of Array.isArray(post.chats) ? post.chats : []) {
        const seen = this.questions.get(normalizeTag(tag)) || [];
        const question = { id: post.id, n: qa.n, text: String(post.text ?? "") };
        const at = seen.findIndex((q) => q.id === post.id);
        if (at >= 0) seen[at] = question; // an edit keeps its place in the order
        else seen.push(question);
        if (seen.length > QUESTIONS_KEPT) seen.shift();
        this.questions.set(normalizeTag(tag), seen);
        changed = true;
      }
    }
    return changed;
  }

  /** Forget questions whose posts were retracted (the latest one left becomes current); true when one was. */
  forget(ids) {
    let changed = false;
    for (const [tag, seen] of this.questions) {
      const left = seen.filter((q) => !ids.has(q.id));
      if (left.length === seen.length) continue;
      if (left.length) this.questions.set(tag, left);
      else this.questions.delete(tag);
      changed = true;
    }
    return changed;
  }

  /** Redraw every row, live chats first (dozens of chats, a few times a minute: cheaper to rebuild than to patch). */
  render(now = Date.now()) {
    const live = [];
    const others = [];
    for (const [tag, chat] of this.chats) {
      if (this.filter && !this.filter.has(tag)) continue;
      (this.slots.get(tag)?.live === true ? live : others).push(this.row(tag, chat, now));
    }
    this.list.replaceChildren(...live, ...others);
    if (this.staleNote) this.staleNote.hidden = !(this.stale && this.rates.size);
    this.showUpNext();
    this.liveCount = live.length;
    this.paginate();
  }

  /** Split the rows into pages that fit (measured, so a long question or a narrow screen is taken into account). */
  paginate() {
    const rows = [...this.list.children];
    const limit = this.list.parentElement.getBoundingClientRect().bottom;
    const fits = (row) => row.getBoundingClientRect().bottom <= limit + 0.5;
    for (const row of rows) row.hidden = true;
    // The live chats stay on every page if they fit with at least one other row beside them.
    const live = rows.slice(0, this.liveCount || 0);
    for (const row of live) row.hidden = false;
    const next = rows[live.length];
    if (next) next.hidden = false;
    const keepLive = live.length > 0 && (next ? fits(next) : fits(live[live.length - 1]));
    if (next) next.hidden = true;
    this.pinned = keepLive ? live.length : 0;
    if (!keepLive) for (const row of live) row.hidden = true;

    this.pages = [];
    for (let first = this.pinned; first < rows.length; ) {
      let end = first;
      while (end < rows.length) {
        rows[end].hidden = false;
        if (end > first && !fits(rows[end])) break; // a page shows at least one row, even one too tall
        end += 1;
      }
      for (let i = first; i < end + 1 && i < rows.length; i += 1) rows[i].hidden = true;
      this.pages.push([first, end]);
      first = end;
    }
    if (!this.pages.length) this.pages.push([this.pinned, this.pinned]);
    this.page %= this.pages.length;
    this.showPage(false);
  }

  /** Show the current page (the live rows and that page's others) and say which rows are up. */
  showPage(turning) {
    const rows = [...this.list.children];
    const [first, end] = this.pages[this.page] || [0, rows.length];
    rows.forEach((row, i) => {
      const shown = i < this.pinned || (i >= first && i < end);
      row.hidden = !shown;
      row.classList.toggle("legend-turning", turning && shown && i >= this.pinned);
    });
    const paged = this.pages.length > 1;
    this.list.dataset.page = String(this.page);
    this.list.dataset.pages = String(this.pages.length);
    if (!this.pager) return;
    this.pager.hidden = !paged;
    this.pager.textContent = paged ? `${first === this.pinned ? 1 : first + 1}–${end} of ${rows.length}` : "";
  }

  /** The next page of chats, when they do not all fit. */
  turnPage() {
    if (this.pages.length < 2) return;
    this.page = (this.page + 1) % this.pages.length;
    this.showPage(true);
  }

  /** One chat: badge, rate and sparkline; its title and slot; "+N more"; its current question. */
  row(tag, chat, now) {
    const item = element("li", "legend-item");
    item.dataset.tag = tag;
    const head = element("div", "legend-head");
    head.append(buildBadge(tag));
    const rate = this.rates.get(tag);
    if (rate) {
      // rate and sparkline together at the right edge: they wrap as one, under a tag too long to share the line
      const figures = element("span", "legend-figures");
      const notLive = this.stale ? ", not live" : "";
      if (this.stale) figures.dataset.stale = "";
      figures.append(element("span", "legend-rate", `${rate.perMinute}/min`));
      if (this.stale) figures.append(element("span", "visually-hidden", " (last known, not live)"));
      const label = `posts per minute in #${tag}, last 10 minutes${notLive}`;
      const spark = buildSparkline(rate.samples, now, SPARK_WINDOW_MS, label);
      const colour = safeColour(chat.colour);
      spark.style.setProperty("--chat", colour);
      // a colour that wants white text on it is too dark to draw a line with on the dark theme: CSS draws it in --text
      if (readableTextColour(colour) === "#ffffff") spark.dataset.dark = "";
      figures.append(spark);
      head.append(figures);
    }
    const about = element("div", "legend-about");
    about.append(element("bdi", "legend-name", String(chat.title || tag)));
    const when = describeSlot(this.slots.get(tag), now);
    if (when) about.append(element("span", when.live ? "legend-when legend-live" : "legend-when", when.text));
    item.append(head, about);
    if (rate && rate.more > 0) item.append(element("span", "legend-more", `+${rate.more} more from #${tag}`));

    const question = this.questions.get(tag)?.at(-1);
    if (question) {
      const line = element("p", "legend-question");
      line.append(element("span", "qa qa-q", `Q${question.n}`));
      const shown = question.text.replace(/^\s*Q\s*\.?\s*\d+[a-z]?\s*[:.)\-\u2013\u2014]?\s*/i, "");
      const text = element("bdi", "legend-question-text", shown);
      text.setAttribute("dir", "auto");
      line.append(text);
      item.append(line);
    }
    return item;
  }

  /** "Up next: #tag, Mon 20:00" above the list: the chat whose slot starts soonest and is not live. */
  showUpNext() {
    let next = null;
    for (const [tag, slot] of this.slots) {
      if (this.filter && !this.filter.has(tag)) continue;
      const start = slot && slot.live !== true ? Date.parse(slot.next_start) : NaN;
      if (Number.isFinite(start) && (!next || start < next.start)) next = { tag, start };
    }
    let line = document.getElementById("up-next");
    if (!line) {
      line = element("p", "up-next");
      line.id = "up-next";
      this.list.before(line);
    }
    line.hidden = !next;
    if (next) line.textContent = `Up next: #${next.tag}, ${describeSlot(this.slots.get(next.tag)).text.replace(/^next /, "")}`;
  }
}

const DAY_MS = 24 * 3600_000;

/** Calendar days from `now` to `then` in the viewer's time zone (0: the same day). */
function daysAhead(then, now) {
  const midnight = (t) => new Date(t).setHours(0, 0, 0, 0);
  return Math.round((midnight(then) - midnight(now)) / DAY_MS); // rounded: a DST day is 23 or 25 hours
}

/**
 * "live now", "next Mon 20:00" in the coming six days, or with the date from a week off ("next Fri, Jan 1, 18:00"
 * for a monthly chat): in the viewer's time zone and locale; null without a slot.
 */
function describeSlot(slot, now = Date.now()) {
  if (!slot) return null;
  if (slot.live === true) return { live: true, text: "live now" };
  const start = Date.parse(slot.next_start);
  if (!Number.isFinite(start)) return null;
  // Within the week the weekday says which day; from the same weekday next week on it needs the date.
  const dated = daysAhead(start, now) >= 7;
  const day = new Date(start).toLocaleDateString(undefined, dated ? { weekday: "short", day: "numeric", month: "short" } : { weekday: "short" });
  const time = new Date(start).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
  return { live: false, text: `next ${day}${dated ? "," : ""} ${time}` };
}
