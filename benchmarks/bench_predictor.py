"""Predictor throughput before / after issue #15, on one saved model and the same sentences.

    python benchmarks/bench_predictor.py --model RUN/model --data RUN/data/unlabeled
        [--sentences 1000] [--batch-sizes 256,512] [--repeats 5] [--threads 1]
        [--precision bf16,int8,bf16-int8] [--dev RUN/data/documents/dev.jsonl] [--stages] [--profile]

*Before* is the predictor as it was at commit c6365b3, network included (``legacy_predict``
below: the featurizers' and the tagger's old forward passes, ``nn.MultiheadAttention``'s own
path, pytorch-crf's Viterbi, the float64 forward-backward of :func:`cemr.confidence.crf_marginals`
and :func:`sequence_log_prob`, one ``SentencePrediction`` built per row from tag strings); *after*
is ``Predictor.predict_sentences`` (exact, float32). Both tag the first ``--sentences`` sentences
of ``--data`` (shards, read with ``cemr.corpus.shards.iter_sentences``) the way a Ray Data
pseudo-labeling actor does: calls of ``batch_size`` rows in pool order,
``predict_sentences(rows, batch_size)``. Runs alternate (before, after, each ``--precision``,
then the references) ``--repeats`` times in this one process; medians are reported.

References measured in the same run, so the figure means something on another (or a busier)
machine: a bare bidirectional ``nn.GRU(400 -> 128)`` forward over the same (padded) batches, and
a float32 GEMM ``(4096, 400) @ (400, 768)`` (the GRU's input projection), as rows/s. The spans of
before and after are compared sentence by sentence (they must be identical: the exit status says
so) and the largest confidence differences printed. ``--precision`` adds the opt-in reduced
precisions (:func:`cemr.predictor.set_precision`), whose span agreement with before is reported,
not required; ``--dev`` scores after and each precision on labeled documents (entity F1);
``--stages`` prints the after path's seconds per stage. Prints one line per measure and, last,
one JSON object.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import math
import platform
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from cemr.confidence import (  # noqa: E402
    batch_confidences,
    crf_marginals,
    entity_confidences,
    sentence_confidence,
    sequence_log_prob,
)
from cemr.corpus.shards import iter_sentences  # noqa: E402
from cemr.features.bert import BertFeaturizer, autocast_context, plan_windows  # noqa: E402
from cemr.features.bilm import BOS_ID, BiLMFeaturizer, pad_ids, reverse_padded  # noqa: E402
from cemr.predictor import Prediction, Predictor, SentencePrediction  # noqa: E402
from cemr.tagger import _pad  # noqa: E402
from cemr.tags import bio_id_spans, bio_to_spans  # noqa: E402

# ----------------------------------------------------------------------------------------------
# Before: the predictor's hot path as it was (commit c6365b3), on the same loaded model
# ----------------------------------------------------------------------------------------------


def legacy_bilm(f: BiLMFeaturizer, texts) -> torch.Tensor:
    """Old ``BiLMFeaturizer.forward``: both LMs over the padded batch, reversed by gathers."""
    ids, lengths = pad_ids([f.vocab.encode(t) for t in texts])
    ids, lengths = ids.to(f.device), lengths.to(f.device)
    b, t = ids.shape
    bos = torch.full((b, 1), BOS_ID, dtype=torch.long, device=ids.device)
    h_f = f.forward_lm.hidden_states(torch.cat([bos, ids], 1))[:, 1:]  # (B, T, H)
    rev = reverse_padded(ids, lengths)  # (B, T)
    h_b = f.backward_lm.hidden_states(torch.cat([bos, rev], 1))[:, 1:]  # (B, T, H), reversed order
    h_b = reverse_padded(h_b, lengths)  # (B, T, H)
    mask = (torch.arange(t, device=ids.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)  # (B, T, 1)
    return torch.cat([h_f, h_b], dim=-1) * mask  # (B, T, 2H)


def legacy_bert(f: BertFeaturizer, texts) -> torch.Tensor:
    """Old ``BertFeaturizer.forward``: HF ``BertModel`` per group of windows, one copy per window."""
    t = max((len(x) for x in texts), default=0)
    pieces = [(b, s, e, ks, ke) for b, x in enumerate(texts) for (s, e, ks, ke) in plan_windows(len(x), f.window, f.stride)]
    pieces.sort(key=lambda p: p[2] - p[1])
    out = torch.zeros(len(texts), t, f.dim, device=f.device)
    for i in range(0, len(pieces), f.window_batch_size):
        group = pieces[i : i + f.window_batch_size]
        windows = [texts[b][s:e] for b, s, e, _, _ in group]
        w = max(len(x) for x in windows)
        ids, mask = f.tokenizer.batch(windows)  # (G, W+2)
        ids, mask = ids.to(f.device), mask.to(f.device)
        with autocast_context(f.device, f.autocast):
            hidden = f.model(input_ids=ids, attention_mask=mask).last_hidden_state  # (G, W+2, H)
        hidden = hidden[:, 1 : w + 1] * mask[:, 2 : w + 2].unsqueeze(-1).to(hidden.dtype)  # (G, W, H)
        for g, (b, s, _e, ks, ke) in enumerate(group):
            out[b, ks:ke] = hidden[g, ks - s : ke - s].to(out.dtype)
    return out


def legacy_emissions(tagger, batch) -> torch.Tensor:
    """Old ``BiLMBNERTagger.emissions``: the featurizers as above (any other one as it is now),
    the BiGRU packed with ``enforce_sorted=False``, ``nn.MultiheadAttention``'s own path."""
    t = batch.char_ids.shape[1]
    parts = [tagger.char_embedding(batch.char_ids)]  # (B, T, C)
    for module in tagger.featurizers().values():
        if type(module) is BiLMFeaturizer:
            feats = legacy_bilm(module, batch.texts)
        elif type(module) is BertFeaturizer:
            feats = legacy_bert(module, batch.texts)
        else:
            feats = module(batch.texts)
        parts.append(feats.to(tagger.char_embedding.weight.dtype))  # (B, T, D_f)
    if tagger.dictionary is not None:
        parts.append(tagger.dictionary(batch.dict_ids, batch.match_sets))  # (B, T, D_w)
    x = torch.cat(parts, dim=-1)  # (B, T, D_in)
    lengths = batch.mask.sum(dim=1).cpu()  # (B,)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    h, _ = tagger.gru(packed)
    h, _ = pad_packed_sequence(h, batch_first=True, total_length=t)  # (B, T, 2H)
    a, _ = tagger.attention(h, h, h, key_padding_mask=~batch.mask, need_weights=False)  # (B, T, 2H)
    h = tagger.norm(h + a)  # (B, T, 2H)
    return tagger.output(h).float()  # (B, T, K)


