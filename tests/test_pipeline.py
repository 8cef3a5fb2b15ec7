"""cemr.pipeline pieces that need no prepared run directory."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cemr.config import load_config
from cemr.pipeline import Components, new_tagger
from tagger_fakes import tiny_lexicon, tiny_setup


def _components():
    _, labels, vocab = tiny_setup()
    return Components(labels, vocab, tiny_lexicon(), {"bert": None, "bilm": None}, None)


def _cfg(seed=7):
    return load_config(None, ["model.bert.enabled=false", "model.bilm.enabled=false", "model.char_dim=8",
                              "model.gru_hidden=8", "model.attention_heads=2", f"train.seed={seed}"])


def _weights(tagger):
    return [p.detach().clone() for p in tagger.parameters()]


def test_a_new_taggers_initial_weights_depend_on_the_seed_only():
    comps = _components()
    torch.manual_seed(123)
    a, _ = new_tagger(_cfg(), comps)
    state = torch.random.get_rng_state()
    torch.manual_seed(999)  # whatever the caller's random state
    b, _ = new_tagger(_cfg(), comps)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
    c, _ = new_tagger(_cfg(seed=8), comps)
    assert not all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(c)))
    torch.manual_seed(123)
    new_tagger(_cfg(), comps)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left as it was


def test_initial_weights_are_the_same_in_another_process():
    """``cemr train`` in two processes (different hash seeds) starts from the same weights."""
    code = (
        f"import hashlib, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_pipeline as t;"
        "from cemr.pipeline import new_tagger;"
        "m, _ = new_tagger(t._cfg(), t._components());"
        "print(hashlib.sha256(b''.join(p.detach().numpy().tobytes() for p in m.parameters())).hexdigest())"
    )
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
           for seed in (1, 2)]
    assert out[0] == out[1] and len(out[0]) == 64


def test_a_new_tagger_can_start_from_a_saved_models_weights(tmp_path):
    """``selftrain.warm_start``: the next round's tagger starts from the previous round's model."""
    from cemr.modeldir import ModelDirError
    from cemr.pipeline import save_round_model

    comps = _components()
    trained, _ = new_tagger(_cfg(seed=8), comps)  # stands for a trained round: other weights than seed 7
    with torch.no_grad():
        for name, p in trained.named_parameters():
            if not name.startswith("crf."):  # the CRF's forbidden transitions are reset on load
                p.add_(0.5)
    model_dir = save_round_model(_cfg(seed=8), comps, trained, tmp_path / "round_000" / "model")
    fresh, _ = new_tagger(_cfg(), comps)
    warm, _ = new_tagger(_cfg(), comps, init_from=model_dir)
    assert all(torch.equal(x, y) for x, y in zip(_weights(warm), _weights(trained)))
    assert not all(torch.equal(x, y) for x, y in zip(_weights(warm), _weights(fresh)))

    _, labels, vocab = tiny_setup()
    other_vocab = type(vocab)(list(reversed(vocab.chars)))  # same size, other order: must not load
    other = Components(labels, other_vocab, tiny_lexicon(), {"bert": None, "bilm": None}, None)
    with pytest.raises(ModelDirError, match="another char vocabulary"):
        new_tagger(_cfg(), other, init_from=model_dir)
    with pytest.raises(FileNotFoundError, match="weights.safetensors"):
        new_tagger(_cfg(), comps, init_from=tmp_path / "nowhere")


def _prepared_run(path, cfg):
    """A run directory whose prepare stage is marked done for ``cfg`` (a report, no shards)."""
    import json

    from cemr.fingerprint import prepare_fingerprint, write_marker
    from cemr.pipeline import RunLayout

    layout = RunLayout.of(path)
    layout.data.mkdir(parents=True)
    (layout.data / "prepare_report.json").write_text(
        json.dumps({"sentences": {"train": 8151, "unlabeled": 61600}}), encoding="utf-8")
    write_marker(layout.data, prepare_fingerprint(cfg))
    return layout


def test_pretraining_says_when_its_cap_leaves_out_all_unlabeled_text(tmp_path, monkeypatch):
    """Train sentences stream first: a cap below their count means the pool is never read."""
    import cemr.pretrain
    from cemr.pipeline import pretrain_stage

    monkeypatch.setattr(cemr.pretrain, "pretrain_all", lambda *a, **k: {})
    caps = load_config(None, ["model.bilm.max_sentences=8000", "model.bert.pretrain_max_sentences=6000"])
    messages = []
    pretrain_stage(caps, _prepared_run(tmp_path / "a", caps), log=messages.append)
    assert any("8000" in m and "no unlabeled text is used" in m for m in messages)
    messages.clear()
    wide = load_config(None, ["model.bilm.max_sentences=40000"])
    pretrain_stage(wide, _prepared_run(tmp_path / "b", wide), log=messages.append)
    assert not any("no unlabeled text" in m for m in messages)
