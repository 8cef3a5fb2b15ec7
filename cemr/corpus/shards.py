"""Sentences on disk: one Parquet schema, written and read in bounded memory.

Schema (``SENTENCE_SCHEMA``), one row per sentence:

=======  ==================================  =============================================
column   Arrow type                          meaning
=======  ==================================  =============================================
doc_id   string                              id of the document the sentence comes from
sent_id  int32                               0-based index of the sentence in its document
offset   int32                               char offset of the sentence in the document
text     string                              the sentence: ``doc.text[offset:offset+len]``
spans    list<struct<start: int32,           entity spans relative to the sentence, end
         end: int32, type: string>>          exclusive; ``[]`` when unlabeled
source   string                              where the row comes from (``gold``,
                                             ``heldout_gold``, an unlabeled input tag, a
                                             pseudo-labeling round...)
=======  ==================================  =============================================

The schema is extensible: ``sentence_schema(extra_fields)`` appends columns (e.g.
``CONFIDENCE_FIELD`` for pseudo-labeled rows, ``GOLD_SPANS_FIELD`` for spans that must stay hidden
from a tagger); readers here ignore columns they do not know unless asked for them
(:func:`iter_records`), except ``unsure`` (``UNSURE_FIELD``, ``list<struct<start, end>>``): when
a shard has it, it is read into ``Sentence.unsure`` (the characters a partial pseudo-label leaves
untagged), and a schema that declares it is filled from ``Sentence.unsure``.
A directory of shards is ``part-00000.parquet``, ``part-00001.parquet``...
each with at most ``rows_per_shard`` rows; an empty set is one shard with zero rows, so that every
shard directory has a schema to read.

Pure pyarrow: readable as is by ``ray.data.read_parquet`` and pandas.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cemr.outputs import atomic_open

from .document import CorpusError, Span
from .sentences import Sentence

SPAN_TYPE = pa.struct([("start", pa.int32()), ("end", pa.int32()), ("type", pa.string())])
SPANS_TYPE = pa.list_(SPAN_TYPE)

SENTENCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("doc_id", pa.string()),
    pa.field("sent_id", pa.int32()),
    pa.field("offset", pa.int32()),
    pa.field("text", pa.string()),
    pa.field("spans", SPANS_TYPE),
    pa.field("source", pa.string()),
)
SENTENCE_SCHEMA = pa.schema(SENTENCE_FIELDS)
REQUIRED_COLUMNS = tuple(f.name for f in SENTENCE_FIELDS)

# optional columns others add (pass them to sentence_schema / write_shards(extra_fields=...))
CONFIDENCE_FIELD = pa.field("confidence", pa.float32())
GOLD_SPANS_FIELD = pa.field("gold_spans", SPANS_TYPE)
# ``Sentence.unsure``: character ranges whose tags a partial pseudo-label leaves unknown. Read into
# ``Sentence.unsure`` whenever a shard has the column; written from it when a schema declares it.
RANGE_TYPE = pa.struct([("start", pa.int32()), ("end", pa.int32())])
RANGES_TYPE = pa.list_(RANGE_TYPE)
UNSURE_FIELD = pa.field("unsure", RANGES_TYPE)
UNSURE = UNSURE_FIELD.name

SHARD_PATTERN = "part-{:05d}.parquet"


def sentence_schema(extra_fields: Sequence[pa.Field] = ()) -> pa.Schema:
    """``SENTENCE_SCHEMA`` with ``extra_fields`` appended (names must be new)."""
    schema = SENTENCE_SCHEMA
    for f in extra_fields:
        if f.name in schema.names:
            raise ValueError(f"column {f.name!r} is already in the sentence schema")
        schema = schema.append(f)
    return schema


def spans_to_struct(spans: Iterable[Span]) -> list[dict[str, Any]]:
    """Spans as the list-of-structs cell value."""
    return [{"start": s.start, "end": s.end, "type": s.type} for s in spans]


def ranges_to_struct(ranges: Iterable[tuple[int, int]]) -> list[dict[str, int]]:
    """``(start, end)`` ranges as the list-of-structs cell value of ``unsure``."""
    return [{"start": int(a), "end": int(b)} for a, b in ranges]


def struct_to_ranges(cell: Iterable[Mapping[str, Any]] | None, length: int | None = None) -> list[tuple[int, int]]:
    """An ``unsure`` cell back to ``(start, end)`` tuples (None -> []); each range must be
    non-empty and, given ``length``, within the sentence (``ValueError`` otherwise)."""
    out = []
    for d in cell or ():
        a, b = int(d["start"]), int(d["end"])
        if not 0 <= a < b or (length is not None and b > length):
            raise ValueError(f"unsure range ({a}, {b}) does not fit a sentence of {length} chars")
        out.append((a, b))
    return out


def _cell(value: Any) -> Any:
    """An extra column's value as Arrow takes it (a list of ``Span`` becomes list-of-structs)."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, Span) for v in value):
        return spans_to_struct(value)
    return value


