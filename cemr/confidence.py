"""How sure the tagger is: linear-chain CRF partition function, marginals and confidences.

pytorch-crf gives the likelihood and Viterbi decoding but no marginals, so the forward-backward
algorithm is implemented here, in log space, batched, with bool masks for variable lengths. The
CRF parameters are ``start (K,)``, ``end (K,)`` and ``trans (K, K)`` (``trans[i, j]``: score of tag
``j`` following tag ``i``), exactly those of ``torchcrf.CRF``; every function accepts either the
three tensors or a ``torchcrf.CRF`` module in place of ``start``.

Masks follow pytorch-crf: ``(B, T)`` bool, every row a prefix of True values (the first
timestep on). Masked positions are ignored: they add nothing to any score and their marginals are
0. The partition function is computed in float32 (float64 stays float64) whatever the emissions'
dtype, so AMP output is safe to pass in. Marginals and sequence probabilities are computed in
float64 and returned in float32 (float64 for float64 input), clamped to [0, 1] (``log P <= 0``):
at the emission scale of a trained tagger, float32 rounding of ``exp(alpha + beta - log Z)`` put
marginals up to 1e-3 above 1 and their rows' sums off by as much.

Confidence methods (the self-training threshold is applied to these numbers):

- ``entity_min_marginal`` (**the default**): for a predicted entity of type ``t`` on
  ``[start, end)``, the minimum over its characters of the marginal probability of its tag
  (``B-t`` at ``start``, ``I-t`` inside). Why: an entity is right only if all its tags are, and
  ``P(all tags right) <= min marginal`` while ``>= 1 - sum(1 - marginal)``, so the min is a tight,
  cheap stand-in for the entity's probability; marginals sum over all tag paths, so they say how
  sure the model is at that position, not only how good one path is; and the number is per
  entity, so it neither decays with sentence length (unlike the sequence probability) nor lets
  one uncertain mention sink the confident others of its sentence.
- ``entity_mean_marginal``: the mean of the same marginals (more lenient for long entities).
- ``sequence_prob``: ``P(y* | x)``, the CRF probability of the whole decoded sentence; every
  entity of the sentence gets the sentence's value. It shrinks with length, so a fixed
  threshold favours short sentences.

Sentence-level confidence (:func:`sentence_confidence`, for selecting whole sentences): the
sequence probability for ``sequence_prob``; for the marginal methods the min (mean) over *all*
characters of the marginal of the decoded tag, ``O`` included: a pseudo-labeled sentence also
teaches its ``O`` characters, and an uncertain ``O`` is a possibly missed entity.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from cemr.corpus.document import Span
from cemr.tags import LabelSet

DEFAULT_METHOD = "entity_min_marginal"
METHODS = ("entity_min_marginal", "entity_mean_marginal", "sequence_prob")
ALIASES = {"min_marginal": "entity_min_marginal", "mean_marginal": "entity_mean_marginal"}


def normalize_method(method: str) -> str:
    """Canonical method name (``min_marginal`` -> ``entity_min_marginal`` ...); ValueError if unknown."""
    name = ALIASES.get(method, method)
    if name not in METHODS:
        raise ValueError(f"unknown confidence method {method!r}; choose one of {', '.join(METHODS)}")
    return name


# ----------------------------------------------------------------------------------------------
# CRF parameters and masks
# ----------------------------------------------------------------------------------------------


def crf_parameters(
    start: "Tensor | torch.nn.Module", end: Tensor | None = None, trans: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``(start (K,), end (K,), trans (K, K))`` from three tensors or from a ``torchcrf.CRF``."""
    if isinstance(start, torch.nn.Module):
        crf = start
        if end is not None or trans is not None:
            raise TypeError("pass either a CRF module or the three tensors start, end, trans")
        try:
            return crf.start_transitions, crf.end_transitions, crf.transitions
        except AttributeError:
            raise TypeError(f"{type(crf).__name__} has no start_transitions/end_transitions/transitions") from None
    if end is None or trans is None:
        raise TypeError("start, end and trans are all needed when no CRF module is given")
    k = start.shape[-1]
    if start.shape != (k,) or end.shape != (k,) or trans.shape != (k, k):
        raise ValueError(
            f"CRF parameter shapes must be (K,), (K,), (K, K); got {tuple(start.shape)}, "
            f"{tuple(end.shape)}, {tuple(trans.shape)}"
        )
    return start, end, trans


