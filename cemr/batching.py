"""Batches of similar lengths: the one rule for the tagger, the BiLM and BERT pretraining, in
training and in evaluation.

:func:`length_batches` with a ``torch.Generator`` (training): the indices shuffled, taken in pools
of ``POOL_FACTOR * batch_size``, sorted by length inside a pool, cut into batches, the batch order
shuffled; without one (evaluation, held-out scores): sorted by length, longest first, cut, the
same every call. Every index appears once either way. Distributed training gives each worker
:func:`shard_batches` of the same seeded list; :func:`batches_per_epoch` counts them without
drawing them. Inference (:class:`cemr.predictor.Predictor`) uses :func:`length_buckets`: longest
first, a batch cut where a row would fill less than ``BUCKET_FILL`` of its width (padding kept small
for any length mix, no shuffling).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

POOL_FACTOR = 50
BUCKET_FILL = 0.75  # a bucket ends where a row would fill less than this share of its width
BUCKET_MIN_ROWS = 16  # ... unless the bucket is still smaller than this (a step has a fixed cost)


def length_batches(lengths: Sequence[int], batch_size: int,
                   generator: torch.Generator | None = None) -> list[list[int]]:
    """Index batches of similar lengths (see the module docstring); ``generator`` None:
    deterministic, longest first."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if generator is None:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]
    order = torch.randperm(len(lengths), generator=generator).tolist()
    pool = POOL_FACTOR * batch_size
    batches: list[list[int]] = []
    for p in range(0, len(order), pool):
        chunk = sorted(order[p : p + pool], key=lambda i: lengths[i])  # stable: ties stay shuffled
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def shard_batches(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Worker ``rank``'s share: every ``world_size``-th batch of the list cut to a multiple of
    ``world_size`` (equal step counts on all workers; at most ``world_size - 1`` batches unused)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    usable = len(batches) // world_size * world_size
    return batches[:usable][rank::world_size]


def batches_per_epoch(n: int, batch_size: int, world_size: int = 1) -> int:
    """Steps per epoch of one worker: ``len(shard_batches(length_batches(n lengths, ...)))``,
    without drawing the batches (pools of ``POOL_FACTOR * batch_size``, the last one partial)."""
    pool = POOL_FACTOR * batch_size
    full, rest = divmod(n, pool)
    return (full * POOL_FACTOR + math.ceil(rest / batch_size)) // world_size


def length_buckets(lengths: Sequence[int], batch_size: int, fill: float = BUCKET_FILL,
                   min_rows: int = BUCKET_MIN_ROWS) -> list[list[int]]:
    """Indices of the non-empty items, longest first, cut into batches of at most ``batch_size``
    rows of similar length: a batch is padded to its first (longest) row, and a row shorter than
    ``fill`` times that width starts a new batch once the current one has ``min_rows`` rows.
    Every non-empty index appears exactly once; callers put results back by index."""
    order = sorted((i for i, n in enumerate(lengths) if n), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    for i in order:
        cur = buckets[-1] if buckets else None
        if cur is None or len(cur) >= batch_size or (
            len(cur) >= min_rows and lengths[i] < fill * lengths[cur[0]]
        ):
            buckets.append([i])
        else:
            cur.append(i)
    return buckets
