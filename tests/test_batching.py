"""cemr.batching: the one rule for batches of similar lengths (training, evaluation, pretraining)."""
import pytest
import torch

from cemr.batching import batches_per_epoch, length_batches, length_buckets, shard_batches


def test_seeded_batches_cover_every_index_once_and_group_lengths():
    lengths = [(i * 37) % 101 for i in range(500)]
    batches = length_batches(lengths, 8, torch.Generator().manual_seed(0))
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(500)) and max(len(b) for b in batches) == 8
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches would spread ~80
    again = length_batches(lengths, 8, torch.Generator().manual_seed(0))
    assert again == batches
    shards = [shard_batches(batches, r, 3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(batches) // 3
    assert not set(map(tuple, shards[0])) & set(map(tuple, shards[1]))


def test_without_a_generator_batches_are_longest_first_and_the_same_every_call():
    lengths = [3, 9, 1, 7, 7, 2]
    assert length_batches(lengths, 2) == [[1, 3], [4, 0], [5, 2]] == length_batches(lengths, 2)
    with pytest.raises(ValueError, match="batch_size"):
        length_batches(lengths, 0)


def test_steps_per_epoch_are_known_before_the_batches_are_drawn():
    for n, bs, world in [(1, 4, 1), (10, 4, 1), (10, 4, 2), (199, 4, 1), (200, 4, 3), (201, 4, 2), (1000, 3, 4)]:
        drawn = shard_batches(length_batches([1] * n, bs, torch.Generator().manual_seed(0)), 0, world)
        assert batches_per_epoch(n, bs, world) == len(drawn), (n, bs, world)


def test_length_buckets_cover_every_text_once_longest_first():
    lengths = [5, 0, 40, 3, 40, 12, 0, 39, 1, 7, 30, 2]
    buckets = length_buckets(lengths, batch_size=3, fill=0.75, min_rows=2)
    flat = [i for b in buckets for i in b]
    assert sorted(flat) == [i for i, n in enumerate(lengths) if n]  # each non-empty text once
    assert [lengths[i] for i in flat] == sorted((n for n in lengths if n), reverse=True)
    assert all(len(b) <= 3 for b in buckets)
    for b in buckets:  # past min_rows rows, a row under 0.75 of the bucket's width starts another
        assert all(lengths[i] >= 0.75 * lengths[b[0]] for i in b[2:])
    assert [[lengths[i] for i in b] for b in buckets] == [[40, 40, 39], [30, 12], [7, 5], [3, 2], [1]]
    assert length_buckets([4, 4, 4], batch_size=8) == [[0, 1, 2]]
    assert length_buckets([0, 0], batch_size=8) == []
