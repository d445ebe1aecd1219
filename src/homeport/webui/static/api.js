// homeport's own API, called as any client would: the key (if the server wants one) from
// localStorage, streamed chat completions read as server-sent events.
const KEY = "homeport.apiKey";

export class AuthNeeded extends Error {}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const apiKey = {
  get: () => localStorage.getItem(KEY) || "",
  set: (key) => localStorage.setItem(KEY, key),
  clear: () => localStorage.removeItem(KEY),
};

async function call(path, { json, form, signal, method } = {}) {
  const headers = {};
  if (apiKey.get()) headers.Authorization = `Bearer ${apiKey.get()}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  const response = await fetch(path, { method: method || (body ? "POST" : "GET"), headers, body, signal });
  if (response.status === 401) throw new AuthNeeded();
  if (!response.ok) {
    let message = `HTTP ${response.status}`;
    try {
      message = (await response.json()).error?.message || message;
    } catch {}
    throw new ApiError(response.status, message);
  }
  return response;
}

export const listModels = async () => (await (await call("/v1/models")).json()).data;

/** POSTs a streamed chat completion and calls onChunk(parsed) per event until [DONE]. */
export async function streamChat(payload, { signal, onChunk }) {
  const response = await call("/v1/chat/completions", { json: { ...payload, stream: true }, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = frame
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) throw new ApiError(500, event.error.message || "the stream ended with an error");
      onChunk(event);
    }
  }
}

export async function generateImage(model, prompt) {
  const response = await call("/v1/images/generations", {
    json: { model, prompt, n: 1, response_format: "b64_json" },
  });
  return (await response.json()).data.map((d) => `data:image/png;base64,${d.b64_json}`);
}

export async function speak(model, input, voice) {
  const response = await call("/v1/audio/speech", { json: { model, input, voice, response_format: "wav" } });
  return await response.blob();
}

export async function transcribe(model, blob) {
  const form = new FormData();
  form.append("model", model);
  form.append("file", blob, "recording.webm");
  return (await (await call("/v1/audio/transcriptions", { form })).json()).text;
}
