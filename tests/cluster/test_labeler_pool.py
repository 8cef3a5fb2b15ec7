"""cluster/labeler_pool.py: pseudo-labeling actors started once and reused across rounds (issue #15)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import fakes
from cemr.config import ClusterConfig, SelfTrainConfig, load_config
from cemr.corpus.shards import write_shards
from cluster.labeler_pool import LabelerPool, LabelerPoolError, LabelSpec, Unit, plan_units, row_groups
from cluster.pseudolabel import PseudoLabelError, pseudo_label

PREDICTOR = "fakes:KeywordPredictor"
N = 200
CLUSTER = ClusterConfig(actors=2, actor_num_cpus=0.5, batch_size=256, max_failed_fraction=0.5)


# --- pure: the units ---------------------------------------------------------------------------


def test_units_cover_every_row_once_without_joining_row_groups():
    groups = [("a.parquet", [70, 70]), ("b.parquet", [60]), ("c.parquet", [0, 5])]
    units = plan_units(groups, actors=2, max_rows=2000)
    covered = {(u.path, u.row_group): [] for u in units}
    for u in units:
        covered[(u.path, u.row_group)].append((u.start, u.stop))
    assert sum(u.rows for u in units) == 205
    for (path, rg), ranges in covered.items():
        n = dict(groups)[path][rg]
        # contiguous, in order, from 0 to the row group's end
        assert ranges[0][0] == 0 and ranges[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert [u.index for u in units] == list(range(len(units)))
    # at least UNITS_PER_ACTOR (8) units per actor, none bigger than total / 16 (rounded up)
    assert len(units) >= 16 and max(u.rows for u in units) <= 13


def test_units_are_capped_by_the_rows_per_file_and_empty_input_gives_none():
    units = plan_units([("a.parquet", [100_000])], actors=2, max_rows=2000)
    assert len(units) == 50 and {u.rows for u in units} == {2000}
    assert plan_units([("a.parquet", [0])], actors=2, max_rows=10) == []
    assert plan_units([], actors=2, max_rows=10) == []
    assert sum(u.rows for u in plan_units([("a", [3])], actors=4, max_rows=10)) == 3


def test_row_groups_read_from_the_footers(tmp_path):
    write_shards(fakes.corpus(150), tmp_path, rows_per_shard=70, source="unlabeled")
    groups = row_groups(tmp_path)
    assert [sum(rows) for _, rows in groups] == [70, 70, 10]


# --- on Ray ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def unlabeled(tmp_path_factory):
    d = tmp_path_factory.mktemp("unlabeled")
    write_shards(fakes.corpus(N), d, rows_per_shard=70, source="unlabeled")
    return d


def _models(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        m = tmp_path / f"model{i}"
        m.mkdir()
        out.append(m)
    return out


def _rows(res) -> dict:
    return {(r["doc_id"], r["sent_id"]): (r["status"], r["spans"]) for r in pq.read_table(res.all_dir).to_pylist()}


@pytest.mark.ray
def test_one_pool_serves_several_rounds_reloading_only_for_a_new_model(ray_local, unlabeled, tmp_path):
    m1, m2, fresh_model = _models(tmp_path, 3)
    cfg = SelfTrainConfig(selection="sentence")
    with LabelerPool(CLUSTER, PREDICTOR) as pool:
        r1 = pseudo_label(unlabeled, m1, tmp_path / "r1", 0.7, CLUSTER, cfg, 1, predictor=PREDICTOR, pool=pool)
        r2 = pseudo_label(unlabeled, m2, tmp_path / "r2", 0.7, CLUSTER, cfg, 2, predictor=PREDICTOR, pool=pool)
        # same model, another threshold: no reload, the new rule applies
        r3 = pseudo_label(unlabeled, m2, tmp_path / "r3", 0.3, CLUSTER, cfg, 3, predictor=PREDICTOR, pool=pool)
        pids = {line.split()[0] for line in (m1 / "loads.log").read_text(encoding="utf-8").splitlines()}
        assert pool.passes == 3 and all(a is not None for a in pool.actors)
    # each actor loaded model 1 once, then model 2 once, in the same two processes
    loads1 = (m1 / "loads.log").read_text(encoding="utf-8").split()[::2]
    loads2 = (m2 / "loads.log").read_text(encoding="utf-8").split()[::2]
    assert len(loads1) == 2 and len(loads2) == 2 and set(loads1) == set(loads2) == pids
    assert set(r1.rows_per_labeler) == set(r2.rows_per_labeler) == set(r3.rows_per_labeler)
    assert {k.rsplit(":", 1)[1] for k in r1.rows_per_labeler} == pids
    # the round's rule reached the kept actors: a lower threshold keeps more, labels say round 3
    assert r3.counts["kept"] > r2.counts["kept"] == r1.counts["kept"]
    assert set(pq.read_table(r3.all_dir).column("round").to_pylist()) == {3}
    # the same directory rewritten in place (a new model under the old path): reloaded, not reused
    with LabelerPool(CLUSTER, PREDICTOR) as pool:
        pseudo_label(unlabeled, m1, tmp_path / "s1", 0.7, CLUSTER, cfg, 1, predictor=PREDICTOR, pool=pool)
        (m1 / "weights.safetensors").write_bytes(b"new weights")
        pseudo_label(unlabeled, m1, tmp_path / "s2", 0.7, CLUSTER, cfg, 2, predictor=PREDICTOR, pool=pool)
    assert len((m1 / "loads.log").read_text(encoding="utf-8").split()[::2]) == 2 + 2 + 2
    # a kept pool labels exactly as a pool started for the pass
    fresh = pseudo_label(unlabeled, fresh_model, tmp_path / "f", 0.7, CLUSTER, cfg, 2, predictor=PREDICTOR)
    assert _rows(fresh) == _rows(r2) and fresh.counts == r2.counts
    assert len((fresh_model / "loads.log").read_text(encoding="utf-8").split()[::2]) == 2


@pytest.mark.ray
def test_a_pool_started_for_other_settings_is_refused(ray_local, unlabeled, tmp_path):
    (m,) = _models(tmp_path, 1)
    with LabelerPool(CLUSTER, PREDICTOR) as pool:
        with pytest.raises(PseudoLabelError, match="other cluster settings or another predictor"):
            pseudo_label(unlabeled, m, tmp_path / "r", 0.7, replace(CLUSTER, actors=1), SelfTrainConfig(), 1,
                         predictor=PREDICTOR, pool=pool)
        # room for a 1-CPU training worker beside 2 x 0.5 CPU on this 2-CPU instance, not for 2
        assert pool.fits_beside(1.0) and not pool.fits_beside(1.5) and not pool.fits_beside(0.0, 1.0)
    assert not (m / "loads.log").exists()


@pytest.mark.ray
def test_a_unit_that_cannot_be_read_stops_the_pass_naming_it(ray_local, tmp_path):
    shards = tmp_path / "u"
    write_shards(fakes.corpus(40), shards, rows_per_shard=20, source="unlabeled")
    (m,) = _models(tmp_path, 1)
    with LabelerPool(CLUSTER, PREDICTOR) as pool:
        units = plan_units(row_groups(shards), 2, 2000)
        bad = Unit(len(units), str(tmp_path / "gone.parquet"), 0, 0, 5)
        spec = LabelSpec(str(m), 0.7, "sentence", 1, 8, 8)
        with pytest.raises(LabelerPoolError, match=r"unit \d+ \(.*gone.parquet, row group 0, rows 0-5\) failed"):
            pool.label(spec, [*units, bad], tmp_path / "all")


def test_the_bootstrap_stops_kept_actors_only_when_training_would_not_fit():
    from cluster.bootstrap import _RoundRunner

    class Pool:
        def __init__(self, fits):
            self.fits, self.down, self.asked = fits, False, None

        def fits_beside(self, cpus, gpus=0.0):
            self.asked = (cpus, gpus)
            return self.fits

        def shutdown(self):
            self.down = True

    runner = object.__new__(_RoundRunner)
    lines: list[str] = []
    runner.cfg = load_config(None, ["cluster.num_workers=2", "cluster.cpus_per_worker=1.5"])
    runner.log = lines.append
    runner.pool = kept = Pool(fits=True)
    runner.make_room_for_training(1)
    assert runner.pool is kept and not kept.down and kept.asked == (3.0, 0)
    runner.pool = full = Pool(fits=False)
    runner.make_room_for_training(2)
    assert runner.pool is None and full.down and "stopping the pseudo-labeling actors" in lines[-1]
    # cluster.reuse_actors=false: no pool is kept at all
    runner.cfg = load_config(None, ["cluster.reuse_actors=false"])
    assert runner.labeler_pool() is None


@pytest.mark.ray
def test_per_type_thresholds_reach_the_actors(ray_local, unlabeled, tmp_path):
    (m,) = _models(tmp_path, 1)
    cfg = SelfTrainConfig(selection="entity")
    plain = pseudo_label(unlabeled, m, tmp_path / "a", 0.7, CLUSTER, cfg, 1, predictor=PREDICTOR)
    # the 0.4 symptom passes its own (lower) threshold; the disease is held to a higher one
    typed = pseudo_label(unlabeled, m, tmp_path / "b", 0.7, CLUSTER, cfg, 1, predictor=PREDICTOR,
                         type_thresholds={fakes.SYMPTOM: 0.3, fakes.DISEASE: 0.99})
    assert plain.entities_kept == {fakes.DISEASE: fakes.expected_entities(N, "entity")}
    assert set(typed.entities_kept) == {fakes.SYMPTOM} and typed.entities_kept[fakes.SYMPTOM] > 0


def test_a_round_uses_the_thresholds_fitted_for_its_teacher():
    from cemr.selftrain import RoundRecord
    from cluster.bootstrap import teacher_thresholds

    fitted = [{"type": "DIS", "threshold": 0.8}, {"type": "SYM", "threshold": None}]
    teacher = RoundRecord(round=1, dev_f1=0.5, dev_precision=0.5, dev_recall=0.5, threshold=0.7,
                          train_sentences=1, extra={"type_thresholds": fitted})
    asked = load_config(None, ["selftrain.target_precision=0.9", "selftrain.selection=partial"]).selftrain
    assert teacher_thresholds(teacher, asked) == {"DIS": 0.8}
    assert teacher_thresholds(teacher, load_config(None).selftrain) is None  # not asked for
    unfitted = RoundRecord(round=0, dev_f1=0.5, dev_precision=0.5, dev_recall=0.5, threshold=None,
                           train_sentences=1, extra={})
    assert teacher_thresholds(unfitted, asked) is None  # evaluated without it: the round fits them
