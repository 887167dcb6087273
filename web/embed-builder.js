/*
 * embed-builder.js: the embed-code generator at /embed/builder.
 *
 * The form's chats come from /api/chats and its profiles from the /ws hello frame; "show images"
 * unticked writes data-images="off" (images=off in the iframe's URL). Every change rebuilds the snippet (script tag or iframe, pointing at this server's origin) and,
 * a moment later, the live preview, which runs the real widget: a fresh <script src=/embed.js>
 * with the same data attributes, or an <iframe src=/embed?...>. The previous preview widget
 * is told to stop (the `chatmixer-stop` event) so its websocket closes. The Height field takes what the
 * widget takes; a height it would refuse is said so beside the field while the code uses the default.
 *
 * Chat tags and titles come from the network: they reach the DOM through textContent and
 * value only.
 */

const PREVIEW_DELAY_MS = 250;
const form = document.getElementById("options");
const chatsBox = document.getElementById("chats");
const profileSelect = document.getElementById("profile");
const snippetBox = document.getElementById("snippet");
const preview = document.getElementById("preview");
const copied = document.getElementById("copied");
const heightError = document.getElementById("height-error");
let previewTimer = 0;

// The heights embed.js takes (its parseOptions): a number of pixels or a length, one or two decimals allowed.
const HEIGHT = /^\d{1,4}(\.\d{1,2})?(px|em|rem|vh|%)?$/;
const DEFAULT_HEIGHT = "480px"; // the widget's own default, used while the field holds a height it would refuse

/** The form as widget options; a bad number or height falls back to the widget's defaults (heightRefused says so). */
function readOptions() {
  const chats = [...chatsBox.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value);
  const max = Number.parseInt(form.elements["max-items"].value, 10);
  const height = form.elements.height.value.trim();
  return {
    chats,
    profile: profileSelect.value,
    theme: form.elements.theme.value,
    maxItems: Number.isFinite(max) && max >= 1 ? Math.min(max, 100) : 20,
    height: HEIGHT.test(height) ? height : DEFAULT_HEIGHT,
    heightRefused: HEIGHT.test(height) ? null : height,
    images: form.elements.images.checked, // unticked: data-images="off" / images=off
    variant: form.elements.variant.value,
  };
}

