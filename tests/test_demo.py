"""The embedded demo corpus: deterministic, spans that match the text, the promised properties."""
import json
from collections import Counter

import pytest

from cemr.corpus.dedup import jaccard, normalize, shingles
from cemr.corpus.document import Span
from cemr.corpus.readers import read_documents, read_unlabeled
from cemr.demo import (
    SECTIONS,
    TYPES,
    generate_demo,
    load_terms,
    parse_term_lines,
    render,
    template_slots,
    term_groups,
    write_demo,
)


@pytest.fixture(scope="module")
def corpus():
    return generate_demo(40, 600, seed=3)


def _snapshot(c):
    return (
        [(d.id, d.text, d.spans) for d in c.labeled],
        [(d.id, d.text, d.spans, d.meta) for d in c.unlabeled],
        c.unlabeled_gold,
        c.unlabeled_only,
    )


def test_same_seed_same_corpus_other_seed_other_corpus(corpus):
    assert _snapshot(generate_demo(40, 600, seed=3)) == _snapshot(corpus)
    other = generate_demo(40, 600, seed=4)
    assert [d.text for d in other.labeled] != [d.text for d in corpus.labeled]


def test_sizes_ids_and_types(corpus):
    assert len(corpus.labeled) == 40 and len(corpus.unlabeled) == 600
    assert len({d.id for d in corpus.labeled + corpus.unlabeled}) == 640
    assert {s.type for d in corpus.labeled for s in d.spans} == set(TYPES)
    assert all(d.spans == [] for d in corpus.unlabeled)
    assert set(corpus.unlabeled_gold) == {d.id for d in corpus.unlabeled}


def test_every_span_is_a_listed_term_of_its_type_and_spans_do_not_overlap(corpus):
    terms = {t: set(ts) for t, ts in corpus.terms.items()}
    docs = [(d.text, d.spans) for d in corpus.labeled]
    docs += [(d.text, corpus.unlabeled_gold[d.id]) for d in corpus.unlabeled]
    n = 0
    for text, spans in docs:
        assert "\n" not in text
        for a, b in zip(spans, spans[1:]):
            assert a.end <= b.start, (text, a, b)
        for s in spans:
            assert s.end <= len(text)
            assert text[s.start:s.end] in terms[s.type], (text, s)
            n += 1
    assert n > 5000


def test_unlabeled_only_terms_never_labeled_but_present_unlabeled(corpus):
    only = {(t, term) for t, ts in corpus.unlabeled_only.items() for term in ts}
    assert len(only) >= 60  # about 20 % of ~400 terms
    labeled = {(s.type, d.mention(s)) for d in corpus.labeled for s in d.spans}
    assert not only & labeled
    unlabeled = {(s.type, d.text[s.start:s.end]) for d in corpus.unlabeled
                 for s in corpus.unlabeled_gold[d.id]}
    assert len(only & unlabeled) > len(only) // 2


def test_term_list_has_several_hundred_terms_and_ambiguous_ones():
    terms = load_terms()
    assert set(terms) == set(TYPES)
    assert sum(len(v) for v in terms.values()) >= 350
    assert all(len(v) >= 60 for v in terms.values())
    owners = Counter(t for ts in terms.values() for t in ts)
    ambiguous = {t for t, n in owners.items() if n > 1}
    assert {"贫血", "黄疸"} <= ambiguous


def test_every_template_slot_can_be_filled():
    groups = term_groups()
    for type_, group, fixed in template_slots():
        if fixed is not None:
            assert fixed in groups[type_], (type_, fixed)
        if group is not None:
            assert group in set(groups[type_].values()), (type_, group)
    assert len(SECTIONS["history"]) >= 3


def test_duplicates_are_what_their_origin_says(corpus):
    by_id = {d.id: d for d in corpus.labeled + corpus.unlabeled}
    origins = Counter(d.meta["origin"] for d in corpus.unlabeled)
    assert origins["exact_copy"] and origins["near_copy"] and origins["labeled_copy"]
    for d in corpus.unlabeled:
        origin, src = d.meta["origin"], by_id.get(d.meta.get("copy_of"))
        if origin == "exact_copy":
            assert d.text != src.text and normalize(d.text) == normalize(src.text)
            mentions = [d.text[s.start:s.end] for s in corpus.unlabeled_gold[d.id]]
            assert mentions == [src.text[s.start:s.end] for s in corpus.unlabeled_gold[src.id]]
        elif origin == "near_copy":
            assert normalize(d.text) != normalize(src.text)
            assert jaccard(shingles(normalize(d.text)), shingles(normalize(src.text))) >= 0.9
        elif origin == "labeled_copy":
            assert d.text == src.text and corpus.unlabeled_gold[d.id] == src.spans


def test_render_places_spans_on_the_fillers():
    text, spans = render("因{SYM}入院，{EXAM=体温}{TEMP}℃。",
                         [("E", "症状和体征", "发热"), ("E", "检查和检验", "体温"), ("V", "TEMP", "38.5")])
    assert text == "因发热入院，体温38.5℃。"
    assert spans == [Span(1, 3, "症状和体征"), Span(6, 8, "检查和检验")]
    with pytest.raises(ValueError, match="2 slots"):
        render("{SYM}{BODY}", [("E", "症状和体征", "发热")])


def test_parse_term_lines_groups_comments_and_duplicates():
    assert parse_term_lines("# c\n发热\n\n[sign]\n压痛\n") == [("发热", ""), ("压痛", "sign")]
    with pytest.raises(ValueError, match="line 3"):
        parse_term_lines("发热\n咳嗽\n发热\n")


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        generate_demo(-1, 0)
    with pytest.raises(ValueError):
        generate_demo(1, 1, unlabeled_fraction=1.0)


