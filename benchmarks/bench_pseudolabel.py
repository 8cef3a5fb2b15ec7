"""Throughput of the Ray Data pseudo-labeling pipeline (cluster/pseudolabel.py).

    python benchmarks/bench_pseudolabel.py [--rows 20000] [--actors 1,2] [--batch-size 256]
        [--model MODEL_DIR | --fake-ms 0.0] [--actor-cpus 0.5] [--num-cpus 2]

With ``--model`` the real ``cemr.predictor.Predictor`` of a saved model directory labels the
sentences (demo texts from ``cemr.demo``); without it a fake predictor that spends ``--fake-ms``
per sentence measures the pipeline's own cost (read, repartition, actors, write, aggregation).
For each actor count it reports wall seconds of the whole call, the labeling pass alone and
sentences/s. Prints a table, then one JSON object on the last line.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))


class SleepyPredictor:
    """Marks ``高血压`` wherever it occurs; spends ``ms`` milliseconds per sentence."""

    def __init__(self, ms: float):
        self.ms = ms

    @classmethod
    def load(cls, model_dir, device, confidence="entity_min_marginal"):
        return cls(float(Path(model_dir, "fake_ms").read_text()))

    def predict_sentences(self, texts, batch_size=None):
        from cemr.corpus.document import Span

        class P:  # a Prediction-like object
            def __init__(self, span, confidence):
                self.span, self.confidence = span, confidence

        class S:  # a SentencePrediction-like object
            def __init__(self, entities, confidence):
                self.entities, self.confidence = entities, confidence

        if self.ms:
            time.sleep(self.ms * len(texts) / 1000)
        out = []
        for t in texts:
            i = t.find("高血压")
            ents = [P(Span(i, i + 3, "疾病和诊断"), 0.9)] if i >= 0 else []
            out.append(S(ents, 0.9 if ents else 0.5))
        return out


def make_sentences(n: int):
    from cemr.corpus.sentences import Sentence
    from cemr.demo import generate_demo

    demo = generate_demo(0, max(50, n // 4), seed=7)
    texts = [d.text for d in demo.unlabeled if d.text.strip()]
    return [Sentence(f"u{i // 8}", i % 8, 0, texts[i % len(texts)][:128], []) for i in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--actor-cpus", type=float, default=0.5)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument("--model", default=None, help="a saved cemr model directory (default: the fake predictor)")
    ap.add_argument("--fake-ms", type=float, default=0.0, help="fake predictor cost per sentence (ms)")
    ap.add_argument("--threshold", type=float, default=0.7)
    args = ap.parse_args(argv)

    from cemr.config import ClusterConfig, SelfTrainConfig
    from cemr.corpus.shards import write_shards
    from cluster.pseudolabel import pseudo_label
    from cluster.runtime import init_ray, ray_version, shutdown_if_owned

    work = Path(tempfile.mkdtemp(prefix="bench_pl_"))
    write_shards(make_sentences(args.rows), work / "unlabeled", rows_per_shard=2000, source="bench")
    if args.model:
        model_dir, predictor = args.model, "cemr.predictor:Predictor"
    else:
        model_dir, predictor = work / "fake_model", "bench_pseudolabel:SleepyPredictor"
        model_dir.mkdir()
        (model_dir / "fake_ms").write_text(str(args.fake_ms))

    env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}}
    t0 = time.perf_counter()
    ctx = init_ray(ClusterConfig(num_cpus=args.num_cpus), runtime_env=env, log_to_driver=False)
    ray_start = time.perf_counter() - t0
    runs = []
    try:
        for actors in [int(a) for a in args.actors.split(",")]:
            cfg = ClusterConfig(actors=actors, actor_num_cpus=args.actor_cpus, batch_size=args.batch_size)
            t = time.perf_counter()
            res = pseudo_label(work / "unlabeled", model_dir, work / f"out_{actors}", args.threshold, cfg,
                               SelfTrainConfig(), 1, predictor=predictor)
            total = time.perf_counter() - t
            runs.append({
                "actors": actors,
                "rows": res.input_rows,
                "total_s": round(total, 2),
                "label_pass_s": round(res.seconds, 2),
                "sentences_per_s": round(res.sentences_per_s, 1),
                "rows_per_labeler": sorted(res.rows_per_labeler.values()),
                "counts": res.counts,
            })
            print(f"actors={actors}  rows={res.input_rows}  total {total:7.1f} s  label pass {res.seconds:7.1f} s  "
                  f"{res.sentences_per_s:8.1f} sentences/s  per actor {sorted(res.rows_per_labeler.values())}")
    finally:
        shutdown_if_owned(ctx)
    print(json.dumps({
        "bench": "pseudolabel",
        "predictor": "real" if args.model else f"fake ({args.fake_ms} ms/sentence)",
        "batch_size": args.batch_size,
        "actor_cpus": args.actor_cpus,
        "num_cpus": args.num_cpus,
        "ray": ray_version(),
        "ray_start_s": round(ray_start, 2),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "runs": runs,
    }, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
