"""Paper 001 end to end on tiny data, its configs, its CLI errors, and the synthetic source's disjointness."""

from __future__ import annotations

import json

import pytest
import yaml

from emoslm.cli import main
from emoslm.errors import EmoslmError
from emoslm.zeroshot.pipeline import RECIPE_DIR, load_zeroshot_config

TINY_DESC = {
    "name": "Tiny target", "scenario": "People talk about their day.", "speakers": {"count": 2},
    "label_set": "iemocap4", "emotions": {"neutral": 0.25, "anger": 0.25, "joy": 0.25, "sadness": 0.25},
    "utterances": {"style": "One short spoken sentence.", "min_words": 2, "max_words": 40},
}


def test_packaged_zeroshot_configs_load():
    names = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
    assert {"synth", "iemocap", "msp_podcast"} <= set(names)
    for name in names:
        cfg = load_zeroshot_config(name)
        assert cfg.generation.n_utterances > 0 and cfg.upstreams
    assert load_zeroshot_config("synth").target.kind == "synth"
    with pytest.raises(EmoslmError, match="unknown upstream 'hubert'"):
        load_zeroshot_config("synth", ["upstreams=[hubert]"])
    with pytest.raises(EmoslmError, match="does not exist"):
        load_zeroshot_config("nope")


def test_cli_reports_a_malformed_description_by_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY_DESC, "emotions": {"neutral": 0.5, "anger": 0.1, "joy": 0.05, "sadness": 0.05}}))
    assert main(["synth", "from-description", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "field 'emotions'" in err and "sum to 0.700" in err


def test_second_corpus_options_keep_existing_cache_keys():
    from dataclasses import replace

    from emoslm.synth.corpus import PRESETS, config_key, plan_corpus

    cfg = PRESETS["tiny"]
    assert config_key(cfg, ["v"]) == config_key(replace(cfg, sentence_offset=0, exclude_voices=()), ["v"])
    assert config_key(cfg, ["v"]) != config_key(replace(cfg, sentence_offset=400), ["v"])
    speakers, utts = plan_corpus(cfg)
    other_speakers, other = plan_corpus(replace(cfg, seed=1, sentence_offset=400, sentence_bank_size=43,
                                                exclude_voices=tuple(s.voice for s in speakers)))
    assert not {u.text for u in utts} & {u.text for u in other}
    assert not {s.voice for s in speakers} & {s.voice for s in other_speakers}


@pytest.mark.slow
def test_tiny_end_to_end_run_with_the_packaged_llm(tmp_path):
    """Description -> SmolLM2 text -> espeak-ng speech -> text and speech heads -> zero-shot WA/UA table."""
    desc = tmp_path / "tiny.yaml"
    desc.write_text(yaml.safe_dump(TINY_DESC))
    overrides = [
        f"description={desc}", f"data_dir={tmp_path / 'data'}", f"out_dir={tmp_path / 'runs'}",
        "llm.threads=1", "generation.n_utterances=4", "generation.per_call=2", "generation.max_tokens=60",
        "generation.temperature=0.8", "generation.seed=0", "generation.max_calls_factor=8", "tts.speakers=2", "tts.workers=1",
        f"target.path={tmp_path / 'target'}", "target.preset=tiny", "target.splits=[test]",
        f"source.path={tmp_path / 'source'}", "source.speakers=6", "source.sentences=1",
        "head.epochs=5", "tts.prosody_variant=true",
    ]
    assert main(["run", "zeroshot", "--quiet", "--config", "synth", *[x for o in overrides for x in ("--set", o)]]) == 0
    res = json.loads((tmp_path / "runs" / "results.json").read_text())
    got = {(r["upstream"], r["source"]) for r in res["rows"]}
    assert got == {("minilm", "llm"), ("minilm", "source"), *((up, s) for up in ("whisper", "egemaps")
                                                               for s in ("llm", "llm_prosody", "source"))}
    assert all(0 <= r["wa"] <= 1 and 0 <= r["ua"] <= 1 for r in res["rows"])
    assert res["source"]["shared_voices_with_target"] == 0 and res["source"]["shared_texts_with_target"] == 0
    assert res["llm"]["generation"]["balanced_size"] >= 4
    report = (tmp_path / "runs" / "report.md").read_text()
    assert "| Model | Modality | Trained on" in report and "not real" in report
    assert "data:image/png;base64" in (tmp_path / "runs" / "report.html").read_text()
    # a second run finds everything cached: no LLM call, no synthesis
    assert main(["run", "zeroshot", "--quiet", "--config", "synth", *[x for o in overrides for x in ("--set", o)]]) == 0
    again = json.loads((tmp_path / "runs" / "results.json").read_text())
    assert again["llm"]["generation"]["new_calls"] == 0 and again["rows"] == res["rows"]
