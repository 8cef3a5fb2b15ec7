r"""Held-out figures with seeds: 10%-gold supervised, 100%-gold supervised and 10%-gold self-trained,
each the TEST F1 of the dev-selected model, mean +- spread over seeds (split fixed, model seeds varied).

    CEMR_DATA_DIR=../shared/data python benchmarks/bench_heldout.py \
        --config ray_configs/experiments/yidu_s4k_lowres.yaml --seeds 1 2 3 --out DIR [key=value ...]

The config is a low-resource experiment (``data.labeled_fraction < 1``: the rest of gold train is
the pool's hidden gold). Per seed (``train.seed``; the dev/test split is ``data.split_seed``, the
same for every seed):

- **low supervised**: round 0 of the bootstrap run of the config (:func:`cluster.bootstrap.run_bootstrap`,
  local Ray, MLflow in ``OUT/mlflow.db``): the tagger trained on the kept gold only, its epoch
  selected on dev; its test F1.
- **self-trained**: the round the same run selects by dev F1 (round 0 if no later round beats it);
  its test F1.
- **full supervised**: the config with ``data.labeled_fraction=1`` trained once on all gold train
  (:func:`cemr.pipeline.train_from_config`, epoch selected on dev); its test F1.

``gap_recovered`` = (self-trained - low) / (full - low), per seed and for the means. Every figure
is a test figure; dev figures are printed beside them. The last line is one JSON object.

Pretraining (word2vec, BiLM, BERT) is shared across seeds by default: every run gets
``train.pretrain_seed`` = the first seed, and the runs after the first start from a copy of the
first run's ``data/``, ``pretrain/`` and ``components/`` of the same arm (their fingerprints match,
so they are reused, not redone). The seeds then vary what a seed study varies (initialisation,
dropout, batch order, self-training); ``--pretrain-per-seed`` pretrains again for every seed.

``--full-from SEEDS_RUN`` takes the full-supervised arm from a finished ``benchmarks/bench_seeds.py``
run (``SEEDS_RUN/seed<N>/train_report.json``) of a 100%-gold config instead of training it again; the
seed's dev and test documents there must be byte-identical to this run's (same split), or it stops.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

ARMS = ("low", "self", "full")


def micro_f1(report: dict | None) -> float | None:
    """The micro F1 of an evaluation report dict (``None`` when there is none)."""
    if not report:
        return None
    return float(report["micro"]["f1"])


def selected_rounds(state) -> dict:
    """Round 0 and the dev-selected round of a bootstrap run: their dev and test F1."""
    from cemr.selftrain import best_round

    if not state or not state.rounds or state.rounds[0].round != 0:
        raise ValueError("the run has no round 0")
    r0, best = state.rounds[0], best_round(state.rounds)
    return {
        "low_dev": r0.dev_f1, "low_test": micro_f1(r0.extra.get("test")),
        "self_dev": best.dev_f1, "self_test": micro_f1(best.extra.get("test")), "self_round": best.round,
        "rounds": [{"round": r.round, "dev_f1": round(r.dev_f1, 4), "test_f1": micro_f1(r.extra.get("test")),
                    "pseudo_kept": r.pseudo_sentences,
                    "pseudo_precision": (r.pseudo_prf or {}).get("precision")} for r in state.rounds],
    }


def gap_recovered(low: float, self_: float, full: float) -> float | None:
    """The share of the gap between low and full supervision that self-training closes."""
    gap = full - low
    if abs(gap) < 1e-9:
        return None
    return (self_ - low) / gap


def mean_spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(per_seed: list[dict]) -> dict:
    """Mean +- spread of each arm's test (and dev) F1 over seeds, and the gap recovered."""
    out = {f"{arm}_{split}": mean_spread([s[f"{arm}_{split}"] for s in per_seed])
           for arm in ARMS for split in ("test", "dev")}
    out["gap_recovered_per_seed"] = mean_spread([s["gap_recovered"] for s in per_seed])
    means = {arm: out[f"{arm}_test"]["mean"] for arm in ARMS}
    out["gap_recovered_of_means"] = (gap_recovered(means["low"], means["self"], means["full"])
                                     if None not in means.values() else None)
    return out


def seed_stages(source: Path, target: Path) -> list[str]:
    """Copy the seed-independent stages (``data/``, ``pretrain/``, ``components/``) of run
    ``source`` into a new run ``target``; returns the stages copied (none when ``target`` exists)."""
    from cemr.pipeline import RunLayout

    if target.exists():
        return []
    src, dst = RunLayout.of(source), RunLayout.of(target)
    copied = []
    for name in ("data", "pretrain", "components"):
        a, b = getattr(src, name), getattr(dst, name)
        if a.is_dir():
            shutil.copytree(a, b, copy_function=shutil.copy2)  # copy2 keeps mtimes
            copied.append(name)
    return copied


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (documents of two runs compared: the same split or not)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def full_from_seeds_run(seeds_run: Path, seed: int, run_dir: Path) -> dict:
    """The full-supervised arm of ``seed`` read from a ``bench_seeds.py`` run: its dev and test F1 and
    where they come from. Refuses a run whose dev or test documents differ from ``run_dir``'s."""
    src = Path(seeds_run) / f"seed{seed}"
    report_path = src / "train_report.json"
    if not report_path.is_file():
        raise SystemExit(f"--full-from: {report_path} does not exist (run bench_seeds.py with seed {seed})")
    for split in ("dev", "test"):
        mine, theirs = (d / "data" / "documents" / f"{split}.jsonl" for d in (Path(run_dir), src))
        if not theirs.is_file() or not mine.is_file():
            raise SystemExit(f"--full-from: {theirs if not theirs.is_file() else mine} does not exist")
        if file_digest(mine) != file_digest(theirs):
            raise SystemExit(f"--full-from: {theirs} differs from {mine}: not the same {split} split")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    cfg_name = None
    cfg_path = src / "config.yaml"
    if cfg_path.is_file():
        import yaml

        cfg_name = (yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}).get("name")
    return {"full_dev": micro_f1(report.get("dev")), "full_test": micro_f1(report.get("test")),
            "full_from": str(src), "full_config": cfg_name, "full_best_epoch": report.get("best_epoch")}


