"""The HTML view: marks by type, confidence on hover, low-confidence marked, a legend, nothing external."""
from __future__ import annotations

import re

import pytest

from cemr.corpus.document import Document
from cemr.review.html import render_html

DOCS = [
    (Document("d1", "患者发热<3天>，咳嗽。"), [{"start": 2, "end": 4, "type": "SYM", "confidence": 0.95},
                                           {"start": 9, "end": 11, "type": "SYM", "confidence": 0.41}]),
    (Document("d2", "既往高血压。"), [{"start": 2, "end": 5, "type": "DIS", "confidence": 0.66}]),
]


def test_entities_marked_by_type_with_confidence_and_low_ones_flagged():
    page = render_html(DOCS, ["DIS", "SYM"], low_confidence=0.7)
    marks = re.findall(r'<mark class="ent (t\d)( low)?" data-type="(\w+)" data-conf="([\d.]+)" title="([^"]+)">(.*?)</mark>',
                       page)
    assert [(m[0], bool(m[1]), m[2], m[3], m[5]) for m in marks] == [
        ("t1", False, "SYM", "0.950", "发热"), ("t1", True, "SYM", "0.410", "咳嗽"), ("t0", True, "DIS", "0.660", "高血压")]
    assert marks[1][4] == "SYM · confidence 0.410 (low)"
    assert "&lt;3天&gt;" in page  # text escaped
    legend = page[page.index('<div class="legend">'):]
    assert 'data-type="DIS"><span class="sw t0"></span>DIS <span class="n">1</span>' in legend
    assert 'data-type="SYM"><span class="sw t1"></span>SYM <span class="n">2</span>' in legend
    assert "confidence &lt; 0.7 <span class=\"n\">2</span>" in legend


def test_the_page_is_self_contained():
    page = render_html(DOCS, ["DIS", "SYM"])
    assert not re.search(r"<(script|link|img|iframe)\b", page)
    assert not re.search(r"(src|href)=|url\(|@import", page)


def test_overlapping_entities_are_refused():
    doc = (Document("d", "发热咳嗽"), [{"start": 0, "end": 3, "type": "SYM", "confidence": 0.9},
                                     {"start": 2, "end": 4, "type": "SYM", "confidence": 0.9}])
    with pytest.raises(ValueError, match="'d'"):
        render_html([doc], ["SYM"])