def struct_to_spans(cell: Iterable[Mapping[str, Any]] | None) -> list[Span]:
    """A list-of-structs cell value back to ``Span`` objects (None -> [])."""
    return [Span(int(d["start"]), int(d["end"]), str(d["type"])) for d in cell or ()]


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def sentences_to_table(
    sentences: Iterable[Sentence],
    source: str | Sequence[str] = "",
    *,
    extra: Mapping[str, Sequence[Any]] | None = None,
    schema: pa.Schema | None = None,
) -> pa.Table:
    """A ``pa.Table`` of the sentence schema (plus ``extra`` columns, given by name -> values).

    ``source`` is one string for every row or one per row. ``schema`` defaults to
    ``SENTENCE_SCHEMA`` extended by the ``extra`` columns with inferred types; pass it to fix
    their types (e.g. ``sentence_schema([CONFIDENCE_FIELD])``).
    """
    sents = list(sentences)
    n = len(sents)
    sources = [source] * n if isinstance(source, str) else list(source)
    if len(sources) != n:
        raise ValueError(f"{len(sources)} sources for {n} sentences")
    columns: dict[str, Any] = {
        "doc_id": [s.doc_id for s in sents],
        "sent_id": [s.sent_id for s in sents],
        "offset": [s.offset for s in sents],
        "text": [s.text for s in sents],
        "spans": [spans_to_struct(s.spans) for s in sents],
        "source": sources,
    }
    for name, values in (extra or {}).items():
        if name in columns:
            raise ValueError(f"extra column {name!r} clashes with the sentence schema")
        values = list(values)
        if len(values) != n:
            raise ValueError(f"extra column {name!r} has {len(values)} values for {n} sentences")
        columns[name] = [_cell(v) for v in values]
    if schema is None:
        arrays = [pa.array(columns[f.name], type=f.type) for f in SENTENCE_FIELDS]
        fields = list(SENTENCE_FIELDS)
        for name in (extra or {}):
            arr = pa.array(columns[name])
            arrays.append(arr)
            fields.append(pa.field(name, arr.type))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))
    if UNSURE in schema.names and UNSURE not in columns:
        columns[UNSURE] = [ranges_to_struct(s.unsure) for s in sents]
    missing = set(columns) ^ set(schema.names)
    if missing:
        raise ValueError(f"columns {sorted(missing)} are not both in the schema and the data")
    return pa.Table.from_pydict({f.name: columns[f.name] for f in schema}, schema=schema)


