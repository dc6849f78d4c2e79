"""Personalised emotion recognition for applications: enroll a speaker's labelled utterances, then predict.

    from emoslm.personalization.inference import EmotionRecognizer
    rec = EmotionRecognizer.load("runs/demo/bundle")
    rec.enroll("alice", [("a1.wav", "anger"), ("a2.wav", "neutral")])
    p = rec.predict("query.wav", speaker="alice")     # p.label, p.probs, p.n_enroll, p.latency_ms

A *bundle* is a folder with the frozen speech encoder (``encoder/``) and the speech LM (``speech_lm/``).

Caches: each enrollment utterance is encoded (fbank -> encoder -> Q-Former) once, when it is enrolled; with a
decoder-only LLM the key/value cache of the enrollment prefix ``W (U_1 Z_1) ... (U_k Z_k)`` is computed once
per enrollment set and reused by every query of that speaker, so a k-shot query costs about what a 0-shot
one does. ``use_cache=False`` gives the uncached path (everything recomputed per query) for comparison.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from emoslm.audio import AudioInput, load_audio
from emoslm.errors import EmoslmError, EpisodeError
from emoslm.features import fbank
from emoslm.models.encoders import FbankTransformerEncoder
from emoslm.personalization.model import Example, SpeechICLModel


@dataclass
class Prediction:
    label: str
    probs: dict[str, float]
    n_enroll: int
    latency_ms: float
    decode: str = "score"


@dataclass
class _Speaker:
    examples: list[Example] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    prefix: object = None  # PrefixCache of the current enrollment set


def save_bundle(path: str | Path, encoder_dir: str | Path, model: SpeechICLModel, meta: dict | None = None) -> Path:
    """Write a bundle: the encoder checkpoint (copied) and the speech LM."""
    import shutil

    path = Path(path)
    if (path / "encoder").exists():
        shutil.rmtree(path / "encoder")
    shutil.copytree(encoder_dir, path / "encoder")
    model.save_pretrained(path / "speech_lm")
    (path / "bundle.json").write_text(json.dumps({"format": 1, **(meta or {})}, indent=2))
    return path


class EmotionRecognizer:
    def __init__(self, encoder, model: SpeechICLModel, max_enroll: int | None = None, threads: int | None = 1):
        if threads:
            torch.set_num_threads(threads)
        self.encoder = encoder.eval()
        self.model = model.eval()
        self.label_set = model.label_set
        self.max_enroll = max_enroll or model.cfg.max_examples
        self.speakers: dict[str, _Speaker] = {}
        self._zero_prefix = None

    @classmethod
    def load(cls, bundle: str | Path, **kw) -> "EmotionRecognizer":
        bundle = Path(bundle)
        for sub in ("encoder", "speech_lm"):
            if not (bundle / sub).is_dir():
                raise EmoslmError(f"{bundle} is not an emoslm bundle: {bundle / sub} is missing "
                                  "(make one with `emoslm demo` or emoslm.personalization.inference.save_bundle)")
        return cls(FbankTransformerEncoder.from_pretrained(bundle / "encoder"),
                   SpeechICLModel.from_pretrained(bundle / "speech_lm"), **kw)

    # ------------------------------------------------------------------------------------ encoding

    @torch.no_grad()
    def encode(self, audio: AudioInput | np.ndarray) -> torch.Tensor:
        """Audio (path, bytes or a 16 kHz float waveform) -> the LLM-space query vectors [n_q, H]."""
        wave = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        feats = torch.from_numpy(fbank(wave))[None]
        if feats.shape[1] < 4:
            raise EmoslmError("audio too short for the encoder (needs >= 40 ms)")
        enc = self.encoder(feats, torch.tensor([feats.shape[1]]))
        return self.model.speech_tokens(enc.hidden, enc.mask)[0]

    # ------------------------------------------------------------------------------------ enrollment

    def enroll(self, speaker: str, pairs: Sequence[tuple[AudioInput | np.ndarray, str]],
               ids: Sequence[str] | None = None) -> int:
        """Add (audio, label) enrollment pairs of a speaker; returns the speaker's enrollment count.

        Labels are checked against the label set first and every audio is encoded before anything is stored:
        a bad label or a broken file raises and leaves the speaker as it was."""
        labels = [self.label_set.check(lab) for _, lab in pairs]
        encoded = [self.encode(a) for a, _ in pairs]
        spk = self.speakers.setdefault(speaker, _Speaker())
        if len(spk.examples) + len(encoded) > self.max_enroll:
            raise EpisodeError(f"speaker {speaker!r} would have {len(spk.examples) + len(encoded)} enrollment "
                               f"pairs; this model takes at most {self.max_enroll}")
        for j, (u, lab) in enumerate(zip(encoded, labels)):
            spk.examples.append(Example(u, self.label_set.index(lab)))
            spk.ids.append(ids[j] if ids else f"{speaker}:{len(spk.ids)}")
        spk.prefix = None  # the enrollment set changed: the prefix cache is rebuilt on the next query
        return len(spk.examples)

    def add_encoded(self, speaker: str, speech: torch.Tensor, label: str, uid: str) -> int:
        """Add an already encoded enrollment (the service keeps encodings in its store)."""
        spk = self.speakers.setdefault(speaker, _Speaker())
        spk.examples.append(Example(speech, self.label_set.index(self.label_set.check(label))))
        spk.ids.append(uid)
        spk.prefix = None
        return len(spk.examples)

    def remove(self, speaker: str, uid: str | None = None) -> None:
        """Forget one enrollment (by id) or the whole speaker."""
        if uid is None:
            self.speakers.pop(speaker, None)
            return
        spk = self.speakers.get(speaker)
        if spk is None or uid not in spk.ids:
            raise EmoslmError(f"speaker {speaker!r} has no enrollment {uid!r}")
        i = spk.ids.index(uid)
        del spk.ids[i], spk.examples[i]
        spk.prefix = None

    def n_enrolled(self, speaker: str | None) -> int:
        return len(self.speakers[speaker].examples) if speaker in self.speakers else 0

    # ------------------------------------------------------------------------------------ prediction

    @torch.no_grad()
    def predict(self, audio: AudioInput | np.ndarray, speaker: str | None = None, *, decode: str = "score",
                use_cache: bool = True, enroll_pairs: Sequence[tuple[AudioInput | np.ndarray, str]] | None = None
                ) -> Prediction:
        """Emotion of ``audio``; personalised with the speaker's enrollments (0-shot for an unknown speaker).

        ``enroll_pairs`` gives the enrollment inline instead of a stored speaker (encoded for this call)."""
        t0 = time.perf_counter()
        if enroll_pairs is not None:
            context = [Example(self.encode(a), self.label_set.index(self.label_set.check(l))) for a, l in enroll_pairs]
            spk = None
        else:
            spk = self.speakers.get(speaker) if speaker is not None else None
            context = list(spk.examples) if spk else []
        target = self.encode(audio)
        if decode == "beam":
            label, _text = self.model.generate_label(context, target, num_beams=4)
            probs = {}
            label = label or "<invalid>"
        else:
            cache = None  # without a cache the prefix is computed inside predict_proba, for this query only
            if use_cache and enroll_pairs is None and not self.model.is_encoder_decoder:
                if spk is None:  # 0-shot: the instruction prefix is the same for everyone
                    if self._zero_prefix is None:
                        self._zero_prefix = self.model.prefix_cache([])
                    cache = self._zero_prefix
                else:
                    if spk.prefix is None:
                        spk.prefix = self.model.prefix_cache(context)
                    cache = spk.prefix
            p = self.model.predict_proba(context, target, cache=cache)
            probs = {lab: float(x) for lab, x in zip(self.label_set.labels, p)}
            label = max(probs, key=probs.get)
        return Prediction(label, probs, len(context), (time.perf_counter() - t0) * 1000, decode)
