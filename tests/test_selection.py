"""The selection policy (cemr.selection): the score, the keep rule, the unsure ranges and the cap."""
import pickle
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from cemr.config import SelfTrainConfig
from cemr.corpus.document import Span
from cemr.selection import (
    BELOW_THRESHOLD,
    KEPT,
    Candidate,
    SelectionPolicy,
    cap_pseudo_labels,
    empty_cap,
    policy_from_config,
    select_sentence,
    type_caps,
    unsure_ranges,
)


@dataclass
class P:
    span: Span
    confidence: float


A = Span(0, 2, "疾病和诊断")
B = Span(3, 5, "症状和体征")
C = Span(6, 8, "身体部位")


# --- selection --------------------------------------------------------------------------------


def test_sentence_mode_keeps_all_or_nothing():
    preds = [P(A, 0.9), P(B, 0.75)]
    spans, status, reason = select_sentence(preds, 0.7, "sentence")
    assert (spans, status) == ([A, B], KEPT)
    assert "0.750" in reason
    spans, status, reason = select_sentence(preds, 0.8, "sentence")
    assert (spans, status) == ([], BELOW_THRESHOLD)
    assert "0.750 < 0.80" in reason


def test_sentence_mode_uses_the_sentence_confidence_too():
    # entities are sure but an O character is not: the sentence is not kept
    spans, status, _ = select_sentence([P(A, 0.95)], 0.7, "sentence", sentence_confidence=0.4)
    assert status == BELOW_THRESHOLD and spans == []
    # a sentence without entities is kept as a negative only with a sure sentence confidence
    assert select_sentence([], 0.7, "sentence", sentence_confidence=0.9)[:2] == ([], KEPT)
    spans, status, reason = select_sentence([], 0.7, "sentence")
    assert status == BELOW_THRESHOLD and "no sentence confidence" in reason


def test_threshold_is_inclusive_and_order_of_spans_is_sorted():
    spans, status, _ = select_sentence([P(B, 0.7), P(A, 0.7)], 0.7, "sentence")
    assert status == KEPT and spans == [A, B]


def test_entity_mode_keeps_the_confident_entities_only():
    preds = [P(C, 0.95), P(A, 0.5), P(B, 0.8)]
    spans, status, reason = select_sentence(preds, 0.7, "entity")
    assert (spans, status) == ([B, C], KEPT)
    assert reason.startswith("2/3")
    spans, status, reason = select_sentence([P(A, 0.5)], 0.7, "entity")
    assert (spans, status) == ([], BELOW_THRESHOLD) and "max 0.500" in reason
    assert select_sentence([], 0.7, "entity")[1] == BELOW_THRESHOLD


def test_partial_mode_selects_like_entity_mode():
    preds = [P(C, 0.95), P(A, 0.5), P(B, 0.8)]
    assert select_sentence(preds, 0.7, "partial") == select_sentence(preds, 0.7, "entity")


def test_unsure_ranges_cover_dropped_mentions_and_unsure_chars_but_never_kept_ones():
    preds = [P(A, 0.5), P(B, 0.8)]  # A = 0..2 dropped, B = 3..5 kept
    conf = [0.9, 0.9, 0.99, 0.6, 0.99, 0.3, 0.99, 0.1, 0.2]
    assert unsure_ranges(9, preds, [B], 0.7, conf) == [(0, 2), (5, 6), (7, 9)]
    # B's char 3 is below the threshold but B was kept: its chars stay labelled
    assert unsure_ranges(9, preds, [B], 0.7, None) == [(0, 2)]
    assert unsure_ranges(9, [], [], 0.7, [1.0] * 9) == []
    with pytest.raises(ValueError, match="token confidences"):
        unsure_ranges(9, preds, [B], 0.7, [1.0] * 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": 1.5}, "threshold"),
        ({"mode": "document"}, "selection mode"),
        ({"preds": [P(A, float("nan"))]}, "confidence"),
        ({"preds": [P(A, -0.1)]}, "confidence"),
        ({"sentence_confidence": 2.0}, "sentence confidence"),
    ],
)
def test_bad_selection_inputs_raise(kwargs, match):
    args = {"preds": [P(A, 0.9)], "threshold": 0.5, "mode": "sentence"} | kwargs
    with pytest.raises(ValueError, match=match):
        select_sentence(**args)


# --- capping ----------------------------------------------------------------------------------