def run_seed(config: str, overrides: list[str], seed: int, out: Path, log, pretrain_seed: int | None = None,
             full_from: Path | None = None) -> dict:
    """One seed's three arms. ``pretrain_seed``: shared pretraining (``train.pretrain_seed``); the
    runs of seed ``pretrain_seed`` itself pretrain, later seeds start from their stages."""
    from cemr.config import load_config
    from cemr.pipeline import train_from_config
    from cemr.selftrain import load_state
    from cluster.bootstrap import run_bootstrap

    common = [*overrides, f"train.seed={seed}", f"tracking.tracking_uri=sqlite:///{out}/mlflow.db"]
    low_dir, full_dir = out / f"seed{seed}_low", out / f"seed{seed}_full"
    if pretrain_seed is not None:
        common.append(f"train.pretrain_seed={pretrain_seed}")
        if seed != pretrain_seed:
            for arm_dir, first in ((low_dir, out / f"seed{pretrain_seed}_low"), (full_dir, out / f"seed{pretrain_seed}_full")):
                copied = seed_stages(first, arm_dir)
                if copied:
                    log(f"bench_heldout: {arm_dir.name} starts from {first.name}'s {', '.join(copied)}")
    cfg = load_config(config, [*common, f"run_dir={low_dir}"])
    if cfg.data.labeled_fraction >= 1:
        raise SystemExit(f"{config}: data.labeled_fraction is {cfg.data.labeled_fraction}; the protocol needs < 1")
    t0 = time.perf_counter()
    run_bootstrap(cfg, resume=(low_dir / "state.json").exists(), log=log)
    row = selected_rounds(load_state(low_dir))
    t1 = time.perf_counter()
    if full_from is not None:
        row.update(full_from_seeds_run(full_from, seed, low_dir))
        log(f"bench_heldout: seed {seed}'s full arm read from {row['full_from']} ({row['full_config']})")
    else:
        full_cfg = load_config(config, [*common, f"run_dir={full_dir}", "data.labeled_fraction=1.0"])
        report = train_from_config(full_cfg, full_dir, log=log)
        row.update(full_dev=micro_f1(report.get("dev")), full_test=micro_f1(report.get("test")))
    row.update(seed=seed, seconds_low=round(t1 - t0, 1), seconds_full=round(time.perf_counter() - t1, 1))
    if row["full_test"] is None or row["low_test"] is None:
        raise SystemExit(f"{config}: no test split (data.test_fraction or data.test): no held-out figure")
    row["gap_recovered"] = gap_recovered(row["low_test"], row["self_test"], row["full_test"])
    return row


def _fmt(ms: dict) -> str:
    return "-" if ms["mean"] is None else f"{ms['mean']:.4f} +- {ms['std']:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="a low-resource experiment config")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="train.seed values")
    ap.add_argument("--out", default=None, help="directory of the runs (default: a new temporary one)")
    ap.add_argument("--pretrain-per-seed", action="store_true",
                    help="pretrain again for every seed (default: one pretraining, train.pretrain_seed = the first seed)")
    ap.add_argument("--full-from", type=Path, default=None, metavar="SEEDS_RUN",
                    help="read the full-supervised arm from this bench_seeds.py run (same seeds, same dev/test split) "
                         "instead of training it")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_heldout_")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    pretrain_seed = None if args.pretrain_per_seed else args.seeds[0]
    per_seed = [run_seed(args.config, args.overrides, s, out, log, pretrain_seed, args.full_from)
                for s in args.seeds]
    summary = summarize(per_seed)

    print("| seed | low test | self test (round) | full test | gap recovered | low / self / full dev |")
    print("|---|---|---|---|---|---|")
    for s in per_seed:
        gap = "-" if s["gap_recovered"] is None else f"{s['gap_recovered']:.2f}"
        print(f"| {s['seed']} | {s['low_test']:.4f} | {s['self_test']:.4f} ({s['self_round']}) | {s['full_test']:.4f} | "
              f"{gap} | {s['low_dev']:.4f} / {s['self_dev']:.4f} / {s['full_dev']:.4f} |")
    print(f"test F1 over {len(per_seed)} seed(s): low {_fmt(summary['low_test'])}, self-trained "
          f"{_fmt(summary['self_test'])}, full {_fmt(summary['full_test'])}; gap recovered "
          f"{summary['gap_recovered_of_means'] if summary['gap_recovered_of_means'] is None else round(summary['gap_recovered_of_means'], 3)}")
    print(json.dumps({"bench": "heldout", "config": args.config, "overrides": args.overrides, "seeds": args.seeds,
                      "pretrain_seed": pretrain_seed,
                      "full_from": None if args.full_from is None else str(args.full_from), "per_seed": per_seed, **summary, "out": str(out),
                      "wall_s": round(time.perf_counter() - t0, 1), "cpu_count": os.cpu_count(),
                      "load_avg_1m": round(os.getloadavg()[0], 2)}, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
