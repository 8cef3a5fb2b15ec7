"""CRF partition function, marginals and confidences against brute-force enumeration."""
import itertools
import math

import pytest
import torch
from torchcrf import CRF

from cemr.confidence import (
    check_mask,
    crf_log_partition,
    crf_marginals,
    entity_confidences,
    normalize_method,
    sentence_confidence,
    sequence_log_prob,
)
from cemr.corpus.document import Span
from cemr.tags import LabelSet


def _random_case(b, t, k, seed, lengths):
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(b, t, k, generator=g, dtype=torch.float64)
    start = torch.randn(k, generator=g, dtype=torch.float64)
    end = torch.randn(k, generator=g, dtype=torch.float64)
    trans = torch.randn(k, k, generator=g, dtype=torch.float64)
    mask = torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]
    return em, mask, start, end, trans


def _path_score(em_row, path, start, end, trans):
    s = start[path[0]] + em_row[0, path[0]]
    for i in range(1, len(path)):
        s = s + trans[path[i - 1], path[i]] + em_row[i, path[i]]
    return s + end[path[-1]]


def _brute_force(em_row, n, start, end, trans):
    """log Z and marginals (n, K) of one sequence of length n by enumerating K**n paths."""
    k = em_row.shape[1]
    paths = list(itertools.product(range(k), repeat=n))
    scores = torch.stack([_path_score(em_row, p, start, end, trans) for p in paths])
    log_z = torch.logsumexp(scores, 0)
    probs = torch.exp(scores - log_z)
    marg = torch.zeros(n, k, dtype=em_row.dtype)
    for p, pr in zip(paths, probs):
        for i, tag in enumerate(p):
            marg[i, tag] += pr
    return log_z, marg, paths, scores


@pytest.mark.parametrize("k,lengths,seed", [(3, [5, 3, 1], 0), (4, [4, 4], 1), (5, [3, 2, 1], 2), (4, [5, 1, 2], 3)])
def test_partition_and_marginals_match_brute_force(k, lengths, seed):
    t = max(lengths)
    em, mask, start, end, trans = _random_case(len(lengths), t, k, seed, lengths)
    log_z = crf_log_partition(em, mask, start, end, trans)
    marg = crf_marginals(em, mask, start, end, trans)
    assert marg.shape == (len(lengths), t, k)
    for b, n in enumerate(lengths):
        bz, bm, _, _ = _brute_force(em[b], n, start, end, trans)
        assert torch.allclose(log_z[b], bz, atol=1e-9)
        assert torch.allclose(marg[b, :n], bm, atol=1e-9)
        assert torch.all(marg[b, n:] == 0)  # masked positions ignored
    valid = marg.sum(-1)[mask]
    assert torch.allclose(valid, torch.ones_like(valid), atol=1e-9)


def test_masked_positions_do_not_change_the_result():
    em, mask, start, end, trans = _random_case(2, 5, 4, 7, [3, 5])
    other = em.clone()
    other[0, 3:] = 1000.0 * torch.randn(2, 4, dtype=torch.float64)  # junk in the padding
    assert torch.allclose(crf_marginals(em, mask, start, end, trans), crf_marginals(other, mask, start, end, trans))
    assert torch.allclose(crf_log_partition(em, mask, start, end, trans), crf_log_partition(other, mask, start, end, trans))


def test_sequence_log_prob_matches_brute_force_and_pytorch_crf():
    k, lengths = 4, [5, 2, 4]
    em, mask, start, end, trans = _random_case(3, 5, k, 11, lengths)
    crf = CRF(k, batch_first=True).double()
    with torch.no_grad():
        crf.start_transitions.copy_(start)
        crf.end_transitions.copy_(end)
        crf.transitions.copy_(trans)
    g = torch.Generator().manual_seed(5)
    tags = torch.randint(0, k, (3, 5), generator=g)
    got = sequence_log_prob(em, tags, mask, crf).detach()  # the CRF module in place of the tensors
    assert torch.allclose(got, crf(em, tags, mask, reduction="none").detach(), atol=1e-9)
    for b, n in enumerate(lengths):
        bz, _, paths, scores = _brute_force(em[b], n, start, end, trans)
        idx = paths.index(tuple(tags[b, :n].tolist()))
        assert math.isclose(float(got[b]), float(scores[idx] - bz), abs_tol=1e-9)
    # probabilities of all paths of one sequence sum to 1
    n = lengths[1]
    total = 0.0
    for p in itertools.product(range(k), repeat=n):
        tg = torch.zeros(1, 5, dtype=torch.long)
        tg[0, :n] = torch.tensor(p)
        total += math.exp(float(sequence_log_prob(em[1:2], tg, mask[1:2], start, end, trans)))
    assert math.isclose(total, 1.0, abs_tol=1e-9)