def legacy_infer(tagger, batch):
    """Old ``BiLMBNERTagger.infer``: pytorch-crf Viterbi, float64 marginals, path log prob."""
    tagger.constrain_crf()
    em = legacy_emissions(tagger, batch)  # (B, T, K)
    tags = tagger.crf.decode(em, batch.mask)
    marg = crf_marginals(em, batch.mask, tagger.crf)  # (B, T, K)
    padded = _pad(tags, em.shape[1]).to(em.device)  # (B, T)
    logp = sequence_log_prob(em, padded, batch.mask, tagger.crf)  # (B,)
    return tags, marg, logp


def legacy_sentence(p: Predictor, tags, marg, seq_prob) -> SentencePrediction:
    spans = bio_to_spans(p.labels.from_ids(tags))
    confs = entity_confidences(marg, spans, p.labels, p.method, sequence_prob=seq_prob)
    conf = sentence_confidence(marg, tags, p.method, sequence_prob=seq_prob)
    for c in (*confs, conf):
        if not math.isfinite(c):
            raise FloatingPointError(f"non-finite confidence {c}")
    token_conf = marg[np.arange(len(tags)), np.asarray(tags, dtype=np.int64)].astype(float).tolist()
    return SentencePrediction([Prediction(s, c) for s, c in zip(spans, confs)], conf, seq_prob, token_conf)


