"""The one utterance record: built from a lhotse supervision, labels mapped into the task's classes, the audio
span read back."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from lhotse import Recording

from emoslm.data.manifests import make_supervision
from emoslm.data.utterances import Utterance, from_supervision
from emoslm.labels import get_label_set


def test_from_supervision_maps_the_label_and_reads_the_span(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.linspace(-0.5, 0.5, 32000, dtype=np.float32), 16000)
    rec = Recording.from_file(wav, recording_id="r1")
    sup = make_supervision("u1", "r1", 0.5, speaker="s1", emotion="anger", corpus="test", start=1.0, gender="F",
                           text="hello there")
    four = get_label_set("iemocap4")
    u = from_supervision(sup, {"r1": rec}, "test", four)
    assert isinstance(u, Utterance)
    assert (u.id, u.split, u.speaker, u.text, u.label) == ("u1", "test", "s1", "hello there", "anger")
    assert u.attrs["gender"] == "F" and u.attrs["emotion"] == "anger"
    wave = u.load_wave()
    assert wave.shape == (8000,) and abs(float(wave[0]) - 0.0) < 1e-3  # the second half starts at 0
    # an emotion outside the task's classes has no label; a whole-file utterance reads to the end
    fear = make_supervision("u2", "r1", 2.0, speaker="s1", emotion="fear", corpus="test")
    assert from_supervision(fear, {"r1": rec}, "test", four).label is None
    whole = from_supervision(fear, {"r1": rec}, "test", whole_file=True)
    assert whole.duration is None and whole.load_wave().shape == (32000,)