def _check_columns(names: Sequence[str], where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise CorpusError(where, None,
                          f"not a sentence shard: missing column(s) {', '.join(missing)}")


def _rows(batch: pa.RecordBatch | pa.Table, where: str, first_row: int,
          extra: Sequence[str]) -> Iterator[tuple[Sentence, dict[str, Any]]]:
    """``(Sentence, extras)`` per row; ``extras``: ``source`` and the ``extra`` columns (a
    list-of-span-structs column converted to ``Span`` lists). Bad rows raise ``CorpusError``."""
    span_columns = {n for n in extra if batch.schema.field(n).type == SPANS_TYPE}
    has_unsure = UNSURE in batch.schema.names
    cols = {name: batch.column(name).to_pylist()
            for name in (*REQUIRED_COLUMNS, *extra, *((UNSURE,) if has_unsure else ()))}
    for i in range(batch.num_rows):
        try:
            text = cols["text"][i]
            spans = struct_to_spans(cols["spans"][i])
            for s in spans:
                if s.end > len(text):
                    raise ValueError(f"span {s} ends past the sentence length {len(text)}")
            unsure = struct_to_ranges(cols[UNSURE][i], len(text)) if has_unsure else []
            sent = Sentence(cols["doc_id"][i], int(cols["sent_id"][i]), int(cols["offset"][i]),
                            text, spans, unsure)
        except (ValueError, TypeError, KeyError) as exc:
            raise CorpusError(where, first_row + i,
                              f"bad row (0-based row index): {exc}") from exc
        extras: dict[str, Any] = {"source": cols["source"][i]}
        for name in extra:
            if name == UNSURE:
                continue  # in sent.unsure
            value = cols[name][i]
            extras[name] = struct_to_spans(value) if name in span_columns else value
        yield sent, extras


def table_to_sentences(table: pa.Table) -> list[Sentence]:
    """The sentences of a table of the sentence schema (extra columns ignored)."""
    _check_columns(table.column_names, "<table>")
    return [s for s, _ in _rows(table, "<table>", 0, ())]


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def shard_files(path: str | Path) -> list[Path]:
    """The Parquet files of a shard set: ``path`` itself (a file) or ``*.parquet`` in a directory,
    sorted by name. A missing path raises ``CorpusError``."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.iterdir() if f.suffix == ".parquet" and f.is_file())
    raise CorpusError(str(p), None, "no such shard file or directory")


def iter_records(
    path: str | Path, *, columns: Sequence[str] = (), batch_size: int = 1024
) -> Iterator[tuple[Sentence, dict[str, Any]]]:
    """Stream ``(Sentence, extras)`` from a shard file or directory, one record batch at a time.

    ``extras`` holds ``source`` and the requested extra ``columns`` (a column of the span list
    type, e.g. ``gold_spans``, is converted to ``Span`` lists). Errors name file and row.
    """
    for file in shard_files(path):
        try:
            pf = pq.ParquetFile(file)
        except (pa.ArrowInvalid, OSError) as exc:
            raise CorpusError(str(file), None, f"not a readable Parquet file: {exc}") from exc
        names = pf.schema_arrow.names
        _check_columns(names, str(file))
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise CorpusError(str(file), None, f"no column(s) {', '.join(unknown)} in this shard")
        extra = [c for c in columns if c not in REQUIRED_COLUMNS]
        if UNSURE in names and UNSURE not in extra:
            extra.append(UNSURE)  # always read into Sentence.unsure
        row = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=[*REQUIRED_COLUMNS, *extra]):
            yield from _rows(batch, str(file), row, extra)
            row += batch.num_rows


def iter_sentences(path: str | Path, *, batch_size: int = 1024) -> Iterator[Sentence]:
    """Stream the sentences of a shard file or directory (record batch by record batch)."""
    for sent, _ in iter_records(path, batch_size=batch_size):
        yield sent


def count_rows(path: str | Path) -> int:
    """Number of rows of a shard set, from the Parquet footers (no data read)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in shard_files(path))