def legacy_predict(p: Predictor, texts, batch_size: int) -> list[SentencePrediction]:
    """Old ``Predictor.predict_sentences``."""
    out = [SentencePrediction() for _ in texts]
    order = sorted((i for i, t in enumerate(texts) if t), key=lambda i: -len(texts[i]))
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            batch = p.collate.from_texts([texts[i] for i in idx]).to(p.device)
            tags, marg, logp = legacy_infer(p.tagger, batch)
            marg = marg.cpu().numpy()
            seq_prob = logp.exp().cpu().tolist()
            for row, i in enumerate(idx):
                out[i] = legacy_sentence(p, tags[row], marg[row], seq_prob[row])
    return out


# ----------------------------------------------------------------------------------------------
# Measures
# ----------------------------------------------------------------------------------------------


def actor_calls(fn, texts: list[str], batch_size: int) -> list[SentencePrediction]:
    """``fn(rows, batch_size)`` over consecutive calls of ``batch_size`` rows (a Ray Data actor)."""
    out = []
    for b in range(0, len(texts), batch_size):
        out.extend(fn(texts[b : b + batch_size], batch_size))
    return out


def timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def gru_reference(texts: list[str], batch_size: int) -> float:
    """Seconds of a bare BiGRU(400 -> 128) forward over the texts' padded, length-sorted batches."""
    torch.manual_seed(0)
    gru = nn.GRU(400, 128, batch_first=True, bidirectional=True).eval()
    lens = sorted((len(t) for t in texts), reverse=True)
    xs = [torch.randn(len(lens[b : b + batch_size]), lens[b], 400) for b in range(0, len(lens), batch_size)]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x in xs:
            gru(x)
    return time.perf_counter() - t0


def gemm_reference(reps: int = 20) -> float:
    """Rows/s of a float32 GEMM (4096, 400) @ (400, 768)."""
    a, w = torch.randn(4096, 400), torch.randn(400, 768)
    a @ w
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ w
    return 4096 * reps / (time.perf_counter() - t0)


def compare(before: list[SentencePrediction], after: list[SentencePrediction]) -> dict:
    """Sentences whose spans differ, spans kept / found, and the largest confidence differences
    (over the sentences whose spans agree)."""
    diff = [i for i, (a, b) in enumerate(zip(before, after)) if a.spans != b.spans]
    kept = sum(len(set(a.spans) & set(b.spans)) for a, b in zip(before, after))
    ent = sent = seq = tok = 0.0
    for a, b in zip(before, after):
        if a.spans != b.spans:
            continue
        ent = max([ent] + [abs(x.confidence - y.confidence) for x, y in zip(a, b)])
        sent = max(sent, abs(a.confidence - b.confidence))
        seq = max(seq, abs(a.sequence_prob - b.sequence_prob))
        tok = max([tok] + [abs(x - y) for x, y in zip(a.token_confidence, b.token_confidence)])
    return {"sentences_with_different_spans": len(diff), "first_different": diff[:5],
            "entities": sum(len(a) for a in before), "entities_kept": kept,
            "entities_after": sum(len(b) for b in after),
            "max_abs_diff_entity_confidence": ent, "max_abs_diff_sentence_confidence": sent,
            "max_abs_diff_sequence_prob": seq, "max_abs_diff_token_confidence": tok}


