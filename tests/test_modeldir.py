"""Model directories: round trip with identical predictions, contents, refusals."""
import json

import pytest
import torch
from safetensors.torch import load_file

from cemr.features.bilm import BiLMFeaturizer, CharLM
from cemr.features.bilm import CharVocab as BiLMVocab
from cemr.modeldir import ModelDirError, load_model, save_model
from cemr.tagger import build_tagger, make_collator
from tagger_fakes import FakeFeaturizer, tiny_model_config, tiny_setup, trained_tiny_model

FAKES = {"bert": FakeFeaturizer, "bilm": FakeFeaturizer}


def _save(tmp_path, name="model"):
    tagger, vocab, labels, lexicon, sents, cfg = trained_tiny_model()
    path = save_model(tmp_path / name, tagger, vocab=vocab, labels=labels, lexicon=lexicon,
                      model_config=cfg, extra={"dev_f1": 0.5})
    return path, tagger, vocab, labels, lexicon, sents


def test_round_trip_gives_identical_predictions(tmp_path):
    path, tagger, vocab, labels, lexicon, sents = _save(tmp_path)
    loaded = load_model(path, "cpu", featurizer_classes=FAKES)
    assert loaded.vocab == vocab and loaded.labels == labels and loaded.lexicon == lexicon
    assert not loaded.tagger.training
    batch_a = make_collator(tagger, vocab, labels, lexicon).from_texts([s.text for s in sents])
    batch_b = loaded.collator().from_texts([s.text for s in sents])
    assert torch.equal(batch_a.dict_ids, batch_b.dict_ids)
    a, b = tagger.infer(batch_a), loaded.tagger.infer(batch_b)
    assert a.tags == b.tags
    assert torch.equal(a.marginals, b.marginals)
    assert torch.equal(a.sequence_log_prob, b.sequence_log_prob)
    for k, v in tagger.state_dict().items():
        assert torch.equal(v, loaded.tagger.state_dict()[k]), k


def test_directory_contents(tmp_path):
    path, tagger, vocab, labels, *_ = _save(tmp_path)
    names = sorted(p.name for p in path.iterdir())
    assert names == ["bert", "bilm", "config.json", "labels.json", "lexicon.tsv", "vocab.json", "weights.safetensors"]
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    assert config["format"] == "cemr-model/2" and config["labels"] == labels.to_list()
    assert config["tagger"]["featurizer_dims"] == {"bert": 6, "bilm": 4}  # in the order they enter the tagger
    assert set(config["versions"]) == {"cemr", "torch", "transformers"} and config["versions"]["torch"]
    assert config["model"]["gru_hidden"] == 16 and config["extra"] == {"dev_f1": 0.5}
    assert config["featurizers"]["bert"]["frozen"] is True
    weights = load_file(str(path / "weights.safetensors"))
    assert "crf.transitions" in weights and not any(k.startswith(("bert.", "bilm.")) for k in weights)
    assert not list(tmp_path.glob(".model.*"))  # no temporary directory left behind


def test_a_format_1_model_directory_still_loads_to_the_same_predictions(tmp_path):
    """Before the featurizer registry the tagger's hparams named each dim (bert_dim, bilm_dim)."""
    path, tagger, vocab, labels, lexicon, sents = _save(tmp_path)
    cfg_path = path / "config.json"
    config = json.loads(cfg_path.read_text(encoding="utf-8"))
    dims = config["tagger"].pop("featurizer_dims")
    config["tagger"].update(bert_dim=dims["bert"], bilm_dim=dims["bilm"])
    config["format"] = "cemr-model/1"
    cfg_path.write_text(json.dumps(config), encoding="utf-8")
    loaded = load_model(path, featurizer_classes=FAKES)
    assert list(loaded.tagger.featurizers()) == ["bert", "bilm"]
    texts = [s.text for s in sents]
    assert loaded.tagger.infer(loaded.collator().from_texts(texts)).tags == \
        tagger.infer(make_collator(tagger, vocab, labels, lexicon).from_texts(texts)).tags
    config["tagger"]["bilm_dim"] = 5
    cfg_path.write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelDirError, match="featurizer dims"):
        load_model(path, featurizer_classes=FAKES)


