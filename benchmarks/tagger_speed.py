"""Speed of the tagger on real CCKS2017 sentences: collation, training steps, inference, predictor.

Reads ``$CEMR_DATA_DIR/ccks2017/train``, splits records into sentences of at most ``--max-len``
chars, builds the ``ccks2017`` preset lexicon with out-of-fold training mentions, and a tagger with
the default model config (char 100, BiGRU 128, 4 heads, dictionary 50; BERT and BiLM off: they
need pretraining). Then times, on ``--device``:

- collation (char ids + BMM dictionary tags + gold tags), sentences/s;
- ``--steps`` training steps of ``--batch-size`` sentences (forward, backward, Adam), chars/s;
- inference over ``--infer`` sentences: Viterbi only (``decode``) vs Viterbi + marginals +
  sequence probability (``infer``), sentences/s, and the overhead of the confidences;
- ``Predictor.predict_sentences`` on the same sentences (confidences included), sentences/s.

Prints one line per measure and, last, one JSON object.

    python benchmarks/tagger_speed.py [--threads 1] [--steps 20] [--infer 1024] [--device auto]
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

from cemr.config import LexiconConfig, ModelConfig, data_dir  # noqa: E402
from cemr.corpus.readers import read_documents  # noqa: E402
from cemr.corpus.sentences import split_document  # noqa: E402
from cemr.lexicon import build_folded_lexicon  # noqa: E402
from cemr.predictor import Predictor  # noqa: E402
from cemr.tagger import build_tagger, make_collator  # noqa: E402
from cemr.tags import LabelSet  # noqa: E402
from cemr.training import length_batches, resolve_device  # noqa: E402
from cemr.vocab import CharVocab  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared 2-core machine more threads contend)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--infer", type=int, default=1024)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
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
    cfg.bert.enabled = cfg.bilm.enabled = False
    tagger = build_tagger(cfg, labels, vocab, dictionary_types=lexicon.types()).to(device)
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
    opt = torch.optim.Adam(tagger.parameters(), lr=2e-3)
    tagger.train()
    warm = collate([sents[i] for i in batches[0]]).to(device)
    tagger(warm).backward()  # warm-up (lazy inits, allocator)
    opt.zero_grad()
    step_chars = 0
    _sync(device)
    t0 = time.perf_counter()
    for idx in batches[1 : args.steps + 1]:
        batch = collate([sents[i] for i in idx]).to(device)
        opt.zero_grad()
        loss = tagger(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tagger.parameters(), 5.0)
        opt.step()
        step_chars += int(batch.mask.sum())
    _sync(device)
    train_s = time.perf_counter() - t0
    steps = min(args.steps, len(batches) - 1)
    print(f"train: {steps} steps, {train_s / steps * 1000:.0f} ms/step, {step_chars / train_s:.0f} chars/s")

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
        "decode_sentences_per_s": round(len(sub) / timings["decode"]),
        "infer_sentences_per_s": round(len(sub) / timings["infer"]),
        "confidence_overhead": round(timings["infer"] / timings["decode"] - 1, 3),
        "predictor_sentences_per_s": round(len(texts) / pred_s),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