def test_float32_and_gradients():
    em, mask, start, end, trans = _random_case(2, 4, 3, 3, [4, 2])
    em32 = em.float().requires_grad_(True)
    log_z = crf_log_partition(em32, mask, start.float(), end.float(), trans.float())
    assert log_z.dtype == torch.float32
    log_z.sum().backward()
    # d log Z / d emissions = marginals
    marg = crf_marginals(em, mask, start, end, trans)
    assert torch.allclose(em32.grad.double(), marg, atol=1e-5)


def test_float32_probabilities_stay_in_0_1_on_confident_long_sentences():
    # a trained tagger's emissions are large and peaked; float32 exp(alpha + beta - log Z) then
    # lands a few 1e-5 above 1 unless clamped, and such a "probability" was refused downstream
    g = torch.Generator().manual_seed(5)
    b, t, k = 16, 120, 13
    em = (torch.randn(b, t, k, generator=g) * 25).float()
    start, end, trans = (torch.randn(k, generator=g) * 5).float(), (torch.randn(k, generator=g) * 5).float(), \
        (torch.randn(k, k, generator=g) * 5).float()
    mask = torch.ones(b, t, dtype=torch.bool)
    marg = crf_marginals(em, mask, start, end, trans)
    assert float(marg.max()) <= 1.0 and float(marg.min()) >= 0.0
    assert torch.allclose(marg.double().sum(-1), torch.ones(b, t, dtype=torch.float64), atol=1e-3)
    tags = marg.argmax(-1)
    logp = sequence_log_prob(em, tags, mask, start, end, trans)
    assert float(logp.max()) <= 0.0


def test_bad_masks_are_refused():
    em, mask, start, end, trans = _random_case(2, 4, 3, 0, [4, 2])
    with pytest.raises(ValueError, match="first timestep"):
        crf_marginals(em, torch.tensor([[False, True, True, True], [True] * 4]), start, end, trans)
    with pytest.raises(ValueError, match="prefix"):
        check_mask(torch.tensor([[True, False, True, True], [True] * 4]), (2, 4))
    with pytest.raises(TypeError, match="bool"):
        check_mask(mask.long(), (2, 4))
    with pytest.raises(ValueError, match="does not match"):
        check_mask(mask[:, :3], (2, 4))


def test_entity_and_sentence_confidences():
    labels = LabelSet.from_types(["X", "Y"])  # O, B-X, I-X, B-Y, I-Y
    marg = torch.tensor(
        [
            [0.1, 0.8, 0.0, 0.1, 0.0],  # B-X 0.8
            [0.2, 0.0, 0.6, 0.0, 0.2],  # I-X 0.6
            [0.9, 0.05, 0.0, 0.05, 0.0],  # O 0.9
            [0.3, 0.0, 0.0, 0.7, 0.0],  # B-Y 0.7
            [0.0, 0.0, 0.0, 0.0, 0.0],  # padding
        ]
    )
    spans = [Span(0, 2, "X"), Span(3, 4, "Y")]
    assert entity_confidences(marg, spans, labels) == pytest.approx([0.6, 0.7])
    assert entity_confidences(marg, spans, labels, "mean_marginal") == pytest.approx([0.7, 0.7])
    assert entity_confidences(marg, spans, labels, "sequence_prob", sequence_prob=0.25) == [0.25, 0.25]
    tags = labels.to_ids(["B-X", "I-X", "O", "B-Y"])
    assert sentence_confidence(marg, tags) == pytest.approx(0.6)
    assert sentence_confidence(marg, tags, "entity_mean_marginal") == pytest.approx((0.8 + 0.6 + 0.9 + 0.7) / 4)
    assert sentence_confidence(marg, tags, "sequence_prob", sequence_prob=0.3) == 0.3
    with pytest.raises(ValueError, match="sequence_prob"):
        entity_confidences(marg, spans, labels, "sequence_prob")
    with pytest.raises(ValueError, match="unknown tag"):
        entity_confidences(marg, [Span(0, 1, "Z")], labels)
    with pytest.raises(ValueError, match="past the sentence"):
        entity_confidences(marg, [Span(3, 6, "Y")], labels)


def test_min_marginal_bounds_the_exact_entity_probability():
    """P(the entity's tags are all right) <= min marginal, checked by enumeration."""
    labels = LabelSet.from_types(["X"])  # O, B-X, I-X
    em, mask, start, end, trans = _random_case(1, 4, 3, 21, [4])
    marg = crf_marginals(em, mask, start, end, trans)[0]
    _, _, paths, scores = _brute_force(em[0], 4, start, end, trans)
    probs = torch.softmax(scores, 0)
    span = Span(1, 3, "X")
    exact = sum(float(p) for path, p in zip(paths, probs) if path[1:3] == (1, 2))
    (conf,) = entity_confidences(marg, [span], labels)
    assert exact <= conf + 1e-12
    assert exact >= 1 - ((1 - marg[1, 1]) + (1 - marg[2, 2])) - 1e-12


