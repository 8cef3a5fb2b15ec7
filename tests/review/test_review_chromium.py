"""The HTML view in a real browser (Debian's chromium, headless): every entity rendered, coloured
as its legend key, the low-confidence ones outlined; a screenshot is kept as a test artifact
(``$CEMR_TEST_ARTIFACTS`` when set, else the test's temporary directory)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cemr.corpus.document import Document
from cemr.review.html import render_html

INSTALL = "apt-get update && apt-get install -y --no-install-recommends chromium fonts-wqy-zenhei"

# appended to a copy of the page only: reads what the browser rendered into <pre id="probe">
PROBE = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
const css = e => getComputedStyle(e);
const out = {
  marks: [...document.querySelectorAll("section.doc mark.ent")].map(e => ({
    text: e.textContent, type: e.dataset.type, low: e.classList.contains("low"), size: box(e),
    bg: css(e).backgroundColor, outline: css(e).outlineStyle, marker: getComputedStyle(e, "::before").content})),
  legend: Object.fromEntries([...document.querySelectorAll(".legend .key[data-type]")].map(
    k => [k.dataset.type, css(k.querySelector(".sw")).backgroundColor])),
  legendAbove: document.querySelector(".legend").getBoundingClientRect().top <
               document.querySelector("section.doc").getBoundingClientRect().top,
};
const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""

DOCS = [
    (Document("note-1", "患者发热三天，伴咳嗽、胸痛。既往高血压病史十年。"),
     [{"start": 2, "end": 4, "type": "症状", "confidence": 0.97}, {"start": 8, "end": 10, "type": "症状", "confidence": 0.52},
      {"start": 11, "end": 13, "type": "症状", "confidence": 0.88}, {"start": 16, "end": 19, "type": "疾病", "confidence": 0.93}]),
    (Document("note-2", "行胸部CT检查，予阿莫西林口服。"),
     [{"start": 1, "end": 5, "type": "检查", "confidence": 0.64}, {"start": 9, "end": 13, "type": "药物", "confidence": 0.91}]),
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"no chromium on PATH: the HTML view is tested in a real browser; install it ({INSTALL})")


def _run(browser: str, *args: str) -> str:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--hide-scrollbars", "--window-size=900,520", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(cmd)} failed: {done.stderr[-2000:]}"
    return done.stdout


def test_the_page_renders_the_marked_entities_in_chromium(tmp_path):
    browser = chromium()
    page = render_html(DOCS, ["症状", "疾病", "检查", "药物"], low_confidence=0.7, title="cemr predict: notes.txt")
    view = tmp_path / "view.html"
    view.write_text(page, encoding="utf-8")
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _run(browser, "--dump-dom", probe.as_uri())
    found = json.loads(dom[dom.index('<pre id="probe">') + 16:dom.index("</pre>", dom.index('<pre id="probe">'))]
                       .replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
    expected = [(d.text[e["start"]:e["end"]], e["type"], e["confidence"] < 0.7) for d, ents in DOCS for e in ents]
    assert [(m["text"], m["type"], m["low"]) for m in found["marks"]] == expected
    for m in found["marks"]:
        assert m["size"][0] > 0 and m["size"][1] > 0, m
        assert m["bg"] == found["legend"][m["type"]], m  # coloured as its legend key
        assert (m["outline"], m["marker"]) == (("dashed", '"?"') if m["low"] else ("none", "none")), m
    assert len(set(found["legend"].values())) == 4  # one colour per type
    assert found["legendAbove"]

    artifacts = Path(os.environ.get("CEMR_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "review_html_view.png"
    _run(browser, f"--screenshot={shot}", view.as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
