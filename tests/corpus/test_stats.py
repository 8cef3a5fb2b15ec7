"""corpus_stats: the summary dict of a read."""
import json

from cemr.corpus import corpus_stats, write_jsonl, Document, Span


def test_stats_counts_entities_and_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl([Document("a", "患者头痛发热", [Span(2, 4, "症状"), Span(4, 6, "症状"),
                                              Span(0, 2, "人")]),
                 Document("b", "无殊")], path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("{broken\n")
        fh.write(json.dumps({"id": "c", "text": "abc",
                             "entities": [{"start": 0, "end": 9, "type": "X"}]}) + "\n")
    stats = corpus_stats("jsonl", path)
    assert stats["format"] == "jsonl" and stats["path"] == str(path)
    assert stats["documents"] == 3 and stats["characters"] == 6 + 2 + 3
    assert stats["entities"] == {"症状": 2, "人": 1, "total": 3}
    assert list(stats["entities"]) == ["症状", "人", "total"]  # most frequent first
    assert (stats["read"], stats["kept"], stats["rejected"], stats["repaired"]) == (4, 3, 1, 1)
    assert stats["reasons"] == {"bad_json": 1, "bad_offsets": 1}
    assert stats["errors"][0].startswith(f"{path}:3: invalid JSON")
    assert stats["errors"][1].startswith(f"{path}:4: ")
    assert stats["encodings"] == {"utf-8": 1}
    json.dumps(stats)  # serialisable as is


def test_stats_options_pass_through(tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl([Document("a", "患者头痛", [Span(0, 2, "人"), Span(2, 4, "症状")])], path)
    assert corpus_stats("jsonl", path, types={"症状"})["entities"] == {"症状": 1, "total": 1}
    (tmp_path / "u.txt").write_text("一\n\n二\n", encoding="utf-8")
    stats = corpus_stats("text", tmp_path / "u.txt", limit=1)
    assert stats["documents"] == 1 and stats["entities"] == {"total": 0}
    stats = corpus_stats("text", tmp_path / "u.txt")
    assert (stats["documents"], stats["rejected"], stats["reasons"]) == (2, 1, {"empty": 1})
    assert corpus_stats("text", tmp_path / "u.txt", max_errors=0)["errors"] == ["... and 1 more"]
