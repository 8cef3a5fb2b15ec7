"""The GPU paths for real: pseudo-labeling sentences/s and training steps/s of the tagger with a
bert-base-chinese-shaped char BERT (12 x 768, 21,128 tokens, random weights built here), float32
against bf16.

Needs torch, transformers and pytorch-crf only: nothing it imports pulls in Ray, MLflow or gensim
(``tests/test_bench_gpu.py`` runs it with those blocked). What it measures is the code the jobs
run: a BERT checkpoint directory written like a bert-base-chinese download (``BertForMaskedLM``
``save_pretrained`` files + a BERT ``vocab.txt``) and loaded by ``BertFeaturizer.load``; pseudo-
labeling through ``Predictor.predict_sentences`` (what every Ray Data actor calls, ``cluster.batch_size``
rows per call); training through ``cemr.training.train_tagger`` (frozen BERT, feature cache off so
BERT runs every step, and fine-tuned BERT with its own learning-rate groups).

    python benchmarks/bench_gpu.py                         # cuda, the bert-base shape
    python benchmarks/bench_gpu.py --checkpoint DIR        # your own local BERT directory
    python benchmarks/bench_gpu.py --device cpu --tiny     # a smoke run anywhere (seconds)

Precision: ``fp32`` everything float32; ``bf16``: ``model.bert.autocast=bf16`` for prediction and
``train.amp=true train.amp_dtype=bfloat16`` for training (CPU autocast bf16 works too). Memory:
the peak of ``torch.cuda.max_memory_allocated`` per phase on a GPU; on the CPU the process's peak
RSS so far (it only grows). The last line of stdout is one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cemr.config import TrainConfig  # noqa: E402
from cemr.corpus.sentences import Sentence  # noqa: E402
from cemr.features.bert import BertFeaturizer, quiet_transformers  # noqa: E402
from cemr.features.chartokenizer import SPECIALS, VOCAB_FILE  # noqa: E402
from cemr.predictor import Predictor  # noqa: E402
from cemr.tagger import BiLMBNERTagger, make_collator  # noqa: E402
from cemr.tags import LabelSet  # noqa: E402
from cemr.batching import batches_per_epoch  # noqa: E402
from cemr.training import resolve_device, train_tagger  # noqa: E402
from cemr.vocab import CharVocab  # noqa: E402

BERT_BASE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072, "vocab_size": 21128, "max_position": 512}
TINY = {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128, "vocab_size": 21128, "max_position": 512}
TYPES = ("疾病和诊断", "症状和体征", "检查和检验", "治疗", "药物", "身体部位")
PUNCTUATION = "，。、；：？！“”‘’（）《》【】—…·％"


# ----------------------------------------------------------------------------------------------
# A bert-base-chinese-shaped checkpoint (random weights)
# ----------------------------------------------------------------------------------------------


def bert_base_vocab(size: int = 21128, chars: str = "") -> list[str]:
    """A vocab in bert-base-chinese's layout, ``size`` tokens: ``[PAD]``, ``[unused1..99]``,
    ``[UNK] [CLS] [SEP] [MASK]``, then ``chars`` (first, deduplicated), the CJK ideographs
    U+4E00..U+9FA5, ASCII and Chinese punctuation as far as they fit, then ``[unusedN]``
    placeholders up to ``size``."""
    head = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert set(SPECIALS) <= set(head)
    if size < len(head) + 1:
        raise ValueError(f"a vocab of {size} tokens cannot hold the {len(head)} special/unused tokens and a char")
    seen = set(head)
    pool = [*chars, *map(chr, range(0x4E00, 0x9FA6)), *map(chr, range(0x21, 0x7F)), *PUNCTUATION]
    body = []
    for c in pool:
        if len(head) + len(body) >= size:
            break
        if c not in seen and not c.isspace():
            seen.add(c)
            body.append(c)
    tokens = head + body
    n = 100
    while len(tokens) < size:
        tokens.append(f"[unused{n}]")
        n += 1
    return tokens


def write_bert_checkpoint(directory: str | Path, layers: int = 12, hidden: int = 768, heads: int = 12,
                          intermediate: int = 3072, vocab_size: int = 21128, max_position: int = 512,
                          chars: str = "", seed: int = 0) -> Path:
    """A local checkpoint directory laid out like a bert-base-chinese download: ``BertForMaskedLM``
    ``save_pretrained`` files (``bert.``-prefixed weights, MLM head) with random seeded weights of
    the given shape (the defaults: bert-base's) and a ``vocab.txt`` (:func:`bert_base_vocab`)."""
    from transformers import BertConfig, BertForMaskedLM

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tokens = bert_base_vocab(vocab_size, chars)
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate, max_position_embeddings=max_position, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    with quiet_transformers():
        model.save_pretrained(d)
    (d / VOCAB_FILE).write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return d


# ----------------------------------------------------------------------------------------------
# Data and model
# ----------------------------------------------------------------------------------------------


def sentences(n: int, seed: int = 0, max_len: int = 128) -> list[Sentence]:
    """``n`` labeled sentences of the demo corpus (cut at ``max_len`` chars; gold spans kept)."""
    from cemr.corpus.sentences import split_document
    from cemr.demo import generate_demo

    out: list[Sentence] = []
    docs = max(8, n // 3)
    while len(out) < n:
        corpus = generate_demo(docs, 0, seed)
        out = [s for d in corpus.labeled for s in split_document(d, max_len) if s.text]
        docs *= 2
    return out[:n]


def build_tagger(bert: BertFeaturizer, vocab: CharVocab, labels: LabelSet) -> BiLMBNERTagger:
    """The tagger of the default config (char_dim 100, gru_hidden 128, 4 heads) over ``bert``, no
    BiLM or dictionary, no feature cache (BERT runs on every batch); seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return BiLMBNERTagger(len(vocab), labels.num_tags, labels.allowed_transitions(), labels.allowed_start(),
                              char_dim=100, gru_hidden=128, attention_heads=4, dropout=0.3, bert=bert,
                              feature_cache_mb=0.0)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# Phases
# ----------------------------------------------------------------------------------------------


def bench_predict(tagger, vocab, labels, texts, device, batch_size: int, autocast: str) -> dict:
    """``Predictor.predict_sentences`` over ``texts`` (one warm-up call on a slice first)."""
    tagger.bert.autocast = autocast
    predictor = Predictor(tagger, vocab, labels, device=device, batch_size=batch_size)
    predictor.predict_sentences(texts[:batch_size])
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    preds = predictor.predict_sentences(texts)
    sync(device)
    seconds = time.perf_counter() - t0
    chars = sum(len(t) for t in texts)
    return {"sentences_per_s": len(texts) / seconds, "chars_per_s": chars / seconds, "ms_per_sentence":
            1000 * seconds / len(texts), "seconds": seconds, "peak_memory_mb": peak_memory_mb(device),
            "entities": sum(len(p) for p in preds), "batch_size": batch_size}


def bench_train(tagger, vocab, labels, train, device, steps: int, batch_size: int, precision: str,
                fine_tune: bool) -> dict:
    """``train_tagger`` for ``steps`` batches (no dev), after a 1-step warm-up run."""
    bert = tagger.bert
    bert.autocast = "off"
    bert.frozen = not fine_tune
    bert.requires_grad_(fine_tune)
    bert.train(fine_tune)
    collate = make_collator(tagger, vocab, labels)
    amp = precision == "bf16"
    cfg = TrainConfig(epochs=1, batch_size=batch_size, patience=0, device=str(device), amp=amp,
                      amp_dtype="bfloat16", bert_warmup=0.0)
    quiet = lambda _m: None  # noqa: E731
    train_tagger(tagger, train[:batch_size], [], dataclasses.replace(cfg, max_train_sentences=batch_size), device,
                 collate=collate, labels=labels, log=quiet)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    result = train_tagger(tagger, train[: steps * batch_size], [], cfg, device, collate=collate, labels=labels, log=quiet)
    sync(device)
    seconds = time.perf_counter() - t0
    h = result.history[-1]
    n_steps = batches_per_epoch(h["train_sentences"], batch_size)
    return {"steps_per_s": n_steps / h["train_seconds"], "s_per_step": h["train_seconds"] / n_steps,
            "sentences_per_s": h["train_sentences"] / h["train_seconds"], "train_chars_per_s": h["train_chars_per_s"],
            "steps": n_steps, "batch_size": batch_size, "seconds": seconds, "loss": h["train_loss"],
            "peak_memory_mb": peak_memory_mb(device), "trainable_params": sum(
                p.numel() for p in tagger.parameters() if p.requires_grad)}


def bf16_closeness(tagger, texts, device) -> dict:
    """BERT features and Viterbi tags with autocast bf16 against float32 on the same texts."""
    bert = tagger.bert
    bert.frozen = True
    bert.requires_grad_(False)
    tagger.eval()
    with torch.inference_mode():
        bert.autocast = "off"
        ref = bert(texts).float()
        bert.autocast = "bf16"
        low = bert(texts).float()
    bert.autocast = "off"
    mask = torch.zeros(ref.shape[:2], dtype=torch.bool, device=ref.device)
    for i, t in enumerate(texts):
        mask[i, : len(t)] = True
    diff = (ref - low).abs()[mask]
    rel = diff.norm() / ref[mask].norm()
    return {"feature_max_abs_diff": float(diff.max()), "feature_rel_l2_diff": float(rel),
            "feature_scale": float(ref[mask].abs().mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    ap.add_argument("--tiny", action="store_true", help="a 2 x 64 BERT and a few sentences (smoke run)")
    ap.add_argument("--checkpoint", help="a local BERT directory to use instead of the random bert-base-shaped one")
    ap.add_argument("--sentences", type=int, help="sentences to pseudo-label (default 4096; tiny 48)")
    ap.add_argument("--predict-batch", type=int, help="rows per predictor batch (cluster.batch_size; default 256, tiny 16)")
    ap.add_argument("--steps", type=int, help="training steps per measurement (default 20; tiny 2)")
    ap.add_argument("--train-batch", type=int, help="sentences per training step (train.batch_size; default 32, tiny 4)")
    ap.add_argument("--max-len", type=int, default=128, help="sentence length cut (data.max_sentence_len; default 128)")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16 (default both)")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    shape = TINY if args.tiny else BERT_BASE
    n_pred = args.sentences or (48 if args.tiny else 4096)
    pred_batch = args.predict_batch or (16 if args.tiny else 256)
    steps = args.steps or (2 if args.tiny else 20)
    train_batch = args.train_batch or (4 if args.tiny else 32)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    bad = [p for p in precisions if p not in ("fp32", "bf16")]
    if bad:
        ap.error(f"--precisions: unknown {', '.join(bad)} (fp32, bf16)")

    sents = sentences(max(n_pred, steps * train_batch), max_len=args.max_len)
    texts = [s.text for s in sents[:n_pred]]
    vocab = CharVocab.build(s.text for s in sents)
    labels = LabelSet.from_types(sorted(TYPES))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cemr_bench_gpu_") as tmp:
        if args.checkpoint:
            ckpt = Path(args.checkpoint)
        else:
            ckpt = write_bert_checkpoint(Path(tmp) / "bert", **shape, chars="".join(vocab.itos[2:]))
        build_s = time.perf_counter() - started
        t0 = time.perf_counter()
        bert = BertFeaturizer.load(ckpt, device=device, freeze=True)
        load_s = time.perf_counter() - t0
    tagger = build_tagger(bert, vocab, labels).to(device)
    cfg = bert.model.config
    out: dict = {
        "bench": "bench_gpu", "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "bert": {"layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "heads": cfg.num_attention_heads,
                 "intermediate": cfg.intermediate_size, "vocab_size": cfg.vocab_size,
                 "params": sum(p.numel() for p in bert.parameters()), "checkpoint": args.checkpoint or "random"},
        "checkpoint_build_s": build_s, "checkpoint_load_s": load_s,
        "sentences": len(texts), "mean_chars": sum(map(len, texts)) / len(texts),
        "predict": {}, "train": {},
    }
    for p in precisions:
        out["predict"][p] = bench_predict(tagger, vocab, labels, texts, device, pred_batch, "bf16" if p == "bf16" else "off")
        print(f"predict {p}: {out['predict'][p]['sentences_per_s']:.1f} sentences/s", file=sys.stderr, flush=True)
    for fine_tune in (False, True):
        for p in precisions:
            key = f"{'finetune' if fine_tune else 'frozen'}_{p}"
            out["train"][key] = bench_train(tagger, vocab, labels, sents, device, steps, train_batch, p, fine_tune)
            print(f"train {key}: {out['train'][key]['steps_per_s']:.3f} steps/s", file=sys.stderr, flush=True)
    out["bf16_vs_fp32"] = bf16_closeness(tagger, texts[: min(len(texts), 32)], device)
    out["seconds"] = time.perf_counter() - started
    print(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
