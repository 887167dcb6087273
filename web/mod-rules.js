/*
 * mod-rules.js: the console's blocklist form and approval-mode switch.
 *
 * The rules object (docs/moderation.md) is loaded with GET /api/mod/rules and replaced
 * as a whole with PUT /api/mod/rules. Lists are edited one entry a line. A refused save
 * keeps the moderator's edits and shows the server's reason next to the form; while there
 * are unsaved edits, rules changed by someone else do not overwrite the form (the switch
 * always shows the rules in force). A save is a PUT with `If-Match` on the rules just read: when
 * someone changed them since the form was filled, the moderator's own changes (what was added,
 * removed or switched in the form) are made to the rules in force instead, so no one's edit is undone.
 */

import { api, apiTagged } from "./mod-api.js";
import { chatBadge, isBusy, setBusy } from "./mod-dom.js";
import { element, normalizeTag } from "./safe.js";

const $ = (id) => document.getElementById(id);

function lines(textarea) {
  return textarea.value.split("\n").map((line) => line.trim()).filter(Boolean);
}

function listOf(value) {
  return Array.isArray(value) ? value.map(String) : [];
}

/** ``theirs`` with the entries ``mine`` removed from ``base`` taken out and those it added put in. */
function mergeList(base, mine, theirs) {
  const before = new Set(listOf(base));
  const after = new Set(listOf(mine));
  const merged = listOf(theirs).filter((entry) => after.has(entry) || !before.has(entry));
  for (const entry of after) if (!before.has(entry) && !merged.includes(entry)) merged.push(entry);
  return merged;
}

function chatsOf(rules) {
  return rules && rules.chats && typeof rules.chats === "object" ? rules.chats : {};
}

/** The moderator's changes (``base`` -> ``mine``) made to the rules in force (``theirs``): a three-way merge. */
export function mergeRules(base, mine, theirs) {
  const chats = {};
  const tags = new Set([base, mine, theirs].flatMap((rules) => Object.keys(chatsOf(rules))));
  for (const tag of tags) {
    const [b, m, t] = [base, mine, theirs].map((rules) => chatsOf(rules)[tag] || {});
    const words = mergeList(b.words, m.words, t.words);
    const accounts = mergeList(b.accounts, m.accounts, t.accounts);
    if (words.length || accounts.length) chats[tag] = { words, accounts };
  }
  return {
    words: mergeList(base.words, mine.words, theirs.words),
    accounts: mergeList(base.accounts, mine.accounts, theirs.accounts),
    chats,
    profanity: mine.profanity !== (base.profanity === true) ? mine.profanity : theirs.profanity === true,
    profanity_allow: mergeList(base.profanity_allow, mine.profanity_allow, theirs.profanity_allow),
    approval: theirs.approval === true,
  };
}

export class RulesPanel {
  /** ``context`` gives session(), chats (tag -> {title, colour}), and failed(error) for a rejected token. */
  constructor(context) {
    this.context = context;
    this.rules = null; // the rules in force, as the server last gave them
    this.base = null; // the rules the form was filled from (a save merges the changes made to them since)
    this.dirty = false;
    this.form = $("rules-form");
    this.chatBox = $("rules-chats");
    this.status = $("rules-status");
    this.error = $("rules-error");
    this.switchButton = $("approval-switch");
    this.switchStatus = $("approval-status");
    this.form.addEventListener("input", () => this.markDirty());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    $("rules-revert").addEventListener("click", () => {
      this.dirty = false;
      this.fill();
      this.say("Changes discarded.");
    });
    this.switchButton.addEventListener("click", () => this.toggleApproval());
  }

  markDirty() {
    this.dirty = true;
    this.error.textContent = "";
    this.say("Unsaved changes.");
  }

  say(text) {
    this.status.textContent = text;
  }

  /** Take the rules in force: the switch follows at once, the form unless it holds unsaved edits. */
  apply(rules) {
    if (!rules || typeof rules !== "object") return;
    this.rules = rules;
    const on = rules.approval === true;
    this.switchButton.setAttribute("aria-checked", String(on));
    this.switchButton.dataset.on = String(on);
    if (!this.dirty) this.fill();
  }

  async reload() {
    this.apply(await api(this.context.session(), "GET", "/api/mod/rules"));
  }

  /** Fill the form with the rules in force: the base a save's merge starts from. */
  fill() {
    this.base = this.rules;
    this.write(this.rules || {});
  }

