"""Paper 002's model and recipe: adapter shapes and masks, the input layout, ERR's sampling proportions, frozen
parts staying frozen in every stage, save/load, and a tiny end-to-end run of all three stages and the tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from emoslm.dual_info import recipe
from emoslm.dual_info.model import (
    SOURCES,
    DualInfoConfig,
    DualInfoSLM,
    Example,
    LinguisticAdapter,
    ParalinguisticAdapter,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = {"name": "tiny-llama"}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.manual_seed(0)
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def conversations(corpus, tmp_path_factory) -> Path:
    from emoslm.dual_info.conversations import build_conversations
    from emoslm.models.text_llm import load_backend

    out = tmp_path_factory.mktemp("dual") / "conv"
    build_conversations(corpus, out, load_backend("tiny-llama"), preset="tiny", progress=False)
    return out


def tiny_model(**kw) -> DualInfoSLM:
    return DualInfoSLM(DualInfoConfig(speech_dim=16, llm=TINY, p_len=4, p_heads=8, p_ff=32, l_stack=5,
                                      l_hidden=32, **kw))


def frames(t: int, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((t, d)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ adapters


def test_paralinguistic_adapter_fixed_length_and_padding_ignored():
    a = ParalinguisticAdapter(16, 24, p_len=4, heads=8, d_ff=32).eval()
    x = torch.randn(2, 30, 16)
    mask = torch.zeros(2, 30, dtype=torch.bool)
    mask[0, :30] = True
    mask[1, :7] = True  # shorter than... anything: still p_len vectors
    out = a(x, mask)
    assert out.shape == (2, 4, 24)
    # padded frames change nothing, and a batch neighbour changes nothing
    y = x.clone()
    y[1, 7:] = 1e3
    assert torch.allclose(a(y, mask)[1], out[1], atol=1e-5)
    alone = a(x[1:2, :7], mask[1:2, :7])
    assert torch.allclose(alone[0], out[1], atol=1e-5)
    # fewer frames than p_len still works (adaptive pooling repeats frames)
    assert a(torch.randn(1, 2, 16), torch.ones(1, 2, dtype=torch.bool)).shape == (1, 4, 24)


def test_linguistic_adapter_stacks_k_frames_and_masks():
    a = LinguisticAdapter(16, 24, k=5, hidden=32)
    x = torch.randn(2, 13, 16)
    mask = torch.zeros(2, 13, dtype=torch.bool)
    mask[0] = True
    mask[1, :6] = True
    out, m = a(x, mask)
    assert out.shape == (2, 3, 24)  # ceil(13 / 5)
    assert m.tolist() == [[True, True, True], [True, True, False]]  # ceil(6 / 5) = 2
    y = x.clone()
    y[1, 6:] = 1e3  # padding inside the last valid group and beyond
    out2, _ = a(y, mask)
    assert torch.allclose(out2[1, :2], out[1, :2])
    alone, _ = a(x[1:2, :6], mask[1:2, :6])
    assert torch.allclose(alone[0], out[1, :2], atol=1e-6)
    # the k frames of a group are concatenated in order: swapping two frames of a group changes its output
    z = x.clone()
    z[0, [0, 1]] = z[0, [1, 0]]
    assert not torch.allclose(a(z, mask)[0][0, 0], out[0, 0])
    assert torch.allclose(a(z, mask)[0][0, 1:], out[0, 1:])


def test_example_rejects_unknown_sources():
    with pytest.raises(ValueError, match="p_source"):
        Example(frames(5), [], "", p_source="caption")


# ------------------------------------------------------------------------------------------------ layout


def test_prefix_layout_context_p_l_prompt():
    m = tiny_model().eval()
    ex = Example(frames(20), [{"role": "system", "content": "be kind"}], "Transcribe the speech.",
                 caption="A woman speaks loudly.", transcript="hello there")
    p_out, l_out = m._speech_slots([ex])
    before, after = m.render(ex.context, ex.instruction)
    assert before.startswith("system: be kind") and after.endswith("assistant: ")
    assert "Transcribe the speech." in after
    emb_before, emb_after = m._embed_text(before), m._embed_text(after)
    pre = m.prefix(ex, p_out[0], l_out[0])
    nb, np_, nl = emb_before.shape[0], m.cfg.p_len, 4  # ceil(20 / 5) linguistic vectors
    assert pre.shape[0] == nb + np_ + nl + emb_after.shape[0]
    assert torch.equal(pre[:nb], emb_before)
    assert torch.equal(pre[nb:nb + np_], p_out[0])
    assert torch.equal(pre[nb + np_:nb + np_ + nl], l_out[0])
    assert torch.equal(pre[nb + np_ + nl:], emb_after)
    # text replacements: the caption in the P slot, the transcript in the L slot; "none" leaves them out
    text = m.prefix(replace(ex, p_source="text", l_source="text"), None, None)
    cap, tr = m._embed_text(ex.caption + " "), m._embed_text(ex.transcript)
    assert torch.equal(text[nb:nb + cap.shape[0]], cap)
    assert torch.equal(text[nb + cap.shape[0]:nb + cap.shape[0] + tr.shape[0]], tr)
    none = m.prefix(replace(ex, p_source="none", l_source="none"), None, None)
    assert torch.equal(none, torch.cat([emb_before, emb_after]))


def test_prefix_uses_the_llm_chat_template_when_it_has_one():
    from transformers import PreTrainedTokenizerFast

    m = tiny_model()
    tok = m.tokenizer
    assert isinstance(tok, PreTrainedTokenizerFast)
    tok.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                         "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    before, after = m.render([{"role": "system", "content": "S"}], "Q?")
    assert before == "<|system|>S</s><|user|>" and after == " Q?</s><|assistant|>"


# ------------------------------------------------------------------------------------------------ ERR


def test_err_sampling_proportions():
    rng = np.random.default_rng(0)
    n = 30000
    for side, slot in (("l", 0), ("p", 1)):
        draws = [recipe.err_sources(side, rng) for _ in range(n)]
        trained = [d[1 - slot] for d in draws]
        assert set(trained) == {"speech"}  # the adapter being trained always gets the speech
        other = [d[slot] for d in draws]
        for s in SOURCES:
            assert abs(other.count(s) / n - 1 / 3) < 0.015, (side, s, other.count(s) / n)
    with pytest.raises(ValueError):
        recipe.err_sources("x", rng)


def _recipe(corpus, conversations, tmp_path, stage: int, **kw) -> recipe.DualInfoRecipe:
    cfg = recipe.DualInfoRecipeConfig(
        data=str(corpus), conversations=str(conversations), features=str(tmp_path.parent / "feats"),
        out_dir=str(tmp_path / f"s{stage}"), stage=stage, batch_size=6, threads=1, progress=False, dev_examples=6,
        model={"llm": TINY, "p_len": 4, "p_heads": 8, "p_ff": 64, "dropout": 0.1, "l_hidden": 64}, **kw)
    cfg.train = replace(cfg.train, max_steps=3, eval_every=3, save_every=3, warmup_steps=1, progress=False)
    r = recipe.DualInfoRecipe(cfg)
    r.setup()
    return r


def test_stage2_batches_split_between_the_adapters(corpus, conversations, tmp_path):
    r = _recipe(corpus, conversations, tmp_path, 2)
    rng = np.random.default_rng(1)
    p_other, l_other = [], []
    for step in range(200):
        batch = r.batch_fn(step, rng)
        assert sum(e.train_p and not e.train_l for e in batch) == 3
        assert sum(e.train_l and not e.train_p for e in batch) == 3
        for e in batch:
            if e.train_l:
                assert e.task == "asr" and e.l_source == "speech"
                p_other.append(e.p_source)
            else:
                assert e.task in recipe.ATTRIBUTE_TASKS and e.p_source == "speech"
                l_other.append(e.l_source)
    for other in (p_other, l_other):
        shares = [other.count(s) / len(other) for s in SOURCES]
        assert all(abs(x - 1 / 3) < 0.05 for x in shares), shares


def test_err_odds_of_the_other_slot_and_the_share_of_each_adapter_are_settings(corpus, conversations, tmp_path):
    rng = np.random.default_rng(0)
    assert {recipe.err_sources("p", rng, {"speech": 0, "text": 0, "none": 1})[1] for _ in range(200)} == {"none"}
    draws = [recipe.err_sources("l", rng, {"speech": 0, "text": 1, "none": 3})[0] for _ in range(8000)]
    assert "speech" not in draws and abs(draws.count("none") / len(draws) - 0.75) < 0.03
    # the paralinguistic adapter alone, on questions whose only speech input is the P-Embs (Table I's P-Embs)
    r = _recipe(corpus, conversations, tmp_path, 2, err_p_share=1.0,
                err_other_sources={"speech": 0.0, "text": 0.0, "none": 1.0})
    for batch in (r.batch_fn(step, rng) for step in range(20)):
        assert all(e.train_p and not e.train_l and e.task in recipe.ATTRIBUTE_TASKS and e.p_source == "speech"
                   and e.l_source == "none" for e in batch)
    assert all(e.train_p and e.l_source == "none" for e in r.dev_set)
    # a quarter of each batch trains the paralinguistic adapter; the dev set interleaves the two kinds
    r = _recipe(corpus, conversations, tmp_path, 2, err_p_share=0.25)
    assert [e.train_p for e in r.batch_fn(0, rng)] == [True] + [False] * 5  # floor(6 / 4) of a batch of 6
    assert [e.train_p for e in r.dev_set] == [True, False, False, False, True, False]
    for bad in ({"err_p_share": 1.5}, {"err_other_sources": {"speech": 0.0, "text": 0.0, "none": 0.0}},
                {"err_other_sources": {"caption": 1.0}}, {"err_other_sources": {"none": -1.0}}):
        with pytest.raises(ValueError, match="err_"):
            _recipe(corpus, conversations, tmp_path, 2, **bad)


def test_asr_examples_can_train_the_paralinguistic_adapter_with_the_linguistic_one_frozen(corpus, conversations,
                                                                                          tmp_path):
    # err_asr_trains=p: P-only attribute questions plus P&L ASR, every example training the paralinguistic adapter
    r = _recipe(corpus, conversations, tmp_path, 2, err_p_share=0.5, err_asr_trains="p",
                err_other_sources={"speech": 0.0, "text": 0.0, "none": 1.0})
    rng = np.random.default_rng(0)
    batch = r.batch_fn(0, rng)
    asr = [e for e in batch if e.task == "asr"]
    assert len(asr) == 3 and all(e.p_source == e.l_source == "speech" for e in asr)
    assert all(e.l_source == "none" for e in batch if e.task != "asr")
    assert all(e.train_p and not e.train_l for e in [*batch, *r.dev_set])
    m = r.model.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    before = {"p": _snapshot(m.para), "l": _snapshot(m.ling)}
    opt.zero_grad(set_to_none=True)
    loss, _ = m.loss(asr)  # the ASR examples alone: their gradient reaches the paralinguistic adapter
    loss.backward()
    assert all(p.grad is None for p in m.ling.parameters())
    opt.step()
    assert _changed(before["p"], m.para) and not _changed(before["l"], m.ling)
    # err_asr_trains=lp: each ASR example trains one adapter, ERR's way (L-only here) or P&L training the P adapter
    r = _recipe(corpus, conversations, tmp_path, 2, err_p_share=0.5, err_asr_trains="lp",
                err_other_sources={"speech": 0.0, "text": 0.0, "none": 1.0})
    asr = [e for step in range(40) for e in r.batch_fn(step, rng) if e.task == "asr"]
    by_l = [e for e in asr if e.train_l]
    assert all(not e.train_p and e.p_source == "none" and e.l_source == "speech" for e in by_l)
    assert all(e.train_p and e.p_source == e.l_source == "speech" for e in asr if not e.train_l)
    assert 0.4 < len(by_l) / len(asr) < 0.6
    with pytest.raises(ValueError, match="err_asr_trains"):
        _recipe(corpus, conversations, tmp_path, 2, err_asr_trains="both")


def test_stage3_single_information_examples_can_be_drawn_as_in_err(corpus, conversations, tmp_path):
    rng = np.random.default_rng(0)
    # the default: both slots from speech, both adapters trained
    r = _recipe(corpus, conversations, tmp_path, 3, init_from=None, dual_share=0.0)
    batch = [e for step in range(10) for e in r.batch_fn(step, rng)]
    assert all(e.train_p and e.train_l and e.p_source == e.l_source == "speech" for e in batch)
    # stage3_single=err: one adapter per example, the other slot empty here; conversation turns still train both
    r = _recipe(corpus, conversations, tmp_path, 3, init_from=None, dual_share=0.5, stage3_single="err",
                err_p_share=0.25, err_other_sources={"speech": 0.0, "text": 0.0, "none": 1.0})
    batch = [e for step in range(40) for e in r.batch_fn(step, rng)]
    single = [e for e in batch if e.task != "conversation"]
    dual = [e for e in batch if e.task == "conversation"]
    assert dual and all(e.train_p and e.train_l for e in dual)
    assert all(e.train_p != e.train_l for e in single)
    assert all(e.task == "asr" and e.p_source == "none" for e in single if e.train_l)
    assert all(e.task != "asr" and e.l_source == "none" for e in single if e.train_p)
    assert 0.1 < sum(e.train_p for e in single) / len(single) < 0.4
    with pytest.raises(ValueError, match="stage3_single"):
        _recipe(corpus, conversations, tmp_path, 3, stage3_single="holistic")


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[n], p) for n, p in module.named_parameters())


def test_err_step_trains_only_its_adapter_and_never_the_llm(corpus, conversations, tmp_path):
    r = _recipe(corpus, conversations, tmp_path, 2)
    m = r.model.train()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    assert not any(p.requires_grad for p in m.llm.parameters())
    rng = np.random.default_rng(0)
    for side, trained, frozen in (("l", m.ling, m.para), ("p", m.para, m.ling)):
        batch = [r.draw(r.train_utts, [], rng, side) for _ in range(4)]
        batch = [replace(e, p_source="speech", l_source="speech") for e in batch]  # the frozen adapter is used
        before = {"trained": _snapshot(trained), "frozen": _snapshot(frozen), "llm": _snapshot(m.llm)}
        opt.zero_grad(set_to_none=True)
        loss, _ = m.loss(batch)
        loss.backward()
        assert all(p.grad is None for p in frozen.parameters())
        opt.step()
        assert _changed(before["trained"], trained)
        assert not _changed(before["frozen"], frozen)
        assert not _changed(before["llm"], m.llm)


def test_save_and_load_round_trip(tmp_path):
    m = tiny_model().eval()
    with torch.no_grad():
        for p in m.para.parameters():
            p.add_(0.1)
    ex = Example(frames(12), [{"role": "system", "content": "x"}], "Transcribe the speech.")
    loss, _ = m.loss([replace(ex, target="abc")])
    m.save_pretrained(tmp_path / "ckpt")
    m2 = DualInfoSLM.from_pretrained(tmp_path / "ckpt")
    loss2, _ = m2.loss([replace(ex, target="abc")])
    assert torch.allclose(loss, loss2)
    assert m.generate([ex], 5) == m2.generate([ex], 5)
    # a pretrained (non-tiny) LLM would not be saved: only the adapters' keys plus the tiny LLM here
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["_class"] == "DualInfoSLM" and cfg["p_len"] == 4


def test_batched_generation_matches_one_at_a_time():
    m = tiny_model().eval()
    exs = [Example(frames(t, seed=t), [{"role": "system", "content": "s"}], "Q?") for t in (6, 17, 11)]
    together = m.generate(exs, 6)
    assert together == [m.generate([e], 6)[0] for e in exs]


# ------------------------------------------------------------------------------------------------ features


def test_whisper_features_are_cached(tmp_path):
    from emoslm.models.frozen_speech import FeatureCache, build_frozen_encoder

    enc = build_frozen_encoder({"kind": "whisper", "model": "tiny.en"})
    assert enc.dim == 384 and enc.frame_rate == 50
    wave = (np.random.default_rng(0).standard_normal(32000) * 0.1).astype(np.float32)
    cache = FeatureCache(tmp_path, enc)
    calls = []

    def load():
        calls.append(1)
        return wave

    a = cache.get("utt/1", load)
    assert a.shape == (100, 384)  # 2 s at 50 Hz
    b = cache.get("utt/1", load)
    assert len(calls) == 1 and np.allclose(a, b, atol=1e-2)
    cache.path("utt/1").write_bytes(b"torn")  # a torn file is recomputed, not an error
    cache.get("utt/1", load)
    assert len(calls) == 2
    assert json.loads((cache.dir / "spec.json").read_text())["model"] == "tiny.en"


def test_missing_whisper_model_names_what_is_missing(tmp_path):
    from emoslm.errors import EmoslmError
    from emoslm.models.frozen_speech import whisper_dir

    with pytest.raises(EmoslmError, match="model.bin"):
        whisper_dir(str(tmp_path))


# ------------------------------------------------------------------------------------------------ end to end


def test_three_stages_and_tables_end_to_end(corpus, conversations, tmp_path):
    from emoslm.dual_info.evaluation import to_markdown
    from emoslm.dual_info.pipeline import DualInfoRun, run_all
    from emoslm.models.llm import LLMSpec, load_backbone

    run = DualInfoRun(data=str(corpus), conversations=str(conversations), features=str(tmp_path / "feats"),
                      runs=str(tmp_path / "runs"), llm="tiny-llama", steps=(3, 3, 3), minutes=None, batch_size=4,
                      threads=1, test_utterances=5, test_conversations=2, judge="tiny-llama", progress=False,
                      extra=["dev_examples=4", "model.p_ff=64", "model.l_hidden=64"])
    res = run_all(run)
    runs = Path(run.runs)
    for s in (1, 2, 3):
        assert json.loads((runs / f"stage{s}" / "train_summary.json").read_text())["steps"] == 3
    # the LLM is the same after three stages as its seeded initialisation (saved whole for the tiny preset)
    final = DualInfoSLM.from_pretrained(recipe.best_checkpoint(runs / "stage3"))
    fresh = load_backbone(LLMSpec(name="tiny-llama", mode="frozen")).model
    for (n, p), (_, q) in zip(final.llm.named_parameters(), fresh.named_parameters()):
        assert torch.equal(p, q), n
    first = DualInfoSLM.from_pretrained(recipe.best_checkpoint(runs / "stage1"))
    assert _changed(_snapshot(first.para), final.para) and _changed(_snapshot(first.ling), final.ling)
    assert set(res["table1"]["stage 3 (ERR + holistic)"]) == {"P&L-Embs", "P-Embs", "L-Embs"}
    assert res["table1"]["stage 1 (joint)"]["P-Embs"]["emotion"]["n"] == 5
    assert set(res["table3"]["stage 1 (joint)"]) == {"P&L-Embs", "L-Embs", "P-Embs"}
    assert len(res["table4"]) == 4 and all(r["n"] == 2 for r in res["table4"].values())
    md = to_markdown(res)
    assert "Table I" in md and "Table III" in md and "Table IV" in md
    # the judge is checked before Table IV; the tiny data has one test conversation, so no relevant/irrelevant
    # pair, and a judge that could not be checked gets no scores printed
    check = res["judge_check"]
    assert check["judge"] == "emoslm-tiny-llama, probability" and check["n"] == 0 and not check["passed"]
    assert "could not be checked" in md and "| System | SIM | n |" in md and "| Content |" not in md
    assert json.loads((runs / "results.json").read_text())["judge_check"]["wins"] == check["wins"]
    html = (runs / "report.html").read_text()
    assert "Table IV" in html and "P-Embs" in html
    # a second call trains nothing again
    again = run_all(run)
    assert again["meta"]["train seconds (this call)"] < 5


def test_stage2_under_torchrun_two_cpu_processes(corpus, tmp_path):
    out = tmp_path / "ddp"
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2",
           "-m", "emoslm.cli", "train", "dual_info", "--config", "dual_info_stage2"]
    for kv in (f"data={corpus}", f"features={tmp_path / 'feats'}", f"out_dir={out}", "init_from=null",
               "model.llm.name=tiny-llama", "model.p_ff=64", "model.l_hidden=64", "threads=1", "batch_size=4",
               "dev_examples=4", "progress=false", "train.max_steps=3", "train.eval_every=3", "train.save_every=3",
               "train.warmup_steps=1", "train.progress=false"):
        cmd += ["--set", kv]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world"] == 2 and summary["steps"] == 3
