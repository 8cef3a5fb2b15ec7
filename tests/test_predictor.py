"""The predictor: sentence predictions with confidences, documents mapped back to exact offsets."""
import pytest
import torch
from tagger_fakes import FakeFeaturizer, tiny_documents, trained_tiny_model

from cemr.confidence import (
    crf_marginals,
    entity_confidences,
    sentence_confidence,
    sequence_log_prob,
)
from cemr.corpus.document import Document, Span
from cemr.modeldir import save_model
from cemr.predictor import Prediction, Predictor, SentencePrediction
from cemr.tags import bio_to_spans

FAKES = {"bert": FakeFeaturizer, "bilm": FakeFeaturizer}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tagger, vocab, labels, lexicon, sents, cfg = trained_tiny_model()
    return save_model(tmp_path_factory.mktemp("pred") / "model", tagger, vocab=vocab, labels=labels, lexicon=lexicon)


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor.load(model_dir, "cpu", featurizer_classes=FAKES)


def test_sentences_in_input_order_with_confidences(predictor):
    _, _, _, _, sents, _ = trained_tiny_model()
    texts = [s.text for s in sents]
    out = predictor.predict_sentences(texts, batch_size=3)
    assert len(out) == len(texts)
    assert [p.spans for p in out] == [s.spans for s in sents]  # fitted to these sentences
    for sp in out:
        assert isinstance(sp, SentencePrediction) and 0.0 <= sp.confidence <= 1.0
        assert 0.0 < sp.sequence_prob <= 1.0
        for p in sp:  # iterates like a list of Predictions
            assert isinstance(p, Prediction) and 0.0 <= p.confidence <= 1.0
            assert sp.confidence <= p.confidence + 1e-9  # the sentence min covers the entity's chars
        # per character, the marginal of the decoded tag: the sentence min is their min
        assert len(sp.token_confidence) == len(texts[out.index(sp)])
        assert min(sp.token_confidence) == pytest.approx(sp.confidence, abs=1e-6)
        assert all(0.0 <= c <= 1.0 for c in sp.token_confidence)
    one_by_one = [predictor.predict_sentences([t], batch_size=1)[0] for t in texts]
    for a, b in zip(out, one_by_one):
        assert a.spans == b.spans
        assert [p.confidence for p in a] == pytest.approx([p.confidence for p in b], abs=1e-5)


def test_empty_texts_and_methods(model_dir):
    seq = Predictor.load(model_dir, featurizer_classes=FAKES, confidence="sequence_prob")
    out = seq.predict_sentences(["", "患者有糖尿病。", ""])
    assert out[0].entities == [] and out[0].confidence == 0.0 and out[2].confidence == 0.0
    assert all(p.confidence == out[1].sequence_prob for p in out[1])
    assert out[1].confidence == out[1].sequence_prob
    with pytest.raises(ValueError, match="unknown confidence method"):
        Predictor.load(model_dir, featurizer_classes=FAKES, confidence="vote")


def test_long_documents_map_back_to_exact_offsets(predictor):
    # three tiny records glued into one long document, with whitespace between them
    parts = tiny_documents(3)
    text, spans = "", []
    for d in parts:
        spans += [s.shifted(len(text)) for s in d.spans]
        text += d.text + "  \n "
    long_doc = Document("long", text, spans)
    other = Document("other", "无。")
    pred = predictor.predict_documents([long_doc, other], max_len=12)
    assert set(pred) == {"long", "other"} and pred["other"] == []
    sents = predictor.split([long_doc], 12)
    assert len(sents) > 3 and all(len(s.text) <= 12 for s in sents)
    assert [p.span for p in pred["long"]] == sorted(spans)
    for p in pred["long"]:
        assert long_doc.text[p.span.start : p.span.end] in {"糖尿病", "高血压", "肺炎", "胃炎", "阿司匹林", "胰岛素", "青霉素"}
    # the same confidences as tagging the sentences directly
    direct = predictor.predict_sentences([s.text for s in sents])
    flat = sorted((p.span.shifted(s.offset), p.confidence) for s, sp in zip(sents, direct) for p in sp)
    assert [(p.span, p.confidence) for p in pred["long"]] == [(s, pytest.approx(c, abs=1e-6)) for s, c in flat]


def test_gold_spans_do_not_steer_the_split(predictor):
    """A document with gold spans is split exactly like the same text without them."""
    text = "患者有糖尿病高血压胃炎肺炎服用胰岛素"
    gold = Document("g", text, [Span(3, 6, "DIS"), Span(6, 9, "DIS")])
    assert [s.offset for s in predictor.split([gold], 5)] == [s.offset for s in predictor.split([Document("g", text)], 5)]


