import json
import math

import numpy as np
import pytest
from sklearn import metrics as skm

from emoslm.errors import LabelError
from emoslm.labels import EKMAN7, get_label_set
from emoslm.metrics import (
    INVALID, EvalResult, confusion_matrix, evaluate, macro_f1, ua_spk, unweighted_accuracy, weighted_accuracy,
)

LABELS = ("neutral", "anger", "joy")

# Unbalanced: 6 neutral, 2 anger, 2 joy. Neutral all right; anger 1 right, 1 -> neutral; joy both -> neutral.
REFS = ["neutral"] * 6 + ["anger", "anger", "joy", "joy"]
PREDS = ["neutral"] * 6 + ["anger", "neutral", "neutral", "neutral"]


def test_unbalanced_wa_differs_from_ua():
    # WA = (6 + 1 + 0) / 10 = 0.7
    assert weighted_accuracy(REFS, PREDS) == pytest.approx(0.7)
    # recalls: neutral 6/6 = 1, anger 1/2 = 0.5, joy 0/2 = 0  ->  UA = (1 + 0.5 + 0) / 3 = 0.5
    assert unweighted_accuracy(REFS, PREDS, LABELS) == pytest.approx(0.5)


def test_class_never_predicted_has_f1_zero():
    # neutral: TP 6, FP 3 (1 anger + 2 joy predicted neutral), FN 0 -> F1 = 12 / 15 = 0.8
    # anger:   TP 1, FP 0, FN 1 -> F1 = 2 / 3
    # joy:     TP 0 (never predicted) -> F1 = 0
    # macro-F1 = (4/5 + 2/3 + 0) / 3 = 22/45
    assert macro_f1(REFS, PREDS, LABELS) == pytest.approx(22 / 45)
    res = evaluate(REFS, PREDS, ["s"] * 10, LABELS)
    assert res.per_class["joy"]["f1"] == 0.0
    assert res.per_class["joy"]["precision"] is None  # never predicted: 0/0
    assert res.per_class["neutral"]["f1"] == pytest.approx(0.8)


def test_confusion_rows_are_references():
    cm = confusion_matrix(REFS, PREDS, LABELS)
    #          pred: neutral anger joy
    expected = [[6, 0, 0],   # ref neutral
                [1, 1, 0],   # ref anger
                [2, 0, 0]]   # ref joy
    assert cm.tolist() == expected
    assert cm.shape == (3, 3)


def test_class_predicted_but_absent_from_refs():
    refs, preds = ["neutral", "neutral"], ["neutral", "anger"]
    # classes in refs or preds: neutral (TP 1, FN 1 -> 2/3), anger (TP 0, FP 1 -> 0); the other five are out.
    assert macro_f1(refs, preds, EKMAN7) == pytest.approx(1 / 3)
    # UA averages over classes present in refs only: neutral recall 1/2
    assert unweighted_accuracy(refs, preds, EKMAN7) == pytest.approx(0.5)


def test_invalid_predictions_counted_wrong_and_kept():
    refs = ["anger", "anger", "joy", "joy"]
    preds = ["anger", "banana", "joy", None]
    res = evaluate(refs, preds, ["a", "a", "b", "b"], ["anger", "joy"])
    assert res.n_invalid == 2
    assert res.wa == pytest.approx(0.5)           # 2 right of 4
    assert res.ua == pytest.approx(0.5)           # recalls 1/2 and 1/2
    assert res.macro_f1 == pytest.approx(2 / 3)   # each class: TP 1, FP 0, FN 1 -> 2/3
    assert res.confusion.tolist() == [[1, 0, 1], [0, 1, 1]]  # last column: invalid
    assert res.speakers.per_speaker == {"a": 0.5, "b": 0.5}
    with pytest.raises(ValueError, match="outside the label set"):
        confusion_matrix(refs, preds, ["anger", "joy"])
    assert confusion_matrix(refs, preds, ["anger", "joy"], invalid_column=True).tolist() == [[1, 0, 1], [0, 1, 1]]


