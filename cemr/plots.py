"""The figures of a run, for MLflow: pure functions, numbers in, a matplotlib Figure out (the Agg
backend: no display). :meth:`cemr.tracking.Tracker.log_plot` saves one as a PNG artifact, with the
numbers it shows as JSON beside it.

- :func:`f1_per_round_figure`: dev and test F1 per self-training round, the dev-selected round marked;
- :func:`f1_per_threshold_figure`: the threshold sweep, dev and test F1 of each threshold's best round;
- :func:`pseudo_labels_figure`: pseudo-label entities kept per type per round and, when the pool has
  hidden gold, their precision per type;
- :func:`reliability_bins` / :func:`reliability_figure`: confidence against the fraction correct
  (a reliability diagram) and the expected calibration error (ECE).

Rounds are integers on every round axis (one tick per round). Entity type names are Chinese: the
figures draw them with the first CJK font of :data:`CJK_FONT_FILES` that exists (fonts-wqy-zenhei:
``apt-get install fonts-wqy-zenhei``) or that matplotlib already knows; without one a type the
default font cannot draw is shown as ``T1``, ``T2`` ... (:func:`type_labels`; the JSON beside the
plot maps them back), so no glyph goes missing and matplotlib warns of none.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CJK_FONT_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
)
CJK_FAMILIES = ("WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Noto Sans CJK SC", "Noto Sans CJK JP",
                "Source Han Sans SC", "SimHei", "Microsoft YaHei")
LATIN_FAMILY = "DejaVu Sans"  # matplotlib's own font
DEFAULT_BINS = 10
FIGSIZE = (6.4, 4.2)
DEV, TEST = "#1f77b4", "#d62728"


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ----------------------------------------------------------------------------------------------
# Fonts for entity type names
# ----------------------------------------------------------------------------------------------


@functools.cache
def cjk_font(files: tuple[str, ...] = CJK_FONT_FILES, families: tuple[str, ...] = CJK_FAMILIES) -> str | None:
    """The file of a font that draws Chinese: the first of ``files`` that exists, else that of the
    first of ``families`` matplotlib knows; None when there is none. (A file, not a family name:
    matplotlib then draws with it as it is, without searching fonts by weight.)"""
    from matplotlib import font_manager

    for file in files:
        if Path(file).is_file():
            return file
    known = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    return next((known[f] for f in families if f in known), None)


@functools.cache
def _charmap(file: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(file).get_charmap())


def _latin_file() -> str:
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family=LATIN_FAMILY))


def type_font(cjk_file: str | None) -> Any:
    """FontProperties for text with type names: the font of ``cjk_file``, else the default."""
    from matplotlib.font_manager import FontProperties

    return FontProperties(fname=cjk_file) if cjk_file else FontProperties(family=LATIN_FAMILY)


def type_labels(types: Sequence[str], cjk_file: str | None) -> dict[str, str]:
    """``{type: what the figure shows}``: the name itself when the font of :func:`type_font` draws
    every character of it, else ``T<k>`` (k: its 1-based position in ``types``)."""
    drawable = _charmap(cjk_file or _latin_file())
    return {t: t if all(ord(c) in drawable for c in t) else f"T{k}" for k, t in enumerate(types, start=1)}


# ----------------------------------------------------------------------------------------------
# Axes
# ----------------------------------------------------------------------------------------------


def round_axis(ax: Any, rounds: Sequence[int]) -> None:
    """Integer round ticks on the x axis: one per round (up to 20 rounds), else integer steps."""
    from matplotlib.ticker import MaxNLocator

    if len(rounds) <= 20:
        ax.set_xticks(sorted({int(r) for r in rounds}))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lo, hi = min(rounds), max(rounds)
    ax.set_xlim(lo - 0.4, hi + 0.4)
    ax.set_xlabel("self-training round")


def _check_series(name: str, xs: Sequence[Any], series: Mapping[str, Sequence[Any]]) -> None:
    if not xs:
        raise ValueError(f"{name}: nothing to plot")
    for label, ys in series.items():
        if len(ys) != len(xs):
            raise ValueError(f"{name}: series {label!r} has {len(ys)} points for {len(xs)} x values")


def _nan(values: Sequence[float | None]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


# ----------------------------------------------------------------------------------------------
# F1 per round, F1 per threshold
# ----------------------------------------------------------------------------------------------


def _dev_test_figure(what: str, x: Sequence[float], dev_f1: Sequence[float], test_f1: Sequence[float | None] | None,
                     labels: tuple[str, str], best: float | None, best_label: str | None):
    """Dev and (where a point has one) test F1 over ``x``, ``best`` marked by a dotted line; the
    caller sets the x axis and the title."""
    series = {"dev F1": dev_f1, **({"test F1": test_f1} if test_f1 is not None else {})}
    _check_series(what, x, series)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=100)
    ax.plot(list(x), _nan(dev_f1), marker="o", color=DEV, label=labels[0])
    if test_f1 is not None and any(v is not None for v in test_f1):
        ax.plot(list(x), _nan(test_f1), marker="s", color=TEST, label=labels[1])
    if best is not None:
        ax.axvline(best, color="grey", linestyle=":", label=best_label)
    ax.set_ylabel("micro F1 (exact span and type)")
    ax.grid(True, alpha=0.3)
    return fig, ax


def f1_per_round_figure(rounds: Sequence[int], dev_f1: Sequence[float], test_f1: Sequence[float | None] | None = None,
                        best_round: int | None = None):
    """Dev and (where a round has one) test micro F1 per round; ``best_round`` (the dev-selected
    one) is marked with a dotted line. Rounds are integers on the axis."""
    fig, ax = _dev_test_figure("F1 per round", rounds, dev_f1, test_f1, ("dev F1", "test F1"), best_round,
                               f"best round on dev ({best_round})")
    round_axis(ax, rounds)
    ax.set_title("F1 per self-training round")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


def f1_per_threshold_figure(thresholds: Sequence[float], dev_f1: Sequence[float],
                            test_f1: Sequence[float | None] | None = None, best: float | None = None):
    """The sweep: per confidence threshold, the dev F1 of its dev-selected round and that round's
    test F1; ``best`` (the winning threshold) marked. One tick per threshold."""
    fig, ax = _dev_test_figure("F1 per threshold", thresholds, dev_f1, test_f1,
                               ("dev F1 (best round)", "test F1 (same round)"), best,
                               None if best is None else f"best threshold on dev ({best:.2f})")
    if len(thresholds) <= 20:
        ax.set_xticks(list(thresholds), [f"{t:.2f}" for t in thresholds])
    ax.set_xlabel("confidence threshold (selftrain.threshold)")
    ax.set_title("F1 per confidence threshold")
    ax.legend(loc="best")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# Pseudo-labels per type
# ----------------------------------------------------------------------------------------------


def pseudo_labels_figure(rounds: Sequence[int], kept: Mapping[str, Sequence[int]],
                         precision: Mapping[str, Sequence[float | None]] | None = None,
                         micro_precision: Sequence[float | None] | None = None,
                         font_file: str | None = None):
    """Pseudo-label entities kept per type per round (top) and, with ``precision`` (against the
    pool's hidden gold), their precision per type (bottom; ``micro_precision``: all types, dashed).
    ``kept``/``precision``: ``{type: one value per round}`` (None: not measured that round).
    ``font_file``: the font for type names (:func:`cjk_font`); types it cannot draw are
    shown as :func:`type_labels` says."""
    _check_series("pseudo-labels per type", rounds, dict(kept))
    if precision is not None:
        _check_series("pseudo-label precision per type", rounds, dict(precision))
    if micro_precision is not None:
        _check_series("pseudo-label precision", rounds, {"all types": micro_precision})
    types = sorted(set(kept) | set(precision or {}))
    labels = type_labels(types, font_file)
    colours = {t: f"C{k % 10}" for k, t in enumerate(types)}
    plt = pyplot()
    panels = 2 if precision is not None else 1
    fig, axes = plt.subplots(panels, 1, figsize=(FIGSIZE[0] + 1.6, 3.0 * panels + 0.6), dpi=100, sharex=True,
                             squeeze=False)
    top = axes[0][0]
    for t in types:
        if t in kept:
            top.plot(list(rounds), _nan(kept[t]), marker="o", color=colours[t], label=labels[t])
    top.set_ylabel("entities kept")
    top.set_title("Pseudo-labels kept per type" + (" and their precision vs hidden gold" if panels == 2 else ""))
    top.grid(True, alpha=0.3)
    if precision is not None:
        bottom = axes[1][0]
        for t in types:
            if t in precision:
                bottom.plot(list(rounds), _nan(precision[t]), marker="o", color=colours[t])
        if micro_precision is not None:
            bottom.plot(list(rounds), _nan(micro_precision), color="black", linestyle="--", marker="x",
                        label="all types")
            bottom.legend(loc="lower right")
        bottom.set_ylabel("precision vs hidden gold")
        bottom.set_ylim(-0.02, 1.02)
        bottom.grid(True, alpha=0.3)
    round_axis(axes[-1][0], rounds)
    for row in axes[:-1]:
        row[0].set_xlabel("")
    handles, names = top.get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="center right", prop=type_font(font_file), title="entity type")
    if any(labels[t] != t for t in types):
        fig.text(0.01, 0.012, "no font with these characters: types numbered T1.. (names in the JSON beside)",
                 fontsize=8, color="grey")
    fig.tight_layout(rect=(0, 0.02, 0.74, 1))
    return fig


# ----------------------------------------------------------------------------------------------
# Reliability (calibration)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reliability:
    """Confidences binned against correctness: ``edges`` (``bins + 1`` values in [0, 1]), per bin
    its ``counts``, mean ``confidence`` and ``accuracy`` (fraction correct; None for an empty bin),
    ``n`` items in all, and ``ece`` = sum over bins of ``counts/n * |accuracy - confidence|`` (NaN
    when ``n == 0``)."""

    edges: list[float]
    counts: list[int]
    confidence: list[float | None]
    accuracy: list[float | None]
    n: int
    ece: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Reliability:
        return cls(edges=list(data["edges"]), counts=list(data["counts"]), confidence=list(data["confidence"]),
                   accuracy=list(data["accuracy"]), n=int(data["n"]),
                   ece=math.nan if data.get("ece") is None else float(data["ece"]))


def reliability_bins(confidences: Sequence[float], correct: Sequence[bool], bins: int = DEFAULT_BINS) -> Reliability:
    """Bin ``confidences`` into ``bins`` equal-width bins of [0, 1] (``[k/bins, (k+1)/bins)``, 1.0
    in the last) against ``correct``; see :class:`Reliability`. ``ValueError`` naming the item for
    a confidence outside [0, 1] or lists of different lengths."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences for {len(correct)} correctness values")
    counts, conf_sum, right = [0] * bins, [0.0] * bins, [0] * bins
    for i, (c, ok) in enumerate(zip(confidences, correct)):
        c = float(c)
        if not 0.0 <= c <= 1.0 + 1e-9:  # NaN fails too
            raise ValueError(f"confidence {i} is {c!r}: expected a probability in [0, 1]")
        k = min(int(c * bins), bins - 1)
        counts[k] += 1
        conf_sum[k] += min(c, 1.0)
        right[k] += bool(ok)
    n = sum(counts)
    confidence = [s / m if m else None for s, m in zip(conf_sum, counts)]
    accuracy = [r / m if m else None for r, m in zip(right, counts)]
    ece = (sum(m / n * abs(a - c) for m, a, c in zip(counts, accuracy, confidence) if m) if n else math.nan)
    return Reliability([k / bins for k in range(bins + 1)], counts, confidence, accuracy, n, ece)