def test_duplicate_document_ids_are_refused(predictor):
    with pytest.raises(ValueError, match="'a' given twice"):
        predictor.predict_documents([Document("a", "无。"), Document("a", "有。")])


def test_num_threads_is_validated(model_dir):
    with pytest.raises(ValueError, match="num_threads"):
        Predictor.load(model_dir, featurizer_classes=FAKES, num_threads=0)


def test_opt_in_precisions_convert_their_layers_and_keep_the_fitted_spans(model_dir):
    _, _, _, _, sents, _ = trained_tiny_model()
    texts = [s.text for s in sents]
    exact = Predictor.load(model_dir, featurizer_classes=FAKES)
    assert exact.precision == "fp32"
    ref = exact.predict_sentences(texts, batch_size=3)
    for precision in ("bf16", "int8", "bf16-int8"):
        p = Predictor.load(model_dir, featurizer_classes=FAKES, precision=precision)
        tg = p.tagger
        dtypes = {m.table.weight.dtype for m in tg.featurizers().values()}
        assert dtypes == ({torch.bfloat16} if "bf16" in precision else {torch.float32})
        quantized = type(tg.gru).__module__.startswith("torch.ao.nn.quantized.dynamic")
        assert quantized == ("int8" in precision)
        assert type(tg.output).__module__.startswith("torch.ao.nn.quantized.dynamic") == quantized
        assert tg.char_embedding.weight.dtype == torch.float32 and tg.crf.transitions.dtype == torch.float32
        assert tg.attention.out_proj.weight.dtype == torch.float32  # self_attention reads it as a tensor
        out = p.predict_sentences(texts, batch_size=3)
        assert [x.spans for x in out] == [x.spans for x in ref], precision
        for a, b in zip(out, ref):
            assert [x.confidence for x in a] == pytest.approx([x.confidence for x in b], abs=0.1)


def test_precision_is_validated(model_dir):
    import copy

    from cemr.predictor import set_precision

    with pytest.raises(ValueError, match="precision 'fp16'"):
        Predictor.load(model_dir, featurizer_classes=FAKES, precision="fp16")
    tagger = trained_tiny_model()[0]
    with pytest.raises(ValueError, match="CPU only"):
        set_precision(copy.deepcopy(tagger).to("meta"), "int8")
    under_autocast = copy.deepcopy(tagger)
    under_autocast.bert.autocast = "bf16"  # a BERT whose featurizer.json asks for bf16 autocast
    with pytest.raises(ValueError, match="bert featurizer under bf16 autocast"):
        set_precision(under_autocast, "int8")
    assert set_precision(under_autocast, "bf16-int8") is under_autocast  # the featurizers stay unquantized


def test_a_loaded_predictor_caches_no_featurizer_output_unless_asked(model_dir):
    texts = ["患者发热三天。", "无咳嗽咳痰。"]
    plain = Predictor.load(model_dir, featurizer_classes=FAKES)
    featurizers = plain.tagger.featurizers()
    assert featurizers  # the tiny model has frozen (fake) featurizers that a cache would serve
    first = plain.predict_sentences(texts)
    calls = {n: m.calls for n, m in featurizers.items()}
    again = plain.predict_sentences(texts)
    assert again == first
    assert all(m.calls > calls[n] for n, m in featurizers.items())  # computed again, nothing cached
    assert all(plain.tagger.feature_cache(n) is None for n in featurizers)

    cached = Predictor.load(model_dir, featurizer_classes=FAKES, feature_cache_mb=1)
    assert cached.predict_sentences(texts) == first
    calls = {n: m.calls for n, m in cached.tagger.featurizers().items()}
    assert cached.predict_sentences(texts) == first
    assert {n: m.calls for n, m in cached.tagger.featurizers().items()} == calls  # served from the cache
    assert all(len(cached.tagger.feature_cache(n)) == len(texts) for n in calls)
    with pytest.raises(ValueError, match="feature_cache_mb"):
        Predictor.load(model_dir, featurizer_classes=FAKES, feature_cache_mb=-1)


def _reference_predictions(p: Predictor, texts):
    """The predictor's output computed the plain way, one sentence at a time: pytorch-crf's
    Viterbi, the float64 marginals and path probability, spans from tag strings."""
    out = []
    with torch.no_grad():
        for text in texts:
            batch = p.collate.from_texts([text])
            em = p.tagger.emissions(batch).double()
            tags = p.tagger.crf.decode(em, batch.mask)[0]
            marg = crf_marginals(em, batch.mask, p.tagger.crf)[0].numpy()
            prob = sequence_log_prob(em, torch.tensor([tags]), batch.mask, p.tagger.crf).exp().item()
            spans = bio_to_spans(p.labels.from_ids(tags))
            confs = entity_confidences(marg, spans, p.labels, p.method, sequence_prob=prob)
            out.append((spans, confs, sentence_confidence(marg, tags, p.method, sequence_prob=prob), prob,
                        [float(marg[i, c]) for i, c in enumerate(tags)]))
    return out


