"""The paper's feature ablation in one command: base BiGRU-attention-CRF, + dictionary, + BiLM,
+ BERT, all features; micro P/R/F1 and per-type F1 on the dev split carved from train.

    python benchmarks/ablation.py --dataset yidu|ccks2017 [--variants base,dict,bilm,bert,all]
        [--out DIR] [--reuse RUN_DIR] [--from-run VARIANT=RUN_DIR ...] [key=value ...]

The experiment config ``ray_configs/experiments/<dataset>.yaml`` (plus the ``key=value``
overrides, applied to every variant) is prepared and pretrained ONCE, with every featurizer on,
in ``OUT/shared`` (or taken from ``--reuse RUN_DIR``, a finished ``cemr train`` run of the same
config: its ``data/`` and ``pretrain/`` are linked, not recomputed). Each variant then runs
``train_from_config`` in ``OUT/<variant>`` whose ``data`` and ``pretrain`` are symlinks to the
shared ones, so only the components and the fit stage run per variant. Variants differ only in
``model.{dictionary,bilm,bert}.enabled`` (and ``lexicon.preset`` for the ``*_nopreset`` ones).
``--from-run VARIANT=RUN_DIR`` takes that variant's row from a finished ``cemr train`` run instead
of training it again (e.g. ``all=`` the run of the plain experiment config, or a variant directory
of an earlier ablation); the run's ``config.yaml`` must equal the variant's config in every key
but ``run_dir``, or the command stops naming the keys that differ.

Prints one table (micro P/R/F1, per-type F1, train seconds per variant) and, last, one JSON object.
Figures go in ``benchmarks/README.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
import unicodedata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cemr.config import Config, flatten, load_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATASETS = {"yidu": "yidu_s4k", "yidu_s4k": "yidu_s4k", "ccks2017": "ccks2017"}

FEATURES = ("dictionary", "bilm", "bert")
# variant -> (features on, extra overrides)
VARIANTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "base": ((), ()),
    "dict": (("dictionary",), ()),
    "bilm": (("bilm",), ()),
    "bert": (("bert",), ()),
    "all": (FEATURES, ()),
    # the lexicon's external term lists off (training mentions, out-of-fold, only)
    "dict_nopreset": (("dictionary",), ("lexicon.preset=null",)),
    "all_nopreset": (FEATURES, ("lexicon.preset=null",)),
}
DEFAULT_VARIANTS = "base,dict,bilm,bert,all"


def variant_overrides(name: str) -> list[str]:
    """The ``key=value`` overrides that make variant ``name`` out of the experiment config."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
    on, extra = VARIANTS[name]
    return [f"model.{f}.enabled={'true' if f in on else 'false'}" for f in FEATURES] + list(extra)


def config_path(dataset: str) -> Path:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(sorted(DATASETS))}")
    return REPO / "ray_configs" / "experiments" / f"{DATASETS[dataset]}.yaml"


