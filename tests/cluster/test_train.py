"""cluster.train: epoch bookkeeping, checkpoints, training rows (pure), and Ray Train rounds on a
tiny prepared run (1 and 2 CPU workers, a resumed round, a worker killed mid-epoch)."""
from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

import fakes
import pytest
import torch

from cemr.corpus.document import Span
from cemr.corpus.sentences import Sentence
from cemr.corpus.shards import UNSURE_FIELD, ShardWriter, iter_sentences, sentence_schema, sentences_to_table
from cemr.batching import length_batches
from cluster.train import (
    EpochBook,
    TrainRoundError,
    add_weight_column,
    check_weights,
    has_unsure_column,
    pick_best,
    read_checkpoint,
    read_train_state,
    report_metrics,
    rows_from_tables,
    step_metrics,
    train_loop_per_worker,
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


def _train_state(epoch=1, batch=0, **kw):
    from cemr.training import TrainState

    fields = dict(epoch=epoch, batch=batch, step=7, model={"w": torch.zeros(1)}, optimizer={"state": {}, "param_groups": []},
                  scaler={}, rng={"cpu": torch.get_rng_state()}, batch_rng=torch.Generator().manual_seed(1).get_state(),
                  epoch_sums={"loss": 1.5, "sentences": 3, "chars": 9, "seconds": 0.1}, best_dev_f1=0.25,
                  best_epoch=1, bad_epochs=0, best_model={"w": torch.ones(1)}, history=[{"epoch": 1, "dev_f1": 0.25}],
                  world_size=2, train_sentences=10)
    return TrainState(**{**fields, **kw})


def test_every_rank_reads_back_the_training_state_with_its_own_rng(tmp_path):
    book = _epochs(EpochBook(total_epochs=3, patience=1, has_dev=True), [0.25])
    state = _train_state(batch=2)
    rngs = [{"cpu": torch.manual_seed(r).get_state()} for r in range(2)]  # each worker's dropout stream
    weights = {"w": torch.full((1,), 3.0)}
    write_checkpoint(tmp_path / "ck", weights, book, state, rngs)
    loaded, book2 = read_checkpoint(tmp_path / "ck")
    for rank in range(2):
        got = read_train_state(tmp_path / "ck", loaded, book2, rank, 2)
        assert torch.equal(got.rng["cpu"], rngs[rank]["cpu"]) and torch.equal(got.model["w"], weights["w"])
        assert (got.epoch, got.batch, got.step, got.epoch_sums) == (1, 2, 7, state.epoch_sums)
        assert torch.equal(got.batch_rng, state.batch_rng) and torch.equal(got.best_model["w"], torch.ones(1))
    with pytest.raises(TrainRoundError, match="saved by 2 worker.*this round has 1"):
        read_train_state(tmp_path / "ck", loaded, book2, 0, 1)
    with pytest.raises(TrainRoundError, match="training state after epoch 1 but epochs.json after epoch 2"):
        read_train_state(tmp_path / "ck", loaded, _epochs(book2, [0.3]), 0, 2)
    write_checkpoint(tmp_path / "old", weights, book)  # a checkpoint of the epoch-level kind
    with pytest.raises(TrainRoundError, match="train_state.pt: missing .*older cemr.*ray_train"):
        read_train_state(tmp_path / "old", weights, book, 0, 1)


def test_a_mid_epoch_checkpoint_is_never_the_rounds_model():
    mid = step_metrics(_train_state(epoch=1, batch=3))
    assert mid["dev_f1"] < 0 and mid["epoch_in_progress"] == 2.0 and "epoch" not in mid
    cands = [("e1", {"epoch": 1, "dev_f1": 0.0}), ("mid", {**mid, "dev_f1": 0.9})]
    assert pick_best(cands, best_epoch=None)[0] == "e1"
    with pytest.raises(TrainRoundError, match="no checkpoint"):
        pick_best([("mid", mid)], 1)


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


# a worker killed mid-epoch: the worker function wrapped (workers import this module: tests/cluster
# is on their PYTHONPATH) so that, on the first attempt only, the last rank dies at its second
# mid-epoch checkpoint of epoch 2, before that checkpoint is written: the restarted round resumes
# from the first one and redoes the steps after it


def _killing_loop(config):
    import ray.train

    import cemr.training

    real = cemr.training.train_tagger
    marker = Path(config["run_dir"]) / f"killed_{config['round']}"

    def train_tagger(*args, rank=0, world_size=1, resume=None, on_checkpoint=None, **kw):
        if resume is not None:  # the restarted attempt: where it picked up
            (marker.parent / f"{marker.name}.resumed_{rank}").write_text(
                json.dumps([resume.epoch, resume.batch, resume.step]), encoding="utf-8")
        mid_epoch_2 = []

        def hook(state):
            if state.epoch == 1 and state.batch > 0:
                mid_epoch_2.append(state.step)
                if len(mid_epoch_2) == 2 and rank == world_size - 1 and not marker.exists():
                    ray.train.get_all_reported_checkpoints()  # the first one registered (reports are async)
                    marker.write_text(str(state.step), encoding="utf-8")
                    os._exit(1)  # as a worker lost with its node
            on_checkpoint(state)

        return real(*args, rank=rank, world_size=world_size, resume=resume, on_checkpoint=hook, **kw)

    cemr.training.train_tagger = train_tagger
    return train_loop_per_worker(config)


def _last_epoch_weights(result):
    """The weights of the round's last epoch end (the model directory holds the best epoch's)."""
    for ck in Path(result.ray_train_path).glob("checkpoint_*"):
        if not ck.is_dir():  # checkpoint_manager_snapshot.json
            continue
        state, book = read_checkpoint(ck)
        if book.epoch == book.total_epochs:  # mid-epoch checkpoints of epoch 2 have book.epoch 1
            return state
    raise AssertionError(f"no checkpoint of the last epoch under {result.ray_train_path}")


@pytest.mark.slow
@pytest.mark.ray
def test_a_worker_killed_mid_epoch_resumes_to_the_uninterrupted_rounds_weights(ray_local, prepared, monkeypatch):
    """Two DDP workers, 2 epochs of 5 steps each (22 sentences, batches of 2), a mid-epoch checkpoint
    every 3 steps (steps 3, 6, 9); rank 1 dies at step 9, mid-epoch 2, and the round resumes at step 6.
    The resumed round (Adam, both ranks' dropout RNGs, the batch order and position restored)
    ends with exactly (torch.equal) the weights and losses of a round never interrupted."""
    import cluster.train
    from cluster.train import train_round

    cfg, layout, comps = prepared
    cfg = dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, num_workers=2, max_failures=1),
                              train=dataclasses.replace(cfg.train, epochs=2, patience=0, batch_size=2))
    train = [str(layout.split("train"))]
    whole = train_round(cfg, layout, train, 21, components=comps, log=lambda _m: None)  # no mid-epoch checkpoints
    monkeypatch.setattr(cluster.train, "train_loop_per_worker", _killing_loop)
    killed = train_round(cfg, layout, train, 22, components=comps, log=lambda _m: None, checkpoint_every=3)
    died_at = int((layout.root / "killed_22").read_text())
    resumed = [json.loads((layout.root / f"killed_22.resumed_{r}").read_text()) for r in range(2)]
    assert resumed[0] == resumed[1] == [1, resumed[0][1], died_at - 3] and resumed[0][1] > 0  # mid-epoch 2
    assert killed.resumed_from_epoch == 1
    same = ("epoch", "train_loss", "train_sentences", "dev_f1", "lr")
    assert [{k: h[k] for k in same} for h in killed.history] == [{k: h[k] for k in same} for h in whole.history]
    a, b = _last_epoch_weights(whole), _last_epoch_weights(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_worker_logs_go_to_stderr_so_the_jobs_stdout_stays_json(capsys):
    from cluster.train import worker_log

    worker_log("[round_001] ", 0)("epoch 1/2: loss 0.5")
    worker_log("[round_001] ", 1)("a line of another rank")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "[round_001] epoch 1/2: loss 0.5\n"
