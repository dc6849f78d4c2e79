import base64
import json
import re

import numpy as np
import pytest
from rich.console import Console

from emoslm.metrics import INVALID, evaluate
from emoslm.personalization.report import (
    Results, RunMetadata, bootstrap_ci, canonical_setting, entry_key, figure_png, parse_key, plot_confusion,
    plot_ua_vs_k, render_terminal, to_markdown, write_html,
)

REFS10 = ["neutral", "anger", "joy", "sadness", "fear", "disgust", "surprise", "neutral", "anger", "joy"]


def result(*hits, invalid=0):
    """An EvalResult with one speaker per entry of ``hits``: speaker i gets hits[i] of 10 right, so its
    accuracy is hits[i] / 10 (wrong answers are "surprise"/"neutral", the first ``invalid`` are garbage)."""
    refs, preds, spks = [], [], []
    for s, h in enumerate(hits):
        for j, r in enumerate(REFS10):
            refs.append(r)
            spks.append(f"spk{s}")
            if j < h:
                preds.append(r)
            elif j - h < invalid:
                preds.append("I think it's angry")
            else:
                preds.append("surprise" if r != "surprise" else "neutral")
    return evaluate(refs, preds, spks, "ekman7", {"name": "speaker_disjoint", "corpus": "tiny"})


def build() -> Results:
    r = Results(RunMetadata(corpus="tiny", split_protocol={"name": "speaker_disjoint"},
                            command="emoslm eval --config x.yaml", date="2025-01-01T00:00:00", machine="test",
                            training={"epochs": 2}))
    r.add_model("Pretrained", kind="baseline")
    r.add_model("Proposed", kind="icl", training_setting="TU+LU_{0:7}", lr=1e-4)
    r.add_model("eGeMAPS peer", kind="peer", norm="enroll_mean")
    r.add_model("Proposed (TO+LD_7)", kind="icl", training_setting="TO+LD_7")
    r.add("Pretrained", None, result(3, 5))                                  # 0.400 ± 0.100
    r.add("Proposed", "0-shot", result(5, 6, invalid=2))                    # 0.550
    for k in range(1, 8):
        r.add("Proposed", f"TU+LD k={k}", result(k + 2, k + 1))             # (2k+3)/20
    for k in range(1, 4):
        r.add("Proposed", "TU+LU", result(k + 1, k + 1), k=k)               # (k+1)/10
    r.add("Proposed", "TE+LD k=1", result(1, 2))                            # 0.150
    r.add("Proposed", "TU+LO(Anger) k=2", result(9, 8))                     # 0.850
    r.add("eGeMAPS peer", "0-shot", result(2, 2))                           # 0.200
    r.add("eGeMAPS peer", "TU+LD k=7", result(4, 2))                        # 0.300
    r.add("Proposed (TO+LD_7)", "TU+LD", result(1, 1), k=1)                 # 0.100
    r.add("Proposed (TO+LD_7)", "TU+LO(neutral) k=1", result(0, 1))         # 0.050
    return r


def md_tables(text):
    """{title: (header, rows)} of the Markdown tables under '### title' headings."""
    out = {}
    for block in re.split(r"^### ", text, flags=re.M)[1:]:
        title, *lines = block.splitlines()
        rows = [[c.strip() for c in ln.strip().strip("|").split(" | ")] for ln in lines if ln.startswith("|")]
        out[title.strip()] = (rows[0], rows[2:])
    return out


def cell(table, row_match, column):
    header, rows = table
    j = header.index(column)
    found = [r for r in rows if all(r[i] == v for i, v in row_match.items())]
    assert len(found) == 1, (row_match, found)
    return found[0][j]


@pytest.fixture(scope="module")
def results():
    return build()


def test_markdown_table2(results):
    t = md_tables(to_markdown(results))["Table II: UA_spk of every model"]
    assert t[0] == ["Model", "ICL", "Setting", "UA_spk ↑", "σ(UA_spk) ↓", "median ↑", "max ↑", "min ↑"]
    # k = 3: speakers 5/10 and 4/10 -> mean 0.45, σ 0.05, median 0.45, max 0.5, min 0.4
    row = {0: "Proposed", 1: "3-shot"}
    assert cell(t, row, "Setting") == "TU+LD"  # TU+LD is the primary setting, not TU+LU
    assert [cell(t, row, c) for c in t[0][3:]] == ["0.450", "0.050", "0.450", "0.500", "0.400"]
    assert cell(t, {0: "Proposed", 1: "0-shot"}, "Setting") == "–"
    assert cell(t, {0: "Proposed", 1: "0-shot"}, "UA_spk ↑") == "0.550"
    assert cell(t, {0: "Pretrained"}, "ICL") == "–"
    assert [cell(t, {0: "Pretrained"}, c) for c in t[0][3:]] == ["0.400", "0.100", "0.400", "0.500", "0.300"]
    assert cell(t, {0: "eGeMAPS peer", 1: "7-shot"}, "UA_spk ↑") == "0.300"
    assert cell(t, {0: "Proposed (TO+LD_7)", 1: "1-shot"}, "UA_spk ↑") == "0.100"
    assert len([r for r in t[1] if r[0] == "Proposed"]) == 8  # 0..7-shot


