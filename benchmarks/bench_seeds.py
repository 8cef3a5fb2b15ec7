r"""Supervised test F1 of a shipped config over seeds: the figure a user gets from ``cemr train``.

    CEMR_DATA_DIR=../shared/data python benchmarks/bench_seeds.py \
        --config ray_configs/experiments/ccks2017.yaml --seeds 1 2 3 --out DIR [key=value ...]

Per seed (``train.seed``; the dev/test split is ``data.split_seed``, the same for every seed) the config
is trained once on its gold train (:func:`cemr.pipeline.train_from_config`: the epoch selected on dev)
and its **test** F1 reported, dev beside it, then the mean +- spread over seeds. Pretraining is shared
(``train.pretrain_seed`` = the first seed; later seeds start from a copy of the first run's ``data/``,
``pretrain/`` and ``components/``, reused by fingerprint), as in ``bench_heldout.py``;
``--pretrain-per-seed`` pretrains again for every seed. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_heldout import mean_spread, micro_f1, seed_stages  # noqa: E402


def run_seed(config: str, overrides: list[str], seed: int, out: Path, log, pretrain_seed: int | None) -> dict:
    """One seed's supervised run: its dev and test F1 (micro and per type) and seconds."""
    from cemr.config import load_config
    from cemr.pipeline import train_from_config

    run_dir = out / f"seed{seed}"
    over = [*overrides, f"train.seed={seed}", f"run_dir={run_dir}"]
    if pretrain_seed is not None:
        over.append(f"train.pretrain_seed={pretrain_seed}")
        if seed != pretrain_seed:
            copied = seed_stages(out / f"seed{pretrain_seed}", run_dir)
            if copied:
                log(f"bench_seeds: {run_dir.name} starts from seed{pretrain_seed}'s {', '.join(copied)}")
    cfg = load_config(config, over)
    t0 = time.perf_counter()
    report = train_from_config(cfg, run_dir, log=log)
    test = report.get("test")
    if test is None:
        raise SystemExit(f"{config}: no test split (data.test_fraction or data.test): no held-out figure")
    return {"seed": seed, "dev": micro_f1(report.get("dev")), "test": micro_f1(test),
            "test_per_type": {t: round(v["f1"], 4) for t, v in (test.get("per_type") or {}).items()},
            "best_epoch": report.get("best_epoch"), "seconds": round(time.perf_counter() - t0, 1),
            "model": report.get("model")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--config", required=True, help="an experiment config with a test split")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="train.seed values")
    ap.add_argument("--out", default=None, help="directory of the runs (not given: a new temporary one)")
    ap.add_argument("--pretrain-per-seed", action="store_true",
                    help="pretrain again for every seed (default: one pretraining, train.pretrain_seed = the first seed)")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_seeds_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    pretrain_seed = None if args.pretrain_per_seed else args.seeds[0]
    t0 = time.perf_counter()
    rows = [run_seed(args.config, args.overrides, s, out, log, pretrain_seed) for s in args.seeds]
    test, dev = mean_spread([r["test"] for r in rows]), mean_spread([r["dev"] for r in rows])
    print("| seed | dev F1 | test F1 | best epoch | s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['dev']:.4f} | {r['test']:.4f} | {r['best_epoch']} | {r['seconds']:.0f} |")
    print(f"test F1 over {len(rows)} seed(s): {test['mean']:.4f} +- {test['std']:.4f} "
          f"(dev {dev['mean']:.4f} +- {dev['std']:.4f})")
    print(json.dumps({"bench": "seeds", "config": args.config, "overrides": args.overrides, "seeds": args.seeds,
                      "pretrain_seed": pretrain_seed, "per_seed": rows, "test": test, "dev": dev, "out": str(out),
                      "wall_s": round(time.perf_counter() - t0, 1), "cpu_count": os.cpu_count(),
                      "load_avg_1m": round(os.getloadavg()[0], 2)}, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