def check_mask(mask: Tensor, shape: tuple[int, int]) -> Tensor:
    """Validate a ``(B, T)`` mask: bool, first timestep on, each row a prefix of True values."""
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match emissions {tuple(shape)}")
    if mask.shape[1] == 0 or not bool(mask[:, 0].all()):
        raise ValueError("the first timestep of every sequence must be unmasked (no empty sequences)")
    if mask.shape[1] > 1 and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
        raise ValueError("each mask row must be a prefix of True values (left-aligned sequences)")
    return mask


def _prepare(emissions: Tensor, mask: Tensor, start, end, trans, precise: bool = False):
    if emissions.dim() != 3:
        raise ValueError(f"emissions must be (B, T, K), got shape {tuple(emissions.shape)}")
    start, end, trans = crf_parameters(start, end, trans)
    if start.shape[0] != emissions.shape[2]:
        raise ValueError(f"emissions have {emissions.shape[2]} tags, the CRF {start.shape[0]}")
    check_mask(mask, emissions.shape[:2])
    dtype = torch.float64 if precise or emissions.dtype == torch.float64 else torch.float32
    return emissions.to(dtype), start.to(dtype), end.to(dtype), trans.to(dtype)


def _out_dtype(emissions: Tensor) -> torch.dtype:
    return torch.float64 if emissions.dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------
# Forward-backward
# ----------------------------------------------------------------------------------------------


def _forward_scores(em: Tensor, mask: Tensor, start: Tensor, trans: Tensor) -> Tensor:
    """Log forward scores ``alpha (B, T, K)``: log-sum over prefixes ending in tag k at t
    (emission at t included); carried unchanged through masked positions."""
    alphas = [start + em[:, 0]]  # (B, K)
    for t in range(1, em.shape[1]):
        prev = alphas[-1]
        # (B, K, 1) + (K, K) + (B, 1, K) -> logsumexp over the previous tag -> (B, K)
        nxt = torch.logsumexp(prev.unsqueeze(2) + trans + em[:, t].unsqueeze(1), dim=1)
        alphas.append(torch.where(mask[:, t].unsqueeze(1), nxt, prev))
    return torch.stack(alphas, dim=1)


def _backward_scores(em: Tensor, mask: Tensor, end: Tensor, trans: Tensor) -> Tensor:
    """Log backward scores ``beta (B, T, K)``: log-sum over suffixes after t given tag k at t
    (emission at t excluded, end transition included); ``end`` at the last valid position."""
    b, t_len, k = em.shape
    beta = end.expand(b, k)
    betas = [beta]
    for t in range(t_len - 2, -1, -1):
        # (K, K) + (B, 1, K) -> logsumexp over the next tag -> (B, K)
        nxt = torch.logsumexp(trans + (em[:, t + 1] + beta).unsqueeze(1), dim=2)
        beta = torch.where(mask[:, t + 1].unsqueeze(1), nxt, end.expand(b, k))
        betas.append(beta)
    betas.reverse()
    return torch.stack(betas, dim=1)


def _last_alpha(alpha: Tensor) -> Tensor:
    # alpha is carried through masked positions, so its last column is the one at the last valid t
    return alpha[:, -1]


def crf_log_partition(emissions: Tensor, mask: Tensor, start, end=None, trans=None) -> Tensor:
    """``log Z (B,)`` of a linear-chain CRF.

    ``emissions (B, T, K)``, ``mask (B, T)`` bool; ``start``/``end``/``trans`` as in the module
    docstring (or a ``torchcrf.CRF`` as ``start``). Differentiable.
    """
    em, start, end, trans = _prepare(emissions, mask, start, end, trans)
    alpha = _forward_scores(em, mask, start, trans)
    return torch.logsumexp(_last_alpha(alpha) + end, dim=1)


