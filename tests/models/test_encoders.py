import pytest
import torch

from emoslm.models import (
    AttentivePooling,
    FbankTransformerEncoder,
    SERClassifier,
    SERClassifierConfig,
    encoder_config,
    fbank_encoder,
    subsampled_lengths,
)


def _padded_batch(lengths, n_mels=80, pad_value=None):
    """Random features padded to the longest length with garbage (not zeros), so leaks would show."""
    t = max(lengths)
    feats = torch.randn(len(lengths), t, n_mels)
    for i, n in enumerate(lengths):
        feats[i, n:] = 1e3 * torch.randn(t - n, n_mels) if pad_value is None else pad_value
    return feats, torch.tensor(lengths)


def test_output_length_is_floor_of_quarter():
    enc = fbank_encoder("tiny", n_layers=1).eval()
    for t in range(4, 24):
        out = enc(torch.randn(1, t, 80), torch.tensor([t]))
        assert out.hidden.shape == (1, t // 4, 128)
        assert out.lengths.tolist() == [t // 4]
        assert out.mask.all()
    lengths = torch.tensor([4, 5, 6, 7, 8, 99, 100, 103])
    assert subsampled_lengths(lengths).tolist() == [1, 1, 1, 1, 2, 24, 25, 25]


def test_mask_and_lengths_of_a_padded_batch():
    enc = fbank_encoder("tiny").eval()
    feats, lengths = _padded_batch([41, 16, 30])
    out = enc(feats, lengths)
    assert out.hidden.shape == (3, 10, 128)
    assert out.lengths.tolist() == [10, 4, 7]
    assert out.mask.sum(1).tolist() == [10, 4, 7]
    assert out.mask.dtype == torch.bool
    assert (out.hidden[~out.mask] == 0).all()


def test_too_short_or_inconsistent_lengths_are_rejected():
    enc = fbank_encoder("tiny", n_layers=1)
    with pytest.raises(ValueError, match="lengths"):
        enc(torch.randn(2, 10, 80), torch.tensor([10, 3]))
    with pytest.raises(ValueError, match="lengths"):
        enc(torch.randn(2, 10, 80), torch.tensor([10, 11]))
    with pytest.raises(ValueError, match="feats"):
        enc(torch.randn(2, 10, 40), torch.tensor([10, 10]))


def test_padding_does_not_change_valid_frames():
    enc = fbank_encoder("tiny").eval()
    feats, lengths = _padded_batch([57, 23, 34, 58])
    with torch.no_grad():
        batch = enc(feats, lengths, output_hidden_states=True)
        for i, n in enumerate(lengths.tolist()):
            alone = enc(feats[i : i + 1, :n], lengths[i : i + 1], output_hidden_states=True)
            k = n // 4
            torch.testing.assert_close(batch.hidden[i, :k], alone.hidden[0], atol=1e-5, rtol=1e-5)
            for hb, ha in zip(batch.hidden_states, alone.hidden_states):
                torch.testing.assert_close(hb[i, :k], ha[0], atol=1e-5, rtol=1e-5)


def test_hidden_states_hold_the_embedding_and_every_block():
    enc = fbank_encoder("tiny", n_layers=3).eval()
    feats, lengths = _padded_batch([40, 33])
    out = enc(feats, lengths, output_hidden_states=True)
    assert len(out.hidden_states) == 3 + 1
    assert all(h.shape == out.hidden.shape for h in out.hidden_states)
    assert torch.equal(out.hidden_states[-1], out.hidden)
    assert enc(feats, lengths).hidden_states is None


def test_attentive_pooling_ignores_padding():
    pool = AttentivePooling(16)
    hidden = torch.randn(3, 9, 16)
    mask = torch.tensor([[True] * 9, [True] * 4 + [False] * 5, [True] * 7 + [False] * 2])
    garbage = hidden.clone()
    garbage[~mask] = float("nan")
    pooled = pool(garbage, mask)
    assert pooled.shape == (3, 16) and torch.isfinite(pooled).all()
    for i, n in enumerate(mask.sum(1).tolist()):
        torch.testing.assert_close(pooled[i], pool(hidden[i : i + 1, :n])[0])


def _tiny_classifier(mode, n_classes=3):
    cfg = SERClassifierConfig(encoder_config("tiny", n_layers=1, dropout=0.0), n_classes=n_classes, enroll_mode=mode)
    return SERClassifier(cfg)


@pytest.mark.parametrize("mode", ["none", "neutral", "all"])
def test_ser_classifier_forward_and_one_step_reduces_loss(mode):
    n_classes, b = 3, 4
    model = _tiny_classifier(mode, n_classes)
    feats, lengths = _padded_batch([40, 32, 28, 36])
    labels = torch.tensor([0, 1, 2, 1])
    kwargs = {}
    if mode != "none":
        n = model.config.n_enroll
        assert n == (1 if mode == "neutral" else n_classes)
        enroll, _ = _padded_batch([24] * (b * n))
        kwargs = {"enroll_feats": enroll.view(b, n, 24, 80), "enroll_lengths": torch.full((b, n), 24)}
        kwargs["enroll_lengths"][:, 0] = 20  # padded enrollment utterances too
    assert model.head.linear.in_features == {"none": 1, "neutral": 3, "all": 1 + 2 * n_classes}[mode] * 128

    logits = model(feats, lengths, **kwargs)
    assert logits.shape == (b, n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)  # a small plain gradient step must lower the loss
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(model(feats, lengths, **kwargs), labels)
    assert after < loss.detach()


def test_neutral_mode_accepts_several_enrollment_utterances():
    model = _tiny_classifier("neutral").eval()
    feats, lengths = _padded_batch([40, 32])
    enroll, _ = _padded_batch([24] * 6)
    logits = model(feats, lengths, enroll.view(2, 3, 24, 80), torch.full((2, 3), 24))
    assert logits.shape == (2, 3)


def test_enrollment_arguments_are_checked():
    feats, lengths = _padded_batch([40, 32])
    enroll = torch.randn(2, 2, 24, 80)
    with pytest.raises(ValueError, match="none"):
        _tiny_classifier("none")(feats, lengths, enroll, torch.full((2, 2), 24))
    with pytest.raises(ValueError, match="enroll_feats"):
        _tiny_classifier("neutral")(feats, lengths)
    with pytest.raises(ValueError, match="one utterance per class"):
        _tiny_classifier("all")(feats, lengths, enroll, torch.full((2, 2), 24))
    with pytest.raises(ValueError, match="enroll_mode"):
        SERClassifierConfig(enroll_mode="some")
    with pytest.raises(ValueError, match="n_enroll"):
        SERClassifierConfig(n_classes=4, enroll_mode="all", n_enroll=2)


def test_pretrained_variant_freezes_a_copy_of_the_encoder():
    encoder = fbank_encoder("tiny", n_layers=1)
    model = SERClassifier.from_encoder(encoder, n_classes=4, enroll_mode="neutral")
    assert all(torch.equal(a, b) for a, b in zip(model.encoder.state_dict().values(), encoder.state_dict().values()))
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters()) and all(p.requires_grad for p in model.pooling.parameters())
    model.train()
    assert not model.encoder.training and model.head.training  # frozen encoder keeps dropout off
    before = [p.clone() for p in model.encoder.parameters()]
    feats, lengths = _padded_batch([40, 32])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(feats, lengths, torch.randn(2, 1, 24, 80), torch.full((2, 1), 24)).sum().backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.encoder.parameters()))


def test_encode_gives_pooled_embeddings():
    model = _tiny_classifier("none").eval()
    feats, lengths = _padded_batch([40, 32])
    assert model.encode(feats, lengths).shape == (2, 128)
    assert isinstance(model.encoder, FbankTransformerEncoder)
