/*
 * mod-rules.js: the console's blocklist form and approval-mode switch.
 *
 * The rules object (docs/moderation.md) is loaded with GET /api/mod/rules and replaced
 * as a whole with PUT /api/mod/rules. Lists are edited one entry a line. A refused save
 * keeps the moderator's edits and shows the server's reason next to the form; while there
 * are unsaved edits, rules changed by someone else do not overwrite the form (the switch
 * always shows the rules in force).
 */

import { api } from "./mod-api.js";
import { chatBadge, isBusy, setBusy } from "./mod-dom.js";
import { element, normalizeTag } from "./safe.js";

const $ = (id) => document.getElementById(id);

function lines(textarea) {
  return textarea.value.split("\n").map((line) => line.trim()).filter(Boolean);
}

function listOf(value) {
  return Array.isArray(value) ? value.map(String) : [];
}

export class RulesPanel {
  /** ``context`` gives session(), chats (tag -> {title, colour}), and failed(error) for a rejected token. */
  constructor(context) {
    this.context = context;
    this.rules = null; // the rules in force, as the server last gave them
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

  /** Write the rules into the form; one pair of lists per chat the server knows or the rules name. */
  fill() {
    const rules = this.rules || {};
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
      const saved = await api(this.context.session(), "PUT", "/api/mod/rules", this.fromForm());
      this.dirty = false;
      this.apply(saved);
      this.say("Saved: the new rules apply to the next posts.");
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