def test_method_names():
    assert normalize_method("min_marginal") == "entity_min_marginal"
    assert normalize_method("sequence_prob") == "sequence_prob"
    with pytest.raises(ValueError, match="unknown confidence method"):
        normalize_method("max")


# --- partial labels -------------------------------------------------------------------------------


def test_partial_nll_matches_brute_force_over_the_agreeing_paths():
    from cemr.confidence import crf_partial_nll

    k, lengths = 3, [5, 4, 2]
    em, mask, start, end, trans = _random_case(3, 5, k, 21, lengths)
    g = torch.Generator().manual_seed(5)
    tags = torch.randint(0, k, (3, 5), generator=g)
    observed = torch.rand(3, 5, generator=g) < 0.5
    observed[0, :] = True  # fully observed row
    observed[2, :] = False  # nothing observed
    nll = crf_partial_nll(em, tags, observed, mask, start, end, trans)
    for b, n in enumerate(lengths):
        log_z, _, paths, scores = _brute_force(em[b], n, start, end, trans)
        agree = [s for p, s in zip(paths, scores)
                 if all(p[i] == int(tags[b, i]) for i in range(n) if bool(observed[b, i]))]
        expected = log_z - torch.logsumexp(torch.stack(agree), 0)
        assert torch.allclose(nll[b], expected, atol=1e-6), (b, nll[b], expected)
    assert float(nll[2]) == pytest.approx(0.0, abs=1e-9)


def test_partial_nll_with_every_tag_observed_is_the_pytorch_crf_nll():
    from cemr.confidence import crf_partial_nll

    k, lengths = 5, [6, 3, 1]
    em, mask, _, _, _ = _random_case(3, 6, k, 4, lengths)
    crf = CRF(k, batch_first=True).double()
    tags = torch.randint(0, k, (3, 6), generator=torch.Generator().manual_seed(1))
    nll = crf_partial_nll(em, tags, mask.clone(), mask, crf)
    assert torch.allclose(nll, -crf(em, tags, mask, reduction="none"), atol=1e-9)
    # padding is never "observed": the same result when observed is all True
    nll_all = crf_partial_nll(em, tags, torch.ones_like(mask), mask, crf)
    assert torch.allclose(nll, nll_all, atol=1e-9)


def test_partial_nll_gradients_are_finite_and_zero_where_nothing_is_observed():
    from cemr.confidence import crf_partial_nll

    em, mask, start, end, trans = _random_case(2, 4, 3, 9, [4, 4])
    em = em.float().requires_grad_(True)
    tags = torch.zeros(2, 4, dtype=torch.long)
    observed = torch.tensor([[True, False, False, True], [False] * 4])
    nll = crf_partial_nll(em, tags, observed, mask, start.float(), end.float(), trans.float())
    nll.sum().backward()
    assert torch.isfinite(em.grad).all()
    assert em.grad[1].abs().max() < 1e-5  # an all-unknown row teaches nothing
    assert em.grad[0].abs().max() > 1e-3
    with pytest.raises(TypeError, match="bool"):
        crf_partial_nll(em, tags, observed.long(), mask, start, end, trans)


# ----------------------------------------------------------------------------------------------
# crf_infer / crf_viterbi (the predictor's one-pass inference) and batch_confidences
# ----------------------------------------------------------------------------------------------

from cemr.confidence import batch_confidences, crf_infer, crf_viterbi  # noqa: E402
from cemr.tags import bio_id_spans, bio_to_spans  # noqa: E402


def _crf_module(k, seed, forbid=()):
    torch.manual_seed(seed)
    crf = CRF(k, batch_first=True)
    with torch.no_grad():
        crf.transitions.normal_(0.0, 2.0)
        crf.start_transitions.normal_()
        crf.end_transitions.normal_()
        for i, j in forbid:
            crf.transitions[i, j] = -1e4
    return crf


