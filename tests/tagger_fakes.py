"""Tiny stand-ins shared by the tagger, training, model-directory and predictor tests.

``FakeFeaturizer`` has the featurizer interface (``dim``, ``forward(texts) -> (B, T, dim)`` on its
device, ``save(dir)`` / ``load(dir, device)``): a fixed random embedding of each char's code point.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cemr.config import ModelConfig
from cemr.corpus.document import Document, Span
from cemr.corpus.sentences import Sentence, split_document
from cemr.lexicon import Lexicon
from cemr.tags import LabelSet
from cemr.vocab import CharVocab


class FakeFeaturizer(nn.Module):
    def __init__(self, dim: int = 6, buckets: int = 97, seed: int = 0, frozen: bool = True):
        super().__init__()
        self.dim = dim
        self.buckets = buckets
        g = torch.Generator().manual_seed(seed)
        self.table = nn.Embedding(buckets, dim)
        with torch.no_grad():
            self.table.weight.copy_(torch.randn(buckets, dim, generator=g))
        self.frozen = frozen
        self.requires_grad_(not frozen)
        self.calls = 0

    def forward(self, texts):
        self.calls += 1
        t = max(len(x) for x in texts)
        ids = torch.zeros(len(texts), t, dtype=torch.long)
        mask = torch.zeros(len(texts), t, 1)
        for i, x in enumerate(texts):
            ids[i, : len(x)] = torch.tensor([ord(c) % self.buckets for c in x])
            mask[i, : len(x)] = 1
        dev = self.table.weight.device
        return self.table(ids.to(dev)) * mask.to(dev)  # (B, T, dim)

    def save(self, directory):
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "fake.json").write_text(json.dumps({"dim": self.dim, "buckets": self.buckets}))
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(d / "fake.safetensors"))

    @classmethod
    def load(cls, directory, device="cpu"):
        d = Path(directory)
        meta = json.loads((d / "fake.json").read_text())
        m = cls(meta["dim"], meta["buckets"])
        m.load_state_dict(load_file(str(d / "fake.safetensors")))
        return m.to(device)


TYPES = ["DIS", "DRUG"]
DISEASES = ["糖尿病", "高血压", "肺炎", "胃炎"]
DRUGS = ["阿司匹林", "胰岛素", "青霉素"]


def tiny_documents(n: int = 8, seed: int = 0) -> list[Document]:
    """Documents like '患者有糖尿病，服用胰岛素治疗。' with exact spans."""
    g = torch.Generator().manual_seed(seed)
    docs = []
    for i in range(n):
        dis = DISEASES[int(torch.randint(len(DISEASES), (1,), generator=g))]
        drug = DRUGS[int(torch.randint(len(DRUGS), (1,), generator=g))]
        parts = ["患者有", dis, "，服用", drug, "治疗。", "今日复查", dis, "好转。"]
        text, spans, pos = "", [], 0
        for k, p in enumerate(parts):
            if k in (1, 6):
                spans.append(Span(pos, pos + len(p), "DIS"))
            if k == 3:
                spans.append(Span(pos, pos + len(p), "DRUG"))
            text += p
            pos += len(p)
        docs.append(Document(f"d{i}", text, spans))
    return docs


def tiny_sentences(n: int = 8, max_len: int = 64) -> list[Sentence]:
    return [s for d in tiny_documents(n) for s in split_document(d, max_len)]


def tiny_lexicon() -> Lexicon:
    return Lexicon({"糖尿病": "DIS", "肺炎": "DIS", "青霉素": "DRUG"})


def tiny_setup():
    sents = tiny_sentences()
    labels = LabelSet.from_types(TYPES)
    vocab = CharVocab.build(s.text for s in sents)
    return sents, labels, vocab


def tiny_model_config(**dictionary) -> ModelConfig:
    cfg = ModelConfig(char_dim=8, gru_hidden=16, attention_heads=2, dropout=0.1)
    cfg.bert.enabled = False
    cfg.bilm.enabled = False
    cfg.dictionary.enabled = dictionary.get("enabled", True)
    cfg.dictionary.dim = 4
    return cfg


_TRAINED = {}


def trained_tiny_model(steps: int = 40):
    """A tagger with fake BERT + BiLM featurizers and the dictionary feature, fitted to the tiny
    corpus (cached per process): ``(tagger, vocab, labels, lexicon, sentences)``."""
    if steps not in _TRAINED:
        from cemr.tagger import build_tagger, make_collator

        torch.manual_seed(0)
        sents, labels, vocab = tiny_setup()
        cfg = tiny_model_config()
        cfg.bert.enabled = cfg.bilm.enabled = True
        tagger = build_tagger(cfg, labels, vocab, bert=FakeFeaturizer(6, seed=1), bilm=FakeFeaturizer(4, seed=2))
        lexicon = tiny_lexicon()
        collate = make_collator(tagger, vocab, labels, lexicon)
        batch = collate(sents)
        opt = torch.optim.Adam([p for p in tagger.parameters() if p.requires_grad], lr=0.02)
        tagger.train()
        for _ in range(steps):
            opt.zero_grad()
            tagger(batch).backward()
            opt.step()
        tagger.eval()
        _TRAINED[steps] = (tagger, vocab, labels, lexicon, sents, cfg)
    return _TRAINED[steps]


def tiny_model_dir(path, seed: int = 0):
    """A small real model directory (no external featurizers: ``Predictor.load`` reads it as is),
    trained a few steps on the tiny corpus so it predicts entities; ``inference.max_len`` 64.
    ``seed``: the initialisation (other seeds: other weights, the same vocabulary and labels)."""
    from cemr.modeldir import save_model
    from cemr.tagger import build_tagger, make_collator

    torch.manual_seed(seed)
    sents, labels, vocab = tiny_setup()
    cfg = tiny_model_config()
    tagger = build_tagger(cfg, labels, vocab, dictionary_types=sorted(tiny_lexicon().types()))
    batch = make_collator(tagger, vocab, labels, tiny_lexicon())(sents)
    opt = torch.optim.Adam([p for p in tagger.parameters() if p.requires_grad], lr=0.02)
    tagger.train()
    for _ in range(30):
        opt.zero_grad()
        tagger(batch).backward()
        opt.step()
    tagger.eval()
    return save_model(path, tagger, vocab=vocab, labels=labels, lexicon=tiny_lexicon(), model_config=cfg,
                      inference={"max_len": 64})
