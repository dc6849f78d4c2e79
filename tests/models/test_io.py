import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from emoslm.models import (
    FbankTransformerEncoder,
    PretrainedMixin,
    QFormer,
    SERClassifier,
    SERClassifierConfig,
    encoder_config,
    fbank_encoder,
    qformer,
)


def test_encoder_round_trip_reproduces_outputs(tmp_path):
    enc = fbank_encoder("tiny").eval()
    feats, lengths = torch.randn(2, 30, 80), torch.tensor([30, 21])
    enc.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["_class"] == "emoslm.models.encoders.FbankTransformerEncoder" and data["d_model"] == 128
    loaded = FbankTransformerEncoder.from_pretrained(tmp_path)
    assert not loaded.training and loaded.config == enc.config
    assert torch.equal(loaded(feats, lengths).hidden, enc(feats, lengths).hidden)


def test_nested_config_round_trip_and_generic_loading(tmp_path):
    model = SERClassifier(SERClassifierConfig(encoder_config("tiny", n_layers=1), n_classes=3, enroll_mode="all")).eval()
    feats, lengths = torch.randn(2, 30, 80), torch.tensor([30, 21])
    enroll, enroll_lengths = torch.randn(2, 3, 20, 80), torch.full((2, 3), 20)
    model.save_pretrained(tmp_path / "clf")
    loaded = PretrainedMixin.from_pretrained(tmp_path / "clf")  # the class comes from config.json
    assert type(loaded) is SERClassifier and loaded.config == model.config
    assert torch.equal(loaded(feats, lengths, enroll, enroll_lengths), model(feats, lengths, enroll, enroll_lengths))


def test_qformer_round_trip(tmp_path):
    qf = qformer("tiny", d_encoder=64).eval()
    hidden = torch.randn(2, 7, 64)
    loaded = QFormer.from_pretrained(qf.save_pretrained(tmp_path))
    assert torch.equal(loaded(hidden), qf(hidden))


def test_missing_files_and_wrong_class(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        QFormer.from_pretrained(tmp_path / "nope")
    qformer("tiny").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a emoslm.models.encoders.FbankTransformerEncoder"):
        FbankTransformerEncoder.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        QFormer.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        QFormer.from_pretrained(tmp_path)


@dataclass
class _TiedConfig:
    vocab: int = 11
    d: int = 6


class _Tied(PretrainedMixin, nn.Module):
    config_class = _TiedConfig

    def __init__(self, config: _TiedConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.d)
        self.out = nn.Linear(config.d, config.vocab, bias=False)
        self.out.weight = self.embed.weight  # tied, shares storage


def test_tied_weights_are_saved_once_and_stay_tied(tmp_path):
    model = _Tied(_TiedConfig())
    model.save_pretrained(tmp_path)
    loaded = _Tied.from_pretrained(tmp_path)
    assert loaded.out.weight is loaded.embed.weight
    assert torch.equal(loaded.embed.weight, model.embed.weight)
