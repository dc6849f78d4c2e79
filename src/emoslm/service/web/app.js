// The emoslm web page: record from the microphone (MediaRecorder) or choose an audio file, convert it to a 16 kHz
// 16-bit WAV in the browser, enroll it with an emotion, recognise (emotion, words, segments), chat (streamed).
// Plain JS, no build step; talks to the /v1 API. The API key stays in this tab (sessionStorage), never in
// localStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { wav: null, labels: [], history: [], info: null };

function showError(msg) { $("error").textContent = msg || ""; }

function headers(extra) {
  return Object.assign({ "Authorization": "Bearer " + $("apikey").value.trim() }, extra || {});
}

async function api(path, options) {
  const res = await fetch(path, options || {});
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const msg = body.error ? body.error.type + ": " + body.error.message : res.status + " " + res.statusText;
    throw new Error(msg);
  }
  return body;
}

// ---- audio: recording -> 16 kHz mono 16-bit PCM WAV

function encodeWav(samples, sampleRate) {
  const buf = new ArrayBuffer(44 + samples.length * 2);
  const v = new DataView(buf);
  const str = (o, s) => { for (let i = 0; i < s.length; i++) v.setUint8(o + i, s.charCodeAt(i)); };
  str(0, "RIFF"); v.setUint32(4, 36 + samples.length * 2, true); str(8, "WAVE");
  str(12, "fmt "); v.setUint32(16, 16, true); v.setUint16(20, 1, true); v.setUint16(22, 1, true);
  v.setUint32(24, sampleRate, true); v.setUint32(28, sampleRate * 2, true); v.setUint16(32, 2, true);
  v.setUint16(34, 16, true); str(36, "data"); v.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    v.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buf], { type: "audio/wav" });
}

async function toWav(blob) {
  // decodeAudioData resamples to the context's rate: an offline context at 16 kHz gives 16 kHz samples
  const ctx = new OfflineAudioContext(1, 1, 16000);
  const audio = await ctx.decodeAudioData(await blob.arrayBuffer());
  const mono = new Float32Array(audio.length);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    const ch = audio.getChannelData(c);
    for (let i = 0; i < ch.length; i++) mono[i] += ch[i] / audio.numberOfChannels;
  }
  return encodeWav(mono, 16000);
}

async function record() {
  showError("");
  const seconds = Number($("duration").value);
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const rec = new MediaRecorder(stream);
  const chunks = [];
  rec.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  const stopped = new Promise((resolve) => { rec.onstop = resolve; });
  rec.start();
  $("rec-status").textContent = "recording " + seconds + " s ...";
  $("record").disabled = true;
  await new Promise((r) => setTimeout(r, seconds * 1000));
  rec.stop();
  await stopped;
  stream.getTracks().forEach((t) => t.stop());
  $("record").disabled = false;
  state.wav = await toWav(new Blob(chunks, { type: rec.mimeType }));
  $("playback").src = URL.createObjectURL(state.wav);
  $("rec-status").textContent = "recorded " + seconds + " s (" + state.wav.size + " bytes WAV)";
}

async function useFile() {
  showError("");
  const file = $("file").files[0];
  if (!file) return;
  $("rec-status").textContent = "reading " + file.name + " ...";
  state.wav = await toWav(file);
  $("playback").src = URL.createObjectURL(state.wav);
  const seconds = (state.wav.size - 44) / 32000;
  $("rec-status").textContent = "file " + file.name + ": " + seconds.toFixed(1) + " s (" + state.wav.size +
                                " bytes WAV)";
}

function needRecording() {
  if (!state.wav) throw new Error("record something or choose an audio file first");
  return state.wav;
}

// ---- connecting: the key is checked with /v1/info, which also gives the labels

function needConnection() {
  if (!state.info) throw new Error("paste your API key and press Connect first (emoslm apikey create NAME)");
}