def test_sentence_cap_keeps_the_most_confident_and_accounts_for_all():
    cands = [Candidate(("d", i), conf, {"X": 1}) for i, conf in enumerate([0.7, 0.99, 0.8, 0.95])]
    res = cap_pseudo_labels(cands, max_sentences=2)
    assert res.selected == [("d", 1), ("d", 3)]
    assert set(res.dropped) == {("d", 0), ("d", 2)}
    assert all("max_pseudo_per_round=2" in r for r in res.dropped.values())
    assert cap_pseudo_labels(cands).selected == [("d", 1), ("d", 3), ("d", 2), ("d", 0)]


def test_the_cap_keeps_entity_free_sentences_at_their_candidate_share():
    # 6 entity-free sentences, all more confident than the 4 with entities (as short empty
    # sentences are): a plain cap of 5 keeps only empty ones; the share rule keeps 3 empty + 2 full
    empty = [Candidate(("e", i), 0.999 - i / 1000, {}) for i in range(6)]
    full = [Candidate(("f", i), 0.9 - i / 100, {"X": 1}) for i in range(4)]
    plain = cap_pseudo_labels(empty + full, max_sentences=5)
    assert all(k[0] == "e" for k in plain.selected)
    res = cap_pseudo_labels(empty + full, max_sentences=5, keep_empty_share=True)
    assert res.selected == [("e", 0), ("e", 1), ("e", 2), ("f", 0), ("f", 1)]
    assert len(res.selected) + len(res.dropped) == 10
    assert sum("entity-free share" in r for r in res.dropped.values()) == 3
    # without a cap the rule changes nothing
    assert len(cap_pseudo_labels(empty + full, keep_empty_share=True).selected) == 10


def test_empty_cap_is_the_candidate_share_of_a_binding_cap():
    assert empty_cap(5, 6, 10) == 3          # the share, rounded
    assert empty_cap(8, 6, 10) == 5          # 4.8, rounded
    assert empty_cap(6000, 6183, 16363) == 2267  # the CCKS2017 low-resource round 1 of session 12
    assert empty_cap(10, 3, 8) == 3          # no cap binding: all candidates fit
    assert empty_cap(5, 0, 10) == 0


def test_the_policy_applies_the_share_rule_when_asked():
    empty = [Candidate(("e", i), 0.99, {}) for i in range(4)]
    full = [Candidate(("f", i), 0.8, {"X": 1}) for i in range(4)]
    shared = SelectionPolicy(0.7, max_sentences=4, cap_keeps_empty_share=True)
    assert len([k for k in shared.cap(empty + full).selected if k[0] == "f"]) == 2
    assert all(k[0] == "e" for k in SelectionPolicy(0.7, max_sentences=4).cap(empty + full).selected)
    cfg = SelfTrainConfig(max_pseudo_per_round=4, cap_keeps_empty_share=True)
    assert policy_from_config(cfg).cap_keeps_empty_share
    assert not policy_from_config(SelfTrainConfig()).cap_keeps_empty_share  # off by default (session 12)


def test_type_caps_follow_the_gold_distribution():
    # gold: X twice as frequent as Y; candidates: 100 X, 10 Y -> Y binds: 20 X, 10 Y
    assert type_caps({"X": 100, "Y": 10}, {"X": 2, "Y": 1}) == {"X": 20, "Y": 10}
    # a predicted type without gold share gets nothing
    assert type_caps({"X": 4, "Z": 3}, {"X": 1.0})["Z"] == 0
    with pytest.raises(ValueError):
        type_caps({"X": 1}, {"X": 0})


def test_class_balance_skips_sentences_of_an_exhausted_type():
    cands = [
        Candidate("s1", 0.99, {"X": 1}),
        Candidate("s2", 0.98, {"X": 1}),
        Candidate("s3", 0.97, {"X": 1}),
        Candidate("s4", 0.90, {"Y": 1}),
        Candidate("s5", 0.80, {}),  # a negative sentence: no type budget involved
    ]
    res = cap_pseudo_labels(cands, type_share={"X": 1, "Y": 1})
    assert res.type_caps == {"X": 1, "Y": 1}
    assert res.selected == ["s1", "s4", "s5"]
    assert res.dropped == {"s2": "class balance cap reached for X", "s3": "class balance cap reached for X"}


# --- the policy -------------------------------------------------------------------------------


