"""Throughput of the pretraining stages and the featurizers on real unlabeled EMR text.

Reads CCKS2017 unlabeled sections from ``$CEMR_DATA_DIR`` (default ``../shared/data``) and, with
the default (paper-sized BiLM, small BERT) config sections, measures: word2vec training, one BiLM
epoch, one BERT masked-LM epoch, and featurizer inference (chars/s). Prints one line per figure;
the last line is one JSON object.

    python benchmarks/bench_pretrain.py --texts 200 --threads 1
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from cemr.config import BertConfig, BiLMConfig, Word2VecConfig, data_dir
from cemr.features.bert import BertFeaturizer, pretrain_bert_mlm
from cemr.features.bilm import train_bilm
from cemr.features.word2vec import train_char_word2vec, word2vec_args

ROOT = Path(__file__).resolve().parents[1]


def load_texts(limit: int) -> list[str]:
    root = Path(data_dir())
    if not root.is_absolute():
        root = ROOT / root
    folder = root / "ccks2017" / "unlabeled" / "unlabeled-2" / "病史特点"
    files = sorted(folder.iterdir())[:limit]
    texts = [f.read_text(encoding="utf-8").strip() for f in files]
    return [t for t in texts if t]


def timed_featurize(feat: torch.nn.Module, texts: list[str], batch_size: int) -> float:
    """chars per second of ``feat`` over ``texts`` (sorted by length, batches of ``batch_size``)."""
    ordered = sorted(texts, key=len)
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ordered), batch_size):
            feat(ordered[i:i + batch_size])
    if feat.device.type == "cuda":
        torch.cuda.synchronize()
    return sum(map(len, texts)) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=200, help="number of EMR sections to read")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32, help="featurizer inference batch size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    texts = load_texts(args.texts)
    n_chars = sum(map(len, texts))
    print(f"corpus: {len(texts)} texts, {n_chars} chars, mean {n_chars / len(texts):.0f} chars/text")
    out: dict[str, float] = {"texts": len(texts), "chars": n_chars, "threads": args.threads}

    w2v_cfg = Word2VecConfig()
    start = time.perf_counter()
    vectors = train_char_word2vec(texts, **word2vec_args(w2v_cfg), seed=0, workers=1)
    out["word2vec_seconds"] = time.perf_counter() - start
    print(f"word2vec dim {vectors.dim}, {w2v_cfg.epochs} epochs: {out['word2vec_seconds']:.2f} s")

    bilm_cfg = BiLMConfig(epochs=1)
    bilm, m = train_bilm(texts, vectors, bilm_cfg, device=args.device, seed=0)
    out["bilm_train_chars_per_s"] = n_chars / m["seconds"]
    out["bilm_heldout_ppl_f"] = m["heldout_ppl_f"]
    out["bilm_heldout_ppl_b"] = m["heldout_ppl_b"]
    print(f"bilm 1 epoch (emb {bilm_cfg.embedding_dim}, hidden {bilm_cfg.hidden_dim}, both directions, with "
          f"perplexity passes): {m['seconds']:.1f} s, {out['bilm_train_chars_per_s']:.0f} chars/s; "
          f"held-out ppl f {m['heldout_ppl_f']:.1f} (from {m['heldout_ppl_f_initial']:.1f}) "
          f"b {m['heldout_ppl_b']:.1f} (from {m['heldout_ppl_b_initial']:.1f})")
    out["bilm_featurize_chars_per_s"] = timed_featurize(bilm, texts, args.batch)
    print(f"bilm featurizer: {out['bilm_featurize_chars_per_s']:.0f} chars/s (batch {args.batch}, whole texts)")

    bert_cfg = BertConfig(pretrain_epochs=1)
    with tempfile.TemporaryDirectory() as tmp:
        m = pretrain_bert_mlm(texts, bert_cfg, tmp, device=args.device, seed=0)
        out["bert_mlm_chars_per_s"] = n_chars / m["seconds"]
        out["bert_mlm_loss_before"] = m["mlm_loss_before"]
        out["bert_mlm_loss_after"] = m["mlm_loss_after"]
        print(f"bert mlm 1 epoch (hidden {bert_cfg.hidden_size}, {bert_cfg.layers} layers, from scratch): "
              f"{m['seconds']:.1f} s, {out['bert_mlm_chars_per_s']:.0f} chars/s; held-out loss "
              f"{m['mlm_loss_before']:.3f} -> {m['mlm_loss_after']:.3f}")
        bert = BertFeaturizer.load(tmp, device=args.device)
        out["bert_featurize_chars_per_s"] = timed_featurize(bert, texts, args.batch)
        print(f"bert featurizer: {out['bert_featurize_chars_per_s']:.0f} chars/s (batch {args.batch}, "
              f"window {bert.window} stride {bert.stride})")
        long_text = "".join(texts)[:4000]
        start = time.perf_counter()
        with torch.inference_mode():
            vecs = bert([long_text])
        out["bert_windowed_4000_chars_seconds"] = time.perf_counter() - start
        print(f"bert featurizer on one {len(long_text)}-char text (windowed): {vecs.shape[1]} vectors in "
              f"{out['bert_windowed_4000_chars_seconds']:.2f} s")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