def test_ua_spk_three_speakers():
    # s1: 3/4 = 0.75, s2: 1/2 = 0.5, s3: 4/4 = 1.0
    refs = ["joy"] * 10
    preds = ["joy", "joy", "joy", "anger"] + ["joy", "anger"] + ["joy"] * 4
    spk = ["s1"] * 4 + ["s2"] * 2 + ["s3"] * 4
    st = ua_spk(refs, preds, spk)
    assert st.per_speaker == {"s1": 0.75, "s2": 0.5, "s3": 1.0}
    # mean = (0.75 + 0.5 + 1) / 3 = 0.75 (WA is 8/10 = 0.8: every speaker weighs the same)
    assert st.mean == pytest.approx(0.75)
    # population std: deviations 0, -0.25, 0.25 -> var = 0.125 / 3 -> std = sqrt(1/24) = 0.2041
    assert st.std == pytest.approx(math.sqrt(1 / 24))
    assert (st.median, st.max, st.min, st.n_speakers) == (0.75, 1.0, 0.5, 3)
    assert weighted_accuracy(refs, preds) == pytest.approx(0.8)


@pytest.mark.parametrize("fn", [weighted_accuracy, unweighted_accuracy, macro_f1])
def test_input_errors(fn):
    with pytest.raises(ValueError, match="differ in length"):
        fn(["joy"], ["joy", "joy"])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])


def test_evaluate_errors():
    with pytest.raises(ValueError, match="speakers"):
        evaluate(["joy"], ["joy"], ["a", "b"], LABELS)
    with pytest.raises(ValueError, match="empty"):
        evaluate([], [], [], LABELS)
    with pytest.raises(LabelError, match="reference 1"):
        evaluate(["joy", "calm"], ["joy", "joy"], ["a", "a"], LABELS)
    with pytest.raises(ValueError, match="JSON"):
        evaluate(["joy"], ["joy"], ["a"], LABELS, protocol={"x": object()})


def test_evaluate_bundle_serialises():
    protocol = {"name": "leave_one_session_out", "params": {"dev_fraction": 0.0}, "fold": "Ses01"}
    res = evaluate(REFS, PREDS, ["s1"] * 5 + ["s2"] * 5, get_label_set("iemocap4"), protocol=protocol)
    assert isinstance(res, EvalResult)
    assert res.labels == ("neutral", "anger", "joy", "sadness")
    d = json.loads(json.dumps(res.to_dict()))
    assert d["protocol"] == protocol
    assert d["wa"] == pytest.approx(0.7) and d["ua"] == pytest.approx(0.5)
    assert d["confusion_columns"][-1] == INVALID
    assert d["ua_spk"]["per_speaker"] == {"s1": 1.0, "s2": 0.4}  # s1: 5/5 neutral right; s2: neutral, anger right of 5
    assert res.ua_spk == pytest.approx(0.7)
    md = res.to_markdown()
    assert "UA_spk" in md and "| joy | 2 |" in md and "leave_one_session_out" in md
    assert INVALID not in md  # no invalid predictions: no invalid column


def test_evaluate_takes_protocol_object():
    class P:
        def describe(self):
            return {"name": "predefined"}

    assert evaluate(["joy"], ["joy"], ["a"], LABELS, protocol=P()).protocol == {"name": "predefined"}


@pytest.mark.parametrize("seed", range(20))
def test_against_sklearn(seed):
    rng = np.random.default_rng(seed)
    n_cls = int(rng.integers(2, 8))
    labels = list(EKMAN7[:n_cls])
    n = int(rng.integers(1, 120))
    # Skewed class frequencies; some classes may be absent from refs or preds.
    p = rng.dirichlet(np.full(n_cls, 0.7))
    refs = list(rng.choice(labels, size=n, p=p))
    preds = [r if rng.random() < 0.5 else str(rng.choice(labels)) for r in refs]
    assert weighted_accuracy(refs, preds) == pytest.approx(skm.accuracy_score(refs, preds))
    assert confusion_matrix(refs, preds, labels).tolist() == skm.confusion_matrix(refs, preds, labels=labels).tolist()
    assert macro_f1(refs, preds, labels) == pytest.approx(skm.f1_score(refs, preds, average="macro", zero_division=0))
    # balanced_accuracy_score averages recall over classes in y_true (it warns when y_pred has others)
    recalls = skm.recall_score(refs, preds, labels=sorted(set(refs)), average=None, zero_division=0)
    assert unweighted_accuracy(refs, preds, labels) == pytest.approx(float(np.mean(recalls)))
    if set(preds) <= set(refs):
        assert unweighted_accuracy(refs, preds, labels) == pytest.approx(skm.balanced_accuracy_score(refs, preds))