@pytest.mark.parametrize("k,lengths,seed", [(3, [4, 2, 1, 3], 0), (4, [3, 3], 1), (2, [1], 2), (3, [1, 4, 4, 2], 3)])
def test_crf_infer_matches_brute_force(k, lengths, seed):
    t = max(lengths)
    em, mask, start, end, trans = _random_case(len(lengths), t, k, seed, lengths)
    out = crf_infer(em.float(), mask, start.float(), end.float(), trans.float())
    em32 = em.float().double()  # crf_infer sees float32 emissions
    for b, n in enumerate(lengths):
        log_z, marg, paths, scores = _brute_force(em32[b], n, start.float().double(), end.float().double(),
                                                  trans.float().double())
        best = int(scores.argmax())
        assert out.tags[b, :n].tolist() == list(paths[best])
        assert (out.tags[b, n:] == 0).all()
        assert torch.allclose(out.marginals[b, :n].double(), marg, atol=1e-5)
        assert (out.marginals[b, n:] == 0).all()
        assert out.log_prob[b].item() == pytest.approx(float(scores[best] - log_z), abs=1e-5)
    assert out.lengths.tolist() == lengths


@pytest.mark.parametrize("b,t,scale,seed", [(7, 9, 3.0, 0), (40, 130, 12.0, 1), (33, 60, 25.0, 2)])
def test_crf_infer_equals_pytorch_crf_decode_and_the_float64_references(b, t, scale, seed):
    # scale 12-25 with 130 steps: log Z in the thousands, where float32 log-space sums lose digits
    k = 7
    crf = _crf_module(k, seed, forbid=[(0, 2), (3, 2), (1, 4)])
    g = torch.Generator().manual_seed(seed)
    em = torch.randn(b, t, k, generator=g) * scale
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[b // 2] = t
    mask = torch.arange(t)[None, :] < lengths[:, None]
    out = crf_infer(em, mask, crf)
    ref_tags = crf.decode(em, mask)
    assert [out.tags[i, : int(n)].tolist() for i, n in enumerate(lengths)] == ref_tags
    assert crf_viterbi(em, mask, crf).tolist() == out.tags.tolist()
    ref_marg = crf_marginals(em.double(), mask, crf)
    assert out.marginals.dtype == torch.float32
    assert (out.marginals.double() - ref_marg).abs().max().item() < 1e-5
    ref_logp = sequence_log_prob(em.double(), out.tags, mask, crf)
    assert (out.log_prob.double() - ref_logp).abs().max().item() < 1e-4
    assert (out.log_prob <= 0).all()


def test_crf_infer_survives_emissions_that_underflow_the_scaled_pass(monkeypatch):
    # gaps of thousands of nats: probability-space steps underflow, the float64 fallback answers
    import cemr.confidence as conf

    calls = []
    monkeypatch.setattr(conf, "crf_marginals", lambda *a, **kw: calls.append(1) or crf_marginals(*a, **kw))
    k = 3
    crf = _crf_module(k, 4, forbid=[(1, 2), (2, 1)])
    em = torch.zeros(2, 6, k)
    em[:, ::2, 1] = 3000.0  # alternate strongly between tags that may not follow each other
    em[:, 1::2, 2] = 3000.0
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    out = crf_infer(em, mask, crf)
    assert calls, "the underflow guard did not fall back to the float64 reference"
    assert torch.isfinite(out.marginals).all() and torch.isfinite(out.log_prob).all()
    assert [out.tags[i, : int(n)].tolist() for i, n in enumerate(mask.sum(1))] == crf.decode(em, mask)
    ref = crf_marginals(em.double(), mask, crf)
    assert (out.marginals.double() - ref).abs().max().item() < 1e-5


def test_batch_confidences_equal_the_per_sentence_functions():
    labels = LabelSet(["A", "B"])
    g = torch.Generator().manual_seed(5)
    b, t, k = 30, 8, labels.num_tags
    marg = torch.rand(b, t, k, generator=g).softmax(-1).numpy()
    tags = torch.randint(0, k, (b, t), generator=g).numpy()  # any ids: lenient spans included
    lengths = torch.randint(1, t + 1, (b,), generator=g).numpy()
    seq_prob = torch.rand(b, generator=g).double().numpy()
    spans = bio_id_spans(tags, lengths)
    for method in ("entity_min_marginal", "entity_mean_marginal", "sequence_prob"):
        got = batch_confidences(marg, tags, lengths, spans, method, seq_prob)
        ent = iter(got.entity.tolist())
        for r in range(b):
            n = int(lengths[r])
            row_spans = bio_to_spans(labels.from_ids(tags[r, :n]))
            want = entity_confidences(marg[r], row_spans, labels, method, sequence_prob=seq_prob[r])
            assert [next(ent) for _ in row_spans] == pytest.approx(want, abs=1e-12)
            sent = sentence_confidence(marg[r], tags[r, :n].tolist(), method, sequence_prob=seq_prob[r])
            assert got.sentence[r] == pytest.approx(sent, abs=1e-12)
            assert got.token[r, :n].tolist() == [float(marg[r, i, tags[r, i]]) for i in range(n)]
            assert (got.token[r, n:] == 0).all()
        assert next(ent, None) is None
