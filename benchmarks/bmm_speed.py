"""Speed of the dictionary feature: ``bmm_tags`` chars/s over the real unlabeled CCKS2017 texts.

Builds the ``ccks2017`` preset lexicon from ``$CEMR_DATA_DIR/lexicons`` (external lists only: no
training mentions), reads every raw file under ``$CEMR_DATA_DIR/ccks2017/unlabeled`` (UTF-8, one
text per file, empty files skipped), then times ``bmm_tags`` over all texts ``--repeats`` times.
Prints one line per repeat and, last, one JSON object with the median chars/s (target >= 200k).

    python benchmarks/bmm_speed.py [--repeats 5] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cemr.config import LexiconConfig, data_dir  # noqa: E402
from cemr.lexicon import bmm_tags, build_lexicon, forward_max_match  # noqa: E402


def read_texts(root: str, limit: int | None = None) -> list[str]:
    """Every non-empty file under ``root`` (sorted walk), decoded as UTF-8."""
    texts: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                text = fh.read()
            if text:
                texts.append(text)
            if limit is not None and len(texts) >= limit:
                return texts
    return texts


def time_pass(fn, texts: list[str]) -> float:
    start = time.perf_counter()
    for text in texts:
        fn(text)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--limit", type=int, default=None, help="read at most this many files")
    ap.add_argument("--preset", default="ccks2017")
    args = ap.parse_args()

    root = os.path.join(data_dir(), "ccks2017", "unlabeled")
    if not os.path.isdir(root):
        sys.exit(f"{root}: not found (set CEMR_DATA_DIR)")
    texts = read_texts(root, args.limit)
    chars = sum(map(len, texts))

    t0 = time.perf_counter()
    lex = build_lexicon(LexiconConfig(preset=args.preset))
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    matcher = lex.matcher  # the trie is built on first use: timed apart from matching
    trie_s = time.perf_counter() - t0

    rates = []
    for r in range(args.repeats):
        secs = time_pass(lambda t: bmm_tags(t, matcher), texts)
        rates.append(chars / secs)
        print(f"repeat {r + 1}/{args.repeats}: {secs:.3f} s, {chars / secs:,.0f} chars/s", flush=True)
    fmm_secs = time_pass(lambda t: forward_max_match(t, matcher), texts)
    tagged = sum(tag != "O" for t in texts for tag in bmm_tags(t, matcher))

    print(json.dumps({
        "benchmark": "bmm_speed",
        "preset": args.preset,
        "terms": len(lex),
        "lexicon_build_s": round(build_s, 3),
        "trie_build_s": round(trie_s, 3),
        "texts": len(texts),
        "chars": chars,
        "repeats": args.repeats,
        "bmm_tags_chars_per_s_median": round(statistics.median(rates)),
        "bmm_tags_chars_per_s_min": round(min(rates)),
        "fmm_chars_per_s": round(chars / fmm_secs),
        "tagged_char_fraction": round(tagged / chars, 4),
        "target_chars_per_s": 200000,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
