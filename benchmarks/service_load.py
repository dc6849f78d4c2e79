"""Load test of the voice service through its HTTP API: errors and latency under concurrent clients.

Starts ``emoslm serve`` (a real uvicorn process on loopback) with a model bundle (default ``runs/demo/bundle``,
else a tiny random one), the packaged Whisper tiny.en as its ASR and a chat LLM (``--llm``, default the random
tiny-llama: the LLM's share is not what is measured), enrolls 7 utterances (one per emotion) for each of 4
speakers, then:

1. a bounded load run per concurrency level: N requests from C client threads (each a keep-alive session), a
   fixed mix of ``POST /v1/emotion`` 0-shot (35 %), ``POST /v1/emotion`` 7-shot personalised (35 %),
   ``GET /v1/speakers`` (10 %), ``GET /v1/speakers/{id}/enrollments`` (10 %) and a spoken chat turn
   ``POST /v1/chat/completions`` with ``input_audio`` (10 %: Whisper transcript + personalised emotion + LLM
   reply); errors (anything but 200, a chat answer without a transcript) and client-side p50/p99 latency per
   kind, throughput;
2. 0-shot vs 7-shot latency through the API with one client (same query audio, interleaved), client-side
   and as the server reports it (``latency_ms``: decoding + recognition; ``model_latency_ms``: recognition);
3. streamed spoken chat turns with one client: time to the first token and to the whole reply.

Query and enrollment audio: the demo corpus's utterances (``data/synth_demo``, espeak-ng speech) when present,
else tones. All requests carry an API key (reads too).

Usage: python benchmarks/service_load.py [--requests 1200] [--concurrency 1 4 16] [--bundle DIR] [--llm NAME]
Appends to benchmarks/results/service.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_title_option, command_line, heading, write_result  # noqa: E402

from emoslm.labels import EKMAN7  # noqa: E402
from emoslm.service.store import Store  # noqa: E402
from emoslm.service.testing import ServerProcess, build_tiny_bundle, tone, wav_bytes  # noqa: E402

TITLE = "Voice service load test"

MIX = (("emotion 0-shot", 0.35), ("emotion 7-shot", 0.35), ("list speakers", 0.1), ("list enrollments", 0.1),
       ("chat audio", 0.1))
CHAT_TOKENS = 16


def corpus_audio(corpus: Path, n_speakers: int = 4) -> tuple[dict[str, list[tuple[bytes, str]]], list[bytes]]:
    """Per speaker 7 enrollment pairs (one per emotion), and query utterances (other takes of them)."""
    wav_root = corpus / "wav"
    if wav_root.is_dir():
        spk_dirs = sorted(p for p in wav_root.iterdir() if p.is_dir())[-n_speakers:]
        enroll = {d.name: [((d / f"{d.name}_{e}_00.wav").read_bytes(), e) for e in EKMAN7] for d in spk_dirs}
        queries = [p.read_bytes() for d in spk_dirs for p in sorted(d.glob("*_0[1-3].wav"))]
        return enroll, queries
    rng = np.random.default_rng(0)
    enroll = {f"spk{s}": [(wav_bytes(tone(100 + 20 * i + 5 * s, 1.5)), e) for i, e in enumerate(EKMAN7)]
              for s in range(n_speakers)}
    return enroll, [wav_bytes(tone(float(rng.uniform(90, 300)), 1.8)) for _ in range(40)]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q)) if xs else float("nan")


class Client:
    def __init__(self, url: str, key: str):
        self.url = url
        self.local = threading.local()
        self.key = key

    @property
    def session(self) -> requests.Session:
        s = getattr(self.local, "s", None)
        if s is None:
            s = self.local.s = requests.Session()
            s.headers["X-API-Key"] = self.key
        return s

    def call(self, kind: str, speaker: str, audio: bytes) -> tuple[str, int, float, dict | None]:
        t0 = time.perf_counter()
        try:
            if kind.startswith("emotion"):
                data = {"speaker_id": speaker} if kind == "emotion 7-shot" else {}
                r = self.session.post(f"{self.url}/v1/emotion", data=data, files={"file": ("q.wav", audio)}, timeout=60)
            elif kind == "chat audio":
                part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(),
                                                               "format": "wav"}}
                r = self.session.post(f"{self.url}/v1/chat/completions", timeout=120, json={
                    "model": "emoslm", "user": speaker, "max_tokens": CHAT_TOKENS,
                    "messages": [{"role": "user", "content": [part]}]})
            elif kind == "list speakers":
                r = self.session.get(f"{self.url}/v1/speakers", timeout=60)
            else:
                r = self.session.get(f"{self.url}/v1/speakers/{speaker}/enrollments", timeout=60)
            status, body = r.status_code, (r.json() if r.status_code == 200 else None)
        except requests.RequestException:
            status, body = 0, None
        return kind, status, (time.perf_counter() - t0) * 1000, body


def is_error(result: tuple[str, int, float, dict | None]) -> bool:
    """Not 200, or an emotion answer that did not use the expected number of enrollment pairs."""
    kind, status, _ms, body = result
    if status != 200:
        return True
    if kind == "chat audio":
        return not isinstance(body.get("transcript"), str) or body["emotion"]["n_enrollments_used"] != 7
    return kind.startswith("emotion") and body["n_enrollments_used"] != (7 if kind == "emotion 7-shot" else 0)


def streamed_chat(client: Client, speaker: str, audio: bytes) -> tuple[float, float, int, str]:
    """One streamed spoken chat turn: (ms to the first token, ms to the end, content chunks, transcript)."""
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}
    t0 = time.perf_counter()
    first, n, transcript = None, 0, ""
    with client.session.post(f"{client.url}/v1/chat/completions", stream=True, timeout=120, json={
            "model": "emoslm", "user": speaker, "max_tokens": 32, "stream": True,
            "messages": [{"role": "user", "content": [part]}]}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            transcript = chunk.get("transcript", transcript) or transcript
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = first if first is not None else (time.perf_counter() - t0) * 1000
                n += 1
    return first if first is not None else float("nan"), (time.perf_counter() - t0) * 1000, n, transcript


def load_run(client: Client, speakers: list[str], queries: list[bytes], n: int, concurrency: int, seed: int
             ) -> tuple[list[tuple[str, int, float, dict | None]], float]:
    rng = random.Random(seed)
    kinds = [k for k, w in MIX for _ in range(round(w * 100))]
    plan = [(rng.choice(kinds), rng.choice(speakers), rng.choice(queries)) for _ in range(n)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(lambda job: client.call(*job), plan))
    return results, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=None, help="model bundle (default: runs/demo/bundle, else a tiny random one)")
    ap.add_argument("--corpus", default="data/synth_demo")
    ap.add_argument("--requests", type=int, default=1200, help="requests per concurrency level")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--latency-n", type=int, default=100, help="sequential 0-shot and 7-shot requests each")
    ap.add_argument("--stream-n", type=int, default=20, help="sequential streamed spoken chat turns")
    ap.add_argument("--llm", default="tiny-llama", help="the server's chat LLM (tiny-llama, smollm2, a folder)")
    ap.add_argument("--out", default="benchmarks/results/service.md")
    add_title_option(ap)
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="emoslm-service-bench-"))
    bundle = a.bundle or ("runs/demo/bundle" if Path("runs/demo/bundle/speech_lm").is_dir() else None)
    bundle_note = bundle or "tiny random bundle (runs/demo/bundle missing)"
    bundle = bundle or build_tiny_bundle(tmp)
    key = Store(tmp / "data").create_api_key("bench")
    enroll, queries = corpus_audio(Path(a.corpus))
    with ServerProcess(bundle, tmp / "data", llm=a.llm, key=key, extra=["--quiet"]) as server:
        asr = server.info()["asr_model"]
        client = Client(server.url, key)
        s = client.session
        for spk, pairs in enroll.items():
            s.post(f"{server.url}/v1/speakers", json={"id": spk}).raise_for_status()
            for audio, label in pairs:
                s.post(f"{server.url}/v1/speakers/{spk}/enrollments", data={"label": label},
                       files={"file": ("e.wav", audio)}).raise_for_status()
        speakers = list(enroll)
        load_run(client, speakers, queries, 40, 2, seed=0)  # warm-up

        lines = [heading(TITLE, a.title), "",
                 f"Server: `emoslm serve` (uvicorn, 1 process, torch threads 2), bundle `{bundle_note}`, ASR "
                 f"`{asr}`, chat LLM `{a.llm}` (at most {CHAT_TOKENS} new tokens); {len(speakers)} speakers with 7 "
                 "enrollments each; query audio: "
                 f"{'demo corpus utterances' if (Path(a.corpus) / 'wav').is_dir() else 'synthetic tones'}. "
                 "Every request carries an API key. Client and server share the machine's 2 cores. Latency is "
                 "client-side (request sent to answer read). `chat audio`: a spoken turn (`input_audio`) through "
                 "`/v1/chat/completions`: Whisper transcript + personalised emotion + LLM reply.", "",
                 "| concurrency | kind | requests | errors | p50 ms | p99 ms | throughput req/s |",
                 "|---:|---|---:|---:|---:|---:|---:|"]
        total_errors, n_load, throughputs = 0, 0, []
        for c in a.concurrency:
            results, seconds = load_run(client, speakers, queries, a.requests, c, seed=c)
            bad = [r for r in results if is_error(r)]
            total_errors += len(bad)
            for kind, _w in MIX:
                rows = [r for r in results if r[0] == kind]
                lat = [r[2] for r in rows]
                lines.append(f"| {c} | {kind} | {len(rows)} | {sum(map(is_error, rows))} | {pct(lat, 50):.1f} | "
                             f"{pct(lat, 99):.1f} | |")
            lat = [r[2] for r in results]
            n_load += len(results)
            throughputs.append(len(results) / seconds)
            lines.append(f"| **{c}** | **all** | **{len(results)}** | **{len(bad)}** | **{pct(lat, 50):.1f}** | "
                         f"**{pct(lat, 99):.1f}** | **{len(results) / seconds:.1f}** |")
            print(f"concurrency {c}: {len(results)} requests in {seconds:.1f} s, {len(bad)} errors", flush=True)

        lines += ["", f"All concurrency levels: {n_load:,} requests, {total_errors} errors, "
                  f"{min(throughputs):.1f}-{max(throughputs):.1f} requests/s."]
        # 0-shot vs 7-shot through the API, one client, interleaved
        seq: dict[str, list[tuple[float, float, float]]] = {"emotion 0-shot": [], "emotion 7-shot": []}
        for i in range(a.latency_n):
            q, spk = queries[i % len(queries)], speakers[i % len(speakers)]
            for kind in seq:
                result = client.call(kind, spk, q)
                if is_error(result):
                    total_errors += 1
                    continue
                body = result[3]
                seq[kind].append((result[2], body["latency_ms"], body["model_latency_ms"]))
        lines += ["", f"0-shot vs 7-shot personalised `POST /v1/emotion`, one client, {a.latency_n} requests each "
                  "(same queries, interleaved):", "",
                  "| request | client p50 ms | client p99 ms | server p50 ms (decode + model) | model p50 ms |",
                  "|---|---:|---:|---:|---:|"]
        for kind, vals in seq.items():
            cl, sv, mo = zip(*vals)
            lines.append(f"| {kind} | {pct(cl, 50):.1f} | {pct(cl, 99):.1f} | {pct(sv, 50):.1f} | {pct(mo, 50):.1f} |")
        ratio = pct([v[0] for v in seq["emotion 7-shot"]], 50) / pct([v[0] for v in seq["emotion 0-shot"]], 50)
        lines += ["", f"7-shot / 0-shot client p50: {ratio:.2f}x (the speaker's enrollment encodings and decoder "
                  "prefix cache are kept by the server)."]

        # streamed spoken chat turns, one client
        streams = []
        for i in range(a.stream_n):
            try:
                streams.append(streamed_chat(client, speakers[i % len(speakers)], queries[i % len(queries)]))
            except (requests.RequestException, RuntimeError) as e:
                print(f"streamed chat failed: {e}", flush=True)
                total_errors += 1
        if streams:
            ttft, whole, n_chunks, transcripts = zip(*streams)
            lines += ["", f"Streamed spoken chat turns (`stream=true`, `input_audio`, up to 32 tokens), one client, "
                      f"{len(streams)} turns: time to the first token p50 {pct(ttft, 50):.0f} ms (p99 "
                      f"{pct(ttft, 99):.0f} ms; it includes decoding, Whisper and the emotion), whole reply p50 "
                      f"{pct(whole, 50):.0f} ms, {np.median(n_chunks):.0f} content chunks per reply (median). "
                      f"Example transcript: \"{transcripts[0]}\"."]
        lines += ["", f"Errors in all runs: {total_errors}."]
    table = "\n".join(lines)
    print(table)
    print(f"wrote {write_result(a.out, table, command_line())}")
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