@pytest.mark.parametrize("method", ["entity_min_marginal", "entity_mean_marginal", "sequence_prob"])
def test_batched_predictions_equal_the_one_by_one_float64_reference(model_dir, method):
    p = Predictor.load(model_dir, featurizer_classes=FAKES, confidence=method)
    _, _, _, _, sents, _ = trained_tiny_model()
    # mixed lengths in one call, several buckets, plus texts the model was not fitted to
    texts = [s.text for s in sents] + ["糖尿病", "无", "患者有高血压和胃炎，服用阿司匹林。" * 3]
    got = p.predict_sentences(texts, batch_size=64)
    for pred, (spans, confs, sent, prob, token) in zip(got, _reference_predictions(p, texts)):
        assert pred.spans == spans
        assert [x.confidence for x in pred] == pytest.approx(confs, abs=1e-5)
        assert pred.confidence == pytest.approx(sent, abs=1e-5)
        assert pred.sequence_prob == pytest.approx(prob, abs=1e-5)
        assert pred.token_confidence == pytest.approx(token, abs=1e-5)


class CountingBar:
    """Records ``update(n)`` calls as a progress bar would receive them."""

    def __init__(self):
        self.updates = []

    def update(self, n=1):
        self.updates.append(n)


def _long_document(parts: int = 6) -> Document:
    text, spans = "", []
    for d in tiny_documents(parts):
        spans += [s.shifted(len(text)) for s in d.spans]
        text += d.text + " \n"
    return Document("long", text, spans)


def test_iter_documents_yields_each_document_once_its_sentences_are_tagged(predictor):
    docs = [_long_document(), Document("short", "患者有糖尿病。"), Document("empty", ""), Document("last", "无。")]
    read = []  # how many documents had been read when each result came out

    def reading():
        for d in docs:
            read.append(d.id)
            yield d

    def order(step):
        read.clear()
        return [(d.id, len(read)) for d, _ in predictor.iter_documents(reading(), max_len=12, step=step)]

    assert len(predictor.split([docs[0]], 12)) % 2 == 0
    # one sentence per step: each document comes out before the next one is read
    assert order(1) == [("long", 1), ("short", 2), ("empty", 3), ("last", 4)]
    # two per step: the long document fills whole steps; the short ones share the last
    assert order(2) == [("long", 1), ("short", 4), ("empty", 4), ("last", 4)]
    assert order(0) == [("long", 4), ("short", 4), ("empty", 4), ("last", 4)]  # 0: all in one call
    streamed = {d.id: preds for d, preds in predictor.iter_documents(docs, max_len=12, step=2)}
    whole = predictor.predict_documents(docs, max_len=12)
    assert list(streamed) == list(whole)
    for k in whole:  # the batching differs, the predictions do not
        assert [p.span for p in streamed[k]] == [p.span for p in whole[k]]
        assert [p.confidence for p in streamed[k]] == pytest.approx([p.confidence for p in whole[k]], abs=1e-5)
    with pytest.raises(ValueError, match="'a' given twice"):
        list(predictor.iter_documents([Document("a", "无。"), Document("a", "有。")]))


def test_progress_moves_inside_one_long_document(predictor):
    doc = _long_document()
    bar = CountingBar()
    predictor.predict_documents([doc], max_len=12, batch_size=2, progress=bar)
    assert len(bar.updates) > 2  # one update per batch of sentences, not one per document
    assert sum(bar.updates) == len(doc.text)  # whitespace between sentences counted: the bar ends full
    bar = CountingBar()
    list(predictor.iter_documents([doc, Document("b", "无。")], max_len=12, batch_size=2, step=4, progress=bar))
    assert len(bar.updates) > 2 and sum(bar.updates) == len(doc.text) + 2


def test_the_config_and_cli_know_the_predictors_precisions():
    from cemr.config import PREDICTOR_PRECISIONS, ConfigError, load_config
    from cemr.predictor import PRECISIONS

    assert PREDICTOR_PRECISIONS == PRECISIONS
    assert load_config(None, ["cluster.actor_precision=bf16"]).cluster.actor_precision == "bf16"
    with pytest.raises(ConfigError, match="actor_precision"):
        load_config(None, ["cluster.actor_precision=fp8"])
