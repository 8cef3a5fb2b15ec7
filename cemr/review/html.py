"""The HTML view of tagged documents: one self-contained file (inline CSS, no script, no CDN).

Entities are highlighted by type (a colour per type, named in the legend), their type and
confidence shown on hover (a tooltip, and the ``title`` attribute), and those below
``low_confidence`` marked (dashed outline and a ``?``; counted in the legend and per document).
Each document is a ``<section class="doc">``; each entity a ``<mark class="ent t<k>[ low]"
data-type=... data-conf=...>``, ``k`` the type's index in the legend.

:func:`write_html` streams (one document at a time: ``cemr predict --out-format html``);
:func:`render_html` returns the page as a string (for an MLflow artifact, say).
"""
from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

# colour-blind-aware palette (Okabe-Ito, then Tableau light tones): background tints per type
PALETTE = ("#f7c97e", "#9fd3f5", "#9be3c6", "#f4ef9c", "#a9c8ec", "#f2b48f", "#e4b5d2", "#d2d2d2",
           "#c7e9a7", "#ffc9c9", "#c9c2f0", "#b9e6e6")
DEFAULT_LOW_CONFIDENCE = 0.7  # the default selftrain.threshold

_CSS = """
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:24px;color:#222;max-width:1100px;
  display:flex;flex-direction:column}
h1{font-size:20px;margin:0 0 6px;order:-3}
.summary{color:#555;margin:0 0 12px;order:-2}
.legend{order:-1;display:flex;flex-wrap:wrap;gap:8px;margin:0 0 18px;padding:8px;border:1px solid #ddd;border-radius:6px}
.legend .key{display:inline-flex;align-items:center;gap:4px;font-size:14px}
.legend .key .n{color:#666}
.legend .low-key mark{background:transparent;margin-right:4px}
section.doc{border-top:1px solid #eee;padding:10px 0}
section.doc h2{font-size:13px;font-weight:normal;color:#666;margin:0 0 4px;font-family:monospace}
.text{white-space:pre-wrap;line-height:2.1;font-size:16px}
mark.ent{position:relative;padding:1px 2px;border-radius:3px;color:inherit}
mark.ent.low{outline:2px dashed #c0392b;outline-offset:0}
mark.ent.low::before{content:"?";position:absolute;top:-1.1em;right:-0.35em;font-size:11px;font-weight:bold;color:#c0392b}
mark.ent:hover::after{content:attr(data-type) " \\00b7  " attr(data-conf);position:absolute;left:0;top:1.9em;z-index:2;
  background:#333;color:#fff;font-size:12px;line-height:1.4;padding:2px 6px;border-radius:3px;white-space:nowrap}
"""


def type_classes(types: Sequence[str]) -> dict[str, str]:
    """``{type: "t<k>"}`` in legend order."""
    return {t: f"t{k}" for k, t in enumerate(types)}


def _css(types: Sequence[str]) -> str:
    colours = "".join(f"mark.t{k},.sw.t{k}{{background:{PALETTE[k % len(PALETTE)]}}}\n" for k in range(len(types)))
    return _CSS + colours + ".sw{display:inline-block;width:14px;height:14px;border-radius:3px}\n"


def _entity_list(preds: Iterable[Any]) -> list[tuple[int, int, str, float]]:
    """``(start, end, type, confidence)`` of predictions (``.span`` + ``.confidence``, or dicts)."""
    out = []
    for p in preds:
        if isinstance(p, dict):
            out.append((int(p["start"]), int(p["end"]), str(p["type"]), float(p["confidence"])))
        else:
            out.append((p.span.start, p.span.end, p.span.type, float(p.confidence)))
    return sorted(out)


