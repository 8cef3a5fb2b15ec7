"""cluster.train: epoch bookkeeping, checkpoints, training rows (pure), and Ray Train rounds on a
tiny prepared run (1 and 2 CPU workers, a resumed round)."""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import fakes
import pytest
import torch

from cemr.corpus.document import Span
from cemr.corpus.sentences import Sentence
from cemr.corpus.shards import UNSURE_FIELD, ShardWriter, iter_sentences, sentence_schema, sentences_to_table
from cemr.training import length_batches
from cluster.train import (
    EpochBook,
    TrainRoundError,
    add_weight_column,
    check_weights,
    has_unsure_column,
    pick_best,
    read_checkpoint,
    report_metrics,
    rows_from_tables,
    training_columns,
    write_checkpoint,
)

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "ray_configs" / "experiments" / "demo.yaml"

# the demo experiment shrunk to seconds: no BiLM/BERT, 16-dim everything, 1 epoch
TINY = [*fakes.TINY_RUN, "train.epochs=1"]


# ----------------------------------------------------------------------------------------------
# Pure parts
# ----------------------------------------------------------------------------------------------


def _epochs(book: EpochBook, f1s):
    for f1 in f1s:
        book.update({"epoch": book.epoch + 1, "dev_f1": f1})
    return book


def test_epoch_book_follows_the_trainers_early_stopping_rule():
    book = _epochs(EpochBook(total_epochs=10, patience=2, has_dev=True), [0.2, 0.5, 0.5, 0.4])
    assert (book.best_epoch, book.best_dev_f1, book.bad_epochs) == (2, 0.5, 2)  # a tie is no gain
    assert book.finished and "early stop" in book.stop_reason
    book = _epochs(EpochBook(total_epochs=3, patience=0, has_dev=True), [0.3, 0.1, 0.2])
    assert book.finished and book.best_epoch == 1 and book.stop_reason == "reached 3 epoch(s)"
    no_dev = _epochs(EpochBook(total_epochs=3, patience=1, has_dev=False), [0.0, 0.0])
    assert no_dev.best_epoch == 2 and not no_dev.finished  # without dev the last epoch is the best


def test_epoch_book_refuses_a_gap_and_survives_a_round_trip():
    book = _epochs(EpochBook(total_epochs=4, patience=2, has_dev=True), [0.1, 0.3])
    with pytest.raises(ValueError, match="epoch 4 reported after epoch 2"):
        book.update({"epoch": 4, "dev_f1": 0.2})
    again = EpochBook.from_dict(json.loads(json.dumps(book.to_dict())))
    assert again == book
    with pytest.raises(ValueError, match="unknown epoch bookkeeping field"):
        EpochBook.from_dict({**book.to_dict(), "lr": 0.1})


def test_refresh_applies_the_resumed_jobs_epochs_and_patience():
    book = _epochs(EpochBook(total_epochs=2, patience=0, has_dev=True), [0.3, 0.2])
    assert book.finished
    book.refresh(total_epochs=4, patience=0)
    assert not book.finished  # more epochs were asked for: continue
    book.refresh(total_epochs=4, patience=1)
    assert book.finished and "early stop" in book.stop_reason  # epoch 2 did not improve


def test_report_metrics_are_flat_numbers_with_the_score():
    book = _epochs(EpochBook(total_epochs=2, patience=0, has_dev=False), [0.0])
    out = report_metrics({"epoch": 1, "train_loss": 2.5, "dev_per_type_f1": {"a": 1.0}, "note": "x"}, book)
    assert out["dev_f1"] == 0.0 and out["train_loss"] == 2.5 and out["best_epoch"] == 1.0
    assert "dev_per_type_f1" not in out and "note" not in out


def test_checkpoint_round_trip_and_missing_files(tmp_path):
    book = _epochs(EpochBook(total_epochs=3, patience=1, has_dev=True), [0.25])
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(2)}
    write_checkpoint(tmp_path / "ck", state, book)
    loaded, book2 = read_checkpoint(tmp_path / "ck")
    assert torch.equal(loaded["w"], state["w"]) and book2 == book
    (tmp_path / "ck" / "epochs.json").unlink()
    with pytest.raises(TrainRoundError, match="epochs.json: missing"):
        read_checkpoint(tmp_path / "ck")


def test_pick_best_prefers_the_workers_best_epoch():
    cands = [("a", {"epoch": 1, "dev_f1": 0.5}), ("b", {"epoch": 2, "dev_f1": 0.5}), ("c", {"epoch": 3, "dev_f1": 0.4})]
    assert pick_best(cands, best_epoch=1)[0] == "a"
    assert pick_best(cands, best_epoch=7)[0] == "b"  # not kept: highest dev F1, latest on ties
    with pytest.raises(TrainRoundError, match="no checkpoint"):
        pick_best([], 1)


