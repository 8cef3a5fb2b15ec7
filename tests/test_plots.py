"""cemr.plots: each figure drawn from data (integer round ticks, its lines and labels), the
reliability bins and their ECE, and type names drawn without missing glyphs."""
from __future__ import annotations

import io
import math
import warnings

import pytest

from cemr.plots import (
    Reliability,
    cjk_font,
    f1_per_round_figure,
    f1_per_threshold_figure,
    pseudo_labels_figure,
    pyplot,
    reliability_bins,
    reliability_figure,
    type_labels,
)

TYPES = ["疾病和诊断", "身体部位"]


def _draw(fig) -> bytes:
    """Render to PNG (ticks and glyphs are resolved here); a missing glyph warning fails the test."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fig.savefig(buf, format="png")
    pyplot().close(fig)
    return buf.getvalue()


def _labels(ax):
    return [line.get_label() for line in ax.get_lines()]


def _all_integers(values):
    return all(float(v) == int(v) for v in values)


def test_f1_per_round_has_dev_and_test_lines_on_integer_rounds():
    fig = f1_per_round_figure([0, 1, 2, 3], [0.90, 0.92, 0.93, 0.925], [0.88, 0.90, None, 0.91], best_round=2)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == [0, 1, 2, 3]  # one tick per round, no 0.5 steps
    assert _labels(ax) == ["dev F1", "test F1", "best round on dev (2)"]
    dev, test, best = ax.get_lines()
    assert list(dev.get_ydata()) == [0.90, 0.92, 0.93, 0.925]
    assert math.isnan(test.get_ydata()[2])  # a round without a test evaluation is a gap, not a 0
    assert list(best.get_xdata()) == [2, 2]
    assert ax.get_xlabel() == "self-training round" and "F1" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == _labels(ax)
    assert _draw(fig)[:8] == b"\x89PNG\r\n\x1a\n"


def test_f1_per_round_of_a_long_run_still_has_integer_ticks_only():
    rounds = list(range(30))
    fig = f1_per_round_figure(rounds, [0.5 + r / 100 for r in rounds])
    fig.canvas.draw()
    ticks = [t for t in fig.axes[0].get_xticks() if 0 <= t <= 29]
    assert ticks and _all_integers(ticks)
    assert _labels(fig.axes[0]) == ["dev F1"]  # no test line without test figures
    one = f1_per_round_figure([0], [0.4], [None])
    assert list(one.axes[0].get_xticks()) == [0] and _labels(one.axes[0]) == ["dev F1"]


def test_f1_figures_check_their_series():
    with pytest.raises(ValueError, match="'test F1' has 2 points for 3"):
        f1_per_round_figure([0, 1, 2], [0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="nothing to plot"):
        f1_per_threshold_figure([], [])


def test_f1_per_threshold_has_dev_and_test_per_threshold():
    fig = f1_per_threshold_figure([0.5, 0.6, 0.7], [0.90, 0.91, 0.905], [0.89, 0.90, 0.88], best=0.6)
    ax = fig.axes[0]
    assert list(ax.get_xticks()) == pytest.approx([0.5, 0.6, 0.7])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.50", "0.60", "0.70"]
    assert _labels(ax) == ["dev F1 (best round)", "test F1 (same round)", "best threshold on dev (0.60)"]
    assert list(ax.get_lines()[1].get_ydata()) == [0.89, 0.90, 0.88]
    assert "threshold" in ax.get_xlabel()
    _draw(fig)


def test_pseudo_labels_kept_and_precision_per_type():
    font = cjk_font()
    fig = pseudo_labels_figure([1, 2, 3], {TYPES[0]: [10, 20, 30], TYPES[1]: [5, 6, 7]},
                               {TYPES[0]: [0.9, 0.8, None], TYPES[1]: [0.5, 0.6, 0.7]}, [0.8, 0.75, 0.7],
                               font_file=font)
    top, bottom = fig.axes
    shown = type_labels(TYPES, font)
    assert _labels(top) == [shown[t] for t in TYPES]
    assert list(top.get_lines()[0].get_ydata()) == [10, 20, 30]
    assert math.isnan(bottom.get_lines()[0].get_ydata()[2])
    assert _labels(bottom)[-1] == "all types"
    assert "precision" in bottom.get_ylabel() and top.get_ylabel() == "entities kept"
    assert list(bottom.get_xticks()) == [1, 2, 3]
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == [shown[t] for t in TYPES]
    if font is not None:  # fonts-wqy-zenhei (installed by .ci/run): the names themselves
        assert shown == {t: t for t in TYPES}
    _draw(fig)  # no "Glyph ... missing" warning either way


def test_pseudo_labels_without_a_cjk_font_number_the_types_and_without_gold_show_counts_only():
    assert type_labels(["疾病和诊断", "drug", "身体部位"], None) == {"疾病和诊断": "T1", "drug": "drug", "身体部位": "T3"}
    fig = pseudo_labels_figure([1, 2], {TYPES[0]: [10, 20], "drug": [1, 2]}, font_file=None)
    assert len(fig.axes) == 1  # no hidden gold: counts only
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["drug", "T2"]
    assert any("T1.." in t.get_text() for t in fig.texts)
    _draw(fig)
    with pytest.raises(ValueError, match="1 points for 2"):
        pseudo_labels_figure([1, 2], {"a": [1]})


def test_perfectly_calibrated_confidences_have_an_ece_of_zero():
    confidences, correct = [], []
    for k in range(10):
        c = (k + 0.5) / 10
        confidences += [c] * 100
        correct += [i < round(c * 100) for i in range(100)]
    rel = reliability_bins(confidences, correct)
    assert rel.n == 1000 and rel.counts == [100] * 10
    assert rel.ece == pytest.approx(0.0, abs=1e-12)
    assert rel.accuracy == pytest.approx(rel.confidence)


def test_overconfident_confidences_have_a_large_ece():
    rel = reliability_bins([0.95] * 100 + [0.85] * 100, [i % 2 == 0 for i in range(200)])
    assert rel.counts[9] == 100 and rel.counts[8] == 100 and sum(rel.counts) == 200
    assert rel.accuracy[9] == 0.5 and rel.confidence[9] == pytest.approx(0.95)
    assert rel.ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)
    assert rel.accuracy[0] is None and rel.confidence[0] is None  # empty bin


def test_reliability_bins_edges_and_bad_input():
    rel = reliability_bins([0.0, 0.1, 0.999, 1.0], [True, False, True, True], bins=10)
    assert rel.edges[0] == 0.0 and rel.edges[-1] == 1.0 and len(rel.edges) == 11
    assert rel.counts[0] == 1 and rel.counts[1] == 1 and rel.counts[9] == 2  # 1.0 falls in the last bin
    assert Reliability.from_dict(rel.to_dict()) == rel
    empty = reliability_bins([], [])
    assert empty.n == 0 and math.isnan(empty.ece)
    with pytest.raises(ValueError, match="confidence 1 is 1.5"):
        reliability_bins([0.2, 1.5], [True, True])
    with pytest.raises(ValueError, match="confidence 0 is nan"):
        reliability_bins([float("nan")], [True])
    with pytest.raises(ValueError, match="2 confidences for 1"):
        reliability_bins([0.2, 0.3], [True])
    with pytest.raises(ValueError, match="bins must be >= 1"):
        reliability_bins([0.2], [True], bins=0)


def test_reliability_figure_shows_bins_the_diagonal_and_the_ece():
    rel = reliability_bins([0.95] * 10 + [0.35] * 10, [True] * 5 + [False] * 5 + [True] * 3 + [False] * 7)
    fig = reliability_figure(rel, "sentence", "Round 2 on dev")
    ax, hist = fig.axes
    assert [round(p.get_height(), 3) for p in ax.patches] == [0.3, 0.5]  # non-empty bins only
    assert len(hist.patches) == 10 and sorted(p.get_height() for p in hist.patches)[-2:] == [10, 10]
    assert f"ECE {rel.ece:.3f} over 20 sentences" in ax.get_title()
    assert _labels(ax)[0] == "perfectly calibrated" and ax.get_xlabel() == ""
    assert hist.get_xlabel() == "confidence of the sentence" and ax.get_ylabel() == "fraction correct"
    _draw(fig)
    nothing = reliability_figure(reliability_bins([], []), "entity")
    assert "ECE n/a over 0 entities" in nothing.axes[0].get_title()
    assert any("no entity predicted" in t.get_text() for t in nothing.axes[0].texts)
    _draw(nothing)
