"""Parquet sentence shards: schema, round trips, streaming writes and reads, errors."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cemr.corpus.document import CorpusError, Span
from cemr.corpus.sentences import Sentence
from cemr.corpus.shards import (
    CONFIDENCE_FIELD,
    GOLD_SPANS_FIELD,
    SENTENCE_SCHEMA,
    ShardWriter,
    count_rows,
    iter_records,
    iter_sentences,
    sentence_schema,
    sentences_to_table,
    table_to_sentences,
    write_shards,
    UNSURE_FIELD,
)

SYM, BODY = "症状和体征", "身体部位"


def _sentences(n: int) -> list[Sentence]:
    out = []
    for i in range(n):
        text = f"患者{i}天前出现腹部疼痛。"
        k = text.index("腹部")
        spans = [Span(k, k + 2, BODY), Span(k + 2, k + 4, SYM)] if i % 2 == 0 else []
        out.append(Sentence(f"doc-{i // 3}", i % 3, 7 * (i % 3), text, spans))
    return out


def test_schema_is_the_documented_one():
    assert SENTENCE_SCHEMA.names == ["doc_id", "sent_id", "offset", "text", "spans", "source"]
    assert SENTENCE_SCHEMA.field("sent_id").type == pa.int32()
    assert SENTENCE_SCHEMA.field("spans").type == pa.list_(
        pa.struct([("start", pa.int32()), ("end", pa.int32()), ("type", pa.string())]))
    extended = sentence_schema([CONFIDENCE_FIELD])
    assert extended.names[-1] == "confidence" and extended.names[:6] == SENTENCE_SCHEMA.names
    with pytest.raises(ValueError, match="already"):
        sentence_schema([pa.field("text", pa.string())])


def test_table_round_trip():
    sents = _sentences(7)
    table = sentences_to_table(sents, "gold")
    assert table.schema.equals(SENTENCE_SCHEMA)
    assert table.column("source").to_pylist() == ["gold"] * 7
    assert table_to_sentences(table) == sents


def test_table_with_per_row_sources_and_extra_columns():
    sents = _sentences(3)
    table = sentences_to_table(sents, ["a", "b", "c"], extra={"confidence": [0.5, 0.25, 1.0]})
    assert table.column("source").to_pylist() == ["a", "b", "c"]
    assert table.column("confidence").to_pylist() == [0.5, 0.25, 1.0]
    with pytest.raises(ValueError, match="2 sources"):
        sentences_to_table(sents, ["a", "b"])
    with pytest.raises(ValueError, match="clashes"):
        sentences_to_table(sents, "x", extra={"text": ["", "", ""]})


def test_write_then_read_in_shards_of_bounded_size(tmp_path):
    sents = _sentences(10)
    paths = write_shards(sents, tmp_path / "s", rows_per_shard=3, source="gold")
    assert [p.name for p in paths] == [f"part-0000{i}.parquet" for i in range(4)]
    assert [pq.ParquetFile(p).metadata.num_rows for p in paths] == [3, 3, 3, 1]
    assert count_rows(tmp_path / "s") == 10
    assert list(iter_sentences(tmp_path / "s")) == sents
    assert list(iter_sentences(paths[1])) == sents[3:6]
    assert list(iter_sentences(tmp_path / "s", batch_size=2)) == sents


def test_writing_streams_shard_by_shard(tmp_path):
    out = tmp_path / "s"
    sents = _sentences(9)

    def produce():
        for i, s in enumerate(sents):
            # before row i is handed over, exactly the full shards of rows < i are on disk
            on_disk = len(list(out.glob("*.parquet"))) if out.exists() else 0
            assert on_disk == i // 4
            yield s

    write_shards(produce(), out, rows_per_shard=4, source=lambda s: s.doc_id)
    got = list(iter_records(out))
    assert [s for s, _ in got] == sents
    assert [e["source"] for _, e in got] == [s.doc_id for s in sents]


def test_reading_is_lazy_and_errors_name_the_file(tmp_path):
    out = tmp_path / "s"
    write_shards(_sentences(6), out, rows_per_shard=3, source="gold")
    (out / "part-00001.parquet").write_bytes(b"not parquet at all")
    it = iter_sentences(out)
    first = [next(it) for _ in range(3)]  # the first shard reads fine
    assert first == _sentences(3)
    with pytest.raises(CorpusError, match="part-00001.parquet"):
        next(it)


def test_empty_input_writes_one_empty_shard_with_the_schema(tmp_path):
    paths = write_shards([], tmp_path / "e", rows_per_shard=5, source="x")
    assert len(paths) == 1
    assert pq.read_schema(paths[0]).names == SENTENCE_SCHEMA.names
    assert list(iter_sentences(tmp_path / "e")) == []


def test_extra_columns_round_trip_and_missing_values_are_null(tmp_path):
    sents = _sentences(3)
    with ShardWriter(tmp_path / "x", rows_per_shard=2,
                     extra_fields=[GOLD_SPANS_FIELD, CONFIDENCE_FIELD]) as w:
        w.write(sents[0], "pseudo", gold_spans=sents[0].spans, confidence=0.75)
        w.write(sents[1], "pseudo", confidence=0.5)
        w.write(sents[2], "pseudo")
        with pytest.raises(ValueError, match="unknown extra"):
            w.write(sents[2], "pseudo", weight=1.0)
    rows = list(iter_records(tmp_path / "x", columns=["gold_spans", "confidence"]))
    assert [e["confidence"] for _, e in rows] == [0.75, 0.5, None]
    assert rows[0][1]["gold_spans"] == sents[0].spans
    assert pq.read_schema(w.paths[0]).field("confidence").type == pa.float32()
    with pytest.raises(CorpusError, match="no column"):
        list(iter_records(tmp_path / "x", columns=["weight"]))


def test_existing_shards_are_never_mixed_with_new_ones(tmp_path):
    write_shards(_sentences(5), tmp_path / "s", rows_per_shard=2, source="a")
    with pytest.raises(FileExistsError):
        write_shards(_sentences(1), tmp_path / "s", rows_per_shard=2, source="b")
    write_shards(_sentences(1), tmp_path / "s", rows_per_shard=2, source="b", overwrite=True)
    assert count_rows(tmp_path / "s") == 1


def test_a_failure_while_writing_leaves_no_shard_behind(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "s", rows_per_shard=2) as w:
            for s in _sentences(3):
                w.write(s, "gold")
            raise RuntimeError("boom")
    assert list((tmp_path / "s").iterdir()) == []  # not even the full first shard: complete or nothing


def test_bad_shards_raise_corpus_errors_with_file_and_row(tmp_path):
    pq.write_table(pa.table({"doc_id": ["d"], "text": ["x"]}), tmp_path / "a.parquet")
    with pytest.raises(CorpusError, match="missing column"):
        list(iter_sentences(tmp_path / "a.parquet"))
    bad = sentences_to_table(_sentences(2), "gold")
    spans = pa.array([[], [{"start": 0, "end": 99, "type": SYM}]],
                     type=SENTENCE_SCHEMA.field("spans").type)
    bad = bad.set_column(bad.schema.get_field_index("spans"), "spans", spans)
    pq.write_table(bad, tmp_path / "b.parquet")
    with pytest.raises(CorpusError, match=r"b.parquet:1: bad row \(0-based .*\): span .* past"):
        list(iter_sentences(tmp_path / "b.parquet"))
    with pytest.raises(CorpusError, match="no such"):
        list(iter_sentences(tmp_path / "missing"))
    with pytest.raises(ValueError):
        ShardWriter(tmp_path / "z", rows_per_shard=0)


def test_unsure_ranges_round_trip_and_are_checked(tmp_path):
    sents = _sentences(4)
    sents[0].unsure = [(0, 2), (5, 7)]
    with ShardWriter(tmp_path / "p", extra_fields=[UNSURE_FIELD]) as w:
        w.write_all(sents, "pseudo:r1")
    back = list(iter_sentences(tmp_path / "p"))
    assert [s.unsure for s in back] == [[(0, 2), (5, 7)], [], [], []]
    assert back[0].to_dict()["unsure"] == [[0, 2], [5, 7]] and "unsure" not in back[1].to_dict()
    assert Sentence.from_dict(back[0].to_dict()) == back[0]
    assert table_to_sentences(pq.read_table(tmp_path / "p"))[0].unsure == [(0, 2), (5, 7)]
    # a shard without the column reads as fully labelled
    write_shards(sents, tmp_path / "g")
    assert all(s.unsure == [] for s in iter_sentences(tmp_path / "g"))
    bad = pq.read_table(tmp_path / "p")
    cells = bad.column("unsure").to_pylist()
    cells[1] = [{"start": 3, "end": 99}]
    bad = bad.set_column(bad.schema.get_field_index("unsure"), UNSURE_FIELD, pa.array(cells, UNSURE_FIELD.type))
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(CorpusError, match=r"bad\.parquet.*unsure range \(3, 99\)"):
        list(iter_sentences(tmp_path / "bad.parquet"))
