r"""Seed ensembles (issue #18 lever): the seeds of a ``bench_seeds.py`` run alone, in pairs and all
together (:func:`cemr.ensemble.load_ensemble`: averaged CRF potentials), scored on test with dev
beside it.

    python benchmarks/bench_ensemble.py --run SEEDS_RUN [--seeds 1 2 3] [--batch-size 64]

``SEEDS_RUN/seed<N>/model`` are the dev-selected models of ``benchmarks/bench_seeds.py`` (one config,
one split, seeds varied); the dev and test documents are ``SEEDS_RUN/seed<N>/data/documents``, which
must be byte-identical across the seeds (else it stops). Every model and ensemble is scored by
:func:`cemr.inference.evaluate_documents` (the path of ``cemr evaluate``: documents split as unseen
text, every gold span on document offsets). Nothing is selected here: each member's epoch was
selected on dev when it was trained, and an ensemble has no knob. Prints a table (micro F1, per
type for the full ensemble), the mean +- spread per ensemble size, then one JSON object.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_heldout import file_digest  # noqa: E402


def same_documents(run: Path, seeds: list[int], split: str) -> Path:
    """The ``split`` documents of the run's seeds (identical across seeds, else SystemExit)."""
    paths = [run / f"seed{s}" / "data" / "documents" / f"{split}.jsonl" for s in seeds]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"{missing[0]} does not exist")
    digests = {file_digest(p) for p in paths}
    if len(digests) != 1:
        raise SystemExit(f"the seeds' {split} documents differ ({', '.join(map(str, paths))}): not one split")
    return paths[0]


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="a benchmarks/bench_seeds.py run directory")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="the seeds to ensemble")
    ap.add_argument("--batch-size", type=int, default=64, help="sentences per predictor call")
    ap.add_argument("--device", default="cpu", help="torch device")
    args = ap.parse_args(argv)

    from cemr.corpus.readers import read_documents
    from cemr.ensemble import load_ensemble
    from cemr.inference import evaluate_documents
    from cemr.predictor import Predictor

    t_start = time.perf_counter()
    docs = {split: list(read_documents("jsonl", same_documents(args.run, args.seeds, split), strict=True)) for split in ("dev", "test")}
    models = {s: args.run / f"seed{s}" / "model" for s in args.seeds}
    rows = []
    for size in range(1, len(args.seeds) + 1):
        for combo in itertools.combinations(args.seeds, size):
            t0 = time.perf_counter()
            dirs = [models[s] for s in combo]
            # one model through the plain Predictor: the ensemble code is checked against it by its tests
            predictor = Predictor.load(dirs[0], args.device) if size == 1 else load_ensemble(dirs, args.device)
            reports = {split: evaluate_documents(predictor, d, args.batch_size).to_dict() for split, d in docs.items()}
            row = {"seeds": list(combo), "size": size,
                   "dev": reports["dev"]["micro"]["f1"], "test": reports["test"]["micro"]["f1"],
                   "test_precision": reports["test"]["micro"]["precision"],
                   "test_recall": reports["test"]["micro"]["recall"],
                   "test_per_type": {t: round(v["f1"], 4) for t, v in reports["test"].get("per_type", {}).items()},
                   "seconds": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            print(f"seeds {'+'.join(map(str, combo)):>7}: dev {row['dev']:.4f}  test {row['test']:.4f} "
                  f"(P {row['test_precision']:.4f} R {row['test_recall']:.4f})  {row['seconds']:.0f}s", flush=True)
    by_size = {size: spread([r["test"] for r in rows if r["size"] == size]) for size in range(1, len(args.seeds) + 1)}
    dev_by_size = {size: spread([r["dev"] for r in rows if r["size"] == size]) for size in by_size}
    print("| models | combinations | test F1 | dev F1 |")
    print("|---|---|---|---|")
    for size, ms in by_size.items():
        d = dev_by_size[size]
        print(f"| {size} | {ms['n']} | {ms['mean']:.4f} +- {ms['std']:.4f} | {d['mean']:.4f} +- {d['std']:.4f} |")
    full = rows[-1]
    singles = [r for r in rows if r["size"] == 1]
    types = sorted(full["test_per_type"])
    print("| type | single models (mean) | ensemble of all |")
    print("|---|---|---|")
    for t in types:
        single = statistics.fmean(r["test_per_type"].get(t, 0.0) for r in singles)
        print(f"| {t} | {single:.4f} | {full['test_per_type'][t]:.4f} |")
    gain = full["test"] - by_size[1]["mean"]
    print(f"ensemble of {len(args.seeds)}: test F1 {full['test']:.4f} vs single models {by_size[1]['mean']:.4f} +- "
          f"{by_size[1]['std']:.4f}: {gain * 100:+.2f} points")
    print(json.dumps({"bench": "ensemble", "run": str(args.run), "seeds": args.seeds, "rows": rows,
                      "test_by_size": by_size, "dev_by_size": dev_by_size, "gain_points": round(gain * 100, 2),
                      "wall_s": round(time.perf_counter() - t_start, 1), "cpu_count": os.cpu_count(),
                      "load_avg_1m": round(os.getloadavg()[0], 2)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