def test_write_demo_reads_back_with_the_corpus_readers(tmp_path):
    c = generate_demo(12, 30, seed=5)
    paths = write_demo(c, tmp_path)
    back = list(read_documents("jsonl", paths["labeled"]))
    assert [(d.id, d.text, d.spans) for d in back] == [(d.id, d.text, d.spans) for d in c.labeled]
    texts = [d.text for d in read_unlabeled(paths["unlabeled"])]
    assert texts == [d.text.strip() for d in c.unlabeled]
    gold = list(read_documents("jsonl", paths["unlabeled_gold"]))
    assert {d.id: d.spans for d in gold} == c.unlabeled_gold
    for type_, terms in c.terms.items():
        assert (paths["terms"] / f"{type_}.txt").read_text(encoding="utf-8").split() == terms


# ----------------------------------------------------------------------------------------------
# What `cemr demo` writes by default: documents the demo experiment does not train on
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_training():
    """What ray_configs/experiments/demo.yaml trains on: its labeled records and unlabeled texts."""
    from pathlib import Path

    from cemr.config import load_config
    from cemr.demo import training_corpus

    cfg = load_config(Path(__file__).resolve().parents[1] / "ray_configs" / "experiments" / "demo.yaml", [])
    assert cfg.data.format == "demo"
    return training_corpus(cfg.data)


def test_the_default_demo_corpus_holds_no_training_text(demo_training, tmp_path):
    from cemr.demo import demo_corpus

    corpus = demo_corpus()  # what `cemr demo --out DIR` writes
    assert corpus.kind == "new" and len(corpus.labeled) == 240 and len(corpus.unlabeled) == 2000
    paths = write_demo(corpus, tmp_path)
    written = [d.text for d in read_documents("jsonl", paths["labeled"])]
    written += [d.text for d in read_documents("jsonl", paths["unlabeled_gold"])]
    written += [d.text for d in read_unlabeled(paths["unlabeled"])]
    training = [d.text for d in demo_training.labeled + demo_training.unlabeled]
    assert len(training) == 2240 and len(written) == 2 * 2000 + 240
    blob = "\x00".join(training)
    inside = [t for t in written if t in blob]  # equal to, or contained in, a training text
    assert inside == []
    # nor once whitespace, full-width digits and case are set aside
    from cemr.corpus.dedup import normalize

    normal = "\x00".join(normalize(t) for t in training)
    assert [t for t in written if normalize(t) in normal] == []
    assert corpus.redrawn > 0  # short texts do recur in the templates: those were drawn again
    meta = json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))
    assert meta["corpus"] == "new" and meta["unlike"] == {"documents": 240, "unlabeled": 2000, "seed": 7}
    # ids of their own, so the two corpora can sit side by side
    assert not {d.id for d in corpus.labeled + corpus.unlabeled} & {d.id for d in demo_training.labeled}
    assert corpus.labeled[0].id == "demo-new-00000" and corpus.unlabeled[0].id == "demo-new-u00000"


def test_the_new_demo_corpus_is_like_the_training_one_and_deterministic(demo_training):
    from cemr.demo import generate_new_demo

    a = generate_new_demo(30, 50, seed=3, training=demo_training)
    assert _snapshot(a) == _snapshot(generate_new_demo(30, 50, seed=3, training=demo_training))
    assert _snapshot(a) != _snapshot(generate_new_demo(30, 50, seed=4, training=demo_training))
    # the training corpus's own seed draws other records (none had to be drawn again), not its own
    same_seed = generate_new_demo(30, 0, seed=demo_training.seed, training=demo_training)
    assert same_seed.redrawn == 0
    assert {s.type for d in a.labeled for s in d.spans} == set(TYPES)
    for d in a.labeled:
        assert all(s.end <= len(d.text) for s in d.spans)


def test_the_training_corpus_stays_available_on_request(demo_training, tmp_path):
    from cemr.demo import demo_corpus

    corpus = demo_corpus("training")
    assert _snapshot(corpus) == _snapshot(demo_training)
    write_demo(corpus, tmp_path)
    assert json.loads((tmp_path / "demo.json").read_text(encoding="utf-8"))["corpus"] == "training"
    with pytest.raises(ValueError, match="'old': expected one of new, training"):
        demo_corpus("old")


def test_cemr_demo_never_writes_over_an_existing_directory_unless_asked(tmp_path, capsys):
    from cemr.cli import main

    out = tmp_path / "d"
    assert main(["-q", "demo", "--out", str(out), "--documents", "12", "--unlabeled", "8"]) == 0
    (out / "labeled.jsonl").write_text("mine\n", encoding="utf-8")
    assert main(["-q", "demo", "--out", str(out), "--documents", "12", "--unlabeled", "8"]) == 2
    assert "already exists" in capsys.readouterr().err and (out / "labeled.jsonl").read_text(encoding="utf-8") == "mine\n"
    assert main(["-q", "demo", "--out", str(out), "--documents", "12", "--unlabeled", "8", "--overwrite"]) == 0
    assert (out / "labeled.jsonl").read_text(encoding="utf-8").count("\n") == 12
    (tmp_path / "empty").mkdir()  # an empty directory is no output to protect
    assert main(["-q", "demo", "--out", str(tmp_path / "empty"), "--documents", "12", "--unlabeled", "8"]) == 0
