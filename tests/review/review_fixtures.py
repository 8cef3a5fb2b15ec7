"""Small inputs of the review tests: pseudo-label round shards and review items."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cemr.corpus.document import Span
from cemr.corpus.shards import CONFIDENCE_FIELD, UNSURE_FIELD, sentence_schema
from cemr.review.select import ReviewItem, Scored

PREDICTION_TYPE = pa.list_(pa.struct([("start", pa.int32()), ("end", pa.int32()), ("type", pa.string()),
                                      ("confidence", pa.float32())]))

# the columns cluster.pseudolabel.OUTPUT_SCHEMA writes (that module imports ray: rebuilt here)
ROUND_FIELDS = [UNSURE_FIELD, CONFIDENCE_FIELD, pa.field("status", pa.string()), pa.field("reason", pa.string()),
                pa.field("predicted", pa.int32()), pa.field("round", pa.int32()), pa.field("labeler", pa.string())]


def write_round(round_dir: Path, rows: list[dict[str, Any]], *, with_predictions: bool = False,
                files: int = 1) -> Path:
    """``round_dir/pseudo/all/part-*.parquet`` holding ``rows`` (doc_id, sent_id, text, status,
    confidence and, with ``with_predictions``, predictions: [(start, end, type, conf)])."""
    fields = list(ROUND_FIELDS) + ([pa.field("predictions", PREDICTION_TYPE)] if with_predictions else [])
    schema = sentence_schema(fields)
    out = round_dir / "pseudo" / "all"
    out.mkdir(parents=True)
    per = -(-len(rows) // files)
    for k in range(files):
        part = rows[k * per:(k + 1) * per]
        cols: dict[str, list[Any]] = {
            "doc_id": [r["doc_id"] for r in part], "sent_id": [r["sent_id"] for r in part],
            "offset": [r.get("offset", 0) for r in part], "text": [r["text"] for r in part],
            "spans": [[] for _ in part], "source": ["pseudo:r2"] * len(part), "unsure": [[] for _ in part],
            "confidence": [r["confidence"] for r in part], "status": [r["status"] for r in part],
            "reason": [r.get("reason", "") for r in part], "predicted": [len(r.get("predictions", [])) for r in part],
            "round": [2] * len(part), "labeler": ["host:1"] * len(part),
        }
        if with_predictions:
            cols["predictions"] = [[{"start": a, "end": b, "type": t, "confidence": c}
                                    for a, b, t, c in r.get("predictions", [])] for r in part]
        pq.write_table(pa.Table.from_pydict(cols, schema=schema), out / f"part-{k:05d}.parquet")
    return out


def item(item_id: str, text: str, preds: list[tuple[int, int, str, float]], unc: float | None = 0.5,
         **provenance: Any) -> ReviewItem:
    return ReviewItem(item_id, text, unc, tuple(Scored(Span(a, b, t), c) for a, b, t, c in preds),
                      {"round": 2, "doc_id": item_id.split("#")[0], "sent_id": 0, **provenance})
