"""Pseudo-labeling on Ray vs the same model in one plain process; 1 vs 2 actors; cold vs warm; memory at 10x.

    python benchmarks/bench_pipeline.py --model MODEL_DIR [--texts SHARD_DIR] [--rows 4000]
        [--memory-rows 1000] [--scale 10] [--batch-size 256] [--threshold 0.7] [--num-cpus 2]
        [--passes 2] [--ceiling] [--skip throughput,memory]

Measurements, one Ray instance (``--num-cpus`` logical CPUs), every actor and the plain
process limited to one torch thread (``cluster.actor_threads=1``: one actor per core):

1. **plain**: :class:`cluster.pseudolabel.PseudoLabeler` (the actor's class: the real
   ``cemr.predictor.Predictor`` + the threshold decision per row) called in this process on the
   same ``--batch-size`` batches of the same Parquet shards, read with pyarrow; timed from the
   first batch to the last (model loaded before), and also with the model load.
2. **pipeline**: :func:`cluster.pseudolabel.pseudo_label` over those shards on one
   :class:`cluster.labeler_pool.LabelerPool` of 1 actor, then of 2 actors (``--actor-cpus`` each),
   ``--passes`` times per pool: pass 1 is **cold** (the pool starts with it: actor processes,
   imports, model load; what ``cluster.reuse_actors=false`` pays every round), later passes are
   **warm** (the same actor processes, checked, reload the model as the next bootstrap round does).
   The rate is input rows / the labeling pass (actors started or reused, loaded, labeled, written;
   ``label_pass_s``), and also over the whole call (plus the kept pass; ``total_s``).
3. **actor timelines**: every pipeline run labels through :class:`TimedPredictor` (the real
   ``Predictor``, plus one JSON line per model load and per batch, written by each actor to the
   run's ``timeline/`` folder), so the label pass splits into its **startup** (pass start to the
   first batch labeled: Ray starting the actor processes, imports, model load; a warm pass: the
   reload alone) and its **labeling
   window** (first batch started to last batch done, over all actors). ``cold`` / ``warm`` in the
   JSON hold the ratios of each kind of pass: ``2_vs_1_actor`` over the whole label pass,
   ``2_vs_1_actor_labeling`` over the window alone, which is what the pass tends to as the corpus
   grows (the startup does not grow with it).
4. **ceiling**: two plain processes (``--ceiling``; spawned, one torch thread each, started together
   after both loaded the model) label the same shards at the same time: their summed rate over the
   single plain rate is what two busy cores give this model on this machine, with no Ray at all.
5. **memory**: peak proportional set size (PSS: shared pages split between the processes that
   map them, so the object store counts once) summed over this process and every process it
   started (Ray's raylet, GCS, workers, actors), sampled every ``--sample-s`` seconds, during
   ``pseudo_label`` of ``--memory-rows`` and of ``--scale`` times as many sentences (2 actors).

Sentences: the first ``--rows`` non-empty sentences of ``--texts`` (Parquet sentence shards, e.g.
a run's ``data/unlabeled``), cycled when there are fewer; default: the demo corpus's unlabeled
text. The statuses of the plain run and each pipeline run must agree (same model, same rows),
else the benchmark fails. Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def source_texts(texts_dir: str | None, n: int) -> list[str]:
    """Up to ``n`` non-empty sentence texts from Parquet shards, or from the demo corpus."""
    if texts_dir:
        from cemr.corpus.shards import iter_sentences

        out = []
        for s in iter_sentences(texts_dir):
            if s.text.strip():
                out.append(s.text)
                if len(out) >= n:
                    break
        if not out:
            raise SystemExit(f"{texts_dir}: no non-empty sentence in the shards")
        return out
    from cemr.corpus.sentences import split_document
    from cemr.demo import generate_demo

    demo = generate_demo(0, max(50, n // 4), seed=7)
    out = [s.text for d in demo.unlabeled for s in split_document(d, 128) if s.text.strip()]
    return out[:n]


def write_input(texts: list[str], rows: int, path: Path) -> Path:
    """``rows`` sentences (``texts`` cycled, unique keys) as sentence shards in ``path``."""
    from cemr.corpus.sentences import Sentence
    from cemr.corpus.shards import write_shards

    sents = (Sentence(f"b{i // 16}", i % 16, 0, texts[i % len(texts)], []) for i in range(rows))
    write_shards(sents, path, rows_per_shard=2000, source="bench")
    return path


# ----------------------------------------------------------------------------------------------
# Plain process
# ----------------------------------------------------------------------------------------------


def plain_labeler(model_dir: str, shards: Path, batch_size: int, threshold: float, threads: int):
    """The actor's class loaded in this process, and its input batches (the pipeline's batch size)."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from cemr.config import SelfTrainConfig
    from cluster.pseudolabel import INPUT_COLUMNS, PseudoLabeler, plan_blocks

    cfg = SelfTrainConfig()
    ds = pads.dataset(str(shards), format="parquet")
    _, batch = plan_blocks(ds.count_rows(), 1, batch_size)  # the batch size the pipeline would use
    labeler = PseudoLabeler("cemr.predictor:Predictor", model_dir, "cpu", threshold, cfg.selection, 1,
                            predict_batch_size=min(batch, 64),
                            predictor_kwargs={"confidence": cfg.confidence, "num_threads": threads})
    batches = (pa.Table.from_batches([rb]) for rb in ds.to_batches(columns=INPUT_COLUMNS, batch_size=batch))
    return labeler, batches, batch


