"""Format detection from content, explicit formats that must fit, ``auto`` reads and stats."""
import json
from pathlib import Path

import pytest

from cemr.corpus import (FORMATS, INPUT_FORMATS, CorpusError, ReadReport, corpus_stats,
                         detect_format, read_documents, read_unlabeled, resolve_format)
from cemr.corpus.detect import SAMPLE_FILES
from shared_data import real

DATA = Path(__file__).parent / "data"




def yidu_line(text, *ents):
    return json.dumps({"originalText": text, "entities": [
        {"label_type": t, "overlap": 0, "start_pos": s, "end_pos": e} for s, e, t in ents]},
        ensure_ascii=False)


def test_input_formats():
    assert FORMATS == ("ccks2017", "yidu", "jsonl", "brat", "text")
    assert INPUT_FORMATS == ("auto",) + FORMATS


@pytest.mark.parametrize("name, fmt, words", [
    ("yidu_bad.txt", "yidu", "originalText/entities"),
    ("jsonl_spans.jsonl", "jsonl", "text/entities"),
    ("ccks2017_bad", "ccks2017", ".txtoriginal.txt"),
    ("brat_bad", "brat", ".ann"),
    ("plain.txt", "text", "plain text"),
    ("table.tsv", "text", "TSV"),
    ("yidu_array.json", "text", "JSON array"),
])
def test_hand_made_files_of_every_format(name, fmt, words):
    found = detect_format(DATA / name)
    assert found.format == fmt and words in found.reason
    assert fmt in found.fits


@pytest.mark.parametrize("parts, fmt", [
    (("ccks2017",), "ccks2017"),
    (("ccks2017", "train"), "ccks2017"),
    (("ccks2017", "train", "一般项目"), "ccks2017"),
    (("ccks2017", "unlabeled"), "text"),
    (("yidu_s4k",), "yidu"),
    (("yidu_s4k", "subtask1_training_part1.txt"), "yidu"),  # starts with a BOM
    (("unlabeled_text", "cmedqa"), "text"),
    (("unlabeled_text", "toyhom_dialogue"), "text"),  # GB18030
    (("unlabeled_text", "huatuo", "liver_cancer.json"), "text"),
])
def test_real_data_sets(parts, fmt):
    assert detect_format(real(*parts)).format == fmt


@pytest.mark.parametrize("fmt, parts, fits", [
    ("yidu", ("ccks2017", "train"), "ccks2017"),
    ("jsonl", ("ccks2017", "train"), "ccks2017"),
    ("text", ("ccks2017", "train"), "ccks2017"),
    ("ccks2017", ("yidu_s4k",), "yidu"),
    ("jsonl", ("yidu_s4k",), "yidu"),
    ("brat", ("yidu_s4k",), "yidu"),
    ("jsonl", ("unlabeled_text", "cmedqa", "dev.txt"), "text"),
    ("yidu", ("unlabeled_text", "toyhom_dialogue", "内科.txt"), "text"),
])
def test_a_wrong_explicit_format_names_the_one_that_fits(fmt, parts, fits):
    path = real(*parts)
    message = f"format {fmt} does not fit: it looks like {fits}"
    with pytest.raises(CorpusError, match=message):
        resolve_format(fmt, path, labeled=False)
    with pytest.raises(CorpusError, match=message):
        read_documents(fmt, path) if fmt != "text" else read_unlabeled(path)
    with pytest.raises(CorpusError, match=message):
        corpus_stats(fmt, path)


def test_resolve_auto_and_labeled():
    assert resolve_format("auto", real("yidu_s4k"), labeled=True) == (
        "yidu", "detected yidu: directory of files with JSON lines with originalText/entities "
                "(start_pos, end_pos, label_type)")
    fmt, message = resolve_format("ccks2017", real("ccks2017", "train"), labeled=True)
    assert fmt == "ccks2017" and message.startswith("ccks2017: directory of")
    with pytest.raises(CorpusError, match="no labels found: it looks like plain text"):
        resolve_format("auto", real("ccks2017", "unlabeled"), labeled=True)
    with pytest.raises(CorpusError, match="format text has no labels"):
        resolve_format("text", DATA / "plain.txt", labeled=True)
    with pytest.raises(CorpusError, match="no labels found.*JSON array"):
        resolve_format("auto", DATA / "yidu_array.json", labeled=True)
    assert resolve_format("text", real("yidu_s4k"), labeled=False)[0] == "text"
    with pytest.raises(ValueError, match="unknown corpus format"):
        resolve_format("conll", DATA / "plain.txt", labeled=False)


def test_auto_reads_the_detected_format():
    docs = list(read_documents("auto", DATA / "ccks2017_bad"))
    assert [d.id for d in docs] == ["一般项目-1", "一般项目-2"] and docs[0].spans
    docs = list(read_documents("auto", DATA / "plain.txt"))
    assert [d.text for d in docs] == ["患者头痛三天。", "胃癌术后，一般情况可。"]