def test_policy_from_config_reads_the_selftrain_section():
    cfg = SelfTrainConfig(threshold=0.8, selection="partial", confidence="min_marginal", max_pseudo_per_round=5,
                          class_balance=True)
    policy = policy_from_config(cfg)
    assert policy == SelectionPolicy(0.8, "partial", "entity_min_marginal", 5, True)
    assert policy.predictor_kwargs() == {"confidence": "entity_min_marginal"}  # the alias, made canonical
    assert policy.capped
    assert policy_from_config(cfg, threshold=0.3).threshold == 0.3  # a sweep's threshold wins
    assert not policy_from_config(SelfTrainConfig()).capped


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": 1.5}, r"threshold \(selftrain.threshold\) must be a probability"),
        ({"threshold": float("nan")}, "selftrain.threshold"),
        ({"mode": "document"}, r"selection mode 'document' \(selftrain.selection\)"),
        ({"confidence_method": "max"}, "unknown confidence method 'max'"),
        ({"max_sentences": -1}, "selftrain.max_pseudo_per_round must be >= 0"),
    ],
)
def test_a_bad_policy_is_refused_naming_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SelectionPolicy(**({"threshold": 0.7} | kwargs))


def test_the_score_is_what_each_mode_compares_with_the_threshold():
    preds = [P(A, 0.9), P(B, 0.75)]
    assert SelectionPolicy(0.7, "sentence").score(preds) == 0.75  # the least sure entity
    assert SelectionPolicy(0.7, "sentence").score(preds, sentence_confidence=0.6) == 0.6  # ... or O char
    assert SelectionPolicy(0.7, "sentence").score([], sentence_confidence=0.6) == 0.6
    for mode in ("entity", "partial"):
        assert SelectionPolicy(0.7, mode).score(preds, sentence_confidence=0.6) == 0.9  # the best entity
        assert SelectionPolicy(0.7, mode).score([], sentence_confidence=0.6) is None
    assert SelectionPolicy(0.7, "sentence").score([]) is None


@pytest.mark.parametrize("mode", ["sentence", "entity", "partial"])
@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.85, 0.95])
def test_decide_is_select_and_score_and_unsure_in_partial_mode(mode, threshold):
    preds = [P(C, 0.95), P(A, 0.5), P(B, 0.8)]
    token = [0.9, 0.9, 0.99, 0.6, 0.99, 0.3, 0.99, 0.1, 0.2]
    policy = SelectionPolicy(threshold, mode)
    d = policy.decide(9, preds, sentence_confidence=0.6, token_confidence=token)
    kept, status, reason = select_sentence(preds, threshold, mode, sentence_confidence=0.6)
    assert (d.spans, d.status, d.score) == (kept, status, policy.score(preds, 0.6))
    if mode == "partial" and status == KEPT:
        assert d.unsure == unsure_ranges(9, preds, kept, threshold, token) != []
        assert d.reason == f"{reason}; {sum(b - a for a, b in d.unsure)}/9 chars unsure"
    else:
        assert d.unsure == [] and d.reason == reason


def test_partial_decide_without_token_confidences_leaves_only_dropped_mentions_unsure():
    d = SelectionPolicy(0.7, "partial").decide(9, [P(A, 0.5), P(B, 0.8)])
    assert (d.spans, d.unsure, d.status) == ([B], [(0, 2)], KEPT) and d.reason.endswith("; 2/9 chars unsure")
    below = SelectionPolicy(0.9, "partial").decide(9, [P(A, 0.5), P(B, 0.8)])
    assert (below.status, below.unsure, below.score) == (BELOW_THRESHOLD, [], 0.8)


def test_the_cap_ranks_kept_sentences_by_the_score_and_follows_the_policy():
    policy = SelectionPolicy(0.7, "entity", max_sentences=2)
    cands = [policy.candidate(("d", 0), 0.8, ["X"]), policy.candidate(("d", 1), None, []),
             policy.candidate(("d", 2), 0.9, ["X", "X", "Y"])]
    assert cands[1] == Candidate(("d", 1), 0.0, {})  # nothing scored: ranks last
    assert cands[2].type_counts == Counter({"X": 2, "Y": 1})
    res = policy.cap(cands, type_share={"X": 1})  # no class_balance: the share is not used
    assert res.selected == [("d", 2), ("d", 0)] and res.dropped == {("d", 1): "over max_pseudo_per_round=2"}
    balanced = SelectionPolicy(0.7, "entity", class_balance=True)
    res = balanced.cap(cands, type_share={"X": 1, "Y": 1})  # caps X 1, Y 1: the 2-X sentence is over
    assert res.selected == [("d", 0), ("d", 1)] and res.dropped == {("d", 2): "class balance cap reached for X"}
    with pytest.raises(ValueError, match="class_balance needs the gold type distribution"):
        balanced.cap(cands)
    assert not SelectionPolicy(0.7).capped


