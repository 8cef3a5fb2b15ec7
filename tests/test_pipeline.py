"""cemr.pipeline pieces that need no prepared run directory."""
import os
import subprocess
import sys
from pathlib import Path

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
