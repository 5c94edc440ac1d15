"""Tests for modeling_armhubert.compute_span_mask (docs/method.md §3)."""

import pytest
import torch

import modeling_armhubert
from modeling_armhubert import compute_span_mask


def _runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """Maximal runs of True in a 1-D bool tensor, as (start, length)."""
    runs, start = [], None
    for i, value in enumerate(row.tolist() + [False]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


@pytest.mark.parametrize(
    "mask_prob, frames, expected, batches",
    [(0.8, 100, 0.540, 1000), (0.8, 500, 0.691, 300), (0.4, 500, 0.323, 300)],
)
def test_reference_masked_fraction(mask_prob, frames, expected, batches):
    # The table of docs/method.md §3; standard error of our mean is <= 0.003 here.
    generator = torch.Generator().manual_seed(1234)
    total = 0.0
    for _ in range(batches):
        mask = compute_span_mask((8, frames), mask_prob, 10, generator=generator)
        total += mask.float().mean().item()
    assert abs(total / batches - expected) < 0.01


def test_number_of_spans_rounds_randomly_with_min_masks():
    # num_spans = max(min_masks, int(mask_prob * sz / mask_length + u)):
    # 0.025 * 1000 / 10 = 2.5 gives 2 or 3 spans, half the time each.
    generator = torch.Generator().manual_seed(8)

    def spans(mask_prob, min_masks):
        mask = compute_span_mask(
            (1, 1000), mask_prob, 10, length_distribution="static",
            min_masks=min_masks, generator=generator,
        )
        return len(_runs(mask[0]))

    counts = [spans(0.025, 2) for _ in range(400)]
    assert set(counts) == {2, 3}
    assert abs(sum(counts) / len(counts) - 2.5) < 0.1
    assert {spans(0.005, 2) for _ in range(100)} == {2}  # 0.5 + u -> 0 or 1, raised to 2
    assert {spans(0.005, 0) for _ in range(100)} == {0, 1}


def test_span_placement_range_matches_reference():
    # Starts are drawn in [s, e - length) with e exclusive, so the first frame
    # can be masked but the last real frame never is (as in the reference).
    generator = torch.Generator().manual_seed(4)
    lengths = torch.tensor([60, 45])
    attention_mask = torch.arange(60)[None, :] < lengths[:, None]
    hits = torch.zeros(2, 60, dtype=torch.long)
    for _ in range(300):
        hits += compute_span_mask(
            (2, 60), 0.3, 10, attention_mask=attention_mask,
            length_distribution="static", generator=generator,
        ).long()
    for row, length in enumerate(lengths.tolist()):
        assert hits[row, 0] > 0 and hits[row, length - 2] > 0
        assert hits[row, length - 1] == 0


def test_all_zero_lengths_fall_back_to_mask_length():
    # mask_length 1: uniform lengths are 0, 1 or 2, and both of the min_masks
    # spans are 0 one time in nine; then the first becomes mask_length.
    generator = torch.Generator().manual_seed(6)
    for _ in range(200):
        mask = compute_span_mask((1, 50), 0.0, 1, generator=generator)
        assert mask.sum() >= 1


def test_padding_is_never_masked_and_counts_are_equal():
    lengths = torch.tensor([120, 37, 80, 120, 64])
    frames = 120
    attention_mask = torch.arange(frames)[None, :] < lengths[:, None]
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        mask = compute_span_mask(
            (5, frames), 0.8, 10, attention_mask=attention_mask, generator=generator
        )
        assert not (mask & ~attention_mask).any()
        counts = mask.sum(dim=1)
        assert (counts == counts[0]).all()
        assert counts[0] > 0


def test_left_padding_is_never_masked():
    attention_mask = torch.ones(3, 90, dtype=torch.long)
    attention_mask[1, :30] = 0
    attention_mask[2, :50] = 0
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        mask = compute_span_mask(
            (3, 90), 0.5, 5, attention_mask=attention_mask, generator=generator
        )
        assert not (mask & (attention_mask == 0)).any()
        assert mask.any()


def test_every_row_has_the_same_number_of_masked_frames():
    generator = torch.Generator().manual_seed(5)
    seen = set()
    for _ in range(50):
        mask = compute_span_mask((8, 200), 0.65, 10, generator=generator)
        counts = mask.sum(dim=1)
        assert (counts == counts[0]).all()
        seen.add(int(counts[0]))
    assert len(seen) > 1  # the count varies between batches; it is not fixed


@pytest.mark.parametrize("min_space", [1, 2, 3])
def test_min_space_between_spans(min_space):
    # Before the equal-count subsampling (the spans themselves) no two spans
    # overlap or come closer than min_space free frames.
    generator = torch.Generator().manual_seed(min_space)
    for _ in range(200):
        spans = modeling_armhubert._sample_row_spans(
            300, 0.8, 10, "uniform", 2, True, min_space, generator
        )
        spans = sorted((s, n) for s, n in spans if n > 0)
        assert len(spans) >= 2
        assert all(0 <= s and s + n <= 300 for s, n in spans)
        for (s0, n0), (s1, _) in zip(spans, spans[1:]):
            assert s1 - (s0 + n0) >= min_space


@pytest.mark.parametrize("min_space", [1, 2])
def test_min_space_visible_in_single_row_mask(min_space):
    # With batch 1 nothing is subsampled, so the gaps are visible in the mask.
    generator = torch.Generator().manual_seed(11)
    for _ in range(100):
        mask = compute_span_mask(
            (1, 250), 0.8, 10, min_space=min_space, generator=generator
        )
        runs = _runs(mask[0])
        assert len(runs) >= 2
        for (s0, n0), (s1, _) in zip(runs, runs[1:]):
            assert s1 - (s0 + n0) >= min_space


def test_static_lengths_give_exact_spans():
    generator = torch.Generator().manual_seed(2)
    for mask_length in (3, 10):
        for _ in range(50):
            mask = compute_span_mask(
                (1, 400), 0.6, mask_length, length_distribution="static",
                generator=generator,
            )
            runs = _runs(mask[0])
            assert runs
            # Touching spans would show as longer runs; min_space keeps them apart.
            assert all(length == mask_length for _, length in runs)


def test_same_seed_same_mask_and_resumable():
    attention_mask = torch.arange(150)[None, :] < torch.tensor([150, 99, 120, 61])[:, None]
    a = compute_span_mask(
        (4, 150), 0.8, 10, attention_mask=attention_mask,
        generator=torch.Generator().manual_seed(42),
    )
    b = compute_span_mask(
        (4, 150), 0.8, 10, attention_mask=attention_mask,
        generator=torch.Generator().manual_seed(42),
    )
    c = compute_span_mask(
        (4, 150), 0.8, 10, attention_mask=attention_mask,
        generator=torch.Generator().manual_seed(43),
    )
    assert torch.equal(a, b)
    assert not torch.equal(a, c)

    # Saving and restoring the generator state reproduces the next mask.
    generator = torch.Generator().manual_seed(7)
    compute_span_mask((4, 150), 0.8, 10, generator=generator)
    state = generator.get_state()
    first = compute_span_mask((4, 150), 0.8, 10, generator=generator)
    generator.set_state(state)
    assert torch.equal(first, compute_span_mask((4, 150), 0.8, 10, generator=generator))


def test_overlap_variant():
    generator = torch.Generator().manual_seed(9)
    attention_mask = torch.arange(200)[None, :] < torch.tensor([200, 150, 90])[:, None]
    touching = False
    for _ in range(50):
        mask = compute_span_mask(
            (3, 200), 0.5, 10, attention_mask=attention_mask, no_overlap=False,
            length_distribution="static", generator=generator,
        )
        assert not (mask & ~attention_mask).any()
        counts = mask.sum(dim=1)
        assert (counts == counts[0]).all() and counts[0] > 0
        single = compute_span_mask(
            (1, 200), 0.5, 10, no_overlap=False, length_distribution="static",
            generator=generator,
        )
        touching |= any(length != 10 for _, length in _runs(single[0]))
    assert touching  # spans may overlap or touch, unlike the no-overlap mode


def test_overlap_variant_on_a_row_barely_longer_than_its_spans_draws_starts_as_the_reference():
    """12 frames, 2 static spans of 10: the reference (fairseq's compute_mask_indices) has only
    sz - 10 = 2 starts, no more than the spans, so it draws 2 distinct starts from [0, 3). The masks
    then cover 11 frames (starts {0, 1} or {1, 2}) or 12 ({0, 2}): 11 1/3 on average."""
    generator = torch.Generator().manual_seed(0)
    covered = torch.tensor([int(compute_span_mask((1, 12), 0.0, 10, min_masks=2, no_overlap=False,
                                                  length_distribution="static", generator=generator).sum())
                            for _ in range(3000)])
    assert set(covered.tolist()) == {11, 12}
    assert abs(covered.float().mean().item() - 34 / 3) < 0.03


@pytest.mark.parametrize("no_overlap", [True, False])
def test_short_rows_do_not_crash(no_overlap):
    generator = torch.Generator().manual_seed(0)
    attention_mask = torch.zeros(4, 30, dtype=torch.bool)
    for row, length in enumerate([0, 1, 3, 30]):
        attention_mask[row, :length] = True
    for _ in range(20):
        mask = compute_span_mask(
            (4, 30), 0.8, 10, attention_mask=attention_mask, no_overlap=no_overlap,
            generator=generator,
        )
        assert mask.shape == (4, 30) and mask.dtype == torch.bool
        assert not (mask & ~attention_mask).any()
        # The empty row has nothing to mask, so no row keeps any.
        assert not mask.any()
    for frames in (0, 1, 2, 5):
        mask = compute_span_mask((2, frames), 0.8, 10, no_overlap=no_overlap, generator=generator)
        assert mask.shape == (2, frames)
    assert compute_span_mask((0, 10), 0.8, 10).shape == (0, 10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mask_prob=-0.1), "mask_prob"),
        (dict(mask_prob=1.5), "mask_prob"),
        (dict(mask_length=0), "mask_length"),
        (dict(mask_length=2.5), "mask_length"),
        (dict(length_distribution="normal"), "length_distribution"),
        (dict(min_masks=-1), "min_masks"),
        (dict(min_space=-1), "min_space"),
        (dict(attention_mask=torch.ones(2, 9, dtype=torch.bool)), "attention_mask"),
        (dict(attention_mask=torch.full((2, 10), 2)), "attention_mask"),
        (dict(shape=(2,)), "shape"),
        (dict(shape=(2, -1)), "shape"),
        (dict(generator=123), "generator"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    args = dict(shape=(2, 10), mask_prob=0.5, mask_length=3)
    args.update(kwargs)
    shape, mask_prob, mask_length = args.pop("shape"), args.pop("mask_prob"), args.pop("mask_length")
    with pytest.raises(ValueError, match=message):
        compute_span_mask(shape, mask_prob, mask_length, **args)
