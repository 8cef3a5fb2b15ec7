"""The one freezing rule of ``cemr.features.frozen``: FreezableFeaturizer and plain modules alike."""
from torch import nn

from cemr.features.frozen import FreezableFeaturizer, apply_frozen


class _Feat(FreezableFeaturizer):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.drop = nn.Dropout(0.5)


def test_apply_frozen_freezes_keeps_eval_and_unfreezes_back():
    f = _Feat()
    assert apply_frozen(f, True) is f
    assert f.frozen and not f.training and not any(p.requires_grad for p in f.parameters())
    nn.Sequential(f).train()  # a parent's train() leaves a frozen featurizer in eval mode
    assert not f.training and not f.drop.training
    apply_frozen(f, False)
    assert not f.frozen and all(p.requires_grad for p in f.parameters())
    nn.Sequential(f).train()
    assert f.training


def test_apply_frozen_on_a_module_without_the_flag():
    m = nn.Linear(3, 2)
    apply_frozen(m, True)
    assert not any(p.requires_grad for p in m.parameters()) and not m.training
    assert not hasattr(m, "frozen")
    apply_frozen(m, False)
    assert all(p.requires_grad for p in m.parameters())