def test_weights_one_per_directory():
    assert check_weights(["a", "b"], None) == [1.0, 1.0]
    with pytest.raises(TrainRoundError, match="2 weights for 1"):
        check_weights(["a"], [1.0, 0.5])
    with pytest.raises(TrainRoundError, match="b: sample weight -1"):
        check_weights(["a", "b"], [1.0, -1])
    with pytest.raises(TrainRoundError, match="no training directory"):
        check_weights([], None)


def test_rows_are_sorted_identically_whatever_the_block_order():
    sents = [Sentence(f"d{i % 3}", i, 0, f"文本{i}", [Span(0, 1, "X")] if i % 2 else []) for i in range(7)]
    t1 = add_weight_column(sentences_to_table(sents[:4], "gold"), 1.0)
    t2 = add_weight_column(sentences_to_table(sents[4:], "pseudo:r1"), 0.5)
    a = rows_from_tables([t1, t2])
    b = rows_from_tables([t2.slice(1), t1, t2.slice(0, 1)])
    assert a == b
    assert [(s.doc_id, s.sent_id) for s in a[0]] == sorted((s.doc_id, s.sent_id) for s in sents)
    assert sorted(a[1]) == [0.5] * 3 + [1.0] * 4
    with pytest.raises(TrainRoundError, match="no 'weight' column"):
        rows_from_tables([sentences_to_table(sents, "gold")])


def test_gold_and_partial_rows_share_one_schema_and_keep_their_unsure_ranges():
    gold = [Sentence("g", 0, 0, "头痛三天", [Span(0, 2, "症状和体征")])]
    partial = [Sentence("p", 0, 0, "咳嗽伴发热", [Span(0, 2, "症状和体征")], [(3, 5)])]
    t_gold = training_columns(sentences_to_table(gold, "gold"), 1.0, add_unsure=True)
    t_pseudo = training_columns(sentences_to_table(partial, "pseudo:r1", schema=sentence_schema([UNSURE_FIELD])),
                                0.5, add_unsure=False)
    assert t_gold.schema == t_pseudo.schema  # Ray's union needs one schema
    sents, weights = rows_from_tables([t_pseudo, t_gold])
    assert [(s.doc_id, s.unsure) for s in sents] == [("g", []), ("p", [(3, 5)])] and weights == [1.0, 0.5]


def test_equal_row_counts_give_equal_step_counts():
    """Why Ray's equal split would also keep DDP in step: same row count -> same batch count
    (the split is still not used: it drops rows and is not reproducible, see the module doc)."""
    rng = random.Random(0)
    for n in (1, 31, 32, 33, 1600, 1601, 5000):
        counts = set()
        for seed in range(3):
            lengths = [rng.randint(1, 120) for _ in range(n)]
            counts.add(len(length_batches(lengths, 32, torch.Generator().manual_seed(seed))))
        assert len(counts) == 1, (n, counts)


def test_scaling_asks_for_the_configured_gpus(tmp_path):
    """``use_gpu`` is asked for as configured (so an autoscaler sees the demand); only the
    fallback the config allows turns it off, and a CPU-only cluster is an error otherwise."""
    from cemr.config import load_config
    from cemr.pipeline import RunLayout
    from cluster.runtime import GPUUnavailable, worker_resources
    from cluster.train import run_config, scaling_config

    cfg = load_config(DEMO, ["cluster.use_gpu=true", "cluster.num_workers=2", "cluster.cpus_per_worker=3"])
    gpu = scaling_config(cfg)  # as configured, whatever the cluster has now
    assert gpu.num_workers == 2 and gpu.use_gpu and gpu.resources_per_worker["CPU"] == 3.0
    assert scaling_config(cfg, worker_resources(cfg.cluster, {"CPU": 8.0, "GPU": 2.0})).use_gpu
    with pytest.raises(GPUUnavailable, match="asked for 6 CPU, 2 GPU"):
        worker_resources(cfg.cluster, {"CPU": 8.0})
    fallback = dataclasses.replace(cfg.cluster, cpu_fallback=True)
    assert not scaling_config(cfg, worker_resources(fallback, {"CPU": 8.0})).use_gpu
    rc = run_config(cfg, RunLayout.of(tmp_path / "run"), "round_001")
    assert rc.name == "round_001" and rc.storage_path == str((tmp_path / "run" / "ray_train").resolve())
    assert rc.checkpoint_config.num_to_keep == 2 and rc.checkpoint_config.checkpoint_score_attribute == "dev_f1"
    assert rc.failure_config.max_failures == cfg.cluster.max_failures


