r"""Paired comparison of two ``bench_seeds.py`` runs: does a lever pay, seed by seed, on dev and on test?

    python benchmarks/bench_compare.py --base BASE_RUN --lever LEVER_RUN [--seeds 1 2 3]

Each run directory holds ``seed<N>/train_report.json`` (what ``bench_seeds.py`` / ``cemr train`` write).
The two runs must share the seeds, the dev/test split (checked through the gold mention counts of the
reports: a different split refuses) and everything but the lever, which this script cannot see: say
what differs when quoting it. Per seed: dev and test micro F1 of each arm and their difference; then the
mean +- spread of the paired differences (the seed's noise shared by both arms cancels) and whether dev
would choose the lever (mean dev difference > 0). Dev decides; test is what it costs or gains.
The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_heldout import mean_spread, micro_f1  # noqa: E402


def seed_scores(run: Path, seed: int) -> dict:
    """Dev and test micro F1 (and gold counts) of one seed of a ``bench_seeds.py`` run."""
    path = run / f"seed{seed}" / "train_report.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing (seed {seed} of {run} not trained, or not by bench_seeds.py / cemr train)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path}: not JSON ({exc})") from None
    out = {}
    for split in ("dev", "test"):
        part = report.get(split)
        if not part:
            raise SystemExit(f"{path}: no {split} scores (a config without a {split} split cannot be compared)")
        out[split] = micro_f1(part)
        out[f"{split}_gold"] = int(part["micro"]["tp"]) + int(part["micro"]["fn"])
    return out


def compare(base: Path, lever: Path, seeds: list[int]) -> dict:
    """Per-seed scores of both arms, their paired differences and the dev verdict."""
    rows = []
    for s in seeds:
        a, b = seed_scores(base, s), seed_scores(lever, s)
        for split in ("dev", "test"):
            if a[f"{split}_gold"] != b[f"{split}_gold"]:
                raise SystemExit(f"seed {s}: {split} gold mentions differ ({a[f'{split}_gold']} in {base}, "
                                 f"{b[f'{split}_gold']} in {lever}): not the same split, no paired comparison")
        rows.append({"seed": s, "base_dev": a["dev"], "lever_dev": b["dev"], "base_test": a["test"],
                     "lever_test": b["test"], "dev_diff": b["dev"] - a["dev"], "test_diff": b["test"] - a["test"]})
    out = {key: mean_spread([r[key] for r in rows])
           for key in ("base_dev", "lever_dev", "base_test", "lever_test", "dev_diff", "test_diff")}
    return {"per_seed": rows, **out, "dev_picks_lever": out["dev_diff"]["mean"] > 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--base", required=True, help="bench_seeds.py run directory without the lever")
    ap.add_argument("--lever", required=True, help="bench_seeds.py run directory with the lever")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds trained in both runs")
    args = ap.parse_args(argv)
    base, lever = Path(args.base).resolve(), Path(args.lever).resolve()
    result = compare(base, lever, args.seeds)
    print("| seed | dev base | dev lever | dev diff | test base | test lever | test diff |")
    print("|---|---|---|---|---|---|---|")
    for r in result["per_seed"]:
        print(f"| {r['seed']} | {r['base_dev']:.4f} | {r['lever_dev']:.4f} | {r['dev_diff']:+.4f} | "
              f"{r['base_test']:.4f} | {r['lever_test']:.4f} | {r['test_diff']:+.4f} |")
    d, t = result["dev_diff"], result["test_diff"]
    print(f"paired difference over {d['n']} seed(s): dev {d['mean']:+.4f} +- {d['std']:.4f}, "
          f"test {t['mean']:+.4f} +- {t['std']:.4f}; dev {'picks' if result['dev_picks_lever'] else 'does not pick'} "
          "the lever")
    print(json.dumps({"bench": "compare", "base": str(base), "lever": str(lever), "seeds": args.seeds, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
