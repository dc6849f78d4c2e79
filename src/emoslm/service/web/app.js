// The emoslm web page: record from the microphone (MediaRecorder), convert to a 16 kHz 16-bit WAV in the
// browser, enroll it with an emotion, recognise, chat. Plain JS, no build step; talks to the /v1 API.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { wav: null, labels: [], history: [] };

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

function needRecording() {
  if (!state.wav) throw new Error("record something first");
  return state.wav;
}

// ---- speakers and enrollments

function speakerId() { return $("speaker").value.trim(); }

function setCount(n) { $("enroll-count").textContent = String(n); }

async function useSpeaker() {
  showError("");
  const id = speakerId();
  if (!id) throw new Error("type a speaker name");
  localStorage.setItem("emoslm.speaker", id);
  localStorage.setItem("emoslm.apikey", $("apikey").value.trim());
  let spk;
  try {
    spk = await api("/v1/speakers/" + encodeURIComponent(id));
  } catch (e) {
    spk = await api("/v1/speakers", { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                      body: JSON.stringify({ id: id, name: id }) });
  }
  setCount(spk.n_enrollments);
  $("speaker-status").textContent = "speaker " + spk.id + " ready";
}

async function enroll(label) {
  showError("");
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

async function recognise() {
  showError("");
  const form = new FormData();
  form.append("file", needRecording(), "recording.wav");
  if (speakerId()) form.append("speaker_id", speakerId());
  const r = await api("/v1/emotion", { method: "POST", headers: headers(), body: form });
  $("result-label").textContent = r.label;
  $("result-detail").textContent = "(" + r.mode + ", " + r.n_enrollments_used + " enrollment pairs, " +
                                   r.latency_ms.toFixed(0) + " ms)";
  $("result").dataset.mode = r.mode;
  $("result").dataset.nUsed = String(r.n_enrollments_used);
  drawChart(r.probabilities);
}

// ---- chat

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = (role === "user" ? "you: " : "assistant: ") + text;
  $("chat-log").appendChild(div);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
}

function b64(buffer) {
  const bytes = new Uint8Array(buffer);
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function sendChat() {
  showError("");
  const text = $("chat-input").value.trim();
  const parts = [];
  if (text) parts.push({ type: "text", text: text });
  if ($("chat-with-audio").checked && state.wav) {
    parts.push({ type: "input_audio", input_audio: { data: b64(await state.wav.arrayBuffer()), format: "wav" } });
  }
  if (!parts.length) throw new Error("type a message or record something");
  const body = { model: "emoslm", messages: state.history.concat([{ role: "user", content: parts }]) };
  if (speakerId()) body.user = speakerId();
  const r = await api("/v1/chat/completions", { method: "POST", headers: headers({ "Content-Type": "application/json" }),
                                                 body: JSON.stringify(body) });
  const reply = r.choices[0].message.content;
  addMessage("user", (text || "(voice)") + (r.emotion ? " [" + r.emotion.label + "]" : ""));
  addMessage("assistant", reply);
  state.history.push({ role: "user", content: text || "(a voice message)" }, { role: "assistant", content: reply });
  if (r.emotion) drawChart(r.emotion.probabilities);
  $("chat-input").value = "";
}

// ---- wiring

function guarded(fn) {
  return (...args) => fn(...args).catch((e) => showError(e.message));
}

async function init() {
  $("apikey").value = localStorage.getItem("emoslm.apikey") || "";
  $("speaker").value = localStorage.getItem("emoslm.speaker") || "";
  const info = await api("/v1/info");
  state.labels = info.labels;
  for (const label of info.labels) {
    const b = document.createElement("button");
    b.id = "enroll-" + label;
    b.textContent = label;
    b.addEventListener("click", guarded(() => enroll(label)));
    $("enroll-buttons").appendChild(b);
  }
  $("use-speaker").addEventListener("click", guarded(useSpeaker));
  $("record").addEventListener("click", guarded(record));
  $("recognise").addEventListener("click", guarded(recognise));
  $("chat-send").addEventListener("click", guarded(sendChat));
  document.body.dataset.ready = "1";
}

guarded(init)();
