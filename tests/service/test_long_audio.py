"""Long audio: longer than one window (4 s), the emotion of each segment with its start and end, up to the
server's --max-seconds; the clip's label is the segments' duration-weighted mean."""

from __future__ import annotations

import base64

import numpy as np
import requests

from emoslm.service.testing import tone, wav_bytes


def _emotion(api, audio: bytes, speaker: str | None = None) -> requests.Response:
    return api.post(f"{api.base}/v1/emotion", files={"file": ("long.wav", audio)}, timeout=120,
                    data={"speaker_id": speaker} if speaker else {})


def test_per_segment_emotions_with_timestamps(api, server):
    wave = np.concatenate([tone(120, 4.0), tone(260, 4.0), tone(180, 2.0)])  # 10 s: --max-seconds of this server
    r = _emotion(api, wav_bytes(wave))
    assert r.status_code == 200, r.text
    body = r.json()
    segs = body["segments"]
    assert body["duration"] == 10.0 and [(s["start"], s["end"]) for s in segs] == [(0, 4), (4, 8), (8, 10)]
    for s in segs:
        assert abs(sum(s["probabilities"].values()) - 1) < 1e-4
        assert s["label"] == max(s["probabilities"], key=s["probabilities"].get)
        assert abs(s["confidence"] - max(s["probabilities"].values())) < 1e-6
    # the clip's probabilities: the segments' mean weighted by duration
    mean = {k: sum(s["probabilities"][k] * (s["end"] - s["start"]) for s in segs) / 10 for k in body["probabilities"]}
    assert all(abs(mean[k] - body["probabilities"][k]) < 1e-5 for k in mean)
    assert body["label"] == max(mean, key=mean.get)
    # a segment's emotion is what the same stretch of audio gets alone
    alone = _emotion(api, wav_bytes(wave[4 * 16000: 8 * 16000])).json()
    assert alone["segments"] is None  # one window: no segments
    assert all(abs(alone["probabilities"][k] - segs[1]["probabilities"][k]) < 1e-3 for k in mean)


def test_segments_are_personalised_and_reach_the_chat(api):
    api.post(f"{api.base}/v1/speakers", json={"id": "long-talker"}).raise_for_status()
    for f0, label in ((130, "anger"), (230, "joy")):
        api.post(f"{api.base}/v1/speakers/long-talker/enrollments", data={"label": label},
                 files={"file": ("e.wav", wav_bytes(tone(f0)))}).raise_for_status()
    audio = wav_bytes(np.concatenate([tone(130, 3.0), tone(230, 3.0)]))
    body = _emotion(api, audio, "long-talker").json()
    assert body["mode"] == "personalised" and body["n_enrollments_used"] == 2
    assert [(s["start"], s["end"]) for s in body["segments"]] == [(0, 4), (4, 6)]
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": "wav"}}
    chat = api.post(f"{api.base}/v1/chat/completions", timeout=120, json={
        "user": "long-talker", "max_tokens": 2, "messages": [{"role": "user", "content": [part]}]}).json()
    assert chat["emotion"]["segments"] == body["segments"] and chat["emotion"]["label"] == body["label"]
