"""Personalised emotion recognition for applications: enroll a speaker's labelled utterances, then predict.

    from emoslm.personalization.inference import EmotionRecognizer
    rec = EmotionRecognizer.load("runs/demo/bundle")
    rec.enroll("alice", [("a1.wav", "anger"), ("a2.wav", "neutral")])
    p = rec.predict("query.wav", speaker="alice")     # p.label, p.probs, p.confidence, p.n_enroll, p.latency_ms
    ps = rec.predict_batch(["q1.wav", "q2.wav"], speaker="alice")          # batched; a broken file -> p.error
    segs = rec.predict_segments("call.wav", speaker="alice", mode="energy")  # long audio: one per segment

A *bundle* is a folder with the frozen speech encoder (``encoder/``) and the speech LM (``speech_lm/``).

Caches: each enrollment utterance is encoded (fbank -> encoder -> Q-Former) once, when it is enrolled; with a
decoder-only LLM the key/value cache of the enrollment prefix ``W (U_1 Z_1) ... (U_k Z_k)`` is computed once
per enrollment set and reused by every query of that speaker, so a k-shot query costs about what a 0-shot
one does. ``use_cache=False`` gives the uncached path (everything recomputed per query) for comparison.

Batches (:meth:`EmotionRecognizer.predict_batch`): the fbank features of a batch are padded to its longest
utterance (utterances are sorted by length first, so little is padding) and go through the encoder and Q-Former
in one forward; the batch's query vectors are then scored in one LLM forward against the speaker's cached
enrollment prefix (repeated over the batch). The probabilities equal :meth:`~EmotionRecognizer.predict`'s
(tests/test_predict_batch.py checks within 1e-4). Long audio (:meth:`EmotionRecognizer.predict_segments`) is cut
into fixed windows or energy-detected speech regions (:mod:`emoslm.audio.segments`) that go through
``predict_batch``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from emoslm.audio import TARGET_SR, AudioInput, AudioLimits, load_audio, validate
from emoslm.audio.segments import segment_wave
from emoslm.errors import AudioError, EmoslmError, EpisodeError
from emoslm.features import fbank
from emoslm.models.encoders import FbankTransformerEncoder
from emoslm.personalization.model import Example, PrefixCache, SpeechICLModel

#: the fewest fbank frames the encoder takes (two stride-2 poolings): 40 ms
MIN_FRAMES = 4
#: arrays given to predict_batch are checked for shape, dtype and finite samples only (as predict takes them)
_ARRAY_LIMITS = AudioLimits(min_duration=0.0, max_duration=float("inf"), silence_rms=0.0)


@dataclass
class Prediction:
    label: str  # "" when ``error`` is set
    probs: dict[str, float]
    n_enroll: int
    latency_ms: float  # in a batch: amortised (the chunk's time divided by its size)
    decode: str = "score"
    confidence: float | None = None  # the largest probability (filled in from ``probs``)
    embedding: list[float] | None = None  # the utterance embedding (mean of its query vectors), when asked for
    error: str | None = None  # why this item could not be predicted (batches go on without it)
    enroll_ids: list[str] = field(default_factory=list)  # the enrollment utterances used

    def __post_init__(self) -> None:
        if self.confidence is None and self.probs:
            self.confidence = max(self.probs.values())

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SegmentPrediction:
    start: float  # seconds from the start of the audio
    end: float
    label: str
    probs: dict[str, float]
    confidence: float | None
    error: str | None = None


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
        wave = audio if isinstance(audio, np.ndarray) else _load_utterance(audio)
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

    def _context(self, speaker: str | None, enroll_pairs: Sequence[tuple[Any, str]] | None,
                 use_cache: bool = True) -> tuple[list[Example], PrefixCache | None, list[str]]:
        """The enrollment examples, the prefix cache to score against (None: computed per query) and the
        enrollment ids, for a stored speaker (0-shot when unknown) or inline ``enroll_pairs``."""
        if enroll_pairs is not None:
            context = [Example(self.encode(a), self.label_set.index(self.label_set.check(l))) for a, l in enroll_pairs]
            ids = [str(a) if isinstance(a, (str, Path)) else f"inline:{i}" for i, (a, _) in enumerate(enroll_pairs)]
            return context, None, ids
        spk = self.speakers.get(speaker) if speaker is not None else None
        context = list(spk.examples) if spk else []
        ids = list(spk.ids) if spk else []
        if not use_cache or self.model.is_encoder_decoder:
            return context, None, ids
        if spk is None:  # 0-shot: the instruction prefix is the same for everyone
            if self._zero_prefix is None:
                self._zero_prefix = self.model.prefix_cache([])
            return context, self._zero_prefix, ids
        if spk.prefix is None:
            spk.prefix = self.model.prefix_cache(context)
        return context, spk.prefix, ids

    @torch.no_grad()
    def predict(self, audio: AudioInput | np.ndarray, speaker: str | None = None, *, decode: str = "score",
                use_cache: bool = True, enroll_pairs: Sequence[tuple[AudioInput | np.ndarray, str]] | None = None,
                embeddings: bool = False) -> Prediction:
        """Emotion of ``audio``; personalised with the speaker's enrollments (0-shot for an unknown speaker).

        ``enroll_pairs`` gives the enrollment inline instead of a stored speaker (encoded for this call)."""
        t0 = time.perf_counter()
        context, cache, ids = self._context(speaker, enroll_pairs, use_cache)
        target = self.encode(audio)
        if decode == "beam":
            label, _text = self.model.generate_label(context, target, num_beams=4)
            probs = {}
            label = label or "<invalid>"
        else:
            # without a cache the prefix is computed inside predict_proba, for this query only
            p = self.model.predict_proba(context, target, cache=cache)
            probs = {lab: float(x) for lab, x in zip(self.label_set.labels, p)}
            label = max(probs, key=probs.get)
        emb = target.mean(0).tolist() if embeddings else None
        return Prediction(label, probs, len(context), (time.perf_counter() - t0) * 1000, decode, embedding=emb,
                          enroll_ids=ids)

    # ------------------------------------------------------------------------------------ batches

    @torch.no_grad()
    def encode_batch(self, waves: Sequence[np.ndarray]) -> torch.Tensor:
        """16 kHz waveforms -> query vectors [B, n_q, H]: fbank features padded to the longest, one encoder and
        Q-Former forward (padding is masked: the same vectors as :meth:`encode` one at a time)."""
        feats = [torch.from_numpy(fbank(w)) for w in waves]
        short = [i for i, f in enumerate(feats) if f.shape[0] < MIN_FRAMES]
        if short:
            raise EmoslmError(f"audio too short for the encoder (needs >= 40 ms): batch items {short}")
        lengths = torch.tensor([f.shape[0] for f in feats])
        enc = self.encoder(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths)
        return self.model.speech_tokens(enc.hidden, enc.mask)

    @torch.no_grad()
    def predict_proba_batch(self, context: Sequence[Example], targets: torch.Tensor,
                            cache: PrefixCache | None = None) -> torch.Tensor:
        """Label probabilities [B, n_labels] of B targets ([B, n_q, H]) with one enrollment context, in one LLM
        forward against the context's prefix cache (:meth:`SpeechICLModel.predict_proba_batch`)."""
        return self.model.predict_proba_batch(context, targets, cache)

    @staticmethod
    def _load_item(item: Any, name: str) -> np.ndarray:
        """One batch item as a 16 kHz waveform: a float array (checked for shape and finite samples only, as
        :meth:`predict` takes it), something with ``load_wave()`` (a manifest
        :class:`~emoslm.data.utterances.Utterance`) or what :func:`load_audio` reads."""
        if isinstance(item, np.ndarray):
            wave = validate(item, TARGET_SR, name, _ARRAY_LIMITS)
        elif hasattr(item, "load_wave"):
            wave = item.load_wave()
        else:
            wave = _load_utterance(item)
        if round(wave.size / (TARGET_SR / 100)) < MIN_FRAMES:  # fbank frames (10 ms shift, centred)
            raise AudioError(_item_name(item, name), "too short for the encoder (needs >= 40 ms)")
        return wave

    @torch.no_grad()
    def predict_batch(self, items: Sequence[Any], speaker: str | Sequence[str | None] | None = None, *,
                      batch_size: int = 16, embeddings: bool = False, progress: bool = False,
                      enroll_pairs: Sequence[tuple[AudioInput | np.ndarray, str]] | None = None
                      ) -> list[Prediction]:
        """Predictions for many utterances, in their order, computed in batches of ``batch_size``.

        ``items``: paths, bytes, 16 kHz float arrays or objects with ``load_wave()``. ``speaker``: one speaker for
        all, or one per item (the encoder's batches mix speakers; each speaker's items are scored against that
        speaker's enrollment prefix cache); ``enroll_pairs`` gives one inline enrollment for all. An item that
        cannot be loaded gets a Prediction with ``error`` set (label "", no probabilities); the others are
        predicted as usual.
        ``latency_ms`` of an item is the time of its chunk (``8 * batch_size`` items, loading included) divided
        by the chunk's size."""
        if batch_size < 1:
            raise EmoslmError(f"batch_size must be >= 1, got {batch_size}")
        items = list(items)
        if speaker is None or isinstance(speaker, str):
            speakers = [speaker] * len(items)
        else:
            speakers = list(speaker)
            if len(speakers) != len(items):
                raise EmoslmError(f"{len(speakers)} speakers for {len(items)} items")
        out: list[Prediction | None] = [None] * len(items)
        contexts: dict[str | None, tuple[list[Example], PrefixCache | None, list[str]]]
        if enroll_pairs is not None:  # an inline enrollment: encoded, and its prefix cached, once for every item
            context, _, ids = self._context(None, enroll_pairs)
            fixed = (context, None if self.model.is_encoder_decoder else self.model.prefix_cache(context), ids)
            contexts = {s: fixed for s in set(speakers)}
        else:
            contexts = {s: self._context(s, None) for s in dict.fromkeys(speakers)}
        # Load a chunk, sort it by length and encode it in batches (the encoder does not depend on the speaker:
        # full batches, little padding), then score each speaker's items of the chunk against its prefix cache.
        chunk = batch_size * 8
        with tqdm(total=len(items), desc="predict", unit="utt", disable=not progress) as bar:
            for c0 in range(0, len(items), chunk):
                t0 = time.perf_counter()
                part = range(c0, min(c0 + chunk, len(items)))
                waves: dict[int, np.ndarray] = {}
                for i in part:
                    try:
                        waves[i] = self._load_item(items[i], f"item {i}")
                    except (EmoslmError, OSError) as e:
                        context, _, ids = contexts[speakers[i]]
                        out[i] = Prediction("", {}, len(context), 0.0, error=str(e), enroll_ids=list(ids))
                        bar.update(1)
                order = sorted(waves, key=lambda i: waves[i].size)
                vectors: dict[int, torch.Tensor] = {}
                for b0 in range(0, len(order), batch_size):
                    batch = order[b0: b0 + batch_size]
                    vectors.update(zip(batch, self.encode_batch([waves[i] for i in batch])))
                by_speaker: dict[str | None, list[int]] = {}
                for i in order:
                    by_speaker.setdefault(speakers[i], []).append(i)
                probs: dict[int, torch.Tensor] = {}
                for spk, idx in by_speaker.items():
                    context, cache, _ = contexts[spk]
                    for b0 in range(0, len(idx), batch_size):
                        batch = idx[b0: b0 + batch_size]
                        probs.update(zip(batch, self.predict_proba_batch(context, torch.stack(
                            [vectors[i] for i in batch]), cache)))
                ms = (time.perf_counter() - t0) / len(part) * 1000
                for i in order:
                    context, _, ids = contexts[speakers[i]]
                    pr = {lab: float(x) for lab, x in zip(self.label_set.labels, probs[i])}
                    out[i] = Prediction(max(pr, key=pr.get), pr, len(context), ms,
                                        embedding=vectors[i].mean(0).tolist() if embeddings else None,
                                        enroll_ids=list(ids))
                bar.update(len(order))
        return [p for p in out if p is not None]

    @torch.no_grad()
    def predict_segments(self, audio: AudioInput | np.ndarray, speaker: str | None = None, *, mode: str = "fixed",
                         window_s: float = 4.0, hop_s: float | None = None, max_seconds: float = 600.0,
                         enroll_pairs: Sequence[tuple[AudioInput | np.ndarray, str]] | None = None,
                         min_s: float = 0.5, batch_size: int = 16) -> list[SegmentPrediction]:
        """Emotion over time in long audio (up to ``max_seconds``; :meth:`predict` takes what
        :data:`emoslm.audio.DEFAULT_LIMITS` allows): cut into segments (:func:`emoslm.audio.segments.segment_wave`,
        ``mode`` "fixed" windows or "energy" speech regions of at most ``window_s``) predicted as a batch.
        An array is taken as 16 kHz. Audio without any speech region (energy mode) gives an empty list."""
        limits = AudioLimits(max_duration=max_seconds)
        try:
            wave = (validate(audio, TARGET_SR, "<array>", limits) if isinstance(audio, np.ndarray)
                    else load_audio(audio, limits=limits))
        except AudioError as e:
            if e.reason.startswith("too long"):
                raise AudioError(e.path, f"{e.reason}: predict_segments reads at most max_seconds="
                                         f"{max_seconds:g} s (raise it, or cut the file)") from None
            raise
        segs = segment_wave(wave, TARGET_SR, mode=mode, window_s=window_s, hop_s=hop_s, min_s=min_s)
        pieces = [wave[int(round(s.start * TARGET_SR)): int(round(s.end * TARGET_SR))] for s in segs]
        preds = self.predict_batch(pieces, speaker, batch_size=batch_size, enroll_pairs=enroll_pairs)
        return [SegmentPrediction(s.start, s.end, p.label, p.probs, p.confidence, p.error)
                for s, p in zip(segs, preds)]


def _load_utterance(src: AudioInput) -> np.ndarray:
    """:func:`load_audio` with the default limits; audio too long for them is pointed to predict_segments."""
    try:
        return load_audio(src)
    except AudioError as e:
        if e.reason.startswith("too long"):
            raise AudioError(e.path, f"{e.reason}; for long audio use predict_segments "
                                     "(emoslm predict --segment fixed|energy)") from None
        raise


def _item_name(item: Any, default: str) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    return str(getattr(item, "id", None) or getattr(item, "name", None) or default)
