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
marginals up to 1e-3 above 1 and their rows' sums off by as much. These log-space functions are
the references (and the training losses); inference uses :func:`crf_infer`: Viterbi (pytorch-crf's
arithmetic, identical tags), marginals and ``log P(path)`` in one float32 pass whose
forward-backward is renormalised at every step (so no large logs cancel), within 1e-5 of the
float64 references, and recomputed by them when a step underflows.

Confidence methods (the self-training threshold is applied to these numbers; their names and
:func:`normalize_method` are :mod:`cemr.selection`'s):

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

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import Tensor

from cemr.corpus.document import Span

# the method names belong to the selection policy (torch-free there); read here by cemr.config too
from cemr.selection import ALIASES, DEFAULT_METHOD, METHODS, normalize_method  # noqa: F401
from cemr.tags import LabelSet

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


# ----------------------------------------------------------------------------------------------
# Inference: Viterbi, marginals and log P(path) in one batched pass
# ----------------------------------------------------------------------------------------------

# A scaled forward-backward step whose normaliser drops below this (float32: ~e-69) may have lost
# precision to underflow; such a batch is recomputed by the float64 log-space reference.
UNDERFLOW_GUARD = 1e-30


class CrfInference(NamedTuple):
    """:func:`crf_infer` output: ``tags (B, T)`` long (Viterbi path, 0 at padding),
    ``marginals (B, T, K)`` float32 (0 at padding), ``log_prob (B,)`` float32
    (``log P(tags | x) <= 0``) and ``lengths (B,)`` long."""

    tags: Tensor
    marginals: Tensor
    log_prob: Tensor
    lengths: Tensor


def _active_rows(lengths: list[int], t_len: int) -> list[int]:
    """``n[t]``: how many of the rows (lengths sorted descending) are still running at step t."""
    out, n = [], len(lengths)
    for t in range(t_len):
        while n and lengths[n - 1] <= t:
            n -= 1
        out.append(n)
    return out


def _viterbi_sorted(em: Tensor, active: list[int], start: Tensor, end: Tensor, trans: Tensor) -> Tensor:
    """Viterbi over rows sorted by length (descending): ``(B, T)`` long, 0 at padding.

    The scores are pytorch-crf's, summed in its order (``score + trans + emission``, then max over
    the previous tag), so ties and rounding resolve as in ``torchcrf.CRF.decode``; only the rows
    still running take part in a step, and the backtrace runs on numpy over the whole batch."""
    b, t_len, k = em.shape
    history = torch.zeros((b, t_len, k), dtype=torch.long, device=em.device)  # (B, T, K)
    final = torch.empty((b, k), dtype=em.dtype, device=em.device)  # (B, K) score at each row's end
    score = start + em[:, 0]  # (B, K)
    for t in range(1, t_len):
        n = active[t]
        if n < score.shape[0]:
            final[n : score.shape[0]] = score[n:]
            score = score[:n]
        nxt = score.unsqueeze(2) + trans + em[:n, t].unsqueeze(1)  # (n, K, K)
        score, history[:n, t] = nxt.max(dim=1)  # (n, K)
    final[: score.shape[0]] = score
    last = (final + end).argmax(dim=1).cpu().numpy()  # (B,)
    hist = history.cpu().numpy()
    tags = np.zeros((b, t_len), dtype=np.int64)
    rows = np.arange(b)
    cur = last.copy()  # a row's entry is first read at its last position, still its best last tag
    for t in range(t_len - 1, -1, -1):
        n = active[t]
        tags[:n, t] = cur[:n]
        if t:
            cur[:n] = hist[rows[:n], t, cur[:n]]
    return torch.from_numpy(tags).to(em.device)


def _scaled_forward_backward(em: Tensor, active: list[int], start: Tensor, end: Tensor, trans: Tensor):
    """Forward-backward in probability space, each step renormalised (rows sorted by length).

    Returns ``alpha (B, T, K)`` and ``beta (B, T, K)`` (each row of each step sums to 1),
    ``log_norm (B, T)`` float64 (the log of each forward step's normaliser; their sum over a
    row's positions plus ``log sum_k alpha_last * exp(end)`` is ``log Z``) and the smallest
    normaliser met (for :data:`UNDERFLOW_GUARD`). One small matmul per step instead of a
    ``(B, K, K)`` logsumexp; the shifts keep every ``exp`` in range."""
    b, t_len, k = em.shape
    em_max = em.amax(dim=2, keepdim=True)  # (B, T, 1)
    e = torch.exp(em - em_max)  # (B, T, K), max 1 per row
    t_max = trans.max()
    e_trans = torch.exp(trans - t_max)  # (K, K)
    e_trans_t = e_trans.t()
    alpha = torch.zeros_like(em)
    beta = torch.zeros_like(em)
    norms = torch.ones((b, t_len), dtype=em.dtype, device=em.device)  # (B, T) forward normalisers
    bnorms = torch.ones((b, t_len), dtype=em.dtype, device=em.device)  # (B, T) backward normalisers
    a = torch.exp(start - start.max()) * e[:, 0]  # (B, K)
    s = a.sum(dim=1, keepdim=True)
    norms[:, 0] = s[:, 0]
    alpha[:, 0] = a = a / s
    for t in range(1, t_len):
        n = active[t]
        v = (a[:n] @ e_trans) * e[:n, t]  # (n, K)
        s = v.sum(dim=1, keepdim=True)
        norms[:n, t] = s[:, 0]
        alpha[:n, t] = a = v / s
    e_end = torch.exp(end - end.max())  # (K,)
    bt = None
    for t in range(t_len - 1, -1, -1):
        n = active[t]
        m = active[t + 1] if t + 1 < t_len else 0  # rows continuing from t + 1
        parts = []
        if m:
            v = (bt[:m] * e[:m, t + 1]) @ e_trans_t  # (m, K)
            s = v.sum(dim=1, keepdim=True)
            bnorms[:m, t] = s[:, 0]
            parts.append(v / s)
        if n > m:  # rows whose last position is t
            parts.append((e_end / e_end.sum()).expand(n - m, k))
        bt = parts[0] if len(parts) == 1 else torch.cat(parts)
        beta[:n, t] = bt
    log_norm = (norms.double().log() + em_max[..., 0].double() + float(t_max))  # (B, T)
    log_norm[:, 0] += float(start.max()) - float(t_max)
    smallest = min(float(norms.min()), float(bnorms.min()))
    return alpha, beta, log_norm, e_end, float(end.max()), smallest


@torch.no_grad()
def crf_infer(emissions: Tensor, mask: Tensor, start, end=None, trans=None) -> CrfInference:
    """Viterbi tags, marginals and ``log P(tags | x)`` of a batch in one pass (inference only).

    Same results as ``torchcrf.CRF.decode`` (tags: identical), :func:`crf_marginals` and
    :func:`sequence_log_prob` (float64 references; here within about 1e-5 absolute, see
    ``tests/test_confidence.py``), at a fraction of the cost: rows are processed longest first so
    a step touches only the rows still running, forward-backward runs in probability space with
    one renormalised ``(B, K) @ (K, K)`` product per step, and the path's log probability is its
    score minus ``log Z`` from the same pass. A batch where a normaliser falls below
    :data:`UNDERFLOW_GUARD` (emission gaps of ~70 nats) is recomputed by the float64 references.
    """
    em, start, end, trans = _prepare(emissions, mask, start, end, trans)
    b, t_len, k = em.shape
    lengths = mask.sum(dim=1)  # (B,)
    order = torch.argsort(lengths, descending=True, stable=True)
    lens = lengths[order].tolist()
    em_s = em[order]  # (B, T, K)
    active = _active_rows(lens, t_len)
    tags_s = _viterbi_sorted(em_s, active, start, end, trans)  # (B, T)
    inv = torch.empty_like(order)
    inv[order] = torch.arange(b, device=order.device)
    tags = tags_s[inv]
    alpha, beta, log_norm, e_end, end_shift, smallest = _scaled_forward_backward(em_s, active, start, end, trans)
    if not smallest > UNDERFLOW_GUARD:
        marg = crf_marginals(emissions, mask, start, end, trans).float()
        logp = sequence_log_prob(emissions, tags, mask, start, end, trans).float()
        return CrfInference(tags, marg, logp, lengths)
    ab = alpha * beta  # (B, T, K)
    marg_s = ab / ab.sum(dim=2, keepdim=True).clamp_min(torch.finfo(ab.dtype).tiny)
    mask_s = mask[order]
    marg_s = marg_s.masked_fill(~mask_s.unsqueeze(2), 0.0)
    # log Z = sum of the row's log normalisers + log sum_k alpha_last(k) exp(end_k)
    idx = torch.as_tensor(lens, device=em.device) - 1  # (B,)
    a_last = alpha[torch.arange(b, device=em.device), idx].double()  # (B, K)
    log_z = (log_norm * mask_s).sum(dim=1) + (a_last @ e_end.double()).log() + end_shift  # (B,)
    score = sequence_score(em_s.double(), tags_s, mask_s, start.double(), end.double(), trans.double())
    logp_s = (score - log_z).clamp(max=0.0)
    return CrfInference(tags, marg_s[inv], logp_s[inv].float(), lengths)


def crf_viterbi(emissions: Tensor, mask: Tensor, start, end=None, trans=None) -> Tensor:
    """Viterbi tags ``(B, T)`` long (0 at padding); identical to ``torchcrf.CRF.decode``, batched."""
    with torch.no_grad():
        em, start, end, trans = _prepare(emissions, mask, start, end, trans)
        lengths = mask.sum(dim=1)
        order = torch.argsort(lengths, descending=True, stable=True)
        lens = lengths[order].tolist()
        tags_s = _viterbi_sorted(em[order], _active_rows(lens, em.shape[1]), start, end, trans)
        tags = torch.empty_like(tags_s)
        tags[order] = tags_s
        return tags


# ----------------------------------------------------------------------------------------------
# Confidences of a whole batch (numpy)
# ----------------------------------------------------------------------------------------------


class BatchConfidences(NamedTuple):
    """:func:`batch_confidences` output: ``entity (N,)`` float64 (one per span, in the spans'
    order), ``sentence (B,)`` float64 and ``token (B, T)`` float32 (the marginal of each decoded
    tag; 0 at padding)."""

    entity: np.ndarray
    sentence: np.ndarray
    token: np.ndarray


def batch_confidences(
    marginals: np.ndarray,
    tags: np.ndarray,
    lengths: np.ndarray,
    spans: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    method: str = DEFAULT_METHOD,
    sequence_prob: np.ndarray | None = None,
) -> BatchConfidences:
    """:func:`entity_confidences` and :func:`sentence_confidence` of every sentence of a batch at once.

    ``marginals (B, T, K)``, ``tags (B, T)`` (decoded ids), ``lengths (B,)`` (all >= 1),
    ``spans``: ``(row, start, end, type_index)`` from :func:`cemr.tags.bio_id_spans` (label ids in
    :class:`LabelSet` layout: ``B-<type i>`` = ``2i + 1``, ``I-<type i>`` = ``2i + 2``);
    ``sequence_prob (B,)`` is required for ``method="sequence_prob"``. Same numbers as the
    per-sentence functions (min / mean over the same float32 marginals, in float64).
    """
    method = normalize_method(method)
    b, t_len, k = marginals.shape
    lengths = np.asarray(lengths, dtype=np.int64)
    if b and int(lengths.min()) < 1:
        raise ValueError("an empty sentence has no confidence")
    token = np.take_along_axis(marginals, np.asarray(tags, dtype=np.int64)[..., None], axis=2)[..., 0]  # (B, T)
    valid = np.arange(t_len)[None, :] < lengths[:, None]  # (B, T)
    token = np.where(valid, token, 0).astype(marginals.dtype, copy=False)
    row, start, end, typ = spans
    if method == "sequence_prob":
        if sequence_prob is None:
            raise ValueError("method 'sequence_prob' needs the sentences' sequence_prob")
        seq = np.asarray(sequence_prob, dtype=np.float64)
        return BatchConfidences(seq[row], seq.copy(), token)
    tok64 = token.astype(np.float64)
    if method == "entity_min_marginal":
        sentence = np.where(valid, tok64, np.inf).min(axis=1)
    else:
        sentence = tok64.sum(axis=1) / lengths
    if len(row) == 0:
        return BatchConfidences(np.zeros(0), sentence, token)
    n = end - start  # (N,) chars per span
    first = np.cumsum(n) - n  # (N,) offset of each span's first char in the flat list
    offset = np.arange(int(n.sum())) - np.repeat(first, n)  # (M,) char index within its span
    flat_pos = np.repeat(row * t_len + start, n) + offset  # (M,) index into (B * T)
    span_tag = np.repeat(2 * typ + 1, n) + (offset > 0)  # (M,) B- at the first char, I- after
    if int(span_tag.max()) >= k:
        raise ValueError(f"a span type needs tag id {int(span_tag.max())}, the marginals have {k} tags")
    probs = marginals.reshape(b * t_len, k)[flat_pos, span_tag].astype(np.float64)  # (M,)
    if method == "entity_min_marginal":
        entity = np.minimum.reduceat(probs, first)
    else:
        entity = np.add.reduceat(probs, first) / n
    return BatchConfidences(entity, sentence, token)