function escapeAttribute(value) {
  return String(value).replace(/&/g, "&amp;").replace(/"/g, "&quot;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function frameUrl(options) {
  const url = new URL("/embed", window.location.origin);
  if (options.chats.length) url.searchParams.set("chats", options.chats.join(","));
  url.searchParams.set("profile", options.profile);
  url.searchParams.set("theme", options.theme);
  url.searchParams.set("max", String(options.maxItems));
  if (!options.images) url.searchParams.set("images", "off");
  return url.href;
}

function frameHeight(height) {
  return /^[\d.]+$/.test(height) ? `${height}px` : height;
}

/** The code to paste: uses this server's public origin, as the visitor's browser must reach it. */
function snippet(options) {
  if (options.variant === "iframe") {
    return `<iframe src="${escapeAttribute(frameUrl(options))}" title="Live chat feed" loading="lazy"\n`
      + `        style="border:0;width:100%;max-width:480px;height:${escapeAttribute(frameHeight(options.height))}"></iframe>`;
  }
  const attributes = [`src="${escapeAttribute(`${window.location.origin}/embed.js`)}"`];
  if (options.chats.length) attributes.push(`data-chats="${escapeAttribute(options.chats.join(","))}"`);
  attributes.push(
    `data-profile="${escapeAttribute(options.profile)}"`,
    `data-theme="${escapeAttribute(options.theme)}"`,
    `data-max-items="${options.maxItems}"`,
    `data-height="${escapeAttribute(options.height)}"`,
  );
  if (!options.images) attributes.push('data-images="off"');
  return `<script ${attributes.join("\n        ")} async></script>`;
}

function stopPreview() {
  for (const widget of preview.querySelectorAll("chatmixer-feed")) widget.dispatchEvent(new Event("chatmixer-stop"));
  preview.replaceChildren();
}

/** Run the real widget with these options, as the snippet would on another page. */
function showPreview(options) {
  stopPreview();
  preview.dataset.variant = options.variant;
  if (options.variant === "iframe") {
    const frame = document.createElement("iframe");
    frame.setAttribute("src", frameUrl(options));
    frame.setAttribute("title", "Preview of the live chat feed");
    frame.style.height = frameHeight(options.height);
    preview.append(frame);
    return;
  }
  const script = document.createElement("script");
  script.src = "/embed.js";
  if (options.chats.length) script.dataset.chats = options.chats.join(",");
  script.dataset.profile = options.profile;
  script.dataset.theme = options.theme;
  script.dataset.maxItems = String(options.maxItems);
  script.dataset.height = options.height;
  if (!options.images) script.dataset.images = "off";
  preview.append(script);
}

/** Say beside the Height field (and to a screen reader) when the code does not use the height typed there. */
function showHeightRefusal(refused) {
  const field = form.elements.height;
  if (refused === null) {
    field.removeAttribute("aria-invalid");
    heightError.textContent = "";
    return;
  }
  field.setAttribute("aria-invalid", "true");
  heightError.textContent = refused
    ? `The widget cannot use “${refused}”: give a number (up to 2 decimals) in px, em, rem, vh or %, or none for `
      + `pixels. The code uses ${DEFAULT_HEIGHT} until then.`
    : `A height is needed; the code uses ${DEFAULT_HEIGHT} until then.`;
}

function refresh() {
  const options = readOptions();
  snippetBox.value = snippet(options);
  showHeightRefusal(options.heightRefused);
  copied.textContent = "";
  window.clearTimeout(previewTimer);
  previewTimer = window.setTimeout(() => showPreview(options), PREVIEW_DELAY_MS);
}

async function copySnippet() {
  try {
    await navigator.clipboard.writeText(snippetBox.value);
    copied.textContent = "Copied.";
  } catch {
    snippetBox.focus();
    snippetBox.select();
    copied.textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
}

async function loadChats() {
  try {
    const response = await fetch("/api/chats", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const directory = await response.json();
    const boxes = [];
    for (const chat of Array.isArray(directory.chats) ? directory.chats : []) {
      if (!chat || typeof chat.tag !== "string" || !/^[\p{L}\p{N}_]{1,64}$/u.test(chat.tag)) continue;
      const label = document.createElement("label");
      label.className = "choice";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = "chats";
      box.value = chat.tag;
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      if (/^#[0-9a-f]{3,6}$/i.test(String(chat.colour))) swatch.style.backgroundColor = chat.colour;
      label.append(box, swatch, `#${chat.tag}`);
      if (chat.title) label.title = String(chat.title);
      boxes.push(label);
    }
    chatsBox.replaceChildren(...boxes);
    if (directory.event && directory.event.name) {
      document.getElementById("event").textContent = `Put the live feed of ${directory.event.name} on any web page.`;
    }
  } catch (error) {
    chatsBox.textContent = `Could not load the chats (${error.message}); the widget shows every chat.`;
  }
}

/** The profiles this server offers, from the websocket's hello frame (then the socket is closed). */
function loadProfiles() {
  return new Promise((resolve) => {
    const url = new URL("/ws?chats=-", window.location.href);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(url);
    const done = () => {
      socket.close();
      resolve();
    };
    socket.addEventListener("message", (event) => {
      try {
        const hello = JSON.parse(event.data);
        if (hello.type === "hello" && Array.isArray(hello.profiles) && hello.profiles.length) {
          const current = profileSelect.value;
          const options = hello.profiles.filter((name) => /^[\w-]{1,40}$/.test(String(name))).map((name) => {
            const option = document.createElement("option");
            option.value = option.textContent = String(name);
            return option;
          });
          profileSelect.replaceChildren(...options);
          if (hello.profiles.includes(current)) profileSelect.value = current;
        }
      } catch {
        /* not a hello we understand: keep the defaults */
      }
      done();
    });
    socket.addEventListener("error", done);
  });
}

form.addEventListener("input", refresh);
form.addEventListener("change", refresh);
form.addEventListener("submit", (event) => event.preventDefault());
document.getElementById("copy").addEventListener("click", copySnippet);
await Promise.all([loadChats(), loadProfiles()]);
refresh();
