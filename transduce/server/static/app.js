// transduce web page: translate, stream the microphone, transcribe a file, correct any result.
// Plain browser JavaScript, no build step. Talks only to this server's /health, /v1/translate,
// /v1/transcribe, /v1/stream (WebSocket) and /v1/feedback.
"use strict";

const $ = (id) => document.getElementById(id);
const RATE = 16000;  // what the server's stream expects: 16 kHz 16-bit little-endian mono PCM

function apiKey() { return $("api-key").value.trim(); }

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}`, "X-API-Key": key } : extra;
}

async function call(path, options) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const body = await response.text();
  let data = null;
  try { data = JSON.parse(body); } catch (e) { data = null; }
  if (!response.ok) {
    const said = data && (data.error || data.detail);
    const detail = said ? (typeof said === "string" ? said : JSON.stringify(said)) : body;
    throw new Error(`${response.status}: ${detail}`);
  }
  return data;
}

function kindOf(model) {
  const kind = String(model.task || model.kind || model.type || "").toLowerCase();
  if (/speech|ctc|asr|transcri/.test(kind)) return "speech";
  if (/transl|seq2seq|mt|text/.test(kind)) return "translation";
  return "any";
}

async function loadModels() {
  try {
    const health = await call("/health", {});
    const models = (health.models || []).map((m) => (typeof m === "string" ? { name: m } : m));
    for (const [select, kind] of [[$("translate-model"), "translation"], [$("speech-model"), "speech"]]) {
      select.innerHTML = "";
      for (const m of models.filter((m) => kindOf(m) === kind || kindOf(m) === "any")) {
        select.add(new Option(m.name, m.name));
      }
      select.closest("section").classList.toggle("absent", select.options.length === 0);
    }
    $("models").textContent = models.length ? `models: ${models.map((m) => m.name).join(", ")}` : "no models";
  } catch (err) {
    $("models").textContent = `server: ${err.message}`;
  }
}

// ---- results and corrections ------------------------------------------------------------------------
function addResult(list, result) {
  // result: {text, model, input?, requestId?, audio?: bool, time?: string}
  const li = document.createElement("li");
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = result.text;
  li.append(text);
  if (result.time) {
    const time = document.createElement("span");
    time.className = "time";
    time.textContent = result.time;
    li.append(time);
  }
  if (result.input !== undefined || result.requestId) {
    const fix = document.createElement("button");
    fix.className = "fix";
    fix.title = "correct this result";
    fix.textContent = "✎";
    fix.onclick = () => { fix.remove(); li.append(correctionForm(result, li)); };
    li.append(fix);
  }
  list.append(li);
  return li;
}

function correctionForm(result, li) {
  const form = document.createElement("form");
  const input = document.createElement("input");
  input.type = "text";
  input.className = "correction";
  input.value = result.text;
  form.append(input);
  let keep = null;
  if (result.audio && result.requestId) {
    const label = document.createElement("label");
    keep = document.createElement("input");
    keep.type = "checkbox";
    keep.className = "keep-audio";
    keep.checked = true;
    label.append(keep, " keep audio");
    form.append(label);
  }
  const send = document.createElement("button");
  send.type = "submit";
  send.textContent = "Send correction";
  form.append(send);
  form.onsubmit = async (event) => {
    event.preventDefault();
    const body = { model: result.model, output: result.text, correction: input.value };
    if (result.requestId) body.request_id = result.requestId;
    if (result.input !== undefined) body.input = result.input;
    if (keep) body.keep_audio = keep.checked;
    const status = document.createElement("span");
    try {
      const saved = await call("/v1/feedback", { method: "POST", headers: { "Content-Type": "application/json" },
                                                  body: JSON.stringify(body) });
      status.className = "sent";
      status.textContent = `✓ correction #${saved.id} saved`;
      form.replaceWith(status);
    } catch (err) {
      status.className = "error";
      status.textContent = ` ${err.message}`;
      form.append(status);
    }
  };
  return form;
}

// ---- translation ------------------------------------------------------------------------------------
async function translate() {
  const lines = $("source").value.split("\n").map((l) => l.trim()).filter((l) => l);
  const model = $("translate-model").value;
  if (!lines.length) return;
  $("translate-status").textContent = "translating…";
  try {
    const data = await call("/v1/translate", { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify({ text: lines, model }) });
    $("translations").innerHTML = "";
    data.translations.forEach((text, i) => addResult($("translations"), {
      text, model, input: lines[i], requestId: (data.request_ids || [])[i] || data.request_id }));
    $("translate-status").textContent = "";
  } catch (err) {
    $("translate-status").textContent = err.message;
  }
}

// ---- file upload ------------------------------------------------------------------------------------
async function upload() {
  const file = $("upload").files[0];
  if (!file) return;
  const model = $("speech-model").value;
  $("upload-status").textContent = `transcribing ${file.name}…`;
  try {
    const query = model ? `?model=${encodeURIComponent(model)}` : "";
    const data = await call(`/v1/transcribe${query}`, { method: "POST", body: file,
                                                        headers: { "Content-Type": file.type || "application/octet-stream" } });
    addResult($("uploads"), { text: data.text, model, requestId: data.request_id, audio: true, time: file.name });
    $("upload-status").textContent = "";
  } catch (err) {
    $("upload-status").textContent = err.message;
  }
  $("upload").value = "";
}