def plain_run(model_dir: str, shards: Path, batch_size: int, threshold: float, threads: int) -> dict:
    """The actor's class called in this process on the same batches; model load timed apart."""
    t0 = time.perf_counter()
    labeler, batches, batch = plain_labeler(model_dir, shards, batch_size, threshold, threads)
    loaded = time.perf_counter()
    counts: Counter = Counter()
    n = 0
    for table in batches:
        out = labeler(table)
        counts.update(out.column("status").to_pylist())
        n += out.num_rows
    done = time.perf_counter()
    return {
        "rows": n,
        "batch_size": batch,
        "load_s": round(loaded - t0, 2),
        "label_s": round(done - loaded, 2),
        "sentences_per_s": round(n / (done - loaded), 2),
        "sentences_per_s_with_load": round(n / (done - t0), 2),
        "counts": dict(sorted(counts.items())),
    }


class TimedPredictor:
    """Predictor factory for the pipeline runs: ``cemr.predictor.Predictor`` whose load and every
    ``predict_sentences`` call append one JSON line (wall-clock start/end, rows) to
    ``<timeline>/<pid>.jsonl``. Pickled by value into the actors (see :func:`main`)."""

    @classmethod
    def load(cls, model_dir: str, device: str, *, timeline: str, **kwargs) -> "TimedPredictor":
        from cemr.predictor import Predictor

        t0 = time.time()
        inner = Predictor.load(model_dir, device, **kwargs)
        log = open(Path(timeline) / f"{os.getpid()}.jsonl", "a", encoding="utf-8")
        try:
            import psutil

            process_start = psutil.Process().create_time()
        except ImportError:  # the bench extra is not installed: no process start in the timeline
            process_start = None
        return cls(inner, log, {"event": "load", "process_start": process_start, "t0": t0, "t1": time.time()})

    def __init__(self, inner, log, first: dict):
        self.inner, self.log = inner, log
        self._write(first)

    def _write(self, event: dict) -> None:
        self.log.write(json.dumps(event) + "\n")
        self.log.flush()

    def predict_sentences(self, texts, batch_size=None):
        t0 = time.time()
        out = self.inner.predict_sentences(texts, batch_size)
        self._write({"event": "batch", "t0": t0, "t1": time.time(), "rows": len(texts)})
        return out


