"""Token-budget batching (`--max_batch_seconds`): both limits hold, every utterance once per epoch."""

from __future__ import annotations

import numpy as np
import pytest

from armhubert_training.speech_trainer import AudioBudgetBatchSampler


def librispeech_like_lengths(count: int, seed: int = 0) -> list[int]:
    """Utterance lengths in samples, 1-35 s with a mean near LibriSpeech's 12 s."""
    rng = np.random.default_rng(seed)
    return [int(s * 16_000) for s in np.clip(rng.gamma(4.0, 3.0, count), 1.0, 35.0)]


def test_budget_batches_respect_both_limits_and_cover_every_utterance_once():
    lengths = librispeech_like_lengths(500)
    budget, most = 120 * 16_000, 16
    sampler = AudioBudgetBatchSampler(lengths, max_samples=budget, max_batch_size=most, seed=3)
    orders = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for batch in batches:
            assert 1 <= len(batch) <= most
            assert len(batch) * max(lengths[i] for i in batch) <= budget
        flat = [i for batch in batches for i in batch]
        assert sorted(flat) == list(range(len(lengths)))
        orders.append(flat)
    assert orders[0] != orders[1]  # the batch order moves with the epoch
    sampler.set_epoch(0)
    assert [i for batch in sampler for i in batch] == orders[0]  # and is the same when replayed (resume)
    # Short utterances share large batches, long ones come in small ones.
    sizes = {len(batch): max(lengths[i] for i in batch) for batch in sampler}
    assert max(sizes) == most and sizes[min(sizes)] > sizes[max(sizes)]


def test_budget_batches_pad_less_than_random_batches_of_the_same_mean_size():
    lengths = librispeech_like_lengths(500, seed=1)
    sampler = AudioBudgetBatchSampler(lengths, max_samples=120 * 16_000, max_batch_size=64, seed=0)
    batches = list(sampler)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    mean_size = round(len(lengths) / len(batches))
    order = np.random.default_rng(0).permutation(len(lengths))
    random_batches = [order[i:i + mean_size] for i in range(0, len(order), mean_size)]
    random_padded = sum(len(b) * max(lengths[i] for i in b) for b in random_batches)
    assert padded - sum(lengths) < 0.25 * (random_padded - sum(lengths))


def test_budget_shorter_than_the_longest_utterance_is_refused():
    with pytest.raises(ValueError, match=r"--max_batch_seconds \(2 s\) is shorter than the longest utterance \(3.00 s\)"):
        AudioBudgetBatchSampler([16_000, 48_000], max_samples=32_000, max_batch_size=4, seed=0)
