"""The path users run: their own Chinese BERT (``model.bert.checkpoint=DIR``, laid out like a
bert-base-chinese download) through prepare -> train -> pseudo-label -> evaluate, frozen and
fine-tuned; a record longer than the model's 512 positions windowed, not truncated; fine-tuning on
two Ray Train workers; and one step at the real 12 x 768 x 21,128 size.

The checkpoint is random (``benchmarks/bench_gpu.py`` builds it: ``BertForMaskedLM`` files and a
21,128-token BERT ``vocab.txt``); the fast tests keep the real config shape with 2 layers.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import resource
import time
from pathlib import Path

import pytest
import torch

from cemr.config import load_config

ROOT = Path(__file__).resolve().parents[1]
FAST_LAYERS = 2


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """bert-base-chinese's config with 2 layers: 768 wide, 12 heads, 3072 feed-forward, 512
    positions, 21,128 tokens."""
    d = tmp_path_factory.mktemp("bert_base_shape") / "bert"
    return _bench().write_bert_checkpoint(d, layers=FAST_LAYERS)


def _overrides(run_dir: Path, checkpoint: Path, *extra: str) -> list[str]:
    return [
        f"run_dir={run_dir}", "data.demo_documents=24", "data.demo_unlabeled=40", "data.dev_fraction=0.2",
        "data.test_fraction=0.2", "data.max_sentence_len=128", "model.char_dim=16", "model.gru_hidden=16",
        "model.attention_heads=2", "model.word2vec.dim=16", "model.word2vec.epochs=1", "model.bilm.enabled=false",
        "model.dictionary.dim=8", "lexicon.folds=2", f"model.bert.checkpoint={checkpoint}",
        "model.bert.pretrain_epochs=0", "model.bert.window=510", "model.bert.stride=255", "train.epochs=1",
        "train.batch_size=4", "train.max_train_sentences=8", "train.device=cpu", "train.eval_batch_size=16",
        "cluster.num_cpus=2", "cluster.cpus_per_worker=0.5", *extra,
    ]


def _bert_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The encoder weights of a checkpoint directory, without the ``bert.`` prefix of a
    ``BertForMaskedLM`` file or its MLM head."""
    from safetensors.torch import load_file

    state = load_file(str(directory / "model.safetensors"))
    return {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith("cls.")}