def stage_seconds(p: Predictor, texts: list[str], batch_size: int) -> dict[str, float]:
    """Wall-clock seconds per stage of the *after* path over actor calls (one pass): collation
    (with the lexicon match), each featurizer, char + dictionary embeddings, the BiGRU, the
    self-attention, LayerNorm + output, the CRF pass, post-processing (spans, confidences)."""
    from cemr.confidence import crf_infer
    from cemr.batching import length_buckets

    tg, out = p.tagger, {}

    def tick(key, t0):
        t1 = time.perf_counter()
        out[key] = out.get(key, 0.0) + t1 - t0
        return t1

    with torch.inference_mode():
        for b in range(0, len(texts), batch_size):
            call = texts[b : b + batch_size]
            for idx in length_buckets([len(x) for x in call], batch_size):
                t0 = time.perf_counter()
                batch = p.collate.from_texts([call[i] for i in idx])
                t0 = tick("collate", t0)
                t = batch.char_ids.shape[1]
                parts = [tg.char_embedding(batch.char_ids)]
                for name, module in tg.featurizers().items():
                    t0 = tick("embeddings", t0)
                    parts.append(tg._featurize(name, module, batch.texts, t))
                    t0 = tick(name, t0)
                if tg.dictionary is not None:
                    parts.append(tg.dictionary(batch.dict_ids, batch.match_sets))
                x = torch.cat(parts, dim=-1)
                t0 = tick("embeddings", t0)
                lengths = batch.mask.sum(dim=1)
                h, _ = tg.gru(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=True))
                h, _ = pad_packed_sequence(h, batch_first=True, total_length=t)
                t0 = tick("bigru", t0)
                a = tg.self_attention(h, batch.mask)
                t0 = tick("attention", t0)
                em = tg.output(tg.norm(h + a)).float()
                t0 = tick("norm+output", t0)
                crf = crf_infer(em, batch.mask, tg.crf)
                t0 = tick("crf", t0)
                marg, tags, lens = crf.marginals.numpy(), crf.tags.numpy(), crf.lengths.numpy()
                spans = bio_id_spans(tags, lens)
                batch_confidences(marg, tags, lens, spans, p.method, crf.log_prob.double().exp().numpy())
                tick("postprocess", t0)
    return out


