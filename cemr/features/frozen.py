"""What every pretrained featurizer (BERT, BiLM, bigrams) shares: frozen or fine-tuned, and its device.

A frozen featurizer's parameters do not require grad and it stays in eval mode even when a parent
calls ``.train()`` (no dropout in frozen features); ``frozen`` is also what
:func:`cemr.tagger.is_frozen` and the tagger's feature cache read.
"""
from __future__ import annotations

import torch
from torch import nn


class FreezableFeaturizer(nn.Module):
    """Base of the featurizer modules: ``set_frozen``, a ``train`` that keeps a frozen module in
    eval mode, and ``device`` (where its parameters are)."""

    frozen: bool = False

    def set_frozen(self, freeze: bool) -> None:
        """``freeze``: no parameter requires grad, eval mode from now on; false: only the flag
        changes (the parameters keep their ``requires_grad``)."""
        self.frozen = bool(freeze)
        if freeze:
            self.requires_grad_(False)
            self.eval()

    def train(self, mode: bool = True) -> "FreezableFeaturizer":
        return super().train(mode and not self.frozen)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def apply_frozen(module: nn.Module, freeze: bool) -> nn.Module:
    """Freeze (or unfreeze) any featurizer module, a :class:`FreezableFeaturizer` or not: its
    ``frozen`` flag where it has one, ``requires_grad`` of every parameter (``not freeze``, so
    unfreezing makes them trainable again), and eval mode when frozen. The one rule the registry
    (configuring a fresh featurizer) and the model directory (loading one) both apply."""
    if hasattr(module, "frozen"):
        module.frozen = bool(freeze)
    module.requires_grad_(not freeze)
    if freeze:
        module.eval()
    return module