def test_markdown_table3(results):
    t = md_tables(to_markdown(results))["Table III: UA_spk of Proposed by enrollment setting"]
    assert t[0][:5] == ["ICL", "TU+LD", "TU+LU", "TE+LD", "TE+LU"]
    assert "TU+LO(anger)" in t[0] and "TU+LO(joy)" not in t[0]  # only LO emotions that were evaluated
    assert [r[0] for r in t[1]] == [f"{k}-shot" for k in range(1, 8)]
    assert cell(t, {0: "2-shot"}, "TU+LD") == "0.350"
    assert cell(t, {0: "2-shot"}, "TU+LU") == "0.300"
    assert cell(t, {0: "5-shot"}, "TU+LU") == "–"
    assert cell(t, {0: "1-shot"}, "TE+LD") == "0.150"
    assert cell(t, {0: "1-shot"}, "TE+LU") == "–"
    assert cell(t, {0: "2-shot"}, "TU+LO(anger)") == "0.850"
    assert cell(t, {0: "1-shot"}, "TU+LO(anger)") == "–"


def test_markdown_table4(results):
    t = md_tables(to_markdown(results))["Table IV: UA_spk by MetaICL training setting and test setting"]
    assert t[0] == ["Test setting", "Training setting", *[f"{k}-shot" for k in range(1, 8)]]
    assert cell(t, {0: "TU+LD", 1: "TU+LU_{0:7}"}, "7-shot") == "0.850"
    assert cell(t, {0: "TU+LD", 1: "TO+LD_7"}, "1-shot") == "0.100"
    assert cell(t, {0: "TU+LD", 1: "TO+LD_7"}, "2-shot") == "–"
    assert cell(t, {0: "TU+LO(neutral)", 1: "TO+LD_7"}, "1-shot") == "0.050"
    assert cell(t, {0: "TU+LO(neutral)", 1: "TU+LU_{0:7}"}, "1-shot") == "–"
    assert {r[1] for r in t[1]} == {"TU+LU_{0:7}", "TO+LD_7"}  # peers and baselines are not ICL models


def test_markdown_all_results_and_metadata(results):
    text = to_markdown(results)
    t = md_tables(text)["All results"]
    zero = {0: "Proposed", 2: "0"}
    assert cell(t, zero, "invalid") == "4"
    r0 = results.get("Proposed", "0-shot").result
    assert cell(t, zero, "WA") == f"{r0['wa']:.3f}" and cell(t, zero, "macro-F1") == f"{r0['macro_f1']:.3f}"
    assert "emoslm eval --config x.yaml" in text and "speaker_disjoint" in text and "tiny" in text


def test_json_round_trip(results, tmp_path):
    again = Results.from_json(results.to_json())
    assert again == results
    path = tmp_path / "r" / "results.json"
    results.to_json(path)
    assert Results.from_json(path) == results
    assert to_markdown(Results.from_json(path)) == to_markdown(results)
    d = json.loads(path.read_text())
    assert d["entries"][0]["result"]["ua_spk"]["per_speaker"] == {"spk0": 0.3, "spk1": 0.5}


def test_html_is_self_contained_with_pngs_and_numbers(results, tmp_path):
    path = write_html(results, tmp_path / "report.html")
    text = path.read_text()
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(pngs) >= 3  # UA_spk vs k + confusion of 0-shot, 7-shot and the peer at 7-shot
    for p in pngs:
        assert base64.b64decode(p)[:8] == b"\x89PNG\r\n\x1a\n"
    for number in ("0.450", "0.850", "0.050", "0.100", "0.550"):
        assert f">{number}<" in text
    assert "Table II" in text and "Table III" in text and "Table IV" in text
    assert "emoslm eval --config x.yaml" in text and "http" not in text.replace("http-equiv", "")
    chosen = write_html(results, tmp_path / "r2.html", confusion=[("Pretrained", None)], band="sigma")
    assert chosen.read_text().count("data:image/png") == 2


def test_figures_render(results):
    for band in ("sigma", None):  # "ci" is drawn by the HTML test
        assert figure_png(plot_ua_vs_k(results, band=band))[:4] == b"\x89PNG"
    cm = plot_confusion(results.get("Proposed", None, 0))  # with the <invalid> column
    assert INVALID in [t.get_text() for t in cm.axes[0].get_xticklabels()]
    with pytest.raises(ValueError, match="band"):
        plot_ua_vs_k(results, band="iqr")


def test_render_terminal(results):
    console = Console(record=True, width=200)
    render_terminal(results, console)
    out = console.export_text()
    assert "Table II" in out and "0.450" in out and "TU+LU_{0:7}" in out


def test_keys_and_settings():
    assert parse_key("0-shot") == (None, 0)
    assert parse_key("TU+LD k=3") == ("TU+LD", 3)
    assert parse_key("TU+LO(Anger) k=2") == ("TU+LO(anger)", 2)
    assert parse_key("3-shot TE+LU") == ("TE+LU", 3)
    assert parse_key("–") == (None, None)
    assert canonical_setting("tu+lo(Neutral)") == "TU+LO(neutral)"
    assert canonical_setting("my own") == "my own"
    assert entry_key("TU+LD", 3) == "TU+LD k=3" and entry_key("TU+LD", 0) == "0-shot"
    assert entry_key(None, None) == "–"


def test_add_rejects_duplicates_and_bad_input():
    r = Results()
    r.add("m", "TU+LD k=0", result(1))  # k = 0: the setting is dropped
    assert r.get("m", "0-shot") is not None and r.get("m", None, 0).setting is None
    with pytest.raises(ValueError, match="already"):
        r.add("m", "0-shot", result(1))
    with pytest.raises(ValueError, match="lacks"):
        r.add("m", "TU+LD k=1", {"wa": 1.0})
    with pytest.raises(ValueError):
        r.add_model("x", kind="oracle")
    assert r.models[0].kind == "icl"  # unknown models are added as ICL models


def test_bootstrap_ci_brackets_the_mean():
    v = np.random.default_rng(0).uniform(0.3, 0.9, 40)
    lo, hi = bootstrap_ci(v)
    assert lo < v.mean() < hi and hi - lo < 0.2
    assert bootstrap_ci([0.5]) == (0.5, 0.5)