def render_text(doc_id: str, text: str, preds: Iterable[Any], classes: dict[str, str], low_confidence: float) -> str:
    """The ``<section>`` of one document; ``ValueError`` for a span outside the text or two
    overlapping spans (predictions never overlap)."""
    parts: list[str] = []
    pos = 0
    n_low = 0
    ents = _entity_list(preds)
    for start, end, type_, conf in ents:
        if start < pos or end > len(text) or end <= start:
            raise ValueError(f"document {doc_id!r}: entity {type_} [{start}, {end}) overlaps another or does "
                             f"not fit its text ({len(text)} chars)")
        low = conf < low_confidence
        n_low += low
        cls = classes.get(type_, "tx")
        tip = f"{type_} · confidence {conf:.3f}" + (" (low)" if low else "")
        parts.append(html.escape(text[pos:start]))
        parts.append(f'<mark class="ent {cls}{" low" if low else ""}" data-type="{html.escape(type_)}" '
                     f'data-conf="{conf:.3f}" title="{html.escape(tip)}">{html.escape(text[start:end])}</mark>')
        pos = end
    parts.append(html.escape(text[pos:]))
    head = f"{html.escape(doc_id)} · {len(ents)} entities" + (f" · {n_low} low-confidence" if n_low else "")
    return f'<section class="doc" data-id="{html.escape(doc_id)}"><h2>{head}</h2><div class="text">{"".join(parts)}</div></section>\n'


def _legend(types: Sequence[str], counts: Counter, low: int, low_confidence: float) -> str:
    keys = "".join(f'<span class="key" data-type="{html.escape(t)}"><span class="sw t{k}"></span>{html.escape(t)} '
                   f'<span class="n">{counts.get(t, 0)}</span></span>' for k, t in enumerate(types))
    keys += (f'<span class="key low-key"><mark class="ent low" data-type="low" data-conf="&lt;{low_confidence:g}">'
             f'abc</mark> confidence &lt; {low_confidence:g} <span class="n">{low}</span></span>')
    return f'<div class="legend">{keys}</div>\n'


def write_html(tagged: Iterable[tuple[Any, Iterable[Any]]], fh: TextIO, types: Sequence[str], *,
               low_confidence: float = DEFAULT_LOW_CONFIDENCE, title: str = "cemr predictions") -> int:
    """Write the page for ``tagged`` (``(document with .id/.text, predictions)`` pairs) to ``fh``;
    returns the number of documents. One pass, one document in memory at a time: the title,
    summary and legend (types, entity counts, low-confidence count) are written after the
    documents and shown above them (CSS ``order``). Types not in ``types`` get the next colours
    and follow them in the legend."""
    if not 0 <= low_confidence <= 1:
        raise ValueError(f"low_confidence must be in [0, 1], got {low_confidence}")
    all_types = list(types)
    classes = type_classes(all_types)
    counts: Counter = Counter()
    low = 0
    n = 0
    fh.write(f'<!DOCTYPE html>\n<html lang="zh"><head><meta charset="utf-8">'
             f'<meta name="viewport" content="width=device-width,initial-scale=1">'
             f"<title>{html.escape(title)}</title><style>{_css(all_types)}</style></head><body>\n")
    for doc, preds in tagged:
        preds = list(preds)
        for p in _entity_list(preds):
            if p[2] not in classes:  # a type the legend did not declare: a fallback colour class
                all_types.append(p[2])
                classes[p[2]] = f"t{len(all_types) - 1}"
            counts[p[2]] += 1
            low += p[3] < low_confidence
        fh.write(render_text(doc.id, doc.text, preds, classes, low_confidence))
        n += 1
    extra = "".join(f"mark.t{k},.sw.t{k}{{background:{PALETTE[k % len(PALETTE)]}}}\n"
                    for k in range(len(types), len(all_types)))
    if extra:
        fh.write(f"<style>{extra}</style>\n")
    fh.write(f'<h1>{html.escape(title)}</h1>\n<p class="summary">{n} documents · {sum(counts.values())} entities · '
             f"{low} below confidence {low_confidence:g} (dashed, ?) · hover an entity for its type and "
             f"confidence</p>\n")
    fh.write(_legend(all_types, counts, low, low_confidence))
    fh.write("</body></html>\n")
    return n


def render_html(tagged: Iterable[tuple[Any, Iterable[Any]]], types: Sequence[str], *,
                low_confidence: float = DEFAULT_LOW_CONFIDENCE, title: str = "cemr predictions") -> str:
    """The page of :func:`write_html` as a string."""
    import io

    buf = io.StringIO()
    write_html(tagged, buf, types, low_confidence=low_confidence, title=title)
    return buf.getvalue()