def crf_marginals(emissions: Tensor, mask: Tensor, start, end=None, trans=None) -> Tensor:
    """Per-position tag marginals ``P(y_t = k | x)``: ``(B, T, K)``.

    Rows of valid positions sum to 1; masked positions are all 0.
    """
    em, start, end, trans = _prepare(emissions, mask, start, end, trans, precise=True)
    alpha = _forward_scores(em, mask, start, trans)  # (B, T, K)
    beta = _backward_scores(em, mask, end, trans)  # (B, T, K)
    log_z = torch.logsumexp(_last_alpha(alpha) + end, dim=1)  # (B,)
    marg = torch.exp(alpha + beta - log_z[:, None, None]).clamp(0.0, 1.0)  # (B, T, K)
    return marg.masked_fill(~mask.unsqueeze(2), 0.0).to(_out_dtype(emissions))


def sequence_score(emissions: Tensor, tags: Tensor, mask: Tensor, start, end=None, trans=None) -> Tensor:
    """Unnormalised score ``(B,)`` of the tag paths ``tags (B, T)`` (values at masked positions ignored)."""
    em, start, end, trans = _prepare(emissions, mask, start, end, trans)
    if tags.shape != mask.shape:
        raise ValueError(f"tags shape {tuple(tags.shape)} does not match mask {tuple(mask.shape)}")
    tags = tags.long().masked_fill(~mask, 0)  # (B, T)
    maskf = mask.to(em.dtype)
    emit = em.gather(2, tags.unsqueeze(2)).squeeze(2)  # (B, T)
    score = start[tags[:, 0]] + (emit * maskf).sum(dim=1)
    if tags.shape[1] > 1:
        step = trans[tags[:, :-1], tags[:, 1:]]  # (B, T-1)
        score = score + (step * maskf[:, 1:]).sum(dim=1)
    last = tags.gather(1, (mask.sum(dim=1) - 1).unsqueeze(1)).squeeze(1)  # (B,)
    return score + end[last]


def sequence_log_prob(emissions: Tensor, tags: Tensor, mask: Tensor, start, end=None, trans=None) -> Tensor:
    """``log P(tags | x) = score(tags) - log Z``: ``(B,)``, clamped to ``<= 0`` (float32 rounding
    can put the best path's score a hair above ``log Z``)."""
    em, start, end, trans = _prepare(emissions, mask, start, end, trans, precise=True)
    logp = sequence_score(em, tags, mask, start, end, trans) - crf_log_partition(em, mask, start, end, trans)
    return logp.clamp(max=0.0).to(_out_dtype(emissions))


UNOBSERVED_PENALTY = -1.0e4  # emission added to the tags a partial label rules out


def crf_partial_nll(emissions: Tensor, tags: Tensor, observed: Tensor, mask: Tensor,
                    start, end=None, trans=None) -> Tensor:
    """Negative log-likelihood of a *partial* labeling: ``(B,)``.

    ``tags (B, T)`` gives the tag at the positions where ``observed (B, T)`` (bool) is True; the
    other positions may take any tag. The likelihood is the probability mass of every tag path
    that agrees with the observed tags: ``-log P = log Z - log Z_observed``, where
    ``Z_observed`` sums over the agreeing paths only (each ruled-out tag's emission gets
    ``UNOBSERVED_PENALTY``, a finite number so that gradients stay finite). With every position
    observed this is the ordinary CRF NLL (``-torchcrf.CRF(...)(reduction="none")``); with none,
    0. Used for pseudo-labels whose unsure characters should not be trained as ``O``.
    Differentiable; both partition functions run in one batched forward pass.
    """
    em, start, end, trans = _prepare(emissions, mask, start, end, trans)
    if tags.shape != mask.shape or observed.shape != mask.shape:
        raise ValueError(f"tags {tuple(tags.shape)} and observed {tuple(observed.shape)} must match "
                         f"mask {tuple(mask.shape)}")
    if observed.dtype != torch.bool:
        raise TypeError(f"observed must be a bool tensor, got {observed.dtype}")
    k = em.shape[2]
    tags = tags.long().masked_fill(~mask, 0)
    onehot = torch.nn.functional.one_hot(tags, k).bool()  # (B, T, K)
    allowed = onehot | ~observed.unsqueeze(2)  # (B, T, K)
    em_obs = em + (~allowed).to(em.dtype) * UNOBSERVED_PENALTY
    both = torch.cat([em, em_obs], dim=0)  # (2B, T, K)
    mask2 = torch.cat([mask, mask], dim=0)
    alpha = _forward_scores(both, mask2, start, trans)
    log_z = torch.logsumexp(_last_alpha(alpha) + end, dim=1)  # (2B,)
    b = em.shape[0]
    return (log_z[:b] - log_z[b:]).clamp(min=0.0)


