r"""Low-resource self-training gain: a bootstrap run with ``data.labeled_fraction < 1``, round by round.

    CEMR_DATA_DIR=../shared/data python benchmarks/bench_lowres.py \
        [--config ray_configs/experiments/yidu_s4k_lowres.yaml] [--out DIR] [--pretrain RUN_DIR]
        [--round0-epochs N [--round0-patience P] [--round0-set KEY=VALUE ...] | --round0-from RUN_DIR]
        [key=value ...]

Runs :func:`cluster.bootstrap.run_bootstrap` (local Ray, MLflow in ``OUT/mlflow.db``) on the
config (``run_dir`` = ``--out``): round 0 trains on the kept part of gold train; every later round
pseudo-labels the pool, in which the held-out part of train sits with its labels hidden, and
retrains on gold + pseudo-labels. ``--pretrain RUN_DIR`` links ``RUN_DIR/pretrain`` (a finished
run of the same model config, e.g. ``cemr train --config ray_configs/experiments/yidu_s4k.yaml``)
instead of pretraining again. ``--round0-epochs``: round 0 is trained first on its own (the
run's ``train.*`` with these epochs / patience, ``selftrain.max_rounds=0``), then the run is
resumed for the self-training rounds with the ``train.*`` of the config: a baseline trained to
convergence on its few hundred sentences, so the gain is not merely more optimisation steps.
``--round0-from RUN_DIR``: start from the round 0 of an earlier run of this benchmark (linked, the
way a threshold sweep shares it), to compare self-training settings on one baseline.

Reports per round: dev P/R/F1, pseudo-labeled sentences kept, precision/recall/F1 of the kept
pseudo-labels against the hidden gold of the held-out rows, seconds; then the gain of self-training
over the supervised round 0 in test F1 points (the later round dev F1 selects; also the last round).
The last line is one JSON object. Scores are entity-level (exact span and type) on document offsets;
one seed (``benchmarks/bench_heldout.py`` gives the claim: seeds, and the 100%-gold reference).
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
REPO = HERE.parent
sys.path.insert(0, str(REPO))

DEFAULT_CONFIG = REPO / "ray_configs" / "experiments" / "yidu_s4k_lowres.yaml"


def round_rows(state) -> list[dict]:
    """One flat row per completed round of a :class:`cemr.selftrain.RunState`."""
    rows = []
    for r in state.rounds:
        prf = r.pseudo_prf or {}
        rows.append({
            "round": r.round,
            "dev_precision": round(r.dev_precision, 4),
            "dev_recall": round(r.dev_recall, 4),
            "dev_f1": round(r.dev_f1, 4),
            "test_f1": round(r.extra["test"]["micro"]["f1"], 4) if (r.extra or {}).get("test") else None,
            "threshold": r.threshold,
            "pseudo_kept": r.pseudo_sentences,
            "pseudo_precision": round(prf["precision"], 4) if "precision" in prf else None,
            "pseudo_recall": round(prf["recall"], 4) if "recall" in prf else None,
            "pseudo_f1": round(prf["f1"], 4) if "f1" in prf else None,
            "seconds": round(r.seconds, 1),
        })
    return rows


def gains(rows: list[dict]) -> dict:
    """Test-F1 gains (points) over round 0 of the round dev F1 selects among rounds >= 1, and of
    the last round. Rounds are selected on dev and reported on test; without a test split the
    dev figures are given and ``on`` says so."""
    if not rows or rows[0]["round"] != 0:
        raise ValueError("no round 0 in the run")
    on = "test" if all(r.get("test_f1") is not None for r in rows) else "dev"
    key = f"{on}_f1"
    base = rows[0][key]
    later = rows[1:]
    if not later:
        return {"on": on, "round0_f1": base, "best_round": 0, "gain_best_points": 0.0, "gain_last_points": 0.0}
    best = max(later, key=lambda r: r["dev_f1"])  # selected on dev
    return {
        "on": on,
        "round0_f1": base,
        "best_round": best["round"],
        "best_f1": best[key],
        "gain_best_points": round(100 * (best[key] - base), 2),
        "gain_last_points": round(100 * (later[-1][key] - base), 2),
        "dev_prefers_round0": best["dev_f1"] <= rows[0]["dev_f1"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(DEFAULT_CONFIG))
    ap.add_argument("--out", default=None, help="run directory (default: a new temporary one)")
    ap.add_argument("--pretrain", default=None, help="a finished run directory whose pretrain/ to link")
    ap.add_argument("--round0-epochs", type=int, default=None,
                    help="train round 0 (the supervised baseline, on the small gold set) with this many epochs "
                         "(and --round0-patience) before the self-training rounds: its few sentences need "
                         "more epochs to converge than the later, larger training sets")
    ap.add_argument("--round0-patience", type=int, default=4)
    ap.add_argument("--round0-set", action="append", default=[], metavar="KEY=VALUE",
                    help="with --round0-epochs: an override for round 0 only (repeatable), e.g. train.lr_decay=0.93 "
                         "for a slower schedule over its many short epochs")
    ap.add_argument("--round0-from", default=None, metavar="RUN_DIR",
                    help="a bench_lowres run directory of the same data/lexicon/model config: its round 0 and its "
                         "data/, pretrain/, components/ are shared (linked) instead of redone, so self-training "
                         "variants are compared on one baseline")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    if args.round0_set and args.round0_epochs is None:
        raise SystemExit("--round0-set needs --round0-epochs (round 0 trained on its own)")

    from cemr.config import flatten, load_config
    from cemr.pipeline import RunLayout
    from cemr.selftrain import load_state
    from cluster.bootstrap import check_resume_config, run_bootstrap
    from cluster.sweep import seed_member

    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench_lowres_"))
    out = out.resolve()
    cfg = load_config(args.config, [*args.overrides, f"run_dir={out}",
                                    f"tracking.tracking_uri=sqlite:///{out}/mlflow.db"])
    if cfg.data.labeled_fraction >= 1:
        raise SystemExit(f"{args.config}: data.labeled_fraction is {cfg.data.labeled_fraction}; the low-resource "
                         "protocol needs < 1")
    out.mkdir(parents=True, exist_ok=True)
    if args.round0_from:
        if args.pretrain or args.round0_epochs is not None or args.round0_set:
            raise SystemExit("--round0-from takes round 0 and pretrain/ from that run: drop --pretrain / "
                             "--round0-epochs / --round0-set")
        src = Path(args.round0_from).resolve()
        src_state = load_state(src)
        if src_state is None or not src_state.rounds or src_state.rounds[0].round != 0:
            raise SystemExit(f"{src}: no completed round 0 in its state.json")
        # data/lexicon/model must agree; selftrain.* may differ: only round 0 (gold only) is shared,
        # however far the source ran
        check_resume_config(src_state.config, flatten(cfg), src / "state.json", selftrain_started=False)
        seed_member(cfg, RunLayout.of(src), src_state)
    if args.pretrain:
        src = Path(args.pretrain).resolve() / "pretrain"
        if not src.is_dir():
            raise SystemExit(f"{src}: no pretrain directory")
        if not (out / "pretrain").exists():
            (out / "pretrain").symlink_to(src, target_is_directory=True)
    t0 = time.perf_counter()
    log = lambda m: print(m, flush=True)  # noqa: E731
    state = load_state(out)
    if args.round0_epochs is not None and (state is None or not state.rounds):
        cfg0 = load_config(args.config, [*args.overrides, f"run_dir={out}",
                                         f"tracking.tracking_uri=sqlite:///{out}/mlflow.db", "selftrain.max_rounds=0",
                                         f"train.epochs={args.round0_epochs}",
                                         f"train.patience={args.round0_patience}", *args.round0_set])
        log(f"round 0: {args.round0_epochs} epochs, patience {args.round0_patience}")
        run_bootstrap(cfg0, resume=state is not None, log=log)
    summary = run_bootstrap(cfg, resume=(out / "state.json").exists(), log=log)
    wall = time.perf_counter() - t0
    state = load_state(out)
    rows = round_rows(state)
    g = gains(rows)

    print()
    print("| round | dev P | dev R | dev F1 | test F1 | kept | pseudo P | pseudo R | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['round']} | {r['dev_precision']:.4f} | {r['dev_recall']:.4f} | {r['dev_f1']:.4f} | "
              f"{r['test_f1'] if r['test_f1'] is not None else '-'} | "
              f"{r['pseudo_kept']} | {r['pseudo_precision'] if r['pseudo_precision'] is not None else '-'} | "
              f"{r['pseudo_recall'] if r['pseudo_recall'] is not None else '-'} | {r['seconds']:.0f} |")
    print(f"{g['on']} F1 gain over round 0: {g['gain_best_points']:+.2f} points (round {g['best_round']}, the "
          f"self-training round selected on dev), {g['gain_last_points']:+.2f} (last round); one seed: "
          f"benchmarks/bench_heldout.py for seeds")
    if g.get("dev_prefers_round0"):
        print("dev F1 of every self-training round is at or below round 0's: the bootstrap keeps and reports round 0")
    report = json.loads((out / "data" / "prepare_report.json").read_text(encoding="utf-8"))
    print(json.dumps({
        "bench": "lowres",
        "config": str(args.config),
        "overrides": args.overrides,
        "labeled_fraction": cfg.data.labeled_fraction,
        "threshold": cfg.selftrain.threshold,
        "round0_epochs": args.round0_epochs,
        "round0_patience": args.round0_patience if args.round0_epochs is not None else None,
        "round0_set": args.round0_set,
        "round0_from": args.round0_from,
        "sentences": report.get("sentences"),
        "rounds": rows,
        **g,
        "stop_reason": summary.stop_reason,
        "mlflow_run_id": summary.mlflow_run_id,
        "run_dir": str(out),
        "wall_s": round(wall, 1),
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }, ensure_ascii=False, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
