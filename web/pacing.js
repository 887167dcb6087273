/*
 * pacing.js: the wall's pacing, pure logic with the clock passed in (no timers, no DOM).
 *
 * Live posts queue here and are released one at a time, at least `spacingMs` apart, so a
 * card is pushed off the wall no sooner than (cards that fit) x spacing after it appeared:
 * that is how every post gets its minimum time on screen. The queue is bounded: past
 * `maxQueue` the oldest waiting posts are dropped and counted in `dropped`, so the wall can
 * say so instead of falling further and further behind; nothing is ever dropped silently.
 * Not here: deciding the spacing (wall.js measures how many cards fit) or drawing anything.
 */

export class Pacer {
  /** An empty queue that will hold at most `maxQueue` waiting posts. */
  constructor(maxQueue = 200) {
    this.maxQueue = Math.max(1, maxQueue);
    this.queue = [];
    this.lastRelease = -Infinity; // clock time of the last post released
    this.dropped = 0; // posts dropped (oldest first) because the queue was full
  }

  /** How many posts are waiting. */
  get size() {
    return this.queue.length;
  }

  /** Queue a post behind the others (feed order in, feed order out). */
  push(post) {
    if (this.queue.length >= this.maxQueue) {
      this.queue.shift();
      this.dropped += 1;
    }
    this.queue.push(post);
  }

  /**
   * At clock time `now`: `{post}` when the oldest waiting post may be shown now (it leaves the
   * queue), else `{post: null, waitMs}` with how long until one may (null when none waits).
   */
  next(now, spacingMs) {
    if (!this.queue.length) return { post: null, waitMs: null };
    const due = this.lastRelease + Math.max(0, spacingMs);
    if (now < due) return { post: null, waitMs: due - now };
    this.lastRelease = now;
    return { post: this.queue.shift(), waitMs: 0 };
  }

  /** Forget waiting posts whose id is in `ids` (retracted before they were shown). */
  remove(ids) {
    this.queue = this.queue.filter((post) => !ids.has(post.id));
  }

  /** Replace a waiting post by its newer version (same id); false when it is not waiting. */
  replace(post) {
    const at = this.queue.findIndex((waiting) => waiting.id === post.id);
    if (at < 0) return false;
    this.queue[at] = post;
    return true;
  }

  /** Drop everything waiting (the wall starts over from history); `dropped` is left as it was. */
  clear() {
    this.queue = [];
  }
}