# ----------------------------------------------------------------------------------------------
# Confidences
# ----------------------------------------------------------------------------------------------


def _span_tag_ids(span: Span, labels: LabelSet) -> list[int]:
    return [labels.index("B-" + span.type)] + [labels.index("I-" + span.type)] * (len(span) - 1)


def _as_numpy(marginals_row: "Tensor | np.ndarray") -> np.ndarray:
    if isinstance(marginals_row, Tensor):
        return marginals_row.detach().to("cpu", torch.float64).numpy()
    return np.asarray(marginals_row, dtype=np.float64)


def entity_confidences(
    marginals_row: "Tensor | np.ndarray",
    spans: Sequence[Span],
    labels: LabelSet,
    method: str = DEFAULT_METHOD,
    *,
    sequence_prob: float | None = None,
) -> list[float]:
    """One confidence per span of one sentence.

    ``marginals_row (T, K)`` (tensor or array): the sentence's marginals (``crf_marginals(...)[b]``,
    padding rows allowed beyond the spans); ``spans``: sentence-local, end exclusive.
    ``sequence_prob`` (the decoded path's probability) is required for ``method="sequence_prob"``.
    """
    method = normalize_method(method)
    if method == "sequence_prob":
        if sequence_prob is None:
            raise ValueError("method 'sequence_prob' needs the sentence's sequence_prob")
        return [float(sequence_prob)] * len(spans)
    marg = _as_numpy(marginals_row)
    if marg.ndim != 2 or marg.shape[1] != labels.num_tags:
        raise ValueError(f"marginals_row must be (T, {labels.num_tags}), got shape {marg.shape}")
    reduce = np.min if method == "entity_min_marginal" else np.mean
    out = []
    for span in spans:
        if span.end > marg.shape[0]:
            raise ValueError(f"span {span} ends past the sentence length {marg.shape[0]}")
        probs = marg[np.arange(span.start, span.end), _span_tag_ids(span, labels)]
        out.append(float(reduce(probs)))
    return out


def sentence_confidence(
    marginals_row: "Tensor | np.ndarray",
    tags: Sequence[int],
    method: str = DEFAULT_METHOD,
    *,
    sequence_prob: float | None = None,
) -> float:
    """Confidence of one decoded sentence (see the module docstring).

    ``marginals_row (T, K)`` with ``T >= len(tags)``; ``tags``: the decoded tag ids (length = the
    sentence length).
    """
    method = normalize_method(method)
    if method == "sequence_prob":
        if sequence_prob is None:
            raise ValueError("method 'sequence_prob' needs the sentence's sequence_prob")
        return float(sequence_prob)
    n = len(tags)
    if n == 0:
        raise ValueError("an empty sentence has no confidence")
    marg = _as_numpy(marginals_row)
    if n > marg.shape[0]:
        raise ValueError(f"{n} tags but only {marg.shape[0]} marginal rows")
    probs = marg[np.arange(n), np.asarray(tags, dtype=np.int64)]
    return float(probs.min() if method == "entity_min_marginal" else probs.mean())
