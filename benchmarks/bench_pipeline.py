"""Ray Data pseudo-labeling vs the same model in one plain process; 1 vs 2 actors; peak memory at 10x.

    python benchmarks/bench_pipeline.py --model MODEL_DIR [--texts SHARD_DIR] [--rows 4000]
        [--memory-rows 1000] [--scale 10] [--batch-size 256] [--threshold 0.7] [--num-cpus 2]

Three measurements, one Ray instance (``--num-cpus`` logical CPUs), every actor and the plain
process limited to one torch thread (``cluster.actor_threads=1``: one actor per core):

1. **plain**: :class:`cluster.pseudolabel.PseudoLabeler` (the actor's class: the real
   ``cemr.predictor.Predictor`` + the threshold decision per row) called in this process on the
   same ``--batch-size`` batches of the same Parquet shards, read with pyarrow; timed from the
   first batch to the last (model loaded before), and also with the model load.
2. **pipeline**: :func:`cluster.pseudolabel.pseudo_label` over those shards with 1 actor, then with
   2 actors (``actor_num_cpus=0.5``: Ray 2.60's Parquet read tasks need a whole logical CPU, so
   actors must leave one free on a 2-CPU instance). The rate is input rows / the labeling pass
   (read, actors started and loaded, labeled, written; ``label_pass_s``), and also over the whole
   call (plus the accounting passes that check every row's fate; ``total_s``).
3. **memory**: peak proportional set size (PSS: shared pages split between the processes that
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


def plain_run(model_dir: str, shards: Path, batch_size: int, threshold: float, threads: int) -> dict:
    """The actor's class called in this process on the same batches; model load timed apart."""
    import pyarrow as pa
    import pyarrow.dataset as pads

    from cemr.config import SelfTrainConfig
    from cluster.pseudolabel import INPUT_COLUMNS, PseudoLabeler, plan_blocks

    cfg = SelfTrainConfig()
    ds = pads.dataset(str(shards), format="parquet")
    _, batch = plan_blocks(ds.count_rows(), 1, batch_size)  # the batch size the pipeline would use
    t0 = time.perf_counter()
    labeler = PseudoLabeler("cemr.predictor:Predictor", model_dir, "cpu", threshold, cfg.selection, 1,
                            predict_batch_size=min(batch, 64),
                            predictor_kwargs={"confidence": cfg.confidence, "num_threads": threads})
    loaded = time.perf_counter()
    counts: Counter = Counter()
    n = 0
    for rb in ds.to_batches(columns=INPUT_COLUMNS, batch_size=batch):
        out = labeler(pa.Table.from_batches([rb]))
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


# ----------------------------------------------------------------------------------------------
# Memory sampling
# ----------------------------------------------------------------------------------------------


class PeakMemory:
    """Samples the summed PSS (MiB) of this process and all its descendants in a thread."""

    def __init__(self, interval: float):
        import psutil

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


def pipeline_run(shards: Path, model_dir: str, out: Path, actors: int, args, expected: dict | None) -> dict:
    from cemr.config import ClusterConfig, SelfTrainConfig
    from cluster.pseudolabel import pseudo_label

    cfg = ClusterConfig(actors=actors, actor_num_cpus=args.actor_cpus, actor_threads=1, batch_size=args.batch_size)
    t = time.perf_counter()
    res = pseudo_label(shards, model_dir, out, args.threshold, cfg, SelfTrainConfig(), 1)
    total = time.perf_counter() - t
    counts = {k: v for k, v in sorted(res.counts.items()) if v}
    if expected is not None and counts != expected:
        raise SystemExit(f"pipeline with {actors} actor(s) gave statuses {counts}, the plain run {expected}")
    return {
        "actors": actors,
        "rows": res.input_rows,
        "label_pass_s": round(res.seconds, 2),
        "total_s": round(total, 2),
        "sentences_per_s": round(res.input_rows / res.seconds, 2),
        "sentences_per_s_total": round(res.input_rows / total, 2),
        "rows_per_labeler": sorted(res.rows_per_labeler.values()),
        "counts": counts,
    }


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
    args = ap.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}

    from cemr.config import ClusterConfig
    from cluster.bootstrap import local_runtime_env
    from cluster.runtime import init_ray, ray_version, shutdown_if_owned

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

    t0 = time.perf_counter()
    ctx = init_ray(ClusterConfig(num_cpus=args.num_cpus), runtime_env=local_runtime_env(), log_to_driver=False)
    result["ray"] = ray_version()
    result["ray_start_s"] = round(time.perf_counter() - t0, 2)
    try:
        if "throughput" not in skip:
            runs = []
            for actors in (1, 2):
                r = pipeline_run(shards, args.model, work / f"out_{actors}", actors, args, plain["counts"])
                runs.append(r)
                print(f"pipeline, {actors} actor(s): label pass {r['label_pass_s']:.1f} s "
                      f"({r['sentences_per_s']:.1f} sentences/s), whole call {r['total_s']:.1f} s "
                      f"({r['sentences_per_s_total']:.1f}/s), rows per actor {r['rows_per_labeler']}")
            result["pipeline"] = runs
            one, two = runs
            result["ratio_1actor_vs_plain"] = round(one["sentences_per_s"] / plain["sentences_per_s"], 3)
            result["ratio_1actor_vs_plain_total"] = round(one["sentences_per_s_total"] / plain["sentences_per_s"], 3)
            result["ratio_1actor_vs_plain_with_load"] = round(
                one["sentences_per_s"] / plain["sentences_per_s_with_load"], 3)
            result["speedup_2_vs_1_actor"] = round(two["sentences_per_s"] / one["sentences_per_s"], 3)
            result["speedup_2_vs_1_actor_total"] = round(two["sentences_per_s_total"] / one["sentences_per_s_total"], 3)
            print(f"1 actor / plain: {result['ratio_1actor_vs_plain']:.3f} (label pass; target >= 0.85), "
                  f"{result['ratio_1actor_vs_plain_total']:.3f} (whole call); 2 actors / 1 actor: "
                  f"{result['speedup_2_vs_1_actor']:.3f} (target >= 1.6)")
        if "memory" not in skip:
            mem = []
            for rows in (args.memory_rows, args.scale * args.memory_rows):
                shards_m = write_input(texts, rows, work / f"memory_{rows}")
                with PeakMemory(args.sample_s) as pm:
                    base = pm.total_mib()
                    r = pipeline_run(shards_m, args.model, work / f"memory_out_{rows}", 2, args, None)
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
