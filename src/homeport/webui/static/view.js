// One message → DOM. Assistant text goes through the escaping Markdown renderer; user text,
// tool-call arguments and errors only ever through textContent.
import { renderMarkdown } from "./markdown.js";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  node.append(...children.filter(Boolean));
  return node;
}

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = el("textarea", { text });
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
}

function addCodeCopyButtons(body) {
  for (const pre of body.querySelectorAll("pre")) {
    const code = pre.querySelector("code");
    pre.append(el("button", { type: "button", class: "copy-code", text: "copy", onclick: () => copyText(code.textContent) }));
  }
}

function meta(msg) {
  const parts = [];
  if (msg.model) parts.push(msg.model);
  if (msg.usage) parts.push(`${msg.usage.prompt_tokens} prompt + ${msg.usage.completion_tokens} completion tokens`);
  if (msg.tokensPerSecond) parts.push(`${msg.tokensPerSecond.toFixed(1)} tokens/s`);
  if (msg.finishReason) parts.push(`finish: ${msg.finishReason}`);
  if (msg.stopped) parts.push("stopped");
  return parts.length ? el("div", { class: "meta", text: parts.join(" · ") }) : null;
}

function toolCalls(msg) {
  return (msg.tool_calls || []).map((call) =>
    el("div", { class: "tool-call" },
      el("strong", { text: `tool call: ${call.function?.name || "?"}` }),
      el("pre", { text: call.function?.arguments || "" })));
}

/** handlers: {copy, edit, regenerate, play} (each optional); options: {streaming, last, canPlay}. */
export function renderMessage(msg, index, handlers, options = {}) {
  const node = el("div", { class: `msg ${msg.role}${options.streaming ? " streaming" : ""}`, "data-role": msg.role, "data-index": String(index) });
  node.append(el("div", { class: "role", text: msg.role }));
  if (msg.images?.length) {
    node.append(el("div", { class: "images" }, ...msg.images.map((src) => el("img", { src, alt: "image" }))));
  }
  if (msg.reasoning) {
    const details = el("details", { class: "reasoning" }, el("summary", { text: "Reasoning" }), el("div", { text: msg.reasoning }));
    details.open = Boolean(msg.reasoningOpen);
    details.addEventListener("toggle", () => { msg.reasoningOpen = details.open; });
    node.append(details);
  }
  const body = el("div", { class: "body" });
  if (msg.role === "assistant") {
    body.innerHTML = renderMarkdown(msg.content || "");  // escaped first, then a safe subset
    addCodeCopyButtons(body);
  } else {
    body.style.whiteSpace = "pre-wrap";
    body.textContent = msg.content || "";
  }
  node.append(body, ...toolCalls(msg));
  if (msg.error) node.append(el("div", { class: "meta error-text", text: `error: ${msg.error}` }));
  node.append(meta(msg) || "");
  if (!options.streaming) {
    const tools = el("div", { class: "tools" });
    tools.append(el("button", { type: "button", class: "copy", text: "Copy", onclick: () => copyText(msg.content || "") }));
    if (msg.role === "user" && handlers.edit) {
      tools.append(el("button", { type: "button", class: "edit", text: "Edit", onclick: () => startEdit(body, msg, index, handlers) }));
    }
    if (msg.role === "assistant" && options.last && handlers.regenerate) {
      tools.append(el("button", { type: "button", class: "regenerate", text: "Regenerate", onclick: () => handlers.regenerate() }));
    }
    if (msg.role === "assistant" && options.canPlay && msg.content) {
      tools.append(el("button", { type: "button", class: "play", text: "Play", onclick: () => handlers.play(msg) }));
    }
    node.append(tools);
  }
  return node;
}

function startEdit(body, msg, index, handlers) {
  const area = el("textarea", { class: "edit", rows: "3" });
  area.value = msg.content || "";
  const save = el("button", { type: "button", class: "save-edit", text: "Save & send", onclick: () => handlers.edit(index, area.value) });
  const cancel = el("button", { type: "button", text: "Cancel", onclick: () => handlers.cancelEdit() });
  body.replaceChildren(area, el("div", { class: "tools" }, save, cancel));
  area.focus();
}

export { el };