class ShardWriter:
    """Write sentences to ``out_dir/part-NNNNN.parquet``, ``rows_per_shard`` rows per file.

    At most one shard's rows are held in memory. Use as a context manager (or call
    :meth:`close`, which returns the paths written). ``extra_fields`` add columns; each
    :meth:`write` then passes their values by name (missing ones are null). Existing
    ``*.parquet`` files in ``out_dir`` raise ``FileExistsError`` unless ``overwrite=True``
    (which deletes them first): a shard set is never a mix of two runs.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        rows_per_shard: int = 2000,
        extra_fields: Sequence[pa.Field] = (),
        overwrite: bool = False,
        compression: str = "zstd",
    ):
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be >= 1, got {rows_per_shard}")
        self.out_dir = Path(out_dir)
        self.schema = sentence_schema(extra_fields)
        self._extra = [f.name for f in extra_fields]
        self.rows_per_shard = rows_per_shard
        self.compression = compression
        self.out_dir.mkdir(parents=True, exist_ok=True)
        old = sorted(self.out_dir.glob("*.parquet"))
        if old and not overwrite:
            raise FileExistsError(f"{self.out_dir} already holds {len(old)} Parquet file(s); "
                                  "pass overwrite=True to replace them")
        for f in old:
            f.unlink()
        self._buffer: list[tuple[Sentence, str, dict[str, Any]]] = []
        self.paths: list[Path] = []
        self.rows = 0
        self._closed = False

    def write(self, sentence: Sentence, source: str, **extra: Any) -> None:
        """Add one row (``extra``: values of the extra columns, by name)."""
        if self._closed:
            raise ValueError("ShardWriter is closed")
        unknown = set(extra) - set(self._extra)
        if unknown:
            raise ValueError(f"unknown extra column(s) {sorted(unknown)}; declared: {self._extra}")
        if UNSURE in extra:
            raise ValueError(f"the {UNSURE!r} column is written from sentence.unsure, not passed as a value")
        self._buffer.append((sentence, source, extra))
        if len(self._buffer) >= self.rows_per_shard:
            self._flush()

    def write_all(self, sentences: Iterable[Sentence], source: str) -> None:
        for s in sentences:
            self.write(s, source)

    def _flush(self) -> None:
        rows = self._buffer
        self._buffer = []
        # a declared ``unsure`` column is filled from Sentence.unsure by sentences_to_table
        names = [name for name in self._extra if name != UNSURE]
        extra: dict[str, list[Any]] = {name: [] for name in names}
        for _, _, values in rows:
            for name in names:
                extra[name].append(values.get(name))
        table = sentences_to_table(
            [s for s, _, _ in rows], [src for _, src, _ in rows], extra=extra, schema=self.schema
        )
        path = self.out_dir / SHARD_PATTERN.format(len(self.paths))
        with atomic_open(path, "wb", encoding=None, fsync=False) as fh:
            pq.write_table(table, fh, compression=self.compression)
        self.paths.append(path)
        self.rows += table.num_rows

    def close(self) -> list[Path]:
        """Write the last (partial) shard, or an empty one if nothing was written; the paths."""
        if not self._closed:
            if self._buffer or not self.paths:
                self._flush()
            self._closed = True
        return list(self.paths)

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # a failed run leaves no shard behind that could pass for (part of) a complete set
            self._buffer = []
            self._closed = True
            for path in self.paths:
                path.unlink(missing_ok=True)
            self.paths = []


def write_shards(
    sentences: Iterable[Sentence],
    out_dir: str | Path,
    rows_per_shard: int = 2000,
    source: str | Callable[[Sentence], str] = "",
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Stream ``sentences`` into ``out_dir/part-*.parquet`` (see :class:`ShardWriter`).

    ``source`` is the ``source`` value of every row, or a function of the sentence.
    Returns the paths written, in order.
    """
    with ShardWriter(out_dir, rows_per_shard=rows_per_shard, overwrite=overwrite) as writer:
        for s in sentences:
            writer.write(s, source(s) if callable(source) else source)
    return writer.paths