def profile(fn, top: int = 25) -> str:
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a saved model directory (cemr train ... -> RUN/model)")
    ap.add_argument("--data", required=True, help="sentence shards, e.g. RUN/data/unlabeled")
    ap.add_argument("--sentences", type=int, default=1000, help="the first N sentences of --data (default 1000)")
    ap.add_argument("--batch-sizes", default="256,512", help="comma list: rows per actor call (default 256,512)")
    ap.add_argument("--repeats", type=int, default=5, help="alternated runs per path; medians (default 5)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1, as an actor)")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of each path (one pass)")
    ap.add_argument("--stages", action="store_true",
                    help="also print the after path's wall-clock seconds per stage (featurizers, BiGRU, ...)")
    ap.add_argument("--precision", default="",
                    help="comma list of opt-in precisions (bf16, int8: cemr.predictor.set_precision) also timed "
                         "in the same run; their span agreement with before is reported, not required")
    ap.add_argument("--dev", default=None,
                    help="labeled documents (e.g. RUN/data/documents/dev.jsonl): entity F1 of after and of "
                         "each --precision on them")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor.load(args.model, "cpu")
    precisions = [x for x in args.precision.split(",") if x]
    variants = {x: Predictor.load(args.model, "cpu", precision=x) for x in precisions}
    texts = []
    for s in iter_sentences(args.data):
        texts.append(s.text)
        if len(texts) >= args.sentences:
            break
    chars = sum(len(t) for t in texts)
    print(f"{len(texts)} sentences, {chars} chars (longest {max(map(len, texts))}), threads {args.threads}, "
          f"model {args.model}")
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    new = predictor.predict_sentences
    old = lambda rows, bs: legacy_predict(predictor, rows, bs)  # noqa: E731
    paths = [("before", old), ("after", new)] + [(x, v.predict_sentences) for x, v in variants.items()]
    for _, fn in paths:
        actor_calls(fn, texts[:64], 64)
    results = {}
    for bs in sizes:
        times = {"before": [], "after": [], "gru": [], "gemm_rows_per_s": [], **{x: [] for x in variants}}
        outs = {}
        for _ in range(args.repeats):
            for name, fn in paths:
                s, outs[name] = timed(lambda: actor_calls(fn, texts, bs))
                times[name].append(s)
            times["gru"].append(gru_reference(texts, bs))
            times["gemm_rows_per_s"].append(gemm_reference())
        med = {k: statistics.median(v) for k, v in times.items()}
        cmp = compare(outs["before"], outs["after"])
        row = {
            "chars_per_s_before": round(chars / med["before"]),
            "chars_per_s_after": round(chars / med["after"]),
            "speedup": round(med["before"] / med["after"], 2),
            "gru_chars_per_s": round(chars / med["gru"]),
            "gemm_rows_per_s": round(med["gemm_rows_per_s"]),
            "before_vs_gru": round(med["gru"] / med["before"], 4),
            "after_vs_gru": round(med["gru"] / med["after"], 4),
            "before_vs_gemm": round(chars / med["before"] / med["gemm_rows_per_s"], 5),
            "after_vs_gemm": round(chars / med["after"] / med["gemm_rows_per_s"], 5),
            **cmp,
        }
        results[str(bs)] = row
        print(f"batch {bs}: before {row['chars_per_s_before']} chars/s, after {row['chars_per_s_after']} chars/s "
              f"(x{row['speedup']}); bare BiGRU {row['gru_chars_per_s']} chars/s (before {row['before_vs_gru']}, "
              f"after {row['after_vs_gru']} of it); GEMM {row['gemm_rows_per_s']} rows/s; "
              f"spans differ in {cmp['sentences_with_different_spans']} sentences; max |diff| entity conf "
              f"{cmp['max_abs_diff_entity_confidence']:.2e}, sentence {cmp['max_abs_diff_sentence_confidence']:.2e}, "
              f"sequence prob {cmp['max_abs_diff_sequence_prob']:.2e}, token {cmp['max_abs_diff_token_confidence']:.2e}")
        for x in variants:
            vc = compare(outs["before"], outs[x])
            row[x] = {"chars_per_s": round(chars / med[x]), "speedup": round(med["before"] / med[x], 2),
                      "vs_gru": round(med["gru"] / med[x], 4),
                      "vs_gemm": round(chars / med[x] / med["gemm_rows_per_s"], 5), **vc}
            print(f"  precision {x}: {row[x]['chars_per_s']} chars/s (x{row[x]['speedup']}, {row[x]['vs_gru']} of "
                  f"the BiGRU); spans differ in {vc['sentences_with_different_spans']} sentences, "
                  f"{vc['entities_kept']}/{vc['entities']} spans kept ({vc['entities_after']} found); max |diff| "
                  f"entity conf {vc['max_abs_diff_entity_confidence']:.2e}")
        if args.stages:
            st = stage_seconds(predictor, texts, bs)
            total = sum(st.values())
            row["stage_seconds"] = {k: round(v, 4) for k, v in st.items()}
            print(f"  after, seconds per stage (one pass, {total:.3f} s): " + ", ".join(
                f"{k} {v:.3f} ({100 * v / total:.0f}%)" for k, v in sorted(st.items(), key=lambda kv: -kv[1])))
        if args.profile:
            for name, fn in paths:
                print(f"--- profile {name}, batch {bs}\n" + profile(lambda: actor_calls(fn, texts, bs)))
    dev_f1 = {}
    if args.dev:
        from cemr.inference import evaluate_documents, read_labeled

        docs, _ = read_labeled(args.dev, "auto", max_rejected=0.0, strict=False)
        for name, p in (("fp32", predictor), *variants.items()):
            dev_f1[name] = round(evaluate_documents(p, docs, sizes[0]).micro.f1, 5)
        print(f"entity F1 on {args.dev} ({len(docs)} documents): " + ", ".join(f"{k} {v}" for k, v in dev_f1.items()))
    print(json.dumps({
        "benchmark": "bench_predictor",
        "model": str(args.model),
        "sentences": len(texts),
        "chars": chars,
        "threads": args.threads,
        "repeats": args.repeats,
        "batch_sizes": results,
        "dev_f1": dev_f1,
        "python": platform.python_version(),
        "torch": torch.__version__,
    }, ensure_ascii=False))
    if any(r["sentences_with_different_spans"] for r in results.values()):
        sys.exit("spans differ between before and after")


if __name__ == "__main__":
    main()