def link_shared(src: Path, dst: Path) -> None:
    """Make ``dst`` a symlink to the directory ``src`` (replacing a stale link)."""
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: missing (shared prepare/pretrain output)")
    if dst.is_symlink():
        if dst.resolve() == src.resolve():
            return
        dst.unlink()
    elif dst.exists():
        raise FileExistsError(f"{dst}: exists and is not a link to the shared {src.name}/ (remove it)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src.resolve(), target_is_directory=True)


def prepare_shared(cfg_file: Path, overrides: list[str], out: Path, reuse: Path | None, log) -> Path:
    """``out/shared`` with ``data/`` and ``pretrain/`` done (all featurizers pretrained)."""
    from cemr.pipeline import RunLayout, prepare_data, pretrain_stage
    from cemr.training import resolve_device

    shared = RunLayout.of(out / "shared")
    shared.root.mkdir(parents=True, exist_ok=True)
    if reuse is not None:
        for part in ("data", "pretrain"):
            link_shared(reuse / part, shared.root / part)
    cfg = load_config(cfg_file, overrides + variant_overrides("all"))
    t0 = time.perf_counter()
    prepare_data(cfg, shared, log)
    t1 = time.perf_counter()
    pretrain_stage(cfg, shared, resolve_device(cfg.train.device), log)
    t2 = time.perf_counter()
    log(f"shared: prepare {t1 - t0:.1f}s, pretrain {t2 - t1:.1f}s in {shared.root}")
    return shared.root


def variant_row(name: str, cfg: Config, summary: dict[str, Any], seconds: float | None) -> dict[str, Any]:
    """One table row from a ``train_from_config`` summary (or a run's ``train_report.json``)."""
    dev = summary.get("dev") or {}
    micro = dev.get("micro", {})
    return {
        "variant": name,
        "features": [f for f in FEATURES if getattr(cfg.model, f).enabled],
        "lexicon_preset": cfg.lexicon.preset if cfg.model.dictionary.enabled else None,
        "precision": micro.get("precision"),
        "recall": micro.get("recall"),
        "f1": micro.get("f1"),
        "per_type_f1": {t: v["f1"] for t, v in dev.get("per_type", {}).items()},
        "best_epoch": summary.get("best_epoch"),
        "epochs_run": summary.get("epochs_run"),
        "seconds": seconds,
    }


def run_variant(name: str, cfg: Config, shared: Path, out: Path, log) -> dict[str, Any]:
    """Train one variant in ``out/name`` on the shared data/pretrain; its figures (or its error)."""
    from cemr.pipeline import train_from_config

    run_dir = out / name
    for part in ("data", "pretrain"):
        link_shared(shared / part, run_dir / part)
    t0 = time.perf_counter()
    try:
        summary = train_from_config(cfg, run_dir, log=lambda m: log(f"[{name}] {m}"))
    except Exception as exc:  # one failed variant must not hide the others: reported in the table
        traceback.print_exc()
        return {"variant": name, "error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - t0}
    return variant_row(name, cfg, summary, time.perf_counter() - t0)


def config_differences(a: Config, b: Config) -> list[str]:
    """Dotted keys whose values differ between two configs, ``run_dir`` aside."""
    fa, fb = flatten(a), flatten(b)
    return sorted(k for k in set(fa) | set(fb) if k != "run_dir" and fa.get(k, "<absent>") != fb.get(k, "<absent>"))


def reused_variant(name: str, cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Variant ``name``'s row read from a finished ``cemr train`` run of exactly its config.

    ``run_dir/config.yaml`` must equal the variant's config in every key but ``run_dir`` (else
    ``ValueError`` naming the differing keys), and ``run_dir/train_report.json`` must hold its dev
    scores; ``seconds`` is None (not trained here) and ``reused_from`` names the run.
    """
    saved_file, report_file = run_dir / "config.yaml", run_dir / "train_report.json"
    for f in (saved_file, report_file):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: missing; --from-run needs a finished `cemr train` run directory")
    diff = config_differences(cfg, load_config(saved_file))
    if diff:
        shown = ", ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")
        raise ValueError(f"{saved_file}: not variant {name!r}'s config; differs in {shown}")
    report = json.loads(report_file.read_text(encoding="utf-8"))
    if not (report.get("dev") or {}).get("micro"):
        raise ValueError(f"{report_file}: no dev scores")
    return {**variant_row(name, cfg, report, None), "reused_from": str(run_dir)}


def parse_from_run(items: list[str]) -> dict[str, Path]:
    """``VARIANT=RUN_DIR`` pairs -> {variant: path}; unknown variants refused."""
    out: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not path:
            raise ValueError(f"--from-run {item!r}: expected VARIANT=RUN_DIR")
        variant_overrides(name)  # unknown names fail here
        out[name] = Path(path).resolve()
    return out


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def _cell(s: str, w: int) -> str:
    return s + " " * max(0, w - _width(s))


def format_table(rows: list[dict[str, Any]]) -> str:
    """Aligned text table: one row per variant (micro P/R/F1, per-type F1, delta F1 vs base, seconds)."""
    types = sorted({t for r in rows for t in r.get("per_type_f1", {})})
    base = next((r.get("f1") for r in rows if r["variant"] == "base" and r.get("f1") is not None), None)
    header = ["variant", "P", "R", "F1", "dF1", *types, "epochs", "seconds"]
    table = [header]
    for r in rows:
        if "error" in r:
            table.append([r["variant"], "error: " + r["error"][:80]])
            continue
        delta = f"{100 * (r['f1'] - base):+.2f}" if base is not None else "-"
        table.append([
            r["variant"], f"{r['precision']:.4f}", f"{r['recall']:.4f}", f"{r['f1']:.4f}", delta,
            *[f"{r['per_type_f1'].get(t, 0.0):.4f}" for t in types],
            f"{r['best_epoch']}/{r['epochs_run']}",
            "reused" if r.get("reused_from") else f"{r['seconds']:.0f}",
        ])
    widths = [max(_width(row[i]) for row in table if i < len(row)) for i in range(len(header))]
    return "\n".join("  ".join(_cell(c, widths[i]) for i, c in enumerate(row)) for row in table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ap.add_argument("--variants", default=DEFAULT_VARIANTS,
                    help=f"comma-separated, from {','.join(VARIANTS)} (default {DEFAULT_VARIANTS})")
    ap.add_argument("--out", default=None, help="output directory (default runs/ablation_<dataset>)")
    ap.add_argument("--reuse", default=None,
                    help="a finished run dir of the same config whose data/ and pretrain/ are shared")
    ap.add_argument("--from-run", action="append", default=[], metavar="VARIANT=RUN_DIR",
                    help="take VARIANT's figures from a finished `cemr train` run of exactly that "
                         "variant's config (checked key by key) instead of training it again; repeatable")
    ap.add_argument("overrides", nargs="*", help="key=value config overrides for every variant")
    args = ap.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in names:
        variant_overrides(v)  # unknown names fail before any work
    from_run = parse_from_run(args.from_run)
    for v in from_run:
        if v not in names:
            raise SystemExit(f"--from-run {v}=...: {v} is not among --variants {args.variants}")
    cfg_file = config_path(args.dataset)
    out = Path(args.out or REPO / "runs" / f"ablation_{DATASETS[args.dataset]}").resolve()

    def log(msg: str) -> None:
        print(msg, flush=True)

    t0 = time.perf_counter()
    shared = None  # prepared/pretrained only when a variant is trained here, not all taken --from-run
    if any(v not in from_run for v in names):
        shared = prepare_shared(cfg_file, args.overrides, out, Path(args.reuse).resolve() if args.reuse else None, log)
    shared_s = time.perf_counter() - t0
    rows = []
    for v in names:
        cfg = load_config(cfg_file, args.overrides + variant_overrides(v))
        if v in from_run:
            rows.append(reused_variant(v, cfg, from_run[v]))
        else:
            rows.append(run_variant(v, cfg, shared, out, log))
        log(f"variant {v}: " + json.dumps(rows[-1], ensure_ascii=False))
    print()
    print(f"ablation on {DATASETS[args.dataset]} dev (entity-level exact match, micro; dF1 in points vs base)")
    print(format_table(rows))
    result = {
        "benchmark": "ablation",
        "dataset": DATASETS[args.dataset],
        "config": str(cfg_file.relative_to(REPO)),
        "overrides": args.overrides,
        "shared_seconds": round(shared_s, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": __import__("torch").get_num_threads(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus",
        "variants": rows,
    }
    print(json.dumps(result, ensure_ascii=False))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
