// The chat page: state, controls and the request each action makes. Rendering is in view.js,
// the API calls in api.js, storage in store.js.
import { ApiError, AuthNeeded, apiKey, generateImage, listModels, speak, streamChat, transcribe } from "./api.js";
import { deleteConversation, getConversation, listConversations, newConversation, saveConversation } from "./store.js";
import { el, renderMessage } from "./view.js";

const $ = (id) => document.getElementById(id);
const SETTINGS_KEY = "homeport.settings";
const FIELDS = ["system", "mode", "character", "temperature", "top_p", "top_k", "min_p", "max_tokens", "voice", "json_schema", "tools"];
const NUMBERS = { temperature: parseFloat, top_p: parseFloat, top_k: parseInt, min_p: parseFloat, max_tokens: parseInt };

const state = { models: [], conversation: newConversation(), controller: null, streamingIndex: null, pendingImages: [], recorder: null };

// --- the API key: asked for on a 401, kept in localStorage only -------------------------------
function askForKey() {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-input").value = "";
    $("key-form").onsubmit = () => {
      apiKey.set($("key-input").value.trim());
      $("forget-key").hidden = false;
      resolve();
    };
    if (!dialog.open) dialog.showModal();
  });
}

async function withKey(work) {
  for (;;) {
    try {
      return await work();
    } catch (error) {
      if (!(error instanceof AuthNeeded)) throw error;
      await askForKey();
    }
  }
}

function showError(error) {
  $("error").hidden = !error;
  $("error").textContent = error ? String(error.message || error) : "";
}

// --- models and their capabilities -------------------------------------------------------------
const byCapability = (cap) => state.models.find((m) => (m.capabilities || []).includes(cap));
const selectedModel = () => state.models.find((m) => m.id === $("model").value);

async function loadModels() {
  state.models = await withKey(listModels);
  const text = state.models.filter((m) => (m.capabilities || []).includes("text_generation"));
  const saved = readSettings().model;
  $("model").replaceChildren(...(text.length ? text : state.models).map((m) => el("option", { value: m.id, text: m.id })));
  if (saved && text.some((m) => m.id === saved)) $("model").value = saved;
  updateControls();
}

function updateControls() {
  const caps = selectedModel()?.capabilities || [];
  $("model-caps").textContent = caps.join(", ");
  $("attach-label").hidden = !caps.includes("vision");
  $("generate-image").hidden = !byCapability("image_generation");
  $("record").hidden = !byCapability("transcription") || !window.MediaRecorder;
  for (const node of document.querySelectorAll(".speech-only")) node.hidden = !byCapability("speech_synthesis");
  if (!caps.includes("vision")) state.pendingImages = [];
  renderAttachments();
}

// --- settings (kept in localStorage) -----------------------------------------------------------
function readSettings() {
  try {
    return JSON.parse(localStorage.getItem(SETTINGS_KEY)) || {};
  } catch {
    return {};
  }
}

function saveSettings() {
  const settings = { model: $("model").value };
  for (const field of FIELDS) settings[field] = $(field).value;
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
}

function restoreSettings() {
  const settings = readSettings();
  for (const field of FIELDS) if (settings[field] !== undefined) $(field).value = settings[field];
}