  /** Write rules into the form; one pair of lists per chat the server knows or the rules name. */
  write(rules) {
    $("rules-words").value = listOf(rules.words).join("\n");
    $("rules-accounts").value = listOf(rules.accounts).join("\n");
    $("rules-allow").value = listOf(rules.profanity_allow).join("\n");
    $("rules-profanity").checked = rules.profanity === true;
    const perChat = rules.chats && typeof rules.chats === "object" ? rules.chats : {};
    const tags = [...new Set([...this.context.chats.keys(), ...Object.keys(perChat).map(normalizeTag)])];
    this.chatBox.replaceChildren(...tags.map((tag) => this.chatFields(tag, perChat[tag] || {})));
  }

  chatFields(tag, lists) {
    const words = listOf(lists.words);
    const accounts = listOf(lists.accounts);
    const box = element("details", "chat-rules");
    box.dataset.tag = tag;
    box.open = words.length + accounts.length > 0;
    const summary = element("summary");
    summary.append(chatBadge(tag, this.context.chats));
    const title = this.context.chats.get(tag)?.title;
    if (title) summary.append(" ", element("span", "chat-title", String(title)));
    const count = words.length + accounts.length;
    if (count) summary.append(" ", element("span", "count", `(${count})`));
    box.append(summary);
    for (const [kind, values, label] of [["words", words, "Words"], ["accounts", accounts, "Accounts"]]) {
      const id = `rules-chat-${kind}-${tag}`;
      const labelEl = element("label", "", `${label} blocked in #${tag}`);
      labelEl.setAttribute("for", id);
      const area = element("textarea");
      area.id = id;
      area.rows = 2;
      area.spellcheck = false;
      area.dataset.kind = kind;
      area.value = values.join("\n");
      box.append(labelEl, area);
    }
    return box;
  }

  /** The rules the form describes (approval as it is in force: the switch sets that). */
  fromForm() {
    const chats = {};
    for (const box of this.chatBox.querySelectorAll(".chat-rules")) {
      const words = lines(box.querySelector('textarea[data-kind="words"]'));
      const accounts = lines(box.querySelector('textarea[data-kind="accounts"]'));
      if (words.length || accounts.length) chats[box.dataset.tag] = { words, accounts };
    }
    return {
      words: lines($("rules-words")),
      accounts: lines($("rules-accounts")),
      chats,
      profanity: $("rules-profanity").checked,
      profanity_allow: lines($("rules-allow")),
      approval: this.rules?.approval === true,
    };
  }

  async save() {
    const button = $("rules-save");
    if (isBusy(button)) return;
    setBusy(button, true);
    this.error.textContent = "";
    this.say("Saving…");
    try {
      const session = this.context.session();
      let mine = this.fromForm();
      let merged = false;
      for (let tries = 1; ; tries++) {
        const { data: theirs, etag } = await apiTagged(session, "GET", "/api/mod/rules");
        if (this.base && JSON.stringify(this.base) !== JSON.stringify(theirs)) {
          mine = mergeRules(this.base, mine, theirs); // changed by someone else since the form was filled
          merged = true;
          this.write(mine); // (should the server refuse it, the form holds what was merged, not the old base)
        }
        this.base = theirs;
        try {
          const { data: saved } = await apiTagged(session, "PUT", "/api/mod/rules", mine, { "If-Match": etag });
          this.dirty = false;
          this.apply(saved);
          break;
        } catch (error) {
          if (error.status !== 412 || tries >= 5) throw error; // changed again between the read and the write
        }
      }
      this.say(
        merged
          ? "Saved, with the changes another moderator made meanwhile: the new rules apply to the next posts."
          : "Saved: the new rules apply to the next posts.",
      );
    } catch (error) {
      this.say("Not saved: your edits are kept.");
      this.error.textContent = error.message;
      this.error.scrollIntoView({ block: "nearest" });
      this.context.failed(error);
    } finally {
      setBusy(button, false);
    }
  }

  async toggleApproval() {
    if (isBusy(this.switchButton)) return;
    const on = this.switchButton.getAttribute("aria-checked") !== "true";
    setBusy(this.switchButton, true);
    this.switchStatus.dataset.state = "pending";
    this.switchStatus.textContent = on ? "Turning on…" : "Turning off…";
    try {
      this.apply(await api(this.context.session(), "POST", "/api/mod/approval", { on }));
      this.switchStatus.dataset.state = "done";
      this.switchStatus.textContent = on ? "New posts wait for approval" : "Posts go straight to the walls";
    } catch (error) {
      this.switchStatus.dataset.state = "error";
      this.switchStatus.textContent = `Approval mode: ${error.message}`;
      this.context.failed(error);
    } finally {
      setBusy(this.switchButton, false);
    }
  }
}