async function connect() {
  showError("");
  const key = $("apikey").value.trim();
  if (!key) throw new Error("paste an API key (on the server: emoslm apikey create NAME)");
  const info = await api("/v1/info", { headers: headers() });
  sessionStorage.setItem("emoslm.apikey", key);
  state.info = info;
  state.labels = info.labels;
  $("enroll-buttons").innerHTML = "";
  for (const label of info.labels) {
    const b = document.createElement("button");
    b.id = "enroll-" + label;
    b.textContent = label;
    b.addEventListener("click", guarded(() => enroll(label)));
    $("enroll-buttons").appendChild(b);
  }
  $("connect-status").textContent = "connected as " + info.key + (info.admin ? " (admin)" : "") + ": " +
    info.n_speakers + " speakers; speech recognition " + (info.asr_model || "off");
  document.body.dataset.connected = "1";
}

// ---- speakers and enrollments

function speakerId() { return $("speaker").value.trim(); }

function setCount(n) { $("enroll-count").textContent = String(n); }

async function useSpeaker() {
  showError("");
  needConnection();
  const id = speakerId();
  if (!id) throw new Error("type a speaker name");
  sessionStorage.setItem("emoslm.speaker", id);
  let spk;
  try {
    spk = await api("/v1/speakers/" + encodeURIComponent(id), { headers: headers() });
  } catch (e) {
    if (!e.message.startsWith("unknown_speaker")) throw e;
    spk = await api("/v1/speakers", { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                      body: JSON.stringify({ id: id, name: id }) });
  }
  setCount(spk.n_enrollments);
  $("speaker-status").textContent = "speaker " + spk.id + " ready";
}

async function enroll(label) {
  showError("");
  needConnection();
  const form = new FormData();
  form.append("file", needRecording(), "recording.wav");
  form.append("label", label);
  const r = await api("/v1/speakers/" + encodeURIComponent(speakerId()) + "/enrollments",
                      { method: "POST", headers: headers(), body: form });
  setCount(r.n_enrollments);
  $("speaker-status").textContent = "enrolled as " + r.label;
}

// ---- recognition

function drawChart(probs) {
  const chart = $("chart");
  chart.innerHTML = "";
  const top = Object.keys(probs).reduce((a, b) => (probs[a] >= probs[b] ? a : b));
  for (const label of state.labels) {
    const p = probs[label] || 0;
    const row = document.createElement("div");
    row.className = "row";
    row.dataset.label = label;
    row.dataset.prob = p.toFixed(4);
    row.innerHTML = '<span class="name"></span><span class="bar"></span><span class="pct"></span>';
    row.querySelector(".name").textContent = label;
    row.querySelector(".bar").style.width = (p * 30).toFixed(2) + "em";
    if (label === top) row.querySelector(".bar").classList.add("top");
    row.querySelector(".pct").textContent = (100 * p).toFixed(1) + " %";
    chart.appendChild(row);
  }
}

function drawSegments(segments) {
  const list = $("segments");
  list.innerHTML = "";
  if (!segments || segments.length < 2) return;
  for (const s of segments) {
    const li = document.createElement("li");
    li.className = "segment";
    li.dataset.label = s.label;
    li.textContent = s.start.toFixed(1) + "-" + s.end.toFixed(1) + " s: " + (s.label || "abstain") + " (" +
                     (100 * (s.confidence || 0)).toFixed(0) + " %)";
    list.appendChild(li);
  }
}

async function recognise() {
  showError("");
  needConnection();
  const form = new FormData();
  form.append("file", needRecording(), "recording.wav");
  if (speakerId()) form.append("speaker_id", speakerId());
  if (state.info.asr_model) form.append("transcribe", "true");
  const r = await api("/v1/emotion", { method: "POST", headers: headers(), body: form });
  $("result-label").textContent = r.abstained ? "abstain" : r.label;  // below the server's --min-confidence
  $("result-detail").textContent = "(" + r.mode + ", " + r.n_enrollments_used + " enrollment pairs, " +
                                   r.duration.toFixed(1) + " s of audio, " + r.latency_ms.toFixed(0) + " ms)";
  $("result").dataset.mode = r.mode;
  $("result").dataset.nUsed = String(r.n_enrollments_used);
  $("transcript").textContent = r.transcript ? "\u201c" + r.transcript + "\u201d" : "";
  drawChart(r.probabilities);
  drawSegments(r.segments);
}

