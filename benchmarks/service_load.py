"""Load test of the voice service through its HTTP API: errors and latency under concurrent clients.

Starts ``emoslm serve`` (a real uvicorn process on loopback) with a model bundle (default ``runs/demo/bundle``,
else a tiny random one), enrolls 7 utterances (one per emotion) for each of 4 speakers, then:

1. a bounded load run per concurrency level: N requests from C client threads (each a keep-alive session), a
   fixed mix of ``POST /v1/emotion`` 0-shot (40 %), ``POST /v1/emotion`` 7-shot personalised (40 %),
   ``GET /v1/speakers`` (10 %) and ``GET /v1/speakers/{id}/enrollments`` (10 %); errors (anything but 200)
   and client-side p50/p99 latency per kind, throughput;
2. 0-shot vs 7-shot latency through the API with one client (same query audio, interleaved), client-side
   and as the server reports it (``latency_ms``: decoding + recognition; ``model_latency_ms``: recognition).

Query and enrollment audio: the demo corpus's utterances (``data/synth_demo``) when present, else tones.

Usage: python benchmarks/service_load.py [--requests 1200] [--concurrency 1 4 16] [--bundle DIR]
Writes benchmarks/results/service.md.
"""

from __future__ import annotations

import argparse
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
from _common import write_result  # noqa: E402

from emoslm.labels import EKMAN7  # noqa: E402
from emoslm.service.store import Store  # noqa: E402
from emoslm.service.testing import ServerProcess, build_tiny_bundle, tone, wav_bytes  # noqa: E402

MIX = (("emotion 0-shot", 0.4), ("emotion 7-shot", 0.4), ("list speakers", 0.1), ("list enrollments", 0.1))


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
    return kind.startswith("emotion") and body["n_enrollments_used"] != (7 if kind == "emotion 7-shot" else 0)


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
    ap.add_argument("--out", default="benchmarks/results/service.md")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="emoslm-service-bench-"))
    bundle = a.bundle or ("runs/demo/bundle" if Path("runs/demo/bundle/speech_lm").is_dir() else None)
    bundle_note = bundle or "tiny random bundle (runs/demo/bundle missing)"
    bundle = bundle or build_tiny_bundle(tmp)
    key = Store(tmp / "data").create_api_key("bench")
    enroll, queries = corpus_audio(Path(a.corpus))
    with ServerProcess(bundle, tmp / "data", llm="tiny-llama", extra=["--quiet"]) as server:
        client = Client(server.url, key)
        s = client.session
        for spk, pairs in enroll.items():
            s.post(f"{server.url}/v1/speakers", json={"id": spk}).raise_for_status()
            for audio, label in pairs:
                s.post(f"{server.url}/v1/speakers/{spk}/enrollments", data={"label": label},
                       files={"file": ("e.wav", audio)}).raise_for_status()
        speakers = list(enroll)
        load_run(client, speakers, queries, 40, 2, seed=0)  # warm-up

        lines = ["# Voice service load test", "",
                 f"Server: `emoslm serve` (uvicorn, 1 process, torch threads 2), bundle `{bundle_note}`; "
                 f"{len(speakers)} speakers with 7 enrollments each; query audio: "
                 f"{'demo corpus utterances' if (Path(a.corpus) / 'wav').is_dir() else 'synthetic tones'}. "
                 "Client and server share the machine's 2 cores. Latency is client-side (request sent to "
                 "answer read).", "",
                 "| concurrency | kind | requests | errors | p50 ms | p99 ms | throughput req/s |",
                 "|---:|---|---:|---:|---:|---:|---:|"]
        total_errors = 0
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
            lines.append(f"| **{c}** | **all** | **{len(results)}** | **{len(bad)}** | **{pct(lat, 50):.1f}** | "
                         f"**{pct(lat, 99):.1f}** | **{len(results) / seconds:.1f}** |")
            print(f"concurrency {c}: {len(results)} requests in {seconds:.1f} s, {len(bad)} errors", flush=True)

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
                  f"prefix cache are kept by the server). Errors in all runs: {total_errors}."]
    table = "\n".join(lines)
    print(table)
    cmd = "python benchmarks/service_load.py " + " ".join(sys.argv[1:])
    print(f"wrote {write_result(a.out, table, cmd.strip())}")
    return 1 if total_errors else 0


if __name__ == "__main__":
    sys.exit(main())
