"""The speech LM's interleaved ICL input, its fast paths and its caches agree with the plain definitions."""

from __future__ import annotations

import pytest
import torch

from emoslm.personalization.model import Example, SpeechICLConfig, SpeechICLModel

QF = {"n_queries": 3, "d_model": 32, "n_layers": 1, "n_heads": 4, "d_ff": 64, "dropout": 0.0}


def _model(name="tiny-llama", seed=0, relative=False, mode="full") -> SpeechICLModel:
    torch.manual_seed(seed)
    m = SpeechICLModel(SpeechICLConfig(d_encoder=16, qformer=QF, llm={"name": name, "mode": mode, "dropout": 0.0},
                                       relative_context=relative, bind_labels=relative))
    if relative:  # give the zero-initialised relative and label-binding projections some weight: they must matter
        torch.nn.init.normal_(m.rel_proj.weight, std=0.5)
        torch.nn.init.normal_(m.bind_proj.weight, std=0.5)
    return m.eval()


def _episodes(m: SpeechICLModel, b=3, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(b * n, 7, 16, generator=g)
    mask = torch.ones(b * n, 7, dtype=torch.bool)
    mask[::2, 5:] = False
    tok = m.speech_tokens(hidden, mask).view(b, n, 3, -1)
    labels = torch.randint(0, 7, (b, n), generator=g)
    eps = [[Example(tok[i, j], int(labels[i, j])) for j in range(n)] for i in range(b)]
    return tok, labels, eps


def _reference_scores(m: SpeechICLModel, context, target) -> torch.Tensor:
    """The plain definition: for each label, the whole sequence [BOS] W (U_1 Z_1) ... (U_k Z_k) U_t Z run through
    the LLM with no cache, and the log-probabilities of Z's tokens summed."""
    k = len(context)
    scores = []
    for ids in m._label_ids:
        parts = m._prefix()
        for i, ex in enumerate(context):
            parts += [m._speech(ex.speech, i, [e.speech for e in context[:i]]),
                      m._label(m._label_ids[ex.label], i, ex.speech)]
        parts += [m._speech(target, k, [e.speech for e in context]), m._label(ids, k, target)]
        embeds = torch.cat(parts)[None]
        lp = m.backbone.model(inputs_embeds=embeds).logits[0].float().log_softmax(-1)
        start = embeds.shape[1] - len(ids) - 1  # the position before the label's first token
        scores.append(sum(lp[start + j, t] for j, t in enumerate(ids)))
    return torch.stack(scores)


def test_instruction_and_labels_tokenize_cleanly():
    m = _model()
    assert m.label_len == 1  # the tiny tokenizer has one token per label word
    assert len(m._instruction_ids) > 10
    assert m.label_set.word("anger") == "Anger"


@pytest.mark.parametrize("relative", [False, True])
def test_vectorised_layout_equals_per_example_layout(relative):
    m = _model(relative=relative)
    tok, labels, eps = _episodes(m)
    fast, p, w = m.uniform_embeds(tok, labels)
    for i, ep in enumerate(eps):
        slow, positions, targets = m.sequence(ep)
        assert torch.allclose(fast[i], slow, atol=1e-6)
        # label j of example i is predicted from the position before it
        assert positions == [p + j * w + 3 - 1 for j in range(len(ep))]
        assert targets == [m._label_ids[int(x)][0] for x in labels[i]]


@pytest.mark.parametrize("all_positions", [True, False])
@pytest.mark.parametrize("relative", [False, True])
def test_vectorised_loss_equals_generic_loss(all_positions, relative):
    m = _model(relative=relative)
    tok, labels, eps = _episodes(m)
    fast, _ = m.uniform_loss(tok, labels, label_smoothing=0.1, all_positions=all_positions)
    slow, _ = m.loss(eps, label_smoothing=0.1, all_positions=all_positions)
    assert torch.allclose(fast, slow, atol=1e-5)


@pytest.mark.parametrize("relative", [False, True])
def test_scores_batched_cached_and_uncached_agree(relative):
    m = _model(relative=relative)
    tok, labels, eps = _episodes(m, b=4, n=4)
    contexts = [ep[:-1] for ep in eps]
    targets = [ep[-1].speech for ep in eps]
    batched = m.score_batch(contexts, targets)  # fast path: uniform k, single-token labels
    assert batched.shape == (4, 7)
    for i in range(4):
        uncached = m.label_log_probs(contexts[i], targets[i])
        cache = m.prefix_cache(contexts[i])
        cached = m.label_log_probs(contexts[i], targets[i], cache=cache)
        again = m.label_log_probs(contexts[i], targets[i], cache=cache)  # the cache is not consumed
        assert torch.allclose(batched[i], uncached, atol=1e-4)
        assert torch.allclose(uncached, _reference_scores(m, contexts[i], targets[i]), atol=1e-4)
        assert torch.allclose(cached, uncached, atol=1e-4) and torch.allclose(again, cached, atol=1e-6)
    p = m.predict_proba(contexts[0], targets[0])
    assert torch.isclose(p.sum(), torch.tensor(1.0)) and (p > 0).all()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("relative", [False, True])
def test_multi_token_labels_scored_from_one_pass_per_episode(relative, attention):
    """Labels of several tokens (a BPE LLM's): the batch runs each episode once, every label's later tokens in
    the same row behind a tree-shaped mask; episodes of different k pad to different lengths. Equal to each
    (episode, label) run alone, and to the plain definition."""
    m = _model(relative=relative)
    m.backbone.model.set_attn_implementation(attention)
    tok, labels, eps = _episodes(m, b=4, n=4)
    contexts = [eps[0][:-1], eps[1][:1], [], eps[3][:2]]  # k = 3, 1, 0, 2
    targets = [ep[-1].speech for ep in eps]
    single = m.score_batch(contexts, targets)  # one-token labels, mixed k: the same row layout, no label suffix
    for i in range(4):
        assert torch.allclose(single[i], _reference_scores(m, contexts[i], targets[i]), atol=1e-4)
    m._label_ids = [[5, 9], [6], [7, 11, 12], [8], [9, 5], [10, 10, 10, 10], [11]]
    batched = m.score_batch(contexts, targets)
    assert batched.shape == (4, 7)
    for i in range(4):
        alone = m.label_log_probs(contexts[i], targets[i])
        assert torch.allclose(alone, _reference_scores(m, contexts[i], targets[i]), atol=1e-4)
        assert torch.allclose(batched[i], alone, atol=1e-4), (i, batched[i], alone)
    # a label's later tokens count: scored by its first token alone (the 0-shot episode, whose context has no
    # label text), only the multi-token labels change
    full_ids = m._label_ids
    m._label_ids = [ids[:1] for ids in full_ids]
    first_only = m.label_log_probs([], targets[2])
    multi = torch.tensor([len(ids) > 1 for ids in full_ids])
    assert torch.allclose(first_only[~multi], batched[2, ~multi], atol=1e-4)
    assert (first_only[multi] > batched[2, multi] + 1e-3).all()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("multi_token", [False, True])
def test_cached_scoring_leaves_the_shared_prefix_cache_unchanged(multi_token, attention):
    """A speaker's prefix cache serves every query (the service's concurrent requests too): scoring one target or a
    batch continues a fork of it, so the cache holds exactly what it held, and the batch equals the one-by-one and
    the plain definition, whichever attention takes the labels' tree mask (booleans or additive)."""
    m = _model(relative=True)
    m.backbone.model.set_attn_implementation(attention)
    if multi_token:
        m._label_ids = [[5, 9], [6], [7, 11, 12], [8], [9, 5], [10, 10, 10, 10], [11]]
    _, _, eps = _episodes(m, b=1, n=6)
    context, targets = eps[0][:3], torch.stack([ex.speech for ex in eps[0][3:]])
    cache = m.prefix_cache(context)
    before = [(x.keys.clone(), x.values.clone()) for x in cache.past.layers]
    one = torch.stack([m.label_log_probs(context, t, cache=cache) for t in targets])
    batch = m.label_log_probs_batch(context, targets, cache)
    assert torch.allclose(batch, one, atol=1e-4)
    assert torch.allclose(m.label_log_probs_batch(context, targets), one, atol=1e-4)  # the prefix in each row
    assert torch.allclose(one[1], _reference_scores(m, context, targets[1]), atol=1e-4)
    assert cache.past.get_seq_length() == cache.length
    for (k0, v0), layer in zip(before, cache.past.layers):
        assert layer.keys.shape == k0.shape and torch.equal(layer.keys, k0) and torch.equal(layer.values, v0)


def test_zero_shot_and_too_many_examples():
    m = _model()
    tok, labels, eps = _episodes(m, b=2, n=1)
    s = m.score_batch([[], []], [eps[0][0].speech, eps[1][0].speech])
    assert s.shape == (2, 7) and torch.isfinite(s).all()
    with pytest.raises(ValueError, match="at most"):
        m.label_log_probs([eps[0][0]] * (m.cfg.max_examples + 1), eps[1][0].speech)


def test_generation_returns_a_label_or_none():
    m = _model()
    _, _, eps = _episodes(m, b=1, n=3)
    label, text = m.generate_label(eps[0][:-1], eps[0][-1].speech, num_beams=4)
    assert label is None or label in m.label_set.labels
    assert isinstance(text, str)


def test_encoder_decoder_backbone_trains_and_scores():
    m = _model("tiny-t5")
    _, _, eps = _episodes(m, b=2, n=3)
    m.train()
    loss, info = m.loss(eps)
    loss.backward()
    assert torch.isfinite(loss) and info["n_targets"] == 4  # one label token + </s> per episode
    m.eval()
    p = m.predict_proba(eps[0][:-1], eps[0][-1].speech)
    assert p.shape == (7,) and torch.isclose(p.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("mode", ["full", "lora", "frozen"])
def test_llm_parameters_train_with_the_model(mode):
    """The LLM is a registered submodule: its trainable weights (all, LoRA only, none) reach the optimizer and
    change with a step, and train()/eval() reach its dropout."""
    m = _model(mode=mode)
    llm_params = {id(p) for p in m.llm.parameters() if p.requires_grad}
    assert llm_params <= {id(p) for p in m.parameters()}
    if mode == "frozen":
        assert not llm_params
    else:
        assert llm_params and all(("lora_" in n) == (mode == "lora") for n, p in m.llm.named_parameters()
                                  if p.requires_grad)
    before = {n: p.detach().clone() for n, p in m.llm.named_parameters()}
    tok, labels, _ = _episodes(m)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=1.0)
    m.train()
    assert m.llm.training
    m.uniform_loss(tok.detach(), labels)[0].backward()
    opt.step()
    changed = {n for n, p in m.llm.named_parameters() if not torch.equal(p, before[n])}
    expected = {n for n, p in m.llm.named_parameters() if p.requires_grad and p.grad is not None and p.grad.any()}
    assert changed == expected and bool(changed) == (mode != "frozen")
    m.eval()
    assert not m.llm.training


@pytest.mark.parametrize("relative", [False, True])
def test_save_and_load_reproduce_scores(tmp_path, relative):
    m = _model(relative=relative)
    with torch.no_grad():  # a trained LLM: its weights must be saved, not rebuilt from the seeded init
        for p in m.llm.parameters():
            p.add_(0.01 * torch.randn_like(p))
    _, _, eps = _episodes(m, b=1, n=4)
    before = m.label_log_probs(eps[0][:-1], eps[0][-1].speech)
    m.save_pretrained(tmp_path / "ckpt")
    m2 = SpeechICLModel.from_pretrained(tmp_path / "ckpt").eval()
    after = m2.label_log_probs(eps[0][:-1], eps[0][-1].speech)
    assert torch.allclose(before, after, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="config.json"):
        SpeechICLModel.from_pretrained(tmp_path / "nothing")