@pytest.mark.parametrize("mode", ["frozen", "fine-tuned"])
def test_a_bert_base_shaped_checkpoint_through_train_pseudo_label_and_evaluate(checkpoint, tmp_path, mode):
    from cemr.corpus.shards import iter_sentences
    from cemr.inference import evaluate_model_dir
    from cemr.pipeline import RunLayout, train_from_config
    from cemr.predictor import Predictor
    from cemr.prepare import DOCUMENTS_DIR

    extra = (["model.bert.freeze=true", "model.bert.autocast=bf16"] if mode == "frozen" else
             ["model.bert.freeze=false", "train.bert_lr=1e-4", "train.bert_layer_decay=0.9", "train.bert_warmup=0.5"])
    cfg = load_config(None, _overrides(tmp_path / "run", checkpoint, *extra))
    summary = train_from_config(cfg, cfg.run_dir, log=lambda _m: None)
    model_dir = Path(summary["model"])
    assert summary["pretrain"]["bert.continued_pretraining"] == 0.0  # the checkpoint used as it is
    assert {"dev", "test"} <= set(summary)

    # the model directory carries the user's BERT: its shape, its vocab, the configured autocast
    bert_cfg = json.loads((model_dir / "bert" / "config.json").read_text(encoding="utf-8"))
    assert (bert_cfg["hidden_size"], bert_cfg["num_hidden_layers"], bert_cfg["vocab_size"]) == (768, FAST_LAYERS, 21128)
    assert len((model_dir / "bert" / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 21128
    featurizer = json.loads((model_dir / "bert" / "featurizer.json").read_text(encoding="utf-8"))
    assert featurizer["autocast"] == ("bf16" if mode == "frozen" else "off") and featurizer["window"] == 510
    saved, original = _bert_weights(model_dir / "bert"), _bert_weights(checkpoint)
    assert saved.keys() == original.keys()
    same = all(torch.equal(saved[k], original[k]) for k in original)
    assert same == (mode == "frozen")  # fine-tuning changed BERT, and the model directory kept it

    # pseudo-labeling (what every Ray Data actor calls), a record longer than 512 chars included
    predictor = Predictor.load(model_dir, "cpu")
    assert predictor.tagger.bert.autocast == featurizer["autocast"]
    pool = [s.text for s, _ in zip(iter_sentences(RunLayout.of(cfg.run_dir).split("unlabeled")), range(12))]
    long_record = "".join(pool * 20)[:1100]
    preds = predictor.predict_sentences(pool + [long_record], batch_size=8)
    assert len(preds) == len(pool) + 1
    assert all(len(p.token_confidence) == len(t) for p, t in zip(preds, pool + [long_record]))
    assert all(0 <= e.span.start < e.span.end <= len(long_record) for e in preds[-1])
    with torch.inference_mode():
        h = predictor.tagger.bert([long_record])  # (1, 1100, 768)
    assert h.shape == (1, 1100, 768) and bool((h[0].abs().sum(-1) > 0).all())  # every char has a vector

    # evaluate (``cemr evaluate``) on the test documents prepare wrote
    test_docs = RunLayout.of(cfg.run_dir).data / DOCUMENTS_DIR / "test.jsonl"
    result = evaluate_model_dir(model_dir, "jsonl", test_docs, device="cpu", log=lambda _m: None)
    assert result.data["kept"] == result.data["read"] > 0
    assert 0.0 <= result.report.micro.f1 <= 1.0


@pytest.mark.slow
@pytest.mark.ray
def test_fine_tuning_bert_on_two_ray_train_workers(checkpoint, tmp_path):
    """DDP over two Ray Train workers with a trainable BERT inside the tagger: every worker
    fine-tunes its replica in step; the round's model carries the fine-tuned BERT."""
    import ray

    from cemr.pipeline import RunLayout, build_components, prepare_data, pretrain_stage
    from cluster.train import train_round

    cfg = load_config(None, _overrides(tmp_path / "run", checkpoint, "model.bert.freeze=false",
                                       "train.max_train_sentences=16", "cluster.num_workers=2"))
    layout = RunLayout.of(cfg.run_dir)
    prepare_data(cfg, layout, log=lambda _m: None)
    pretrain_stage(cfg, layout, "cpu", log=lambda _m: None)
    comps = build_components(cfg, layout, "cpu", log=lambda _m: None)
    if ray.is_initialized():
        ray.shutdown()
    pythonpath = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    try:
        res = train_round(cfg, layout, [str(layout.split("train"))], 1, components=comps, log=lambda _m: None)
    finally:
        ray.shutdown()
    assert res.history and all("bert_lr" in h for h in res.history)
    saved, original = _bert_weights(res.model_dir / "bert"), _bert_weights(checkpoint)
    assert not all(torch.equal(saved[k], original[k]) for k in original)


@pytest.mark.slow
def test_the_real_bert_base_size_fine_tunes_and_predicts(tmp_path, capsys):
    """12 layers x 768 x 21,128 tokens (110M parameters): two fine-tuning steps on four short
    sentences, pseudo-labeling them, and the model directory round trip. Prints its time and
    memory (``pytest -s``)."""
    from cemr.config import TrainConfig
    from cemr.features.bert import BertFeaturizer
    from cemr.modeldir import save_model
    from cemr.predictor import Predictor
    from cemr.tags import LabelSet
    from cemr.training import train_tagger
    from cemr.vocab import CharVocab

    bench = _bench()
    sents = bench.sentences(8, max_len=40)
    vocab, labels = CharVocab.build(s.text for s in sents), LabelSet.from_types(sorted(bench.TYPES))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    ckpt = bench.write_bert_checkpoint(tmp_path / "bert")
    t_build = time.perf_counter() - t0
    bert = BertFeaturizer.load(ckpt, freeze=False)
    cfg = bert.model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size, len(bert.tokenizer)) == (12, 768, 21128, 21128)
    tagger = bench.build_tagger(bert, vocab, labels)
    collate = bench.make_collator(tagger, vocab, labels)
    t1 = time.perf_counter()
    result = train_tagger(tagger, sents[:8], [], TrainConfig(epochs=1, batch_size=4, device="cpu", bert_warmup=0.0),
                          "cpu", collate=collate, labels=labels, log=lambda _m: None)
    t_train = time.perf_counter() - t1
    assert result.history[0]["train_sentences"] == 8 and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    t2 = time.perf_counter()
    texts = [s.text for s in sents]
    preds = Predictor(tagger, vocab, labels, "cpu").predict_sentences(texts)
    t_pred = time.perf_counter() - t2
    save_model(tmp_path / "model", tagger, vocab=vocab, labels=labels)
    again = Predictor.load(tmp_path / "model", "cpu").predict_sentences(texts)
    assert [p.spans for p in again] == [p.spans for p in preds]
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with capsys.disabled():
        print(f"\nbert-base size on CPU ({torch.get_num_threads()} threads): checkpoint built in {t_build:.1f} s; "
              f"2 fine-tuning steps of 4 sentences ({sum(map(len, texts)) / len(texts):.0f} chars) {t_train:.1f} s "
              f"({t_train / 2:.1f} s/step); predict {len(texts)} sentences {t_pred:.2f} s "
              f"({1000 * t_pred / len(texts):.0f} ms/sentence); peak RSS {rss1:.0f} MiB (was {rss0:.0f} MiB before)")
    assert dataclasses.is_dataclass(result)