// ---- chat

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = (role === "user" ? "you: " : "assistant: ") + text;
  $("chat-log").appendChild(div);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return div;
}

function b64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function readStream(res, onChunk) {
  // server-sent events: "data: {json}" lines, "data: [DONE]" at the end
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut).trim();
      buffer = buffer.slice(cut + 2);
      if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
      const chunk = JSON.parse(event.slice(6));
      if (chunk.error) throw new Error(chunk.error.type + ": " + chunk.error.message);
      onChunk(chunk);
    }
  }
}

async function sendChat() {
  showError("");
  needConnection();
  const text = $("chat-input").value.trim();
  const parts = [];
  if (text) parts.push({ type: "text", text: text });
  if ($("chat-with-audio").checked && state.wav) {
    parts.push({ type: "input_audio", input_audio: { data: b64(await state.wav.arrayBuffer()), format: "wav" } });
  }
  if (!parts.length) throw new Error("type a message, record something or choose an audio file");
  const body = { model: "emoslm", stream: true, messages: state.history.concat([{ role: "user", content: parts }]) };
  if (speakerId()) body.user = speakerId();
  const res = await fetch("/v1/chat/completions", { method: "POST", body: JSON.stringify(body),
                                                     headers: headers({ "Content-Type": "application/json" }) });
  if (!res.ok) {
    const err = await res.json().catch(() => ({}));
    throw new Error(err.error ? err.error.type + ": " + err.error.message : res.status + " " + res.statusText);
  }
  let reply = "";
  let assistant = null;
  let said = text;
  await readStream(res, (chunk) => {
    if (chunk.choices && chunk.choices[0] && chunk.choices[0].delta.role) {
      const heard = chunk.transcript ? "\u201c" + chunk.transcript + "\u201d" : "";
      said = [text, heard].filter(Boolean).join(" ") || "(voice)";
      addMessage("user", said + (chunk.emotion ? " [" + (chunk.emotion.label || "abstain") + "]" : ""));
      if (chunk.emotion) drawChart(chunk.emotion.probabilities);
      assistant = addMessage("assistant", "");
      assistant.dataset.streaming = "1";
    }
    const piece = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta.content : null;
    if (piece && assistant) {
      reply += piece;
      assistant.textContent = "assistant: " + reply;
      assistant.dataset.chunks = String(Number(assistant.dataset.chunks || 0) + 1);
    }
  });
  if (assistant) delete assistant.dataset.streaming;
  state.history.push({ role: "user", content: said || "(a voice message)" }, { role: "assistant", content: reply });
  $("chat-input").value = "";
}

// ---- wiring

function guarded(fn) {
  return (...args) => fn(...args).catch((e) => showError(e.message));
}

function init() {
  // the key lives in this tab only (sessionStorage); an older page version kept it in localStorage: drop that
  localStorage.removeItem("emoslm.apikey");
  $("apikey").value = sessionStorage.getItem("emoslm.apikey") || "";
  $("speaker").value = sessionStorage.getItem("emoslm.speaker") || "";
  $("connect").addEventListener("click", guarded(connect));
  $("use-speaker").addEventListener("click", guarded(useSpeaker));
  $("record").addEventListener("click", guarded(record));
  $("file").addEventListener("change", guarded(useFile));
  $("recognise").addEventListener("click", guarded(recognise));
  $("chat-send").addEventListener("click", guarded(sendChat));
  document.body.dataset.ready = "1";
  if ($("apikey").value) guarded(connect)();
}

init();
