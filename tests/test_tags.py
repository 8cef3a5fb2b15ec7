import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cemr.corpus.document import Span
from cemr.tags import LabelSet, bio_to_spans, parse_tag, spans_to_bio

TYPES = ["身体部位", "症状和体征", "DRUG"]


@st.composite
def spans_in(draw, max_len: int = 40):
    """A length and sorted non-overlapping spans inside it."""
    length = draw(st.integers(0, max_len))
    cuts = sorted(draw(st.sets(st.integers(0, length), max_size=12)))
    spans = []
    for a, b in zip(cuts[::2], cuts[1::2]):
        spans.append(Span(a, b, draw(st.sampled_from(TYPES))))
    return length, spans


def test_spans_to_bio_basic():
    tags = spans_to_bio(7, [Span(4, 6, "症状和体征"), Span(0, 2, "身体部位")])
    assert tags == ["B-身体部位", "I-身体部位", "O", "O", "B-症状和体征", "I-症状和体征", "O"]


def test_spans_to_bio_adjacent_same_type_stays_two_mentions():
    tags = spans_to_bio(4, [Span(0, 2, "X"), Span(2, 4, "X")])
    assert tags == ["B-X", "I-X", "B-X", "I-X"]
    assert bio_to_spans(tags) == [Span(0, 2, "X"), Span(2, 4, "X")]


def test_spans_to_bio_rejects_overlap_and_out_of_range():
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_bio(10, [Span(0, 3, "X"), Span(2, 5, "Y")])
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_bio(10, [Span(0, 3, "X"), Span(0, 3, "X")])
    with pytest.raises(ValueError, match="past the sequence length"):
        spans_to_bio(3, [Span(1, 4, "X")])
    with pytest.raises(ValueError, match="empty type"):
        spans_to_bio(3, [Span(1, 2, "")])


def test_bio_to_spans_lenient():
    # I- without B- starts a mention; a type change splits; B- after I- of the same type splits
    tags = ["I-X", "I-X", "O", "B-X", "I-Y", "I-Y", "B-Y", "I-Y", "B-Y", "O", "I-X"]
    assert bio_to_spans(tags) == [
        Span(0, 2, "X"),
        Span(3, 4, "X"),
        Span(4, 6, "Y"),
        Span(6, 8, "Y"),
        Span(8, 9, "Y"),
        Span(10, 11, "X"),
    ]
    assert bio_to_spans([]) == []
    assert bio_to_spans(["O", "O"]) == []


def test_bio_to_spans_rejects_malformed_tags():
    for bad in ["B-", "E-X", "o", "X", ""]:
        with pytest.raises(ValueError, match="position 1"):
            bio_to_spans(["O", bad])
    assert parse_tag("B-A-B") == ("B", "A-B")  # types may contain '-'


@given(spans_in())
def test_bio_round_trip(case):
    length, spans = case
    tags = spans_to_bio(length, spans)
    assert len(tags) == length
    assert bio_to_spans(tags) == spans


def test_label_set_order_and_ids():
    labels = LabelSet.from_types(["Y", "X", "Y"])
    assert labels.to_list() == ["O", "B-X", "I-X", "B-Y", "I-Y"]
    assert labels.types == ("X", "Y")
    assert len(labels) == labels.num_tags == 5
    tags = ["O", "B-Y", "I-Y", "B-X"]
    ids = labels.to_ids(tags)
    assert ids == [0, 3, 4, 1]
    assert labels.from_ids(np.array(ids)) == tags
    with pytest.raises(ValueError, match="unknown tag 'B-Z' at position 1"):
        labels.to_ids(["O", "B-Z"])
    with pytest.raises(ValueError, match="outside"):
        labels.from_ids([5])
    with pytest.raises(ValueError, match="outside"):
        labels.from_ids([-1])


def test_label_set_save_and_restore():
    labels = LabelSet(["Z", "A"])  # a saved order need not be sorted: ids are kept
    restored = LabelSet.from_list(json.loads(json.dumps(labels.to_list())))
    assert restored == labels
    assert restored.to_list() == ["O", "B-Z", "I-Z", "B-A", "I-A"]
    assert LabelSet.from_list(["O"]).types == ()
    for bad in [[], ["B-X", "I-X", "O"], ["O", "B-X"], ["O", "B-X", "I-Y"], ["O", "I-X", "B-X"],
                ["O", "B-X", "I-X", "B-X", "I-X"]]:
        with pytest.raises(ValueError):
            LabelSet.from_list(bad)
    with pytest.raises(ValueError, match="non-empty"):
        LabelSet.from_types(["", "X"])


def test_allowed_transitions_matrix():
    labels = LabelSet.from_types(["X", "Y"])  # O B-X I-X B-Y I-Y
    m = labels.allowed_transitions()
    assert m.shape == (5, 5) and m.dtype == bool
    expected = np.array(
        [
            # O  B-X I-X B-Y I-Y   (to)
            [1, 1, 0, 1, 0],  # from O
            [1, 1, 1, 1, 0],  # from B-X
            [1, 1, 1, 1, 0],  # from I-X
            [1, 1, 0, 1, 1],  # from B-Y
            [1, 1, 0, 1, 1],  # from I-Y
        ],
        dtype=bool,
    )
    assert (m == expected).all()
    assert labels.allowed_start().tolist() == [True, True, False, True, False]


def _is_allowed(labels: LabelSet, ids: list[int]) -> bool:
    m, start = labels.allowed_transitions(), labels.allowed_start()
    if ids and not start[ids[0]]:
        return False
    return all(m[a, b] for a, b in zip(ids, ids[1:]))


@given(spans_in())
def test_tags_written_from_spans_are_allowed(case):
    length, spans = case
    labels = LabelSet.from_types(TYPES)
    assert _is_allowed(labels, labels.to_ids(spans_to_bio(length, spans)))


@settings(max_examples=200)
@given(st.lists(st.integers(0, 2 * len(TYPES)), max_size=30))
def test_allowed_sequences_are_exactly_the_strict_bio_ones(ids):
    # a sequence passes the CRF constraints iff re-writing its spans gives it back unchanged
    labels = LabelSet.from_types(TYPES)
    tags = labels.from_ids(ids)
    strict = spans_to_bio(len(tags), bio_to_spans(tags)) == tags
    assert _is_allowed(labels, ids) == strict


def test_bio_id_spans_reads_a_batch_like_bio_to_spans():
    import random

    from cemr.tags import bio_id_spans

    labels = LabelSet(["A", "B", "C"])
    rng = random.Random(0)
    for _ in range(300):
        b, t = rng.randint(1, 4), rng.randint(1, 8)
        ids = np.array([[rng.randrange(labels.num_tags) for _ in range(t)] for _ in range(b)])
        lengths = np.array([rng.randint(1, t) for _ in range(b)])
        row, start, end, typ = bio_id_spans(ids, lengths)
        got = [[] for _ in range(b)]
        for r, a, e, ty in zip(row, start, end, typ):
            got[r].append(Span(int(a), int(e), labels.types[ty]))
        assert got == [bio_to_spans(labels.from_ids(ids[r, : lengths[r]])) for r in range(b)]
    empty = bio_id_spans(np.zeros((2, 3), dtype=np.int64), np.array([3, 1]))
    assert all(len(x) == 0 for x in empty)
