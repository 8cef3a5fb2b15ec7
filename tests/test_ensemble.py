"""cemr/ensemble.py: seed ensembles tag through the Predictor on averaged CRF potentials."""
from __future__ import annotations

import pytest
import torch

from cemr.ensemble import EnsembleError, load_ensemble
from cemr.predictor import Predictor
from tagger_fakes import tiny_documents, tiny_model_dir


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("ens")
    return [tiny_model_dir(root / f"seed{s}", seed=s) for s in (0, 1, 2)]


def _spans(pred):
    return {d: [(p.span.start, p.span.end, p.span.type) for p in ps] for d, ps in pred.items()}


def _conf(pred):
    return [p.confidence for ps in pred.values() for p in ps]


def test_an_ensemble_of_one_model_or_of_copies_tags_as_that_model(models, tmp_path):
    import shutil

    docs = tiny_documents(6, seed=3)
    alone = Predictor.load(models[0]).predict_documents(docs)
    one = load_ensemble([models[0]]).predict_documents(docs)
    copy = tmp_path / "copy"
    shutil.copytree(models[0], copy)
    two = load_ensemble([models[0], copy]).predict_documents(docs)
    assert _spans(alone) and _spans(one) == _spans(alone) == _spans(two)
    assert _conf(one) == pytest.approx(_conf(alone), abs=1e-6) and _conf(two) == pytest.approx(_conf(alone), abs=1e-6)


def test_the_ensemble_scores_are_the_mean_of_its_members(models):
    docs = tiny_documents(4, seed=5)
    ens = load_ensemble(models)
    members = [Predictor.load(m) for m in models]
    batch = ens.collate.from_texts([d.text[:30] for d in docs])
    em, start, end, trans = ens.tagger.potentials(batch)
    with torch.no_grad():
        ems = [m.tagger.emissions(batch) for m in members]
    assert torch.allclose(em, torch.stack(ems).mean(0), atol=1e-6)
    for m in members:
        m.tagger.constrain_crf()
    assert torch.allclose(trans, torch.stack([m.tagger.crf.transitions for m in members]).mean(0))
    assert torch.allclose(start, torch.stack([m.tagger.crf.start_transitions for m in members]).mean(0))
    # the members differ (other seeds), so the ensemble is not any one of them
    assert not torch.allclose(ems[0], ems[1])
    # and it tags documents like any Predictor: spans inside the text, confidences in (0, 1]
    for doc in docs:
        for p in ens.predict_documents([doc])[doc.id]:
            assert 0 <= p.span.start < p.span.end <= len(doc.text) and 0 < p.confidence <= 1


def test_models_that_batch_text_differently_are_refused_naming_the_directory(models, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(models[1], other)
    lex = other / "lexicon.tsv"
    lex.write_text(lex.read_text(encoding="utf-8") + "肾炎\tDIS\n", encoding="utf-8")
    with pytest.raises(EnsembleError, match=r"other: its lexicon differs") as err:
        load_ensemble([models[0], other])
    assert str(models[0]) in str(err.value)
    with pytest.raises(EnsembleError, match="at least one"):
        load_ensemble([])


def test_cemr_evaluate_and_predict_take_several_models_as_their_ensemble(models, tmp_path, capsys):
    import json

    from cemr.cli import main
    from cemr.corpus.writers import write_jsonl
    from cemr.inference import evaluate_documents

    docs = tiny_documents(6, seed=7)
    gold = tmp_path / "gold.jsonl"
    write_jsonl(docs, gold)
    flags = [a for m in models for a in ("--model", str(m))]
    assert main(["evaluate", *flags, "--data", str(gold), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = evaluate_documents(load_ensemble(models), docs).to_dict()
    assert got["micro"] == want["micro"]
    assert main(["predict", *flags, str(gold), "--out", str(tmp_path / "p.jsonl")]) == 0
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text(encoding="utf-8").splitlines()]
    ens = load_ensemble(models).predict_documents(docs)
    assert {d["id"]: [(s["start"], s["end"], s["type"]) for s in d["entities"]] for d in lines} == _spans(ens)
    # reduced precision is not offered for an ensemble
    assert main(["predict", *flags, str(gold), "--out", str(tmp_path / "q.jsonl"), "--precision", "int8"]) == 2
    assert "runs in fp32 only" in capsys.readouterr().err


def test_the_loader_takes_the_members_as_one_path_string(models):
    import os

    from cemr.ensemble import EnsembleLoader

    docs = tiny_documents(3, seed=9)
    joined = os.pathsep.join(str(m) for m in models)
    got = EnsembleLoader.load(joined, "cpu", confidence="entity_min_marginal").predict_documents(docs)
    assert _spans(got) == _spans(load_ensemble(models).predict_documents(docs))
    with pytest.raises(EnsembleError, match="fp32 only"):
        EnsembleLoader.load(joined, "cpu", precision="int8")