// ---- microphone streaming ---------------------------------------------------------------------------
const mic = { ws: null, ctx: null, stream: null, source: null, node: null, sentBytes: 0, stopping: false };

function openStream(model) {
  const params = new URLSearchParams({ sample_rate: String(RATE) });
  if (model) params.set("model", model);
  if (apiKey()) params.set("api_key", apiKey());  // browsers cannot set headers on a WebSocket
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/stream?${params}`);
  ws.binaryType = "arraybuffer";
  return new Promise((resolve, reject) => {
    ws.onopen = () => resolve(ws);
    ws.onclose = (event) => reject(new Error(`stream refused (${event.code}${event.reason ? ": " + event.reason : ""})`));
  });
}

function onStreamEvent(event, model) {
  if (event.type === "partial") {
    $("partial").textContent = event.text;
  } else if (event.type === "final") {
    $("partial").textContent = "";
    if (event.text) {
      const time = event.start !== undefined ? `${Number(event.start).toFixed(2)}–${Number(event.end).toFixed(2)} s` : "";
      addResult($("finals"), { text: event.text, model, requestId: event.request_id, audio: true, time });
    }
  } else if (event.type === "error") {
    $("mic-status").innerHTML = "";
    $("mic-status").append(Object.assign(document.createElement("span"), { className: "error", textContent: event.message }));
  }
}

function releaseAudio() {
  if (mic.stream) mic.stream.getTracks().forEach((t) => t.stop());
  if (mic.source) mic.source.disconnect();
  if (mic.ctx) mic.ctx.close();
  Object.assign(mic, { ctx: null, stream: null, source: null, node: null });
}

function micIdle(message) {
  releaseAudio();
  mic.ws = null;
  mic.stopping = false;
  $("mic-btn").textContent = "● Start microphone";
  $("mic-btn").classList.remove("recording");
  $("mic-btn").disabled = false;
  if (message !== undefined && !$("mic-status").querySelector(".error")) $("mic-status").textContent = message;
}

async function startMic() {
  const model = $("speech-model").value;
  $("mic-btn").disabled = true;
  $("mic-status").textContent = "asking for the microphone…";
  try {
    mic.stream = await navigator.mediaDevices.getUserMedia(
      { audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
    mic.ctx = new AudioContext();
    await mic.ctx.audioWorklet.addModule("/static/pcm-worklet.js");
    mic.node = new AudioWorkletNode(mic.ctx, "pcm16k", { processorOptions: { targetRate: RATE } });
    mic.ws = await openStream(model);
  } catch (err) {
    micIdle();
    $("mic-status").textContent = `microphone: ${err.message}`;
    return;
  }
  const ws = mic.ws;
  mic.sentBytes = 0;
  ws.onmessage = (event) => onStreamEvent(JSON.parse(event.data), model);
  ws.onclose = (event) => micIdle(event.code === 1000 ? "done" : `stream closed (${event.code}${event.reason ? ": " + event.reason : ""})`);
  mic.node.port.onmessage = (event) => {
    if (event.data === "flushed") {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "end" }));
    } else if (ws.readyState === WebSocket.OPEN) {
      ws.send(event.data);
      mic.sentBytes += event.data.byteLength;
      if (!mic.stopping) $("mic-status").textContent = `listening… ${(mic.sentBytes / 2 / RATE).toFixed(1)} s sent`;
    }
  };
  mic.source = mic.ctx.createMediaStreamSource(mic.stream);
  const mute = mic.ctx.createGain();  // the worklet runs only when pulled by the destination; play nothing
  mute.gain.value = 0;
  mic.source.connect(mic.node);
  mic.node.connect(mute);
  mute.connect(mic.ctx.destination);
  $("mic-btn").textContent = "■ Stop";
  $("mic-btn").classList.add("recording");
  $("mic-btn").disabled = false;
}

function stopMic() {
  // stop capturing, let the worklet post what it holds ("flushed" then sends the end message); the server
  // answers with the last finals and closes the stream, which resets the button
  mic.stopping = true;
  $("mic-btn").disabled = true;
  $("mic-status").textContent = "finishing…";
  if (mic.stream) mic.stream.getTracks().forEach((t) => t.stop());
  if (mic.source) mic.source.disconnect();
  if (mic.node) mic.node.port.postMessage("flush");
}

window.addEventListener("DOMContentLoaded", () => {
  $("api-key").value = localStorage.getItem("transduce-api-key") || "";
  $("api-key").onchange = () => { localStorage.setItem("transduce-api-key", apiKey()); loadModels(); };
  $("translate-btn").onclick = translate;
  $("mic-btn").onclick = () => (mic.ws ? stopMic() : startMic());
  $("upload").onchange = upload;
  loadModels();
});
