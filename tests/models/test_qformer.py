import pytest
import torch

from emoslm.models import QFormer, QFormerConfig, qformer


@pytest.mark.parametrize("d_encoder", [128, 96])
def test_shapes(d_encoder):
    qf = qformer("tiny", d_encoder=d_encoder)
    u = qf(torch.randn(3, 11, d_encoder), torch.ones(3, 11, dtype=torch.bool))
    assert u.shape == (3, 4, 128)
    assert qf(torch.randn(2, 5, d_encoder)).shape == (2, 4, 128)  # mask None: all frames valid
    assert isinstance(qf.input_proj, torch.nn.Linear) == (d_encoder != 128)


def test_paper_preset_sizes():
    cfg = qformer("paper").config
    assert (cfg.n_queries, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_ff, cfg.dropout) == (150, 512, 2, 8, 2048, 0.1)


def test_padded_frames_are_ignored():
    qf = qformer("tiny").eval()
    hidden = torch.randn(3, 12, 128)
    lengths = torch.tensor([12, 5, 8])
    mask = torch.arange(12)[None] < lengths[:, None]
    u = qf(hidden, mask)
    changed = hidden.clone()
    changed[~mask] = torch.randn(int((~mask).sum()), 128) * 1e4
    assert torch.equal(qf(changed, mask), u)
    changed[~mask] = float("nan")
    assert torch.equal(qf(changed, mask), u)
    for i, n in enumerate(lengths.tolist()):  # and the same as each utterance alone, unpadded
        torch.testing.assert_close(qf(hidden[i : i + 1, :n])[0], u[i], atol=1e-5, rtol=1e-5)


def test_queries_attend_without_causal_mask():
    qf = qformer("tiny").eval()
    hidden = torch.randn(1, 6, 128)
    u = qf(hidden)
    with torch.no_grad():
        qf.queries[-1] += 1.0  # the last query changes ...
    assert not torch.allclose(qf(hidden)[0, 0], u[0, 0])  # ... and so does the first query's output


def test_query_init_and_bad_inputs():
    qf = QFormer(QFormerConfig(n_queries=150, d_model=64, n_heads=4, d_ff=128, d_encoder=64))
    assert 0.015 < qf.queries.std().item() < 0.025
    with pytest.raises(ValueError, match="hidden"):
        qf(torch.randn(1, 5, 32))
    with pytest.raises(ValueError, match="valid frame"):
        qf(torch.randn(1, 5, 64), torch.zeros(1, 5, dtype=torch.bool))
