r"""Pseudo-label quality of teachers (issue #13 lever: small-ensemble confidence): one model or a seed /
round ensemble labels a low-resource run's pool; its kept labels are scored against the pool's hidden gold.

    python benchmarks/bench_teacher.py --run RUN_DIR --teacher NAME=MODEL_DIR[,MODEL_DIR...] ...
        [--threshold 0.9] [--selection partial] [--confidence entity_min_marginal] [--batch-size 256]

``RUN_DIR`` is a ``data.labeled_fraction < 1`` bootstrap run (``RUN_DIR/data/unlabeled``: the pool;
``RUN_DIR/data/heldout``: the hidden gold of its labeled part). Each teacher labels every pool sentence
in this process with the pseudo-labeling actors' own class (:class:`cluster.pseudolabel.PseudoLabeler`:
the predictor + the selection rule of ``--threshold`` / ``--selection`` / ``--confidence``, as
``selftrain`` sets them); several directories make a seed ensemble (:class:`cemr.ensemble.EnsembleLoader`,
averaged CRF potentials). The kept labels are scored as every bootstrap round scores its own
(:func:`cluster.pseudosets.score_against_heldout`): precision, recall and F1 against the hidden gold, per
type, and the sentences and entities kept. Nothing is trained: this measures what a teacher would hand
a student, not what the student then scores. Last line: one JSON object.
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


def parse_teacher(spec: str) -> tuple[str, list[str]]:
    """``NAME=DIR[,DIR...]`` -> ``(NAME, [DIR, ...])``."""
    name, sep, dirs = spec.partition("=")
    paths = [d for d in dirs.split(",") if d]
    if not sep or not name or not paths:
        raise SystemExit(f"--teacher {spec!r}: expected NAME=MODEL_DIR[,MODEL_DIR...]")
    for p in paths:
        if not (Path(p) / "config.json").is_file():
            raise SystemExit(f"--teacher {name}: {p} is not a model directory (no config.json)")
    return name, paths


def fitted_thresholds(labeler, dev_docs, args) -> list:
    """Per-type thresholds for ``--target-precision`` fitted on the teacher's dev predictions (the
    bootstrap's own rule: :func:`cemr.selection.fit_type_thresholds` of
    :func:`cluster.round_metrics.entity_items`)."""
    from cemr.selection import fit_type_thresholds
    from cluster.round_metrics import entity_items

    pairs = list(labeler.predictor.predict_document_sentences(dev_docs, batch_size=64))
    return fit_type_thresholds(*entity_items(pairs, {d.id: d.spans for d in dev_docs}), args.target_precision)


def label_pool(paths: list[str], pool: Path, out: Path, args, dev_docs=None) -> dict:
    """Label every sentence of ``pool`` with the teacher; write its kept rows to ``out``; counts.
    ``dev_docs``: fit per-type thresholds on them first (``--target-precision``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from cluster.pseudolabel import INPUT_COLUMNS, PseudoLabeler

    factory = "cemr.predictor:Predictor" if len(paths) == 1 else "cemr.ensemble:EnsembleLoader"
    t0 = time.perf_counter()
    labeler = PseudoLabeler(factory, os.pathsep.join(paths), "cpu", args.threshold, args.selection, 1,
                            predict_batch_size=min(args.batch_size, 64),
                            predictor_kwargs={"confidence": args.confidence, "num_threads": args.threads})
    fitted = None
    if dev_docs is not None:
        fitted = fitted_thresholds(labeler, dev_docs, args)
        labeler.type_thresholds = tuple((f.type, f.threshold) for f in fitted if f.threshold is not None)
    loaded = time.perf_counter()
    counts: dict[str, int] = {}
    kept_tables = []
    for rb in pads.dataset(str(pool), format="parquet").to_batches(columns=INPUT_COLUMNS, batch_size=args.batch_size):
        table = labeler(pa.Table.from_batches([rb]))
        for status in table.column("status").to_pylist():
            counts[status] = counts.get(status, 0) + 1
        kept_tables.append(table.filter(pc.equal(table.column("status"), "kept")))
    out.mkdir(parents=True, exist_ok=True)
    kept = pa.concat_tables(kept_tables)
    pq.write_table(kept, out / "kept.parquet")
    entities = sum(len(s) for s in kept.column("spans").to_pylist())
    return {"counts": counts, "kept_entities": entities, "load_s": round(loaded - t0, 1),
            "label_s": round(time.perf_counter() - loaded, 1),
            "type_thresholds": None if fitted is None else [f.to_dict() for f in fitted]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="a low-resource bootstrap run directory")
    ap.add_argument("--teacher", action="append", required=True, metavar="NAME=DIR[,DIR...]",
                    help="a teacher: one model directory, or several (their seed ensemble); repeat for more")
    ap.add_argument("--threshold", type=float, default=0.9, help="selftrain.threshold")
    ap.add_argument("--selection", default="partial", help="selftrain.selection")
    ap.add_argument("--confidence", default="entity_min_marginal", help="selftrain.confidence")
    ap.add_argument("--target-precision", type=float, default=None,
                    help="also label with per-type thresholds fitted on RUN/data/documents/dev.jsonl for this "
                         "precision (selftrain.target_precision)")
    ap.add_argument("--batch-size", type=int, default=256, help="rows per labeler call")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    args = ap.parse_args(argv)

    from cemr.corpus.shards import count_rows
    from cluster.pseudosets import score_against_heldout

    pool, heldout = args.run / "data" / "unlabeled", args.run / "data" / "heldout"
    if not pool.is_dir() or not heldout.is_dir() or count_rows(heldout) == 0:
        raise SystemExit(f"{args.run}: no data/unlabeled pool with data/heldout hidden gold (a labeled_fraction < 1 run)")
    parsed = [parse_teacher(t) for t in args.teacher]
    teachers = [(name, paths, False) for name, paths in parsed]  # (name, model dirs, fit thresholds on dev)
    dev_docs = None
    if args.target_precision is not None:
        from cemr.pipeline import RunLayout, load_documents

        dev_docs = load_documents(RunLayout.of(args.run), "dev")
        if not dev_docs:
            raise SystemExit(f"--target-precision: {args.run} has no dev documents to fit thresholds on")
        teachers += [(f"{name}@p{args.target_precision:g}", paths, True) for name, paths in parsed]
    work = Path(tempfile.mkdtemp(prefix="bench_teacher_"))
    t_start = time.perf_counter()
    rows = []
    for name, paths, fit in teachers:
        res = label_pool(paths, pool, work / name, args, dev_docs if fit else None)
        prf = score_against_heldout(work / name, heldout)
        per_type = {t: round(v["f1"], 4) for t, v in prf.pop("per_type").items()}
        row = {"teacher": name, "models": paths, **res, **{k: prf[k] for k in ("precision", "recall", "f1", "tp",
                                                                              "fp", "fn", "kept_scored_sentences")},
               "per_type_f1": per_type}
        rows.append(row)
        print(f"{name:>12}: kept {res['counts'].get('kept', 0)} of {sum(res['counts'].values())} sentences, "
              f"{res['kept_entities']} entities; vs hidden gold P {prf['precision']:.4f} R {prf['recall']:.4f} "
              f"F1 {prf['f1']:.4f}  ({res['label_s']:.0f}s)", flush=True)
        if res["type_thresholds"]:
            print("              thresholds: " + ", ".join(
                f"{f['type']} {'-' if f['threshold'] is None else format(f['threshold'], '.3f')}"
                for f in res["type_thresholds"]), flush=True)
    print("| teacher | models | sentences kept | entities kept | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['teacher']} | {len(r['models'])} | {r['counts'].get('kept', 0)} | {r['kept_entities']} | "
              f"{r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} |")
    print(json.dumps({"bench": "teacher", "run": str(args.run), "threshold": args.threshold,
                      "target_precision": args.target_precision,
                      "selection": args.selection, "confidence": args.confidence, "rows": rows,
                      "scored_sentences": count_rows(heldout), "pool_sentences": count_rows(pool),
                      "wall_s": round(time.perf_counter() - t_start, 1), "cpu_count": os.cpu_count(),
                      "load_avg_1m": round(os.getloadavg()[0], 2)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
