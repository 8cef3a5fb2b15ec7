"""Pseudo-labeling actors started once per job and reused across rounds (issue #15).

A Ray Data pass starts its actor pool afresh: each self-training round paid ~13-14 s before its
first batch (actor processes, imports, model load, the executor's own start), 20-30% of a
low-resource round's labeling. Ray Data cannot keep actors between datasets (ray-project/ray#46479,
open), so the label pass runs on a pool of plain Ray actors kept for the whole job:

    LabelerPool(cluster_cfg)                      once: actor_resources() (GPUs waited for), N actors
      .label(spec, units, all_dir)                per round: each actor reads its units (row ranges
                                                  of the Parquet shards, from the footers), labels
                                                  them with PseudoLabeler, writes all/part-<i>.parquet,
                                                  returns the unit's counts (summarize_batch)
      .keep(files, kept_dir, selected)            per round: kept rows (and the cap) -> kept/part-<i>
      .shutdown()

Units are handed out one at a time to whichever actor is free (the tail is one small unit), and
only counts and, with a cap, (key, confidence, types) of kept rows come back to the driver: the
text never leaves the actors and the shards. An actor loads its predictor on the first unit of a
round and again only when the model (``LabelSpec.model_dir``, predictor options) changes: a new
round reloads the weights (~0.3 s) in a warm process instead of starting one (~5 s). A dead actor
is restarted and its unit retried once by Ray (``max_restarts``, ``max_task_retries``; writes are
idempotent: same file, replaced atomically); a unit that raises stops the pass naming the unit.

The pool holds its CPUs/GPUs and memory while it lives. :meth:`LabelerPool.fits_beside` tells the
bootstrap whether a training round still fits on the cluster beside it; if not the pool is shut
down for the round and started again for the next pass (``cluster.reuse_actors=false``: always).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from cluster.runtime import actor_device, actor_resources

UNITS_PER_ACTOR = 8  # units per actor at least (small corpora): the tail is <= 1/8 of an actor's work
RESTARTS = 1  # Ray restarts a dead actor and retries its unit this many times


class LabelerPoolError(RuntimeError):
    """A unit could not be labeled or written (not a row's prediction error: those are rows)."""


@dataclass(frozen=True)
class Unit:
    """Rows ``[start, stop)`` of row group ``row_group`` of Parquet file ``path``; ``index`` names
    its output file (``part-<index>.parquet``)."""

    index: int
    path: str
    row_group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class LabelSpec:
    """What a pass asks of every actor: the model and the round's decision rule."""

    model_dir: str
    threshold: float
    mode: str
    round: int
    batch_size: int  # rows per PseudoLabeler call
    predict_batch_size: int  # rows per predictor call
    predictor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    candidates: bool = False  # return (key, confidence, types) of kept rows (a cap applies)
    model_stamp: tuple = ()  # model_stamp(model_dir) on the driver: a directory rewritten in place reloads
    type_thresholds: tuple = ()  # (type, threshold) pairs of SelectionPolicy.type_thresholds

    def model_key(self) -> str:
        """The predictor is reloaded when this changes (the model, its files or its options; not the
        threshold)."""
        return json.dumps([str(self.model_dir), list(self.model_stamp), dict(self.predictor_kwargs)],
                          sort_keys=True, default=str)


STAMP_FILES = ("config.json", "weights.safetensors")  # rewritten whenever a model is saved (cemr.modeldir)


def model_stamp(model_dir: str | os.PathLike) -> tuple:
    """``(name, size, mtime_ns)`` of the model files of ``model_dir`` that every save rewrites: what a
    kept actor compares before reusing the predictor it loaded from that path."""
    root = Path(model_dir)
    return tuple((name, (root / name).stat().st_size, (root / name).stat().st_mtime_ns)
                 for name in STAMP_FILES if (root / name).is_file())


def row_groups(shards_dir: str | os.PathLike) -> list[tuple[str, list[int]]]:
    """``[(file, [rows per row group])]`` of the Parquet files of ``shards_dir``, from their footers
    (sorted by name: the units, and so the output files, follow the input's order)."""
    files = sorted(Path(shards_dir).rglob("*.parquet"))
    out = []
    for f in files:
        meta = pq.ParquetFile(f).metadata
        out.append((str(f), [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]))
    return out


def plan_units(groups: Sequence[tuple[str, Sequence[int]]], actors: int, max_rows: int) -> list[Unit]:
    """Cut the row groups into units of at most ``max_rows`` rows and at most total /
    (``UNITS_PER_ACTOR`` x ``actors``), so every actor gets work and the last unit is short; a row
    group is cut into near-equal slices, never joined with another (pure)."""
    total = sum(sum(rows) for _, rows in groups)
    if total == 0:
        return []
    target = max(1, min(int(max_rows), math.ceil(total / (UNITS_PER_ACTOR * max(1, int(actors))))))
    units: list[Unit] = []
    for path, rows in groups:
        for rg, n in enumerate(rows):
            if n == 0:
                continue
            pieces = math.ceil(n / target)
            bounds = [round(i * n / pieces) for i in range(pieces + 1)]
            for a, b in zip(bounds, bounds[1:]):
                units.append(Unit(len(units), path, rg, a, b))
    return units


def read_unit(unit: Unit, columns: Sequence[str]) -> pa.Table:
    """The rows of ``unit`` (only ``columns``)."""
    table = pq.ParquetFile(unit.path).read_row_group(unit.row_group, columns=list(columns))
    return table.slice(unit.start, unit.rows)


def write_atomic(table: pa.Table, path: Path) -> None:
    """``table`` to ``path`` through a temporary name: a retried unit replaces, never doubles."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class LabelerActor:
    """One pseudo-labeling process (a Ray actor of :class:`LabelerPool`): keeps its predictor while
    the model stays the same."""

    def __init__(self, factory: Any, device: str):
        self.factory, self.device = factory, device
        self._key: str | None = None
        self._labeler: Any = None

    def ready(self) -> int:
        return os.getpid()

    def _labeler_for(self, spec: LabelSpec) -> Any:
        from cluster.pseudolabel import PseudoLabeler

        if self._labeler is None or spec.model_key() != self._key:
            self._labeler = PseudoLabeler(self.factory, spec.model_dir, self.device, spec.threshold, spec.mode,
                                          spec.round, predict_batch_size=spec.predict_batch_size,
                                          predictor_kwargs=dict(spec.predictor_kwargs),
                                          type_thresholds=spec.type_thresholds)
            self._key = spec.model_key()
        else:  # same model: the round's rule only
            self._labeler.threshold, self._labeler.mode = float(spec.threshold), spec.mode
            self._labeler.round, self._labeler.type_thresholds = int(spec.round), tuple(spec.type_thresholds)
        return self._labeler

    def label(self, spec: LabelSpec, unit: Unit, all_dir: str) -> dict[str, Any]:
        """Label ``unit``, write it to ``all_dir/part-<index>.parquet``; its counts (and candidates)."""
        from cluster.pseudolabel import INPUT_COLUMNS, OUTPUT_SCHEMA, candidates_batch, summarize_batch

        t0 = time.perf_counter()
        labeler = self._labeler_for(spec)
        table = read_unit(unit, INPUT_COLUMNS)
        step = max(1, int(spec.batch_size))
        parts = [labeler(table.slice(i, step)) for i in range(0, table.num_rows, step)]
        out = pa.concat_tables(parts) if parts else OUTPUT_SCHEMA.empty_table()
        path = Path(all_dir) / f"part-{unit.index:06d}.parquet"
        write_atomic(out, path)
        summary = summarize_batch(out)
        result: dict[str, Any] = {
            "index": unit.index, "rows": out.num_rows, "file": str(path), "seconds": time.perf_counter() - t0,
            "counts": dict(zip(summary.column("key").to_pylist(), summary.column("n").to_pylist())),
        }
        if spec.candidates:
            cands = candidates_batch(out)
            result["candidates"] = list(zip(*(cands.column(k).to_pylist()
                                              for k in ("doc_id", "sent_id", "confidence", "types"))))
        return result

    def keep(self, all_file: str, kept_file: str, selected: list[tuple[str, int]] | None) -> int:
        """Write the kept rows of ``all_file`` (those in ``selected`` when a cap applies) to
        ``kept_file`` (nothing when none); the rows written."""
        from cluster.pseudolabel import KeepRows

        table = pq.read_table(all_file)
        kept = KeepRows(None if selected is None else {(d, int(s)) for d, s in selected})(table)
        if kept.num_rows:
            write_atomic(kept, Path(kept_file))
        return kept.num_rows


class LabelerPool:
    """``cluster.actors`` :class:`LabelerActor` processes with the resources of
    :func:`cluster.runtime.actor_resources` (GPUs waited for there; :class:`GPUUnavailable` before
    any actor starts). A context manager: shut down on exit."""

    def __init__(self, cluster_cfg: Any, predictor: Any, log: Callable[[str], None] | None = None):
        if not ray.is_initialized():
            raise LabelerPoolError("Ray is not initialised: call cluster.runtime.init_ray first")
        self.resources = actor_resources(cluster_cfg)
        self.size = int(cluster_cfg.actors)
        self.key = self.config_key(cluster_cfg, predictor)
        opts: dict[str, Any] = {"num_cpus": self.resources["num_cpus"], "num_gpus": self.resources["num_gpus"],
                                "max_restarts": RESTARTS, "max_task_retries": RESTARTS}
        if self.resources["memory"]:
            opts["memory"] = self.resources["memory"]
        remote_cls = ray.remote(LabelerActor)
        device = actor_device(self.resources["num_gpus"])
        self.actors = [remote_cls.options(**opts).remote(predictor, device) for _ in range(self.size)]
        self.passes = 0
        if log:
            log(f"pseudo-labeling actors: {self.size} started ({self.resources['num_cpus']:g} CPU, "
                f"{self.resources['num_gpus']:g} GPU each), kept for the job's rounds")

    @staticmethod
    def config_key(cluster_cfg: Any, predictor: Any) -> str:
        """What a pool is made of: reused only for a pass that asks for the same."""
        keys = ("actors", "actor_num_cpus", "actor_num_gpus", "actor_memory_mb", "gpu_wait_s", "cpu_fallback")
        return json.dumps([str(predictor)] + [getattr(cluster_cfg, k, None) for k in keys], default=str)

    def fits_beside(self, need_cpus: float, need_gpus: float = 0.0) -> bool:
        """Whether ``need_cpus`` CPUs and ``need_gpus`` GPUs are free on the cluster with this pool
        alive (Ray's available resources, once every actor is placed: the pool's share is taken)."""
        ray.get([a.ready.remote() for a in self.actors])
        avail = ray.available_resources()
        return (float(avail.get("CPU", 0.0)) + 1e-9 >= need_cpus
                and float(avail.get("GPU", 0.0)) + 1e-9 >= need_gpus)

    def _dispatch(self, calls: Iterable[tuple[str, tuple]], on_done: Callable[[Any], None] | None = None,
                  what: Callable[[tuple], str] = str) -> list[Any]:
        """Run ``(method, args)`` calls on the actors, one in flight per actor, the next call to the
        first actor free; results in call order."""
        pending = list(calls)
        results: list[Any] = [None] * len(pending)
        free = list(range(self.size))
        inflight: dict[Any, tuple[int, int]] = {}
        nxt = 0
        while nxt < len(pending) or inflight:
            while free and nxt < len(pending):
                a = free.pop()
                method, args = pending[nxt]
                inflight[getattr(self.actors[a], method).remote(*args)] = (nxt, a)
                nxt += 1
            done, _ = ray.wait(list(inflight), num_returns=1)
            i, a = inflight.pop(done[0])
            try:
                results[i] = ray.get(done[0])
            except Exception as exc:  # noqa: BLE001 - named, then re-raised for the round
                for ref in inflight:
                    try:
                        ray.cancel(ref)
                    except Exception:  # noqa: BLE001 - best effort: the pass stops anyway
                        pass
                raise LabelerPoolError(f"pseudo-labeling {what(pending[i][1])} failed: "
                                       f"{type(exc).__name__}: {exc}") from exc
            free.append(a)
            if on_done:
                on_done(results[i])
        return results

    def label(self, spec: LabelSpec, units: Sequence[Unit], all_dir: str | os.PathLike,
              on_done: Callable[[dict], None] | None = None) -> list[dict[str, Any]]:
        """Every unit labeled into ``all_dir``; per unit ``{"index", "rows", "file", "counts",
        "seconds"[, "candidates"]}``."""
        Path(all_dir).mkdir(parents=True, exist_ok=True)
        out = self._dispatch([("label", (spec, u, str(all_dir))) for u in units], on_done,
                             what=lambda args: f"unit {args[1].index} ({args[1].path}, row group "
                                               f"{args[1].row_group}, rows {args[1].start}-{args[1].stop})")
        self.passes += 1
        return out

    def keep(self, files: Sequence[str], kept_dir: str | os.PathLike,
             selected: Mapping[str, list[tuple[str, int]]] | None) -> int:
        """Kept rows of each ``all/`` file into ``kept_dir`` (``selected``: per file the keys the cap
        keeps; None: every kept row); the rows written."""
        Path(kept_dir).mkdir(parents=True, exist_ok=True)
        calls = [("keep", (f, str(Path(kept_dir) / Path(f).name), None if selected is None else selected.get(f, [])))
                 for f in files]
        return sum(self._dispatch(calls, what=lambda args: f"the kept rows of {args[0]}"))

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []

    def __enter__(self) -> "LabelerPool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