function parseJsonField(field) {
  const text = $(field).value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${field}: not valid JSON (${error.message})`);
  }
}

function apiMessage(msg) {
  if (msg.role === "user" && msg.images?.length) {
    const parts = msg.images.map((url) => ({ type: "image_url", image_url: { url } }));
    return { role: "user", content: [{ type: "text", text: msg.content }, ...parts] };
  }
  const out = { role: msg.role, content: msg.content || "" };
  if (msg.tool_calls?.length) out.tool_calls = msg.tool_calls;
  return out;
}

function buildRequest(messages) {
  const payload = { model: $("model").value, mode: $("mode").value, stream_options: { include_usage: true } };
  const history = messages.filter((m) => !m.imageResult && (m.content || m.tool_calls?.length || m.images?.length));
  payload.messages = [...($("system").value.trim() ? [{ role: "system", content: $("system").value }] : []), ...history.map(apiMessage)];
  if ($("character").value.trim()) payload.character = $("character").value.trim();
  for (const [field, parse] of Object.entries(NUMBERS)) {
    const value = parse($(field).value);
    if (!Number.isNaN(value)) payload[field] = value;
  }
  const schema = parseJsonField("json_schema");
  if (schema) payload.response_format = { type: "json_schema", json_schema: { name: "response", schema, strict: true } };
  const tools = parseJsonField("tools");
  if (tools) payload.tools = tools;
  return payload;
}

// --- messages ----------------------------------------------------------------------------------
const handlers = {
  edit: (index, text) => {
    if (state.controller) return;
    state.conversation.messages = state.conversation.messages.slice(0, index);
    state.conversation.messages.push({ role: "user", content: text });
    generate();
  },
  cancelEdit: () => renderMessages(),
  regenerate: () => {
    if (state.controller) return;
    const messages = state.conversation.messages;
    if (messages.at(-1)?.role === "assistant") messages.pop();
    generate();
  },
  play: async (msg) => {
    try {
      const audio = new Audio(URL.createObjectURL(await withKey(() => speak(byCapability("speech_synthesis").id, msg.content, $("voice").value))));
      await audio.play();
    } catch (error) {
      showError(error);
    }
  },
};

function renderMessages() {
  const messages = state.conversation.messages;
  const canPlay = Boolean(byCapability("speech_synthesis"));
  $("messages").replaceChildren(...messages.map((msg, i) =>
    renderMessage(msg, i, handlers, { streaming: i === state.streamingIndex, last: i === messages.length - 1, canPlay })));
  $("messages").scrollTop = $("messages").scrollHeight;
}

let frame = null;
const scheduleRender = () => { frame ??= requestAnimationFrame(() => { frame = null; renderMessages(); }); };

function setBusy(busy) {
  $("stop").hidden = !busy;
  $("send").disabled = busy;
  $("generate-image").disabled = busy;
}

function applyChunk(msg, chunk, timing) {
  if (chunk.usage) msg.usage = chunk.usage;
  for (const choice of chunk.choices || []) {
    const delta = choice.delta || {};
    if (delta.content || delta.reasoning_content) timing.first ??= performance.now();
    if (delta.content) msg.content += delta.content;
    if (delta.reasoning_content) msg.reasoning = (msg.reasoning || "") + delta.reasoning_content;
    for (const call of delta.tool_calls || []) {
      msg.tool_calls ??= [];
      const slot = (msg.tool_calls[call.index ?? msg.tool_calls.length] ??= { id: call.id, type: "function", function: { name: "", arguments: "" } });
      if (call.id) slot.id = call.id;
      if (call.function?.name) slot.function.name += call.function.name;
      if (call.function?.arguments) slot.function.arguments += call.function.arguments;
      timing.first ??= performance.now();
    }
    if (choice.finish_reason) msg.finishReason = choice.finish_reason;
  }
}

async function generate() {
  showError(null);
  const conversation = state.conversation;  // the user may open another one mid-stream
  const messages = conversation.messages;
  let payload;
  try {
    payload = buildRequest(messages);
  } catch (error) {
    showError(error);
    return;
  }
  const msg = { role: "assistant", content: "", model: payload.model };
  messages.push(msg);
  state.streamingIndex = messages.length - 1;
  state.controller = new AbortController();
  setBusy(true);
  renderMessages();
  const timing = { first: null };
  try {
    await withKey(() => streamChat(payload, { signal: state.controller.signal, onChunk: (chunk) => { applyChunk(msg, chunk, timing); scheduleRender(); } }));
    const seconds = timing.first ? (performance.now() - timing.first) / 1000 : 0;
    if (msg.usage && seconds > 0) msg.tokensPerSecond = msg.usage.completion_tokens / seconds;
  } catch (error) {
    if (error.name === "AbortError") msg.stopped = true;
    else {
      msg.error = error.message;
      showError(error);
    }
  } finally {
    state.controller = null;
    state.streamingIndex = null;
    setBusy(false);
    renderMessages();
    await persist(conversation);
  }
}

async function send() {
  const text = $("input").value.trim();
  if (!text || state.controller) return;
  state.conversation.messages.push({ role: "user", content: text, images: state.pendingImages });
  if (state.conversation.title === "New chat") state.conversation.title = text.slice(0, 48);
  state.pendingImages = [];
  $("input").value = "";
  renderAttachments();
  await generate();
}

async function makeImage() {
  const prompt = $("input").value.trim();
  if (!prompt || state.controller) return;
  const conversation = state.conversation;
  const messages = conversation.messages;
  messages.push({ role: "user", content: prompt, imageResult: true });
  if (state.conversation.title === "New chat") state.conversation.title = prompt.slice(0, 48);
  $("input").value = "";
  setBusy(true);
  const model = byCapability("image_generation").id;
  try {
    const images = await withKey(() => generateImage(model, prompt));
    messages.push({ role: "assistant", content: "", images, model, imageResult: true });
  } catch (error) {
    showError(error);
  } finally {
    setBusy(false);
    renderMessages();
    await persist(conversation);
  }
}

// --- attachments and the microphone --------------------------------------------------------------
function renderAttachments() {
  $("attachments").replaceChildren(...state.pendingImages.map((src) => el("img", { src, alt: "attachment" })));
}

function attach(files) {
  for (const file of files) {
    const reader = new FileReader();
    reader.onload = () => { state.pendingImages.push(reader.result); renderAttachments(); };
    reader.readAsDataURL(file);
  }
}

async function toggleRecording() {
  if (state.recorder) return state.recorder.stop();
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    state.recorder = new MediaRecorder(stream);
    state.recorder.ondataavailable = (event) => chunks.push(event.data);
    state.recorder.onstop = async () => {
      stream.getTracks().forEach((track) => track.stop());
      state.recorder = null;
      $("record").classList.remove("recording");
      $("record").textContent = "Record";
      try {
        const text = await withKey(() => transcribe(byCapability("transcription").id, new Blob(chunks, { type: "audio/webm" })));
        $("input").value = ($("input").value + " " + text).trim();
      } catch (error) {
        showError(error);
      }
    };
    state.recorder.start();
    $("record").classList.add("recording");
    $("record").textContent = "Stop recording";
  } catch (error) {
    showError(error);
  }
}

// --- conversations -------------------------------------------------------------------------------
async function persist(conversation = state.conversation) {
  if (conversation.messages.length) await saveConversation(conversation);
  await renderConversationList();
}

async function renderConversationList() {
  const items = (await listConversations()).map((c) => {
    const rename = async (event) => {
      event.stopPropagation();
      const title = prompt("Rename conversation", c.title);
      if (!title) return;
      await saveConversation({ ...c, title });
      if (c.id === state.conversation.id) state.conversation.title = title;
      await renderConversationList();
    };
    const remove = async (event) => {
      event.stopPropagation();
      if (!confirm(`Delete "${c.title}"?`)) return;
      await deleteConversation(c.id);
      if (c.id === state.conversation.id) openConversation(newConversation());
      await renderConversationList();
    };
    return el("li", { class: c.id === state.conversation.id ? "active" : "", "data-id": c.id, onclick: async () => openConversation(await getConversation(c.id)) },
      el("span", { class: "title", text: c.title, title: c.title }),
      el("button", { type: "button", class: "rename", text: "✎", title: "Rename", onclick: rename }),
      el("button", { type: "button", class: "delete", text: "×", title: "Delete", onclick: remove }));
  });
  $("conversations").replaceChildren(...items);
}

function openConversation(conversation) {
  if (state.controller) state.controller.abort();
  state.conversation = conversation;
  showError(null);
  renderMessages();
  renderConversationList();
}

async function exportAll() {
  const blob = new Blob([JSON.stringify(await listConversations(), null, 2)], { type: "application/json" });
  const link = el("a", { href: URL.createObjectURL(blob), download: "homeport-conversations.json" });
  link.click();
  URL.revokeObjectURL(link.href);
}

// --- wiring --------------------------------------------------------------------------------------
function wire() {
  $("composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
  $("input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); send(); }
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("new-chat").addEventListener("click", () => openConversation(newConversation()));
  $("export").addEventListener("click", exportAll);
  $("generate-image").addEventListener("click", makeImage);
  $("record").addEventListener("click", toggleRecording);
  $("attach").addEventListener("change", (event) => { attach(event.target.files); event.target.value = ""; });
  $("model").addEventListener("change", () => { saveSettings(); updateControls(); renderMessages(); });
  for (const field of FIELDS) $(field).addEventListener("change", saveSettings);
  $("toggle-settings").addEventListener("click", () => {
    $("settings").hidden = !$("settings").hidden;
    $("toggle-settings").setAttribute("aria-expanded", String(!$("settings").hidden));
  });
  $("forget-key").hidden = !apiKey.get();
  $("forget-key").addEventListener("click", () => { apiKey.clear(); $("forget-key").hidden = true; });
}

async function main() {
  wire();
  restoreSettings();
  await renderConversationList();
  try {
    await loadModels();
  } catch (error) {
    showError(error instanceof ApiError ? error : new Error(`cannot list models: ${error.message}`));
  }
  document.body.dataset.ready = "true";
}

main();