def reliability_figure(rel: Reliability, unit: str = "entity", title: str = "Reliability"):
    """Fraction correct per confidence bin (bars) against the diagonal of perfect calibration, each
    bin's mean confidence (dots), the ECE in the title and the items per bin below. ``unit``:
    what was scored (``entity`` or ``sentence``)."""
    units = "entities" if unit == "entity" else f"{unit}s"
    plt = pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(FIGSIZE[0], FIGSIZE[1] + 1.2), dpi=100, sharex=True,
                                   gridspec_kw={"height_ratios": [3, 1]})
    width = rel.edges[1] - rel.edges[0]
    lefts = rel.edges[:-1]
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    filled = [(x, a, c) for x, a, c in zip(lefts, rel.accuracy, rel.confidence) if a is not None]
    if filled:
        ax.bar([x for x, _, _ in filled], [a for _, a, _ in filled], width=width, align="edge", color=DEV,
               alpha=0.75, edgecolor="white", label=f"fraction of {units} correct")
        ax.plot([x + width / 2 for x, _, _ in filled], [c for _, _, c in filled], "o", color="black", markersize=4,
                label="mean confidence in the bin")
    else:
        ax.text(0.5, 0.5, f"no {unit} predicted", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("fraction correct")
    ece = "n/a" if math.isnan(rel.ece) else f"{rel.ece:.3f}"
    ax.set_title(f"{title}: ECE {ece} over {rel.n} {units}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(lefts, rel.counts, width=width, align="edge", color="grey", edgecolor="white")
    hist.set_ylabel(units)
    hist.set_xlabel(f"confidence of the {unit}")
    hist.grid(True, alpha=0.3)
    fig.tight_layout()
    return fig