def read_timeline(folder: Path, started: float) -> dict:
    """Startup and labeling window of one pipeline run from its actors' timelines (seconds from
    ``started``, the wall-clock time the pass began)."""
    actors = []
    for f in sorted(folder.glob("*.jsonl")):
        events = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        loads = [e for e in events if e["event"] == "load"]
        batches = [e for e in events if e["event"] == "batch"]
        if not batches:
            continue
        actors.append({
            "process_start_s": (None if loads[0]["process_start"] is None
                                else round(loads[0]["process_start"] - started, 2)),
            "load_start_s": round(loads[0]["t0"] - started, 2),
            "load_s": round(loads[0]["t1"] - loads[0]["t0"], 2),
            "first_batch_s": round(batches[0]["t0"] - started, 2),
            "last_batch_end_s": round(batches[-1]["t1"] - started, 2),
            "busy_s": round(sum(b["t1"] - b["t0"] for b in batches), 2),
            "batches": len(batches),
            "rows": sum(b["rows"] for b in batches),
        })
    if not actors:
        raise SystemExit(f"{folder}: no actor timeline (did the actors label anything?)")
    first = min(a["first_batch_s"] for a in actors)
    last = max(a["last_batch_end_s"] for a in actors)
    rows = sum(a["rows"] for a in actors)
    return {"actors": actors, "startup_s": round(first, 2), "labeling_s": round(last - first, 2),
            "labeling_sentences_per_s": round(rows / (last - first), 2)}


def _ceiling_worker(model_dir, shards, batch_size, threshold, barrier, queue) -> None:
    """One of the two plain processes of the ceiling: load, wait for the other, label."""
    labeler, batches, _ = plain_labeler(model_dir, shards, batch_size, threshold, threads=1)
    barrier.wait()
    t0 = time.perf_counter()
    n = sum(labeler(table).num_rows for table in batches)
    queue.put({"rows": n, "label_s": time.perf_counter() - t0})


def ceiling_run(model_dir: str, shards: Path, batch_size: int, threshold: float) -> dict:
    """Two plain processes labeling the same shards at once (no Ray): their summed rows over the
    slower one's seconds."""
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the children's torch thread pools, as in the actors
    try:
        procs = [ctx.Process(target=_ceiling_worker, args=(model_dir, shards, batch_size, threshold, barrier, queue))
                 for _ in range(2)]
        for p in procs:
            p.start()
        results = []
        while len(results) < len(procs):
            try:
                results.append(queue.get(timeout=5))
            except queue_mod.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):  # the other may wait at the barrier
                    for p in procs:
                        p.terminate()
                    raise SystemExit(f"ceiling: a plain process failed (exit codes {[p.exitcode for p in procs]})")
        for p in procs:
            p.join()
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
    rows = sum(r["rows"] for r in results)
    seconds = max(r["label_s"] for r in results)
    return {"processes": 2, "rows": rows, "label_s": [round(r["label_s"], 2) for r in results],
            "sentences_per_s": round(rows / seconds, 2)}


# ----------------------------------------------------------------------------------------------
# Memory sampling
# ----------------------------------------------------------------------------------------------


