"""Batches of similar lengths: the one rule for the tagger, the BiLM and BERT pretraining, in
training and in evaluation.

:func:`length_batches` with a ``torch.Generator`` (training): the indices shuffled, taken in pools
of ``POOL_FACTOR * batch_size``, sorted by length inside a pool, cut into batches, the batch order
shuffled; without one (evaluation, held-out scores): sorted by length, longest first, cut, the
same every call. Every index appears once either way. Distributed training gives each worker
:func:`shard_batches` of the same seeded list; :func:`batches_per_epoch` counts them without
drawing them.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

POOL_FACTOR = 50


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
