/*
 * glide.js: cards that move without shifting the layout, and a bounded live announcer (the wall's).
 *
 * `Stack` keeps the cards of a list absolutely positioned at the top of it and places each with
 * the CSS `translate` property, one under the other: a new card on top moves the others by a
 * transform (which CSS can animate and which is no layout shift), never by pushing them down. A
 * ResizeObserver re-places them whenever a card's height changes (an image that failed, a font,
 * a narrower window). `Announcer` sums new posts into one polite sentence ("3 new posts from
 * #smbiz, #edchat") at most once every `everyMs`, for screen readers. The widget (embed.js)
 * keeps its own copy of both, since it must stay one file. Not here: what a card holds.
 */

/** Absolutely placed cards in `list`, its CSS row-gap apart, in DOM order (newest first). */
export class Stack {
  constructor(list) {
    this.list = list;
    this.observed = new Set();
    this.resized = new ResizeObserver(() => this.place());
  }

  /** Place every card (call after adding or removing some); new cards appear in place, the others glide. */
  place() {
    const cards = [...this.list.children];
    for (const gone of this.observed) {
      if (gone.parentNode === this.list) continue;
      this.resized.unobserve(gone); // a card removed from the wall is forgotten, not kept alive
      this.observed.delete(gone);
    }
    const fresh = cards.filter((card) => !this.observed.has(card));
    for (const card of fresh) {
      card.classList.add("post-unplaced"); // no transition from where it never was
      this.observed.add(card);
      this.resized.observe(card);
    }
    const gap = parseFloat(getComputedStyle(this.list).rowGap) || 0;
    const heights = cards.map((card) => card.offsetHeight);
    let y = 0;
    cards.forEach((card, i) => {
      card.style.translate = `0 ${y}px`;
      y += heights[i] + gap;
    });
    this.list.style.height = `${Math.max(0, y - gap)}px`;
    if (!fresh.length) return;
    void this.list.offsetHeight; // a style flush: new cards take their place with no transition,
    for (const card of fresh) card.classList.remove("post-unplaced"); // and glide from then on
  }
}

/** Counts new posts per chat and says so in `region` at most once every `everyMs`; the clock is passed in. */
export class Announcer {
  constructor(region, everyMs, setTimer = (fn, ms) => window.setTimeout(fn, ms), settleMs = 800) {
    this.region = region;
    this.everyMs = everyMs;
    this.settleMs = settleMs;
    this.setTimer = setTimer;
    this.count = 0;
    this.chats = new Set();
    this.lastAt = -Infinity;
    this.timer = 0;
  }

  /**
   * Note posts shown at clock time `now` (ms). The sentence comes `settleMs` later (so a burst is one
   * sentence), and never sooner than `everyMs` after the one before.
   */
  add(posts, now) {
    for (const post of posts) {
      this.count += 1;
      for (const tag of Array.isArray(post.chats) ? post.chats : []) this.chats.add(`#${String(tag).toLowerCase()}`);
    }
    if (!this.count || this.timer) return;
    const wait = Math.max(this.settleMs, this.lastAt + this.everyMs - now);
    this.timer = this.setTimer(() => this.say(now + wait), wait);
  }

  say(now) {
    this.timer = 0;
    if (!this.count) return;
    const from = this.chats.size ? ` from ${[...this.chats].slice(0, 4).join(", ")}` : "";
    this.region.textContent = `${this.count} new ${this.count === 1 ? "post" : "posts"}${from}`;
    this.count = 0;
    this.chats.clear();
    this.lastAt = now;
  }
}
