"""Speed of the unlabeled-text deduplication (``cemr.corpus.dedup.Deduper``) on real text.

Texts: every non-empty CCKS2017 unlabeled section under ``$CEMR_DATA_DIR/ccks2017/unlabeled``
(9,073 texts, ~230 chars, many duplicates), then cMedQA answers (``unlabeled_text/cmedqa``,
column 2) until ``--texts`` texts (default 20,000); ``--source demo`` uses the synthetic demo
records and texts instead (no data needed). Times ``Deduper.add`` over all of them
(normalisation, exact hash, MinHash 64 perms over char 5-grams, LSH 8x8 bands, exact Jaccard
verification of candidates), ``--repeats`` times; with ``--prepare`` also one full ``prepare`` of
CCKS2017 train + its unlabeled sections. Prints one line per figure; the last line is one JSON
object.

Wall time and process CPU time are both reported (CPU time is less sensitive to a machine
shared with other jobs).

    python benchmarks/bench_dedup.py [--texts 20000] [--repeats 3] [--source real|demo] [--prepare]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cemr.config import data_dir, load_config  # noqa: E402
from cemr.corpus.dedup import Deduper, normalize  # noqa: E402
from cemr.corpus.readers import read_unlabeled  # noqa: E402


def _data_root() -> Path:
    root = Path(data_dir())
    return root if root.is_absolute() else ROOT / root


def load_demo_texts(limit: int) -> list[str]:
    from cemr.demo import generate_demo

    corpus = generate_demo(limit // 5, limit - limit // 5, seed=1)
    return [d.text for d in corpus.labeled + corpus.unlabeled]


def load_texts(limit: int) -> list[str]:
    root = _data_root()
    texts = [d.text for d in read_unlabeled(root / "ccks2017" / "unlabeled", per_line=False)]
    for name in ("dev.txt", "test.txt"):
        if len(texts) >= limit:
            break
        path = root / "unlabeled_text" / "cmedqa" / name
        texts.extend(d.text for d in read_unlabeled(path, column="2", limit=limit - len(texts)))
    return texts[:limit]


def time_dedup(texts: list[str]) -> tuple[float, float, dict[str, int]]:
    """``(wall s, CPU s, counts)`` of one Deduper over ``texts``."""
    d = Deduper()
    start, cpu = time.perf_counter(), time.process_time()
    for i, text in enumerate(texts):
        d.add(i, text)
    return time.perf_counter() - start, time.process_time() - cpu, dict(d.counts)


def time_prepare() -> tuple[float, dict]:
    root = _data_root() / "ccks2017"
    cfg = load_config(None, [
        "data.format=ccks2017", f"data.train={root / 'train'}", "data.test_fraction=0.1",
        f"data.unlabeled=[{{path: {root / 'unlabeled'}, per_line: false}}]",
    ])
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        report = prepare_fn(cfg, out)
        return time.perf_counter() - start, report.dedup


def prepare_fn(cfg, out):
    from cemr.prepare import prepare

    return prepare(cfg, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--source", choices=("real", "demo"), default="real")
    ap.add_argument("--prepare", action="store_true", help="also time prepare on CCKS2017")
    args = ap.parse_args()

    texts = load_texts(args.texts) if args.source == "real" else load_demo_texts(args.texts)
    normalize("\u200b")  # build the lazy format-character table outside the timing
    chars = sum(map(len, texts))
    print(f"texts: {len(texts)}, chars: {chars}, mean length {chars / len(texts):.0f}")
    seconds, cpu_seconds = [], []
    counts: dict[str, int] = {}
    for r in range(args.repeats):
        elapsed, cpu, counts = time_dedup(texts)
        seconds.append(elapsed)
        cpu_seconds.append(cpu)
        print(f"repeat {r}: {elapsed:.2f} s wall, {cpu:.2f} s CPU, "
              f"{len(texts) / elapsed:,.0f} texts/s, {counts}")
    result = {
        "benchmark": "dedup",
        "source": args.source,
        "texts": len(texts),
        "chars": chars,
        "median_s": round(statistics.median(seconds), 3),
        "median_cpu_s": round(statistics.median(cpu_seconds), 3),
        "texts_per_s": round(len(texts) / statistics.median(seconds)),
        "counts": counts,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    if args.prepare:
        elapsed, dedup = time_prepare()
        print(f"prepare ccks2017 train + unlabeled: {elapsed:.1f} s, {dedup}")
        result["prepare_ccks2017_s"] = round(elapsed, 1)
        result["prepare_dedup"] = dedup
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
