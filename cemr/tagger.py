"""The BiLM_BNER tagger: char embedding ++ BERT ++ BiLM ++ dictionary -> BiGRU -> self-attention -> CRF.

Per char ``t`` of a sentence::

    x_t = [char_emb(c_t) ; h_c (BERT, optional) ; h_f ++ h_b (BiLM, optional) ; h_w (dictionary, optional)]
    h   = BiGRU(dropout(x))                        # (B, T, 2H), packed: padding never read
    h   = LayerNorm(h + dropout(MHA(h, h, h)))     # self-attention over the real chars only
    e   = Linear(dropout(h))                       # (B, T, K) emissions
    CRF(e) with invalid BIO moves forbidden         # NLL in training, Viterbi / marginals after

Featurizers (BERT, BiLM: :mod:`cemr.features.registry`) are ``nn.Module``s with ``dim`` and
``forward(texts) -> (B, T, dim)``, given by name;
a featurizer is *frozen* when it says so (``frozen`` attribute) or has no trainable parameter:
it then runs under ``no_grad``, stays in eval mode, and its weights are left out of
:meth:`BiLMBNERTagger.checkpoint_state_dict` (they are saved by the featurizer itself).
A frozen featurizer's outputs are cached per sentence text (:mod:`cemr.features.cache`, one
bounded LRU cache per featurizer, ``feature_cache_mb`` in total per featurizer; 0 = off), so
epochs 2..N and repeated dev evaluations skip it; a trainable featurizer is never cached.

BIO constraints: ``I-X`` may only follow ``B-X``/``I-X`` and may not start a sentence. The CRF's
transition and start scores of forbidden moves are set to ``-1e4`` before every use from a
buffer mask, so no optimiser step can bring them back; Viterbi never decodes them and their
marginals are ~0. (-1e4 rather than -inf: pytorch-crf multiplies scores by 0/1 masks.)

:class:`Collator` turns :class:`~cemr.corpus.sentences.Sentence` lists (or raw texts) into a
:class:`Batch`; :func:`build_tagger` is the one place that reads :class:`~cemr.config.ModelConfig`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torchcrf import CRF

from cemr.confidence import crf_infer, crf_partial_nll, crf_viterbi
from cemr.config import ModelConfig
from cemr.corpus.sentences import Sentence
from cemr.features.cache import FeatureCache, cached_features, elements_for_mb
from cemr.features.registry import FEATURIZERS, feature_order
from cemr.features.dictionary import (
    DICT_PAD_ID,
    DictionaryFeature,
    DictionaryTags,
    sets_tensor,
    tags_and_sets_for,
    tags_for,
)
from cemr.tags import LabelSet, spans_to_bio
from cemr.vocab import PAD_ID, CharVocab

FORBIDDEN = -1e4


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """A padded batch of sentences (left-aligned; ``mask`` rows are prefixes of True).

    ``char_ids (B, T)`` long, ``mask (B, T)`` bool, ``texts`` the B raw sentences (for the
    featurizers), ``dict_ids (B, T)`` long or None (no dictionary feature), ``tag_ids (B, T)`` long
    or None (unlabeled; 0 = ``O`` at padding), ``match_sets (B, T, S)`` float multi-hot or None (the
    dictionary feature's match sets, only when it has them), ``weights (B,)`` float or None (all 1),
    ``tag_observed (B, T)`` bool or None: False where a partial label leaves the tag unknown
    (``Sentence.unsure``; the loss then sums over every tag there); None: every tag observed.
    """

    char_ids: Tensor
    mask: Tensor
    texts: list[str]
    dict_ids: Tensor | None = None
    match_sets: Tensor | None = None
    tag_ids: Tensor | None = None
    weights: Tensor | None = None
    tag_observed: Tensor | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def lengths(self) -> Tensor:
        """``(B,)`` long: chars per sentence."""
        return self.mask.sum(dim=1)

    def to(self, device: torch.device | str) -> "Batch":
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device, non_blocking=True) if isinstance(v, Tensor) else v
        return Batch(**moved)


def _pad(rows: Sequence[Sequence[int]], t: int, value: int = 0) -> Tensor:
    out = torch.full((len(rows), t), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def observed_mask(sentences: Sequence[Sentence], mask: Tensor) -> Tensor:
    """``(B, T)`` bool: ``mask`` with each sentence's ``unsure`` ranges set to False. A range
    outside its sentence raises ``ValueError`` naming the sentence."""
    observed = mask.clone()
    for i, s in enumerate(sentences):
        for a, b in s.unsure:
            if not 0 <= a < b <= len(s.text):
                raise ValueError(f"document {s.doc_id!r} sentence {s.sent_id}: unsure range ({a}, {b}) "
                                 f"does not fit {len(s.text)} chars")
            observed[i, a:b] = False
    return observed


class Collator:
    """Sentences -> :class:`Batch` (a ``collate_fn``; picklable, cheap to build).

    ``dict_tags``: the dictionary feature's vocabulary (``tagger.dictionary.vocab``), None when the
    feature is off. ``lexicon``: a lexicon for every sentence, or an object with ``for_doc(doc_id)``
    (a fold-aware lexicon) so that a training sentence is matched against a lexicon without its own
    document's mentions. ``labels``: needed to encode gold spans (``with_tags=True``).
    ``match_sets``: also build each char's match set from the same lexicon view (the dictionary
    feature's ``match_sets``).
    """

    def __init__(
        self,
        vocab: CharVocab,
        labels: LabelSet,
        dict_tags: DictionaryTags | None = None,
        lexicon: Any = None,
        match_sets: bool = False,
    ):
        if match_sets and dict_tags is None:
            raise ValueError("match sets need the dictionary tags (dict_tags)")
        self.vocab = vocab
        self.labels = labels
        self.dict_tags = dict_tags
        self.lexicon = lexicon
        self.match_sets = bool(match_sets)

    def lexicon_for(self, doc_id: str | None):
        """The lexicon to match a sentence of ``doc_id`` against (None: a raw text, no document)."""
        lex = self.lexicon
        if lex is not None and hasattr(lex, "for_doc"):
            return lex.for_doc(doc_id)
        return lex

    def encode_tags(self, sentence: Sentence) -> list[int]:
        """Gold tag ids of one sentence; bad spans raise ``ValueError`` naming the sentence."""
        try:
            return self.labels.to_ids(spans_to_bio(len(sentence.text), sentence.spans))
        except ValueError as exc:
            raise ValueError(f"document {sentence.doc_id!r} sentence {sentence.sent_id}: {exc}") from None

    def __call__(
        self,
        sentences: Sequence[Sentence],
        weights: Sequence[float] | None = None,
        with_tags: bool = True,
    ) -> Batch:
        if weights is not None and len(weights) != len(sentences):
            raise ValueError(f"{len(weights)} weights for {len(sentences)} sentences")
        for s in sentences:
            if not s.text:
                raise ValueError(f"document {s.doc_id!r} sentence {s.sent_id}: empty sentence cannot be tagged")
        batch = self._batch([s.text for s in sentences], [s.doc_id for s in sentences])
        if with_tags:
            batch.tag_ids = _pad([self.encode_tags(s) for s in sentences], batch.mask.shape[1])
            if any(s.unsure for s in sentences):
                batch.tag_observed = observed_mask(sentences, batch.mask)
        if weights is not None:
            batch.weights = torch.tensor([float(w) for w in weights], dtype=torch.float32)
        return batch

    def from_texts(self, texts: Sequence[str]) -> Batch:
        """Unlabeled batch of raw texts (no document: the lexicon's full view is used)."""
        for i, t in enumerate(texts):
            if not t:
                raise ValueError(f"text {i} is empty: an empty sentence cannot be tagged")
        return self._batch(list(texts), [None] * len(texts))

    def _batch(self, texts: list[str], doc_ids: Sequence[str | None]) -> Batch:
        if not texts:
            raise ValueError("cannot collate an empty list of sentences")
        t = max(len(x) for x in texts)
        char_ids = _pad([self.vocab.encode(x) for x in texts], t, PAD_ID)  # (B, T)
        lengths = torch.tensor([len(x) for x in texts])
        mask = torch.arange(t)[None, :] < lengths[:, None]  # (B, T)
        dict_ids = sets = None
        if self.dict_tags is not None:
            lexicons = [self.lexicon_for(d) for d in doc_ids]
            if self.match_sets:  # tags and sets from one trie walk per sentence
                tags, rows = zip(*(tags_and_sets_for(x, lex, self.dict_tags) for x, lex in zip(texts, lexicons)))
                sets = sets_tensor(rows, t, self.dict_tags.set_size)  # (B, T, S)
            else:
                tags = [tags_for(x, lex) for x, lex in zip(texts, lexicons)]
            dict_ids = _pad([self.dict_tags.encode(x) for x in tags], t, DICT_PAD_ID)
        return Batch(char_ids=char_ids, mask=mask, texts=texts, dict_ids=dict_ids, match_sets=sets)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


def is_frozen(module: nn.Module) -> bool:
    """A featurizer is frozen if it says so or has no parameter requiring grad."""
    flag = getattr(module, "frozen", None)
    if flag is not None:
        return bool(flag)
    return not any(p.requires_grad for p in module.parameters())


@dataclass
class TaggerOutput:
    """Decoded tag ids ``(B, T)`` (0 at padding), marginals ``(B, T, K)`` (0 at padding),
    ``log P(tags | x)`` ``(B,)`` and the sentence lengths ``(B,)``; ``tags``: the ids as one list
    per sentence, its length."""

    tag_ids: Tensor
    marginals: Tensor
    sequence_log_prob: Tensor
    lengths: Tensor

    @property
    def tags(self) -> list[list[int]]:
        rows = self.tag_ids.cpu().tolist()
        return [r[:n] for r, n in zip(rows, self.lengths.cpu().tolist())]


class BiLMBNERTagger(nn.Module):
    """BiGRU + multi-head self-attention + CRF over fused char features (see the module docstring).

    Flat arguments: ``vocab_size`` chars (PAD=0), ``num_tags`` K, ``allowed_transitions (K, K)``
    and ``allowed_start (K,)`` bool (from :class:`~cemr.tags.LabelSet`); ``char_init (V, char_dim)``
    optional initial char vectors; featurizers as keyword arguments ``name=module`` (``bert=``,
    ``bilm=``: :data:`cemr.features.registry.FEATURIZERS`; None = absent), each kept as the
    attribute ``name`` (its weights under ``name.``) and concatenated in
    :func:`~cemr.features.registry.feature_order`; ``dictionary`` a :class:`DictionaryFeature` or
    None; ``feature_cache_mb``: budget of each frozen featurizer's output cache (MiB of float32;
    0 disables caching).
    """

    def __init__(
        self,
        vocab_size: int,
        num_tags: int,
        allowed_transitions: np.ndarray | Tensor,
        allowed_start: np.ndarray | Tensor,
        *,
        char_dim: int = 100,
        char_init: Tensor | None = None,
        gru_hidden: int = 128,
        attention_heads: int = 4,
        dropout: float = 0.3,
        dictionary: DictionaryFeature | None = None,
        feature_cache_mb: float = 1024.0,
        **featurizers: nn.Module | None,
    ):
        super().__init__()
        if feature_cache_mb < 0:
            raise ValueError(f"feature_cache_mb must be >= 0, got {feature_cache_mb}")
        self.feature_cache_mb = float(feature_cache_mb)
        # name -> (the featurizer module it belongs to, its cache); see feature_cache()
        self._feature_caches: dict[str, tuple[nn.Module, FeatureCache]] = {}
        if (2 * gru_hidden) % attention_heads:
            raise ValueError(
                f"attention_heads ({attention_heads}) must divide the BiGRU output size 2*{gru_hidden}"
            )
        allowed = torch.as_tensor(np.asarray(allowed_transitions), dtype=torch.bool)
        start_ok = torch.as_tensor(np.asarray(allowed_start), dtype=torch.bool)
        if allowed.shape != (num_tags, num_tags) or start_ok.shape != (num_tags,):
            raise ValueError(
                f"allowed_transitions must be ({num_tags}, {num_tags}) and allowed_start ({num_tags},); "
                f"got {tuple(allowed.shape)} and {tuple(start_ok.shape)}"
            )
        self.hparams: dict[str, Any] = {
            "vocab_size": vocab_size,
            "num_tags": num_tags,
            "char_dim": char_dim,
            "gru_hidden": gru_hidden,
            "attention_heads": attention_heads,
            "dropout": dropout,
            "dictionary": dictionary.hparams() if dictionary is not None else None,
            "featurizer_dims": {},
        }
        self.char_embedding = nn.Embedding(vocab_size, char_dim, padding_idx=PAD_ID)
        if char_init is not None:
            if tuple(char_init.shape) != (vocab_size, char_dim):
                raise ValueError(f"char_init must be ({vocab_size}, {char_dim}), got {tuple(char_init.shape)}")
            with torch.no_grad():
                self.char_embedding.weight.copy_(char_init)
        self._featurizer_names: list[str] = []
        for name in feature_order(n for n, m in featurizers.items() if m is not None):
            if hasattr(self, name):
                raise ValueError(f"featurizer name {name!r} is taken by the tagger itself")
            self.add_module(name, featurizers[name])
            self._featurizer_names.append(name)
            self.hparams["featurizer_dims"][name] = int(featurizers[name].dim)
        self.dictionary = dictionary
        in_dim = char_dim + sum(self.hparams["featurizer_dims"].values()) + (dictionary.dim if dictionary is not None else 0)
        self.input_dim = in_dim
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(in_dim, gru_hidden, batch_first=True, bidirectional=True)
        self.attention = nn.MultiheadAttention(2 * gru_hidden, attention_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(2 * gru_hidden)
        self.output = nn.Linear(2 * gru_hidden, num_tags)
        self.crf = CRF(num_tags, batch_first=True)
        self.register_buffer("allowed_transitions", allowed, persistent=False)
        self.register_buffer("allowed_start", start_ok, persistent=False)
        self.constrain_crf()

    @property
    def num_tags(self) -> int:
        return self.crf.num_tags

    # -- frozen featurizers ------------------------------------------------------------------

    def featurizers(self) -> dict[str, nn.Module]:
        """``{name: module}`` in the order their features are concatenated."""
        return {n: getattr(self, n) for n in self._featurizer_names}

    def train(self, mode: bool = True) -> "BiLMBNERTagger":
        super().train(mode)
        for m in self.featurizers().values():
            if is_frozen(m):
                m.eval()
        return self

    def frozen_prefixes(self) -> tuple[str, ...]:
        return tuple(f"{n}." for n, m in self.featurizers().items() if is_frozen(m))

    def checkpoint_state_dict(self) -> dict[str, Tensor]:
        """The state dict without frozen featurizers' weights (those are saved by the featurizer)."""
        skip = self.frozen_prefixes()
        return {k: v for k, v in self.state_dict().items() if not (skip and k.startswith(skip))}

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        """Load :meth:`checkpoint_state_dict` output: only frozen featurizer keys may be missing."""
        skip = self.frozen_prefixes()
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not (skip and k.startswith(skip))]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"tagger weights do not fit the model: missing {missing[:5]}, "
                f"unexpected {list(result.unexpected_keys)[:5]}"
            )
        self.constrain_crf()

    # -- the network -------------------------------------------------------------------------

    def constrain_crf(self) -> None:
        """Set forbidden transition / start scores to ``FORBIDDEN`` (in place, no autograd)."""
        with torch.no_grad():
            for param, ok in ((self.crf.transitions, self.allowed_transitions), (self.crf.start_transitions, self.allowed_start)):
                if bool((param[~ok] != FORBIDDEN).any()):  # skip when intact: keeps autograd versions
                    param.masked_fill_(~ok, FORBIDDEN)

    def feature_cache(self, name: str) -> FeatureCache | None:
        """The output cache of featurizer ``name`` (e.g. ``bert``): None when that featurizer
        is absent, trainable or not worth caching (``cacheable = False``: the bigram lookup), or
        caching is off. A cache belongs to one module object: when the attribute is replaced by
        another module, the old cache is dropped, never reused."""
        module = getattr(self, name, None) if name in self._featurizer_names else None
        if (module is None or not is_frozen(module) or not getattr(module, "cacheable", True)
                or self.feature_cache_mb <= 0):
            self._feature_caches.pop(name, None)
            return None
        entry = self._feature_caches.get(name)
        if entry is None or entry[0] is not module:
            entry = (module, FeatureCache(elements_for_mb(self.feature_cache_mb)))
            self._feature_caches[name] = entry
        return entry[1]

    def clear_feature_caches(self) -> None:
        """Forget every cached featurizer output (e.g. after changing a frozen featurizer's weights)."""
        self._feature_caches.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_feature_caches"] = {}  # caches are per process: never pickled or deep-copied
        return state

    def _featurize(self, name: str, module: nn.Module, texts: list[str], t: int) -> Tensor:
        cache = self.feature_cache(name)
        if cache is not None:
            device = self.char_embedding.weight.device
            with torch.no_grad():
                feats = cached_features(cache, module, texts, device)  # (B, T, D)
        else:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not is_frozen(module)):
                feats = module(texts)  # (B, T, D)
        if feats.dim() != 3 or feats.shape[0] != len(texts) or feats.shape[1] != t or feats.shape[2] != module.dim:
            raise ValueError(
                f"{name} featurizer returned shape {tuple(feats.shape)}, expected ({len(texts)}, {t}, {module.dim})"
            )
        return feats.to(self.char_embedding.weight.dtype)

    def emissions(self, batch: Batch) -> Tensor:
        """Emission scores ``(B, T, K)`` (float32; values at padding are meaningless)."""
        b, t = batch.char_ids.shape
        parts = [self.char_embedding(batch.char_ids)]  # (B, T, C)
        for name, module in self.featurizers().items():
            parts.append(self._featurize(name, module, batch.texts, t))  # (B, T, D_f)
        if self.dictionary is not None:
            if batch.dict_ids is None:
                raise ValueError("the tagger has a dictionary feature but the batch has no dict_ids")
            parts.append(self.dictionary(batch.dict_ids, batch.match_sets))  # (B, T, D_w)
        x = self.dropout(torch.cat(parts, dim=-1))  # (B, T, D_in)
        lengths = batch.mask.sum(dim=1).cpu()  # (B,)
        longest_first = bool((lengths[:-1] >= lengths[1:]).all())  # the predictor's buckets: no re-sort
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=longest_first)
        h, _ = self.gru(packed)
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=t)  # (B, T, 2H)
        h = self.norm(h + self.dropout(self.self_attention(h, batch.mask)))  # (B, T, 2H)
        return self.output(self.dropout(h)).float()  # (B, T, K)

    def self_attention(self, h: Tensor, mask: Tensor) -> Tensor:
        """``self.attention(h, h, h)`` over the real chars (``mask (B, T)``): ``(B, T, 2H)``.

        In eval mode the same weights are applied through ``F.scaled_dot_product_attention``
        (equal to ``nn.MultiheadAttention`` within float32 rounding, faster on CPU than its fused
        path); training keeps ``nn.MultiheadAttention`` (attention dropout, unchanged numerics)."""
        mha = self.attention
        if self.training:
            return mha(h, h, h, key_padding_mask=~mask, need_weights=False)[0]
        b, t, e = h.shape
        heads = mha.num_heads
        qkv = F.linear(h, mha.in_proj_weight, mha.in_proj_bias)  # (B, T, 3E)
        q, k, v = qkv.view(b, t, 3, heads, e // heads).permute(2, 0, 3, 1, 4)  # (B, heads, T, E/heads) each
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # (B, heads, T, E/heads)
        return F.linear(a.transpose(1, 2).reshape(b, t, e), mha.out_proj.weight, mha.out_proj.bias)

    def nll(self, batch: Batch) -> Tensor:
        """Negative log-likelihood per sentence ``(B,)``; of the partial labeling
        (:func:`cemr.confidence.crf_partial_nll`) when the batch has unobserved tags."""
        if batch.tag_ids is None:
            raise ValueError("the batch has no gold tags (tag_ids is None)")
        self.constrain_crf()
        em = self.emissions(batch)  # (B, T, K)
        if batch.tag_observed is not None:
            return crf_partial_nll(em, batch.tag_ids, batch.tag_observed, batch.mask, self.crf)
        return -self.crf(em, batch.tag_ids, batch.mask, reduction="none")

    def forward(self, batch: Batch) -> Tensor:
        """Training loss: ``sum_i w_i * NLL_i / B`` (the mean NLL when all weights are 1)."""
        nll = self.nll(batch)  # (B,)
        if batch.weights is not None:
            nll = nll * batch.weights.to(nll.dtype)
        return nll.sum() / nll.shape[0]

    @torch.no_grad()
    def decode(self, batch: Batch) -> list[list[int]]:
        """Viterbi tag ids per sentence (each list as long as its sentence)."""
        self.constrain_crf()
        tags = crf_viterbi(self.emissions(batch), batch.mask, self.crf).cpu().tolist()  # (B, T)
        return [r[:n] for r, n in zip(tags, batch.lengths.cpu().tolist())]

    @torch.no_grad()
    def infer(self, batch: Batch) -> TaggerOutput:
        """Viterbi tags, marginals ``(B, T, K)`` and ``log P(tags | x)`` ``(B,)`` in one pass
        (:func:`cemr.confidence.crf_infer`)."""
        self.constrain_crf()
        em = self.emissions(batch)  # (B, T, K)
        out = crf_infer(em, batch.mask, self.crf)
        return TaggerOutput(out.tags, out.marginals, out.log_prob, out.lengths)


# ----------------------------------------------------------------------------------------------
# Building from the config
# ----------------------------------------------------------------------------------------------


def build_tagger(
    model_cfg: ModelConfig,
    labels: LabelSet,
    vocab: CharVocab,
    *,
    char_vectors: Any = None,
    dictionary_types: Sequence[str] | None = None,
    **featurizers: nn.Module | None,
) -> BiLMBNERTagger:
    """The tagger of ``model_cfg`` for ``labels`` and ``vocab`` (the one place reading ModelConfig).

    Featurizers come as ``name=module`` (``bert=``, ``bilm=``), exactly those ``model.<name>.enabled``
    turns on (:data:`cemr.features.registry.FEATURIZERS`); each is configured by its kind (BERT
    frozen or trainable per ``model.bert.freeze``; the BiLM stays as loaded: frozen).
    ``char_vectors`` (:class:`~cemr.features.word2vec.CharVectors`) initialise the char embedding
    when their dim equals ``model.char_dim``; ``tagger.char_init_rows`` tells how many rows were
    copied. ``dictionary_types``: types the lexicon can produce (default: the label types).
    """
    given = {n: m for n, m in featurizers.items() if m is not None}
    unknown = sorted(set(given) - set(FEATURIZERS))
    if unknown:
        raise ValueError(f"unknown featurizer(s) {', '.join(unknown)}; known: {', '.join(FEATURIZERS)}")
    for name, kind in FEATURIZERS.items():
        if kind.enabled(model_cfg) and name not in given:
            raise ValueError(f"model.{name}.enabled is true but no {name} featurizer was given")
        if not kind.enabled(model_cfg) and name in given:
            raise ValueError(f"a {name} featurizer was given but model.{name}.enabled is false")
        if name in given:
            kind.configure(given[name], model_cfg)
    dictionary = None
    if model_cfg.dictionary.enabled:
        types = list(dictionary_types) if dictionary_types is not None else list(labels.types)
        dictionary = DictionaryFeature(types, model_cfg.dictionary.dim, model_cfg.dictionary.dropout,
                                       match_sets=model_cfg.dictionary.match_sets)
    tagger = BiLMBNERTagger(
        len(vocab),
        labels.num_tags,
        labels.allowed_transitions(),
        labels.allowed_start(),
        char_dim=model_cfg.char_dim,
        gru_hidden=model_cfg.gru_hidden,
        attention_heads=model_cfg.attention_heads,
        dropout=model_cfg.dropout,
        dictionary=dictionary,
        feature_cache_mb=model_cfg.feature_cache_mb,
        **given,
    )
    tagger.char_init_rows = 0
    if char_vectors is not None and char_vectors.dim == model_cfg.char_dim:
        from cemr.features.word2vec import init_embedding_from_vectors

        tagger.char_init_rows = init_embedding_from_vectors(tagger.char_embedding, vocab.itos, char_vectors)
    return tagger


def featurizer_dims(hparams: dict[str, Any]) -> dict[str, int]:
    """``{name: dim}`` a saved tagger was built with: ``featurizer_dims``, or the ``bert_dim`` /
    ``bilm_dim`` of models saved before the featurizer registry (model format 1)."""
    if "featurizer_dims" in hparams:
        return {str(k): int(v) for k, v in dict(hparams["featurizer_dims"]).items()}
    return {n: int(hparams[f"{n}_dim"]) for n in ("bert", "bilm") if hparams.get(f"{n}_dim") is not None}


def tagger_from_hparams(hparams: dict[str, Any], labels: LabelSet, **featurizers: nn.Module | None) -> BiLMBNERTagger:
    """Rebuild a tagger from ``tagger.hparams`` (as saved in a model directory); weights random.
    ``featurizers``: ``name=module``, exactly those the tagger was built with, of the same dims."""
    if hparams["num_tags"] != labels.num_tags:
        raise ValueError(f"hparams say {hparams['num_tags']} tags, the label set has {labels.num_tags}")
    want = featurizer_dims(hparams)
    have = {n: int(m.dim) for n, m in featurizers.items() if m is not None}
    if want != have:
        raise ValueError(f"the tagger was built with featurizer dims {want}, got featurizers of dims {have}")
    if list(want) != feature_order(want):
        raise ValueError(f"featurizer order {list(want)} is not the registry's {feature_order(want)}")
    d = hparams.get("dictionary")
    dictionary = DictionaryFeature(d["types"], d["dim"], d["dropout"], bool(d.get("match_sets"))) if d else None
    return BiLMBNERTagger(
        hparams["vocab_size"],
        hparams["num_tags"],
        labels.allowed_transitions(),
        labels.allowed_start(),
        char_dim=hparams["char_dim"],
        gru_hidden=hparams["gru_hidden"],
        attention_heads=hparams["attention_heads"],
        dropout=hparams["dropout"],
        dictionary=dictionary,
        **{n: m for n, m in featurizers.items() if m is not None},
    )


def make_collator(tagger: BiLMBNERTagger, vocab: CharVocab, labels: LabelSet, lexicon: Any = None) -> Collator:
    """The :class:`Collator` matching ``tagger`` (dictionary ids only when it has the feature)."""
    dict_tags = tagger.dictionary.vocab if tagger.dictionary is not None else None
    if dict_tags is not None and lexicon is None:
        raise ValueError("the tagger has a dictionary feature: a lexicon is needed to collate")
    return Collator(vocab, labels, dict_tags, lexicon if dict_tags is not None else None,
                    match_sets=bool(dict_tags is not None and tagger.dictionary.match_sets))