class PeakMemory:
    """Samples the summed PSS (MiB) of this process and all its descendants in a thread."""

    def __init__(self, interval: float):
        try:
            import psutil
        except ImportError:
            raise SystemExit("the memory part samples processes with psutil: pip install -e '.[bench]' "
                             "(or --skip memory)") from None

        self.psutil = psutil
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def total_mib(self) -> float:
        me = self.psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (self.psutil.NoSuchProcess, self.psutil.AccessDenied, self.psutil.ZombieProcess):
                pass
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.total_mib())
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.total_mib())

    @property
    def peak(self) -> float:
        return max(self.samples)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def pipeline_run(shards: Path, model_dir: str, out: Path, actors: int, args, expected: dict | None,
                 passes: int = 1) -> list[dict]:
    """``passes`` rounds of :func:`cluster.pseudolabel.pseudo_label` on one :class:`LabelerPool` of
    ``actors`` actors: the first (**cold**) includes starting the pool (the actors' processes start
    while the first units wait), the later ones (**warm**) reuse it as the next bootstrap rounds do
    (each pass has its own predictor options, so the actors reload the model as a new round's)."""
    from cemr.config import ClusterConfig, SelfTrainConfig
    from cluster.labeler_pool import LabelerPool
    from cluster.pseudolabel import pseudo_label

    cfg = ClusterConfig(actors=actors, actor_num_cpus=args.actor_cpus, actor_threads=1, batch_size=args.batch_size)
    runs = []
    t_pool = time.perf_counter()
    pool = LabelerPool(cfg, TimedPredictor)
    pool_start = time.perf_counter() - t_pool
    try:
        for i in range(passes):
            kind = "cold" if i == 0 else "warm"
            timeline = out / f"timeline_{i + 1}"
            timeline.mkdir(parents=True)  # each run has its own out dir under a fresh work dir
            started = time.time() - (pool_start if i == 0 else 0.0)
            t = time.perf_counter()
            res = pseudo_label(shards, model_dir, out / f"labels_{i + 1}", args.threshold, cfg, SelfTrainConfig(),
                               i + 1, predictor=TimedPredictor, predictor_kwargs={"timeline": str(timeline)},
                               pool=pool)
            extra = pool_start if i == 0 else 0.0
            total = time.perf_counter() - t + extra
            counts = {k: v for k, v in sorted(res.counts.items()) if v}
            if expected is not None and counts != expected:
                raise SystemExit(f"pipeline with {actors} actor(s), pass {i + 1}, gave statuses {counts}, "
                                 f"the plain run {expected}")
            label_s = res.seconds + extra
            runs.append({
                "actors": actors, "pass": i + 1, "kind": kind, "rows": res.input_rows, "units": res.units,
                "label_pass_s": round(label_s, 2), "total_s": round(total, 2),
                "sentences_per_s": round(res.input_rows / label_s, 2),
                "sentences_per_s_total": round(res.input_rows / total, 2),
                "rows_per_labeler": sorted(res.rows_per_labeler.values()),
                "labelers": sorted(res.rows_per_labeler),
                "counts": counts,
                "timeline": read_timeline(timeline, started),
            })
    finally:
        pool.shutdown()
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a saved cemr model directory (cemr train --out DIR: DIR/model)")
    ap.add_argument("--texts", default=None, help="Parquet sentence shards to take texts from (default: demo text)")
    ap.add_argument("--rows", type=int, default=4000, help="sentences for the throughput runs")
    ap.add_argument("--memory-rows", type=int, default=1000, help="sentences of the smaller memory run")
    ap.add_argument("--scale", type=int, default=10, help="the larger memory run has scale x memory-rows")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--actor-cpus", type=float, default=0.5)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.7)
    ap.add_argument("--sample-s", type=float, default=0.25, help="memory sampling interval")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: throughput, memory")
    ap.add_argument("--passes", type=int, default=2,
                    help="pseudo-labeling passes per actor count on one actor pool: the first cold (pool started), "
                         "the others warm (the actors reused, the model reloaded, as in later rounds)")
    ap.add_argument("--ceiling", action="store_true",
                    help="also time two plain processes labeling at once (what 2 cores give without Ray)")
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}

    from cemr.config import ClusterConfig
    from cluster.bootstrap import local_runtime_env
    from cluster.runtime import init_ray, ray_version, shutdown_if_owned

    if __name__ != "__main__":  # imported (not run as a script): the actors cannot import this module
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    work = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    texts = source_texts(args.texts, max(args.rows, args.memory_rows))
    chars = statistics.mean(len(t) for t in texts)
    print(f"{len(texts)} distinct texts, mean {chars:.1f} chars; work dir {work}")
    result: dict = {"bench": "pipeline", "model": str(args.model), "texts": args.texts or "demo",
                    "mean_chars": round(chars, 1), "batch_size": args.batch_size, "actor_cpus": args.actor_cpus,
                    "num_cpus": args.num_cpus, "cpu_count": os.cpu_count(), "python": platform.python_version()}

    plain = None
    if "throughput" not in skip:
        shards = write_input(texts, args.rows, work / "throughput")
        plain = plain_run(args.model, shards, args.batch_size, args.threshold, threads=1)
        print(f"plain process: {plain['rows']} rows, {plain['label_s']:.1f} s labeling "
              f"(+{plain['load_s']:.1f} s load): {plain['sentences_per_s']:.1f} sentences/s")
        result["plain"] = plain
        if args.ceiling:
            ceiling = ceiling_run(args.model, shards, args.batch_size, args.threshold)
            result["ceiling"] = ceiling
            result["ceiling_2_plain_vs_plain"] = round(ceiling["sentences_per_s"] / plain["sentences_per_s"], 3)
            print(f"two plain processes at once: {ceiling['sentences_per_s']:.1f} sentences/s = "
                  f"{result['ceiling_2_plain_vs_plain']:.3f}x one (the machine's own ceiling for 2 actors)")

    t0 = time.perf_counter()
    ctx = init_ray(ClusterConfig(num_cpus=args.num_cpus), runtime_env=local_runtime_env(), log_to_driver=False)
    result["ray"] = ray_version()
    result["ray_start_s"] = round(time.perf_counter() - t0, 2)
    try:
        if "throughput" not in skip:
            runs = {}
            for actors in (1, 2):
                runs[actors] = pipeline_run(shards, args.model, work / f"out_{actors}", actors, args, plain["counts"],
                                            passes=args.passes)
                for r in runs[actors]:
                    tl = r["timeline"]
                    print(f"pipeline, {actors} actor(s), pass {r['pass']} ({r['kind']}): label pass "
                          f"{r['label_pass_s']:.1f} s ({r['sentences_per_s']:.1f} sentences/s), whole call "
                          f"{r['total_s']:.1f} s ({r['sentences_per_s_total']:.1f}/s), rows per actor "
                          f"{r['rows_per_labeler']}; startup {tl['startup_s']:.1f} s (model loads "
                          f"{[a['load_s'] for a in tl['actors']]} s), labeling window {tl['labeling_s']:.1f} s "
                          f"({tl['labeling_sentences_per_s']:.1f}/s)")
            result["pipeline"] = [r for actors in (1, 2) for r in runs[actors]]
            if args.passes > 1:  # the warm passes: the same actors, as in every bootstrap round after the first
                same = all(r["labelers"] == runs[a][0]["labelers"] for a in (1, 2) for r in runs[a])
                result["warm_passes_reused_the_actors"] = same
                if not same:
                    raise SystemExit("a warm pass was labeled by other actor processes than the cold one")
            for kind in ("cold", "warm"):
                picked = {a: [r for r in runs[a] if r["kind"] == kind] for a in (1, 2)}
                if not picked[1] or not picked[2]:
                    continue
                one, two = picked[1][-1], picked[2][-1]
                ratios = {
                    "1actor_vs_plain": one["sentences_per_s"] / plain["sentences_per_s"],
                    "1actor_vs_plain_total": one["sentences_per_s_total"] / plain["sentences_per_s"],
                    "1actor_vs_plain_with_load": one["sentences_per_s"] / plain["sentences_per_s_with_load"],
                    "2_vs_1_actor": two["sentences_per_s"] / one["sentences_per_s"],
                    "2_vs_1_actor_total": two["sentences_per_s_total"] / one["sentences_per_s_total"],
                    "2_vs_1_actor_labeling": (two["timeline"]["labeling_sentences_per_s"]
                                              / one["timeline"]["labeling_sentences_per_s"]),
                }
                result[kind] = {k: round(v, 3) for k, v in ratios.items()}
                print(f"{kind}: 1 actor / plain {ratios['1actor_vs_plain']:.3f} (label pass; target >= 0.95), "
                      f"{ratios['1actor_vs_plain_total']:.3f} (whole call); 2 actors / 1 actor "
                      f"{ratios['2_vs_1_actor']:.3f} (target >= 1.8; labeling window alone "
                      f"{ratios['2_vs_1_actor_labeling']:.3f})")
        if "memory" not in skip:
            mem = []
            for rows in (args.memory_rows, args.scale * args.memory_rows):
                shards_m = write_input(texts, rows, work / f"memory_{rows}")
                with PeakMemory(args.sample_s) as pm:
                    base = pm.total_mib()
                    (r,) = pipeline_run(shards_m, args.model, work / f"memory_out_{rows}", 2, args, None)
                mem.append({"rows": rows, "peak_pss_mib": round(pm.peak, 1), "before_mib": round(base, 1),
                            "samples": len(pm.samples), "label_pass_s": r["label_pass_s"], "counts": r["counts"]})
                print(f"memory, {rows} rows, 2 actors: peak {pm.peak:.0f} MiB PSS (before {base:.0f} MiB, "
                      f"{len(pm.samples)} samples), label pass {r['label_pass_s']:.1f} s")
            result["memory"] = mem
            result["memory_ratio"] = round(mem[1]["peak_pss_mib"] / mem[0]["peak_pss_mib"], 3)
            print(f"peak memory {args.scale}x rows / 1x rows: {result['memory_ratio']:.3f} (target <= 1.2)")
    finally:
        shutdown_if_owned(ctx)
    result["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