# ----------------------------------------------------------------------------------------------
# Ray Train
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A tiny run dir with data/, pretrain/ (word2vec only) and components/."""
    from cemr.config import load_config
    from cemr.pipeline import RunLayout, build_components, prepare_data, pretrain_stage

    run_dir = tmp_path_factory.mktemp("train_round") / "run"
    cfg = load_config(DEMO, [*TINY, f"run_dir={run_dir}"])
    layout = RunLayout.of(run_dir)
    prepare_data(cfg, layout, log=lambda _m: None)
    pretrain_stage(cfg, layout, "cpu", log=lambda _m: None)
    comps = build_components(cfg, layout, "cpu", log=lambda _m: None)
    return cfg, layout, comps


def _check_model_dir(result, layout, rnd):
    from cemr.predictor import Predictor

    assert result.model_dir == layout.model_dir(rnd)
    config = json.loads((result.model_dir / "config.json").read_text(encoding="utf-8"))
    assert config["extra"]["round"] == rnd and config["extra"]["best_dev_f1"] == pytest.approx(result.best_dev_f1)
    preds = Predictor.load(result.model_dir, "cpu").predict_sentences(["患者头痛三天，行头颅CT检查。"])
    assert len(preds) == 1
    assert 0.0 <= result.best_dev_f1 <= 1.0
    assert all("dev_f1" in h for h in result.history)


@pytest.mark.slow
@pytest.mark.ray
def test_train_round_two_workers_on_gold_and_weighted_pseudo_labels(ray_local, prepared, tmp_path):
    from cluster.train import train_round

    cfg, layout, comps = prepared
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, num_workers=2))
    # stand-in pseudo-labels: unlabeled sentences tagged with one fake entity each, partial ones
    # (an unsure last char): the gold set has no unsure column, the union must still line up
    pseudo = [dataclasses.replace(s, spans=[Span(0, 1, "症状和体征")], unsure=[(len(s.text) - 1, len(s.text))])
              for s, _ in zip(iter_sentences(layout.split("unlabeled")), range(20)) if len(s.text) > 1]
    with ShardWriter(tmp_path / "pseudo", extra_fields=[UNSURE_FIELD]) as w:
        w.write_all(pseudo, "pseudo:r1")
    assert has_unsure_column(tmp_path / "pseudo") and not has_unsure_column(layout.split("train"))
    gold_rows = sum(1 for _ in iter_sentences(layout.split("train")))
    res = train_round(cfg, layout, [str(layout.split("train")), str(tmp_path / "pseudo")], 1,
                      weights=[1.0, 0.5], components=comps, log=lambda _m: None)
    _check_model_dir(res, layout, 1)
    assert res.train_rows == gold_rows + len(pseudo)
    assert json.loads((res.model_dir / "config.json").read_text(encoding="utf-8"))["extra"]["weights"] == [1.0, 0.5]


@pytest.mark.slow
@pytest.mark.ray
def test_one_worker_round_then_fitted_again_resumes_from_its_checkpoint(ray_local, prepared):
    """One worker on gold; then what a resubmitted job does: the same round name finds the Ray
    Train run's snapshot and continues after the last reported epoch instead of starting over."""
    from cluster.train import train_round

    cfg, layout, comps = prepared
    # a GPU asked for with the fallback allowed, on this CPU-only instance: a CPU round that says so
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, use_gpu=True, cpu_fallback=True,
                                                               gpu_wait_s=0.5))
    first = train_round(cfg, layout, [str(layout.split("train"))], 7, components=comps, log=lambda _m: None)
    _check_model_dir(first, layout, 7)
    assert first.cpu_fallback
    assert json.loads((first.model_dir / "config.json").read_text(encoding="utf-8"))["extra"]["cpu_fallback"]
    assert first.train_rows == sum(1 for _ in iter_sentences(layout.split("train")))
    assert first.resumed_from_epoch == 0 and [h["epoch"] for h in first.history] == [1]
    assert list(Path(first.ray_train_path).glob("checkpoint_*"))
    cfg2 = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=2, patience=0))
    second = train_round(cfg2, layout, [str(layout.split("train"))], 7, components=comps, log=lambda _m: None)
    assert second.resumed_from_epoch == 1
    assert [h["epoch"] for h in second.history] == [1, 2]  # epoch 1 from the checkpoint, epoch 2 trained now
    _check_model_dir(second, layout, 7)


@pytest.mark.ray
def test_train_round_without_the_gpus_it_asks_for_fails_before_training(ray_local, prepared):
    from cluster.runtime import GPUUnavailable
    from cluster.train import train_round

    cfg, layout, comps = prepared
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, use_gpu=True, gpu_wait_s=0.5))
    with pytest.raises(GPUUnavailable, match=r"Ray Train .* asked for .*1 GPU .* has 2 CPU after waiting"
                                             r".*cluster.use_gpu.*cluster.cpu_fallback=true"):
        train_round(cfg, layout, [str(layout.split("train"))], 9, components=comps, log=lambda _m: None)
    assert not layout.model_dir(9).exists() and not (layout.root / "ray_train" / "round_009").exists()


def test_train_round_needs_ray(prepared, monkeypatch):
    import ray

    from cluster.train import train_round

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    cfg, layout, comps = prepared
    with pytest.raises(TrainRoundError, match="Ray is not initialised"):
        train_round(cfg, layout, [str(layout.split("train"))], 0, components=comps)