def test_overwrite_is_explicit(tmp_path):
    path, tagger, vocab, labels, lexicon, _ = _save(tmp_path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_model(path, tagger, vocab=vocab, labels=labels, lexicon=lexicon)
    save_model(path, tagger, vocab=vocab, labels=labels, lexicon=lexicon, overwrite=True)
    assert load_model(path, featurizer_classes=FAKES).config["extra"] == {}


def test_refusals_name_the_file(tmp_path):
    path, tagger, vocab, labels, lexicon, _ = _save(tmp_path)
    with pytest.raises(ModelDirError, match="not under cemr.features"):
        load_model(path)  # the fake featurizer class lives in the tests, not in cemr.features
    with pytest.raises(ValueError, match="needs its lexicon"):
        save_model(tmp_path / "nolex", tagger, vocab=vocab, labels=labels)
    (path / "lexicon.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="lexicon.tsv"):
        load_model(path, featurizer_classes=FAKES)
    cfg_path = path / "config.json"
    cfg_path.write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(ModelDirError, match="config.json: format 'other'"):
        load_model(path)
    cfg_path.write_text("{", encoding="utf-8")
    with pytest.raises(ModelDirError, match="config.json:1: invalid JSON"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="no such model directory"):
        load_model(tmp_path / "absent")


@pytest.mark.parametrize("damage, match", [
    (lambda p: (p / "weights.safetensors").write_bytes(b""), r"weights.safetensors: unreadable weights \(0 bytes"),
    (lambda p: (p / "weights.safetensors").write_bytes((p / "weights.safetensors").read_bytes()[:100]),
     r"weights.safetensors: unreadable weights \(100 bytes"),
    (lambda p: (p / "config.json").write_text('{"format": "cemr-model/1"}', encoding="utf-8"),
     r"config.json: missing or malformed key\(s\) tagger, labels"),
    (lambda p: (p / "labels.json").write_text("{", encoding="utf-8"), r"labels.json:1: invalid JSON"),
    (lambda p: (p / "labels.json").write_text('{"a": 1}', encoding="utf-8"), r"labels.json: "),
    (lambda p: (p / "vocab.json").write_text("[1, 2]", encoding="utf-8"), r"vocab.json: not a cemr char vocabulary"),
    (lambda p: (p / "config.json").write_bytes(b"\xff\xfe{"), r"config.json: not UTF-8"),
])
def test_damaged_model_files_give_a_model_dir_error_naming_the_file(tmp_path, damage, match):
    path, *_ = _save(tmp_path)
    damage(path)
    with pytest.raises(ModelDirError, match=match):
        load_model(path, featurizer_classes=FAKES)


def test_a_run_directory_passed_as_model_says_which_directory_to_pass(tmp_path):
    run = tmp_path / "run"
    _save(run, "model")
    with pytest.raises(ModelDirError, match=r"is a run directory, not a model directory; pass --model .*run/model"):
        load_model(run, featurizer_classes=FAKES)
    rounds = tmp_path / "boot"
    _save(rounds / "rounds" / "round_000", "model")
    with pytest.raises(ModelDirError, match=r"pass --model .*round_000/model"):
        load_model(rounds, featurizer_classes=FAKES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="not a cemr model directory"):
        load_model(tmp_path / "empty")


def test_inference_settings_are_recorded(tmp_path):
    tagger, vocab, labels, lexicon, sents, cfg = trained_tiny_model()
    path = save_model(tmp_path / "m", tagger, vocab=vocab, labels=labels, lexicon=lexicon,
                      inference={"max_len": 64})
    assert load_model(path, featurizer_classes=FAKES).config["inference"] == {"max_len": 64}


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path, *_ = _save(tmp_path)
    from safetensors.torch import save_file

    w = load_file(str(path / "weights.safetensors"))
    del w["output.weight"]
    save_file(w, str(path / "weights.safetensors"))
    with pytest.raises(ModelDirError, match="weights.safetensors: .*output.weight"):
        load_model(path, featurizer_classes=FAKES)


def test_real_bilm_featurizer_is_saved_and_reloaded_by_class_path(tmp_path):
    torch.manual_seed(0)
    sents, labels, vocab = tiny_setup()
    bvocab = BiLMVocab.build(s.text for s in sents)
    bilm = BiLMFeaturizer(bvocab, CharLM(len(bvocab), 8, 6), CharLM(len(bvocab), 8, 6))
    cfg = tiny_model_config(enabled=False)
    cfg.bilm.enabled = True
    tagger = build_tagger(cfg, labels, vocab, bilm=bilm).eval()
    path = save_model(tmp_path / "m", tagger, vocab=vocab, labels=labels, model_config=cfg)
    loaded = load_model(path)
    assert type(loaded.tagger.bilm) is BiLMFeaturizer and loaded.tagger.bilm.frozen
    batch = make_collator(tagger, vocab, labels).from_texts([s.text for s in sents[:3]])
    assert torch.equal(tagger.emissions(batch), loaded.tagger.emissions(batch))
    assert "lexicon.tsv" not in {p.name for p in path.iterdir()}


def test_char_vocab(tmp_path):
    from cemr.vocab import PAD_ID, UNK_ID, CharVocab

    v = CharVocab.build(["患者发热", "患者咳嗽", "患"], min_count=2)
    assert v.chars == ["患", "者"] and len(v) == 4
    assert v.encode("患者X") == [2, 3, UNK_ID] and v.decode([2, 3, UNK_ID, PAD_ID]) == "患者?"
    v.save(tmp_path / "v.json")
    assert CharVocab.load(tmp_path / "v.json") == v
    (tmp_path / "bad.json").write_text('{"format": "cemr-char-vocab/1", "chars": ["患", "患"]}', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json: vocabulary entry 1: duplicate"):
        CharVocab.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="min_count"):
        CharVocab.build([], min_count=0)
