import json

import pytest

from cemr.corpus.document import Span
from cemr.selection import select_sentence
from cemr.selftrain import (
    RoundRecord,
    RunState,
    StateError,
    best_round,
    load_predictor,
    load_state,
    resolve_factory,
    save_state,
    score_pseudo_labels,
    should_stop,
    unpack_prediction,
)

A = Span(0, 2, "疾病和诊断")
B = Span(3, 5, "症状和体征")
C = Span(6, 8, "身体部位")


# --- rounds and stopping ----------------------------------------------------------------------


def _hist(*f1s):
    return [RoundRecord(round=i, dev_f1=f) for i, f in enumerate(f1s)]


def test_should_stop_on_max_rounds():
    assert not should_stop([], patience=1, max_rounds=3)
    assert not should_stop(_hist(0.5, 0.6), patience=1, max_rounds=3)
    d = should_stop(_hist(0.5, 0.6, 0.7, 0.8), patience=1, max_rounds=3)
    assert d and "max_rounds=3" in d.reason
    assert should_stop(_hist(0.5), patience=1, max_rounds=0)


def test_should_stop_on_patience():
    d = should_stop(_hist(0.5, 0.6, 0.6), patience=1, max_rounds=10)
    assert d.stop and "best 0.6000 in round 1" in d.reason
    assert not should_stop(_hist(0.5, 0.6, 0.55), patience=2, max_rounds=10)
    assert should_stop(_hist(0.5, 0.6, 0.55, 0.58), patience=2, max_rounds=10)
    # patience 0 disables early stopping
    assert not should_stop(_hist(0.5, 0.4, 0.3), patience=0, max_rounds=10)
    # min_delta: a tiny rise is not an improvement
    assert should_stop(_hist(0.5, 0.5001), patience=1, max_rounds=10, min_delta=0.001)


def test_should_stop_refuses_unordered_history():
    with pytest.raises(ValueError, match="increasing"):
        should_stop([RoundRecord(1, 0.5), RoundRecord(0, 0.4)], 1, 3)


def test_best_round_prefers_the_earliest_on_ties():
    assert best_round(_hist(0.5, 0.7, 0.7)).round == 1
    with pytest.raises(ValueError):
        best_round([])


# --- pseudo-label quality ---------------------------------------------------------------------


def test_score_pseudo_labels_against_hidden_gold():
    gold = {("a", 0): [A, B], ("a", 1): [C], ("b", 0): [A]}
    kept = {
        ("a", 0): [A, Span(3, 5, "身体部位")],  # one right, one wrong type
        ("b", 0): [A],  # right
        ("x", 9): [C],  # no hidden gold: ignored
    }
    prf = score_pseudo_labels(kept, gold)
    assert (prf.tp, prf.fp, prf.fn) == (2, 1, 2)  # ("a",1) not kept: its C is missed
    assert prf.precision == pytest.approx(2 / 3)
    assert prf.recall == pytest.approx(2 / 4)
    empty = score_pseudo_labels({}, gold)
    assert (empty.precision, empty.recall, empty.f1) == (0.0, 0.0, 0.0)


# --- run state --------------------------------------------------------------------------------


def test_state_round_trip_and_resume(tmp_path):
    assert load_state(tmp_path) is None
    state = RunState(paths={"data": "runs/x/data"}, config={"selftrain.threshold": 0.7})
    state.add_round(RoundRecord(0, 0.61, model_dir="m0"))
    state.add_round(
        RoundRecord(1, 0.65, threshold=0.7, pseudo_counts={"kept": 3, "below_threshold": 5, "failed": 0},
                    pseudo_entities={"X": 4}, pseudo_prf={"precision": 0.9, "recall": 0.3, "f1": 0.45},
                    pseudo_dir="p1")
    )
    path = save_state(tmp_path, state)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["best_round"] == 1 and len(data["completed_rounds"]) == 2
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind
    loaded = load_state(tmp_path)
    assert loaded.rounds == state.rounds
    assert loaded.paths == state.paths and loaded.config == state.config
    assert loaded.next_round == 2 and loaded.best.round == 1
    with pytest.raises(ValueError, match="expected round 2"):
        loaded.add_round(RoundRecord(4, 0.7))


def test_save_state_replaces_atomically(tmp_path):
    state = RunState()
    save_state(tmp_path, state)
    state.add_round(RoundRecord(0, 0.5))
    state.finished, state.stop_reason = True, "reached max_rounds=0"
    save_state(tmp_path, state)
    loaded = load_state(tmp_path)
    assert loaded.finished and loaded.stop_reason == "reached max_rounds=0" and loaded.next_round == 1


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "cannot read"),
        ("[1, 2]", "JSON object"),
        ('{"version": 99}', "version"),
        ('{"version": 1, "completed_rounds": [{"round": 0, "dev_f1": 0.5, "bogus": 1}]}', "bogus"),
    ],
)
def test_load_state_names_the_file_on_bad_content(tmp_path, content, match):
    (tmp_path / "state.json").write_text(content, encoding="utf-8")
    with pytest.raises(StateError, match=match) as err:
        load_state(tmp_path)
    assert str(tmp_path / "state.json") in str(err.value)


# --- predictors -------------------------------------------------------------------------------


class _Loadable:
    def __init__(self, model_dir, device, **kw):
        self.args = (model_dir, device, kw)

    @classmethod
    def load(cls, model_dir, device, **kw):
        obj = cls(model_dir, device, **kw)
        obj.loaded = True
        return obj


def test_load_predictor_accepts_paths_classes_and_callables():
    obj = load_predictor(f"{__name__}:_Loadable", "m", "cpu", confidence="sequence_prob")
    assert obj.loaded and obj.args == ("m", "cpu", {"confidence": "sequence_prob"})
    assert load_predictor(_Loadable, "m", "cuda").args[1] == "cuda"
    assert load_predictor(lambda d, dev: (d, dev), "m", "cpu") == ("m", "cpu")
    assert resolve_factory("cemr.selection:select_sentence") is select_sentence
    with pytest.raises(ValueError, match="expected 'package.module:Name'"):
        resolve_factory("cemr.selftrain.select_sentence")
    with pytest.raises(ValueError, match="has no nope"):
        resolve_factory("cemr.selftrain:nope")
    with pytest.raises(TypeError, match="neither callable"):
        load_predictor(42, "m", "cpu")


def test_unpack_prediction_reads_sentence_predictions_and_lists():
    from cemr.predictor import Prediction, SentencePrediction

    preds = [Prediction(A, 0.9)]
    assert unpack_prediction(SentencePrediction(preds, confidence=0.8)) == (preds, 0.8)
    assert unpack_prediction(preds) == (preds, None)
    assert unpack_prediction([]) == ([], None)
    with pytest.raises(TypeError, match="unexpected predictor output"):
        unpack_prediction(0.5)
