"""Speed of the tagger on real CCKS2017 sentences: collation, training steps, inference, predictor.

Reads ``$CEMR_DATA_DIR/ccks2017/train``, splits records into sentences of at most ``--max-len``
chars, builds the ``ccks2017`` preset lexicon with out-of-fold training mentions, and a tagger with
the default model config (char 100, BiGRU 128, 4 heads, dictionary 50; BERT and BiLM off: they
need pretraining). Then times, on ``--device``:

- collation (char ids + BMM dictionary tags + gold tags), sentences/s;
- ``--steps`` training steps of ``--batch-size`` sentences (forward, backward, Adam), chars/s;
- inference over ``--infer`` sentences: Viterbi only (``decode``) vs Viterbi + marginals +
  sequence probability (``infer``), sentences/s, and the overhead of the confidences;
- the cost split of inference on those batches: the network forward pass (emissions), Viterbi
  on precomputed emissions, CRF marginals on precomputed emissions; Viterbi and marginals are
  also given relative to the forward pass;
- ``Predictor.predict_sentences`` on the same sentences (confidences included), sentences/s.

``--featurizers``: also add a randomly initialised frozen BiLM (128/128) and small BERT (2x128),
as the experiment configs do (speed does not depend on the weights), and time the same training
steps twice: cold (feature cache empty: the featurizers run, like epoch 1) and warm (every text
cached, like epochs 2..N); ``--no-cache`` turns the cache off (both passes then run them).

Prints one line per measure and, last, one JSON object.

    python benchmarks/tagger_speed.py [--threads 1] [--steps 20] [--infer 1024] [--device auto]
        [--featurizers [--no-cache]]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cemr.confidence import crf_marginals  # noqa: E402
from cemr.config import LexiconConfig, ModelConfig, data_dir  # noqa: E402
from cemr.corpus.readers import read_documents  # noqa: E402
from cemr.corpus.sentences import split_document  # noqa: E402
from cemr.lexicon import build_folded_lexicon  # noqa: E402
from cemr.predictor import Predictor  # noqa: E402
from cemr.tagger import build_tagger, make_collator  # noqa: E402
from cemr.tags import LabelSet  # noqa: E402
from cemr.batching import length_batches  # noqa: E402
from cemr.training import resolve_device  # noqa: E402
from cemr.vocab import CharVocab  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_featurizers(cfg: ModelConfig, texts: list[str]) -> dict[str, torch.nn.Module]:
    """Randomly initialised frozen BiLM and BERT of the config's sizes over ``texts``' chars."""
    from cemr.features.bert import BertFeaturizer
    from cemr.features.bilm import BiLMFeaturizer, CharLM
    from cemr.features.bilm import CharVocab as LMVocab
    from cemr.features.chartokenizer import CharTokenizer

    lm_vocab = LMVocab.build(texts)
    b = cfg.bilm
    bilm = BiLMFeaturizer(lm_vocab, CharLM(len(lm_vocab), b.embedding_dim, b.hidden_dim, b.layers),
                          CharLM(len(lm_vocab), b.embedding_dim, b.hidden_dim, b.layers))
    c = cfg.bert
    bert = BertFeaturizer.from_scratch(CharTokenizer.build(texts), c.hidden_size, c.layers, c.heads,
                                       c.intermediate_size, c.max_position, c.window, c.stride, freeze=True)
    bert.eval()
    return {"bilm": bilm, "bert": bert}


@torch.no_grad()
def inference_split(tagger, batches, device: torch.device) -> dict[str, float]:
    """Seconds of the forward pass (emissions), of Viterbi and of the marginals over ``batches``
    (the CRF parts on precomputed emissions), and their ratios to the forward pass."""
    tagger.constrain_crf()
    _sync(device)
    t0 = time.perf_counter()
    ems = [tagger.emissions(b) for b in batches]  # (B, T, K) each
    _sync(device)
    fwd = time.perf_counter() - t0
    t0 = time.perf_counter()
    for em, b in zip(ems, batches):
        tagger.crf.decode(em, b.mask)
    _sync(device)
    vit = time.perf_counter() - t0
    t0 = time.perf_counter()
    for em, b in zip(ems, batches):
        crf_marginals(em, b.mask, tagger.crf)
    _sync(device)
    marg = time.perf_counter() - t0
    return {"forward_s": fwd, "viterbi_s": vit, "marginals_s": marg,
            "viterbi_vs_forward": vit / fwd, "marginals_vs_forward": marg / fwd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared 2-core machine more threads contend)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--infer", type=int, default=1024)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--featurizers", action="store_true", help="add random frozen BiLM + BERT featurizers")
    ap.add_argument("--no-cache", action="store_true", help="feature cache off (with --featurizers)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)

    docs = list(read_documents("ccks2017", Path(data_dir()) / "ccks2017" / "train"))
    sents = [s for d in docs for s in split_document(d, args.max_len)]
    labels = LabelSet.from_types({sp.type for s in sents for sp in s.spans})
    vocab = CharVocab.build(s.text for s in sents)
    lexicon = build_folded_lexicon(LexiconConfig(preset="ccks2017"), docs)
    cfg = ModelConfig()
    cfg.bert.enabled = cfg.bilm.enabled = args.featurizers
    cfg.feature_cache_mb = 0 if args.no_cache else cfg.feature_cache_mb
    feats = random_featurizers(cfg, [s.text for s in sents]) if args.featurizers else {}
    tagger = build_tagger(cfg, labels, vocab, dictionary_types=lexicon.types(), **feats).to(device)
    collate = make_collator(tagger, vocab, labels, lexicon)
    chars = sum(len(s.text) for s in sents)
    print(f"{len(docs)} records, {len(sents)} sentences, {chars} chars, vocab {len(vocab)}, "
          f"{labels.num_tags} tags, lexicon {len(lexicon.full)} terms, device {device}")

    t0 = time.perf_counter()
    for b in range(0, len(sents), args.batch_size):
        collate(sents[b : b + args.batch_size])
    collate_s = time.perf_counter() - t0
    print(f"collate: {len(sents) / collate_s:.0f} sentences/s")

    batches = length_batches([len(s.text) for s in sents], args.batch_size, torch.Generator().manual_seed(0))
    params = [p for p in tagger.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-3)
    tagger.train()
    warm = collate([sents[i] for i in batches[0]]).to(device)
    tagger(warm).backward()  # warm-up (lazy inits, allocator)
    opt.zero_grad()
    steps = min(args.steps, len(batches) - 1)
    step_batches = [collate([sents[i] for i in idx]).to(device) for idx in batches[1 : steps + 1]]
    step_sents = sum(len(b) for b in step_batches)
    step_chars = sum(int(b.mask.sum()) for b in step_batches)

    def train_pass() -> float:
        _sync(device)
        t0 = time.perf_counter()
        for batch in step_batches:
            opt.zero_grad()
            loss = tagger(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
        _sync(device)
        return time.perf_counter() - t0

    train_s = train_pass()
    print(f"train: {steps} steps, {train_s / steps * 1000:.0f} ms/step, {step_chars / train_s:.0f} chars/s, "
          f"{step_sents / train_s:.1f} sentences/s")
    warm_s = None
    if args.featurizers:
        warm_s = train_pass()
        print(f"train again (featurizer outputs {'cached' if not args.no_cache else 'recomputed: cache off'}): "
              f"{warm_s / steps * 1000:.0f} ms/step, {step_chars / warm_s:.0f} chars/s, "
              f"{step_sents / warm_s:.1f} sentences/s, x{train_s / warm_s:.2f} vs the first pass")

    tagger.eval()
    sub = sents[: args.infer]
    order = sorted(range(len(sub)), key=lambda i: -len(sub[i].text))
    pre = [collate([sub[i] for i in order[b : b + args.eval_batch_size]]).to(device)
           for b in range(0, len(order), args.eval_batch_size)]
    timings = {}
    for name, fn in (("decode", tagger.decode), ("infer", tagger.infer)):
        fn(pre[0])
        _sync(device)
        t0 = time.perf_counter()
        for batch in pre:
            fn(batch)
        _sync(device)
        timings[name] = time.perf_counter() - t0
        print(f"{name}: {len(sub) / timings[name]:.0f} sentences/s")
    split = inference_split(tagger, pre, device)
    print(f"inference split: forward {split['forward_s']:.3f}s, Viterbi {split['viterbi_s']:.3f}s "
          f"({split['viterbi_vs_forward']:.2f}x forward), marginals {split['marginals_s']:.3f}s "
          f"({split['marginals_vs_forward']:.2f}x forward)")

    predictor = Predictor(tagger, vocab, labels, lexicon.full, device, batch_size=args.eval_batch_size)
    texts = [s.text for s in sub]
    predictor.predict_sentences(texts[:8])
    t0 = time.perf_counter()
    preds = predictor.predict_sentences(texts)
    pred_s = time.perf_counter() - t0
    print(f"predictor: {len(texts) / pred_s:.0f} sentences/s ({sum(len(p) for p in preds)} entities)")

    print(json.dumps({
        "benchmark": "tagger_speed",
        "device": str(device),
        "threads": args.threads,
        "sentences": len(sents),
        "max_len": args.max_len,
        "collate_sentences_per_s": round(len(sents) / collate_s),
        "train_batch_size": args.batch_size,
        "train_ms_per_step": round(train_s / steps * 1000, 1),
        "train_chars_per_s": round(step_chars / train_s),
        "train_sentences_per_s": round(step_sents / train_s, 1),
        "featurizers": args.featurizers,
        "feature_cache": bool(args.featurizers and not args.no_cache),
        "train_warm_sentences_per_s": round(step_sents / warm_s, 1) if warm_s else None,
        "train_warm_speedup": round(train_s / warm_s, 2) if warm_s else None,
        "infer_forward_s": round(split["forward_s"], 4),
        "viterbi_vs_forward": round(split["viterbi_vs_forward"], 3),
        "marginals_vs_forward": round(split["marginals_vs_forward"], 3),
        "decode_sentences_per_s": round(len(sub) / timings["decode"]),
        "infer_sentences_per_s": round(len(sub) / timings["infer"]),
        "confidence_overhead": round(timings["infer"] / timings["decode"] - 1, 3),
        "predictor_sentences_per_s": round(len(texts) / pred_s),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