def test_labeled_formats_as_text_inputs_give_the_text_never_json(tmp_path):
    # the Yidu file read for its text (labels ignored): the text, not '{"originalText": ...'
    for docs in (read_unlabeled(DATA / "yidu_bad.txt"), read_documents("text", DATA / "yidu_bad.txt"),
                 read_documents("yidu", DATA / "yidu_bad.txt")):
        texts = [d.text for d in docs]
        assert texts and not any("originalText" in t or t.startswith("{") for t in texts)
    first = next(read_unlabeled(real("yidu_s4k", "subtask1_training_part2.txt")))
    assert not first.text.startswith("{") and "riginalText" not in first.text
    assert corpus_stats("text", real("yidu_s4k", "subtask1_training_part2.txt"))["characters"] \
        == corpus_stats("yidu", real("yidu_s4k", "subtask1_training_part2.txt"))["characters"]


def test_a_column_of_a_tsv_txt_file_is_honoured():
    # cmedqa is TSV in .txt files (id, question, answer); column 1 is the question alone
    doc = next(read_unlabeled(real("unlabeled_text", "cmedqa"), column="1"))
    assert doc.text == "晚上睡迟了眼睛痛胸口闷该吃些什么啊"


def test_nothing_to_read_and_binary(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_text("\n \n", encoding="utf-8")
    for name, why in (("empty.txt", "an empty file"), ("blank.txt", "only blank lines")):
        path = tmp_path / name
        assert detect_format(path).reason.startswith(why)
        with pytest.raises(CorpusError, match=f"no labels found: .*{why}"):
            resolve_format("auto", path, labeled=True)
        with pytest.raises(CorpusError, match="nothing could be read as jsonl"):
            corpus_stats("jsonl", path)  # the reader's rejected record, then refused
        with pytest.raises(CorpusError, match="nothing could be read as text"):
            corpus_stats("auto", path)
    (tmp_path / "dir").mkdir()
    with pytest.raises(CorpusError, match="empty directory"):
        detect_format(tmp_path / "dir")
    blob = tmp_path / "blob.bin"
    blob.write_bytes(bytes(range(256)) * 32)  # 8 KB
    for call in (lambda: detect_format(blob), lambda: read_unlabeled(blob),
                 lambda: read_documents("auto", blob), lambda: corpus_stats("text", blob)):
        with pytest.raises(CorpusError, match="binary content"):
            call()


def test_a_directory_samples_a_few_files_and_refuses_mixed_labels(tmp_path):
    (tmp_path / "a.jsonl").write_text(yidu_line("患者头痛", (2, 4, "症状")) + "\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "无", "entities": []}) + "\n",
                                      encoding="utf-8")
    found = detect_format(tmp_path)
    assert found.format == "text" and "a.jsonl: yidu" in found.reason and "b.jsonl: jsonl" in found.reason
    with pytest.raises(CorpusError, match="format yidu does not fit"):
        read_documents("yidu", tmp_path)
    with pytest.raises(CorpusError, match="no labels found"):
        resolve_format("auto", tmp_path, labeled=True)
    # only the first few files are opened: a broken file after them does not change the answer
    many = tmp_path / "many"
    many.mkdir()
    for k in range(SAMPLE_FILES):
        (many / f"{k}.txt").write_text(yidu_line("头痛", (0, 2, "症状")) + "\n", encoding="utf-8")
    (many / "z.txt").write_bytes(b"\x00" * 100)
    assert detect_format(many).format == "yidu"
    report = ReadReport()
    assert len(list(read_documents("yidu", many, report=report))) == SAMPLE_FILES
    assert report.reasons == {"binary": 1}


def test_json_lines_without_entities_are_text_with_keys_named(tmp_path):
    f = tmp_path / "u.jsonl"
    f.write_text(json.dumps({"id": "a", "text": "头痛", "spans": []}) + "\n", encoding="utf-8")
    found = detect_format(f)
    assert found.format == "text" and "id, spans, text" in found.reason
    g = tmp_path / "qa.json"
    g.write_text(json.dumps({"instruction": "问", "output": "答"}, ensure_ascii=False) + "\n",
                 encoding="utf-8")
    assert "instruction, output" in detect_format(g).reason
    with pytest.raises(CorpusError, match="does not fit"):
        read_documents("jsonl", g)


def test_stats_auto_reports_the_detection_and_fails_when_nothing_is_kept(tmp_path):
    stats = corpus_stats("auto", DATA / "yidu_bad.txt")
    assert stats["format"] == "yidu" and stats["detected"].startswith("detected yidu: JSON lines")
    assert (stats["read"], stats["kept"]) == (5, 2)
    f = tmp_path / "all_bad.jsonl"
    f.write_text("\n".join(json.dumps({"text": "x", "entities": [], "spans": [], "k": i})
                           for i in range(30)) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError, match=r"(?s)nothing could be read as jsonl: 0 documents kept "
                                          r"of 30 records.*all_bad\.jsonl:1: unknown key.*"
                                          r"\.\.\. and 20 more"):
        corpus_stats("jsonl", f)


def test_stats_error_list_is_capped_with_a_count(tmp_path):
    f = tmp_path / "c.jsonl"
    lines = [json.dumps({"id": str(i), "text": "头痛", "entities": [{"start": 0, "end": 9, "type": "X"}]})
             for i in range(25)]
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    errors = corpus_stats("jsonl", f, max_errors=5)["errors"]
    assert len(errors) == 6 and errors[-1] == "... and 20 more"
    assert errors[0].startswith(f"{f}:1: ")