def test_the_policy_is_hashable_and_survives_pickling():
    policy = SelectionPolicy(0.7, "partial", "sequence_prob", 10, True)
    back = pickle.loads(pickle.dumps(policy))
    assert back == policy and hash(back) == hash(policy)
    assert back.decide(9, [P(A, 0.5), P(B, 0.8)]) == policy.decide(9, [P(A, 0.5), P(B, 0.8)])


def test_importing_the_policy_loads_neither_torch_nor_ray():
    code = "import sys, cemr.selection; print('torch' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]


# --- per-type thresholds fitted on dev (selftrain.target_precision) ------------------------------


def test_per_type_thresholds_apply_to_their_types_only():
    A, B = Span(0, 2, "DIS"), Span(3, 5, "SYM")
    policy = SelectionPolicy(0.7, "entity", type_thresholds={"SYM": 0.3, "DIS": 0.96})
    assert policy.type_thresholds == (("DIS", 0.96), ("SYM", 0.3)) and policy.threshold_for("DRUG") == 0.7
    kept, status, reason = policy.select([P(A, 0.9), P(B, 0.4)])
    assert kept == [B] and status == "kept" and "their type thresholds" in reason
    # partial: the dropped DIS mention is unsure, O chars still use the global threshold
    d = SelectionPolicy(0.7, "partial", type_thresholds={"SYM": 0.3}).decide(6, [P(A, 0.5), P(B, 0.4)],
                                                                             token_confidence=[0.9] * 6)
    assert d.spans == [B] and d.unsure == [(0, 2)]
    assert hash(policy) == hash(SelectionPolicy(0.7, "entity", type_thresholds=[("SYM", 0.3), ("DIS", 0.96)]))
    with pytest.raises(ValueError, match="entity or partial"):
        SelectionPolicy(0.7, "sentence", type_thresholds={"SYM": 0.3})
    with pytest.raises(ValueError, match="threshold of type SYM"):
        SelectionPolicy(0.7, "entity", type_thresholds={"SYM": 1.3})


def test_fitted_thresholds_are_the_lowest_confidence_reaching_the_target_precision():
    from cemr.selection import fit_type_thresholds

    # DIS: ranked 0.99 ok, 0.95 ok, 0.9 wrong, 0.8 ok, 0.7 wrong, 0.6 wrong (+ 14 low wrong ones)
    dis = [(0.99, True), (0.95, True), (0.9, False), (0.8, True), (0.7, False), (0.6, False)] + [(0.1, False)] * 14
    sym = [(0.5, True)] * 25  # always right: everything kept
    few = [(0.9, True)] * 3  # too few to fit
    bad = [(0.9, False)] * 20  # never reaches the target
    items = [("DIS", c, ok) for c, ok in dis] + [("SYM", c, ok) for c, ok in sym] + \
        [("DRUG", c, ok) for c, ok in few] + [("LAB", c, ok) for c, ok in bad]
    types, confs, correct = map(list, zip(*items))
    fitted = {f.type: f for f in fit_type_thresholds(types, confs, correct, 0.75)}
    # precision of the top runs: 1, 1, 0.67, 0.75, 0.6, ...: the longest at >= 0.75 ends at 0.8
    assert fitted["DIS"].threshold == 0.8 and fitted["DIS"].kept == 4 and fitted["DIS"].precision == 0.75
    assert fitted["SYM"].threshold == 0.5 and fitted["SYM"].kept == 25
    assert fitted["DRUG"].threshold is None and "3 dev predictions" in fitted["DRUG"].why
    assert fitted["LAB"].threshold is None and "no confidence reaches" in fitted["LAB"].why
    # ties at a confidence count together: a run never ends inside a tie
    tie = fit_type_thresholds(["X"] * 20, [0.9, 0.9] + [0.1] * 18, [True, False] + [False] * 18, 0.9)[0]
    assert tie.threshold is None
    with pytest.raises(ValueError, match="target_precision"):
        fit_type_thresholds(types, confs, correct, 0.0)


def test_target_precision_with_sentence_selection_is_refused_when_the_config_is_read():
    from cemr.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="target_precision fits a threshold per entity type"):
        load_config(None, ["selftrain.target_precision=0.9", "selftrain.selection=sentence"])
    assert load_config(None, ["selftrain.target_precision=0.9", "selftrain.selection=entity"]).selftrain.target_precision == 0.9
