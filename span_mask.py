"""Span masking over frames, as used for masking distillation.

This reproduces the span mask of the teacher's own pre-training code
(docs/method.md §3; fairseq's ``compute_mask_indices`` with ``mask_other=0``),
so that the student is trained on masks with the same statistics the teacher
saw.  For each row with ``sz`` real frames:

1. ``num_spans = max(min_masks, int(mask_prob * sz / mask_length + u))`` with
   ``u ~ U[0, 1)``.
2. Span lengths are ``mask_length`` ("static") or integers drawn uniformly
   from ``[0, 2 * mask_length]`` ("uniform").  If every length is 0, the first
   becomes ``min(mask_length, sz - 1)``.
3. Without overlap (the recipe's setting) spans are placed longest first into
   a list of free intervals; an interval is chosen with probability
   proportional to its length among those that can hold the span plus
   ``min_space``, the start is uniform inside it, and the leftovers on either
   side (minus ``min_space``) are kept if they are not shorter than the
   shortest span.  Placement stops at the first span that fits nowhere.
   With overlap allowed, distinct starts are drawn uniformly and spans may
   overlap; frames past the row end are dropped.
4. Every row then keeps the same number of masked frames: the minimum over
   the batch, chosen at random without replacement from its own masked frames.

Reference statistics (docs/method.md §3): mask_prob 0.8, 100 frames, length 10,
uniform lengths, batches of 8 -> mean masked fraction 0.540.

All randomness comes from torch (an optional ``torch.Generator``), so masks are
reproducible and a training run can be resumed with the generator's state.
"""

from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch

__all__ = ["compute_span_mask"]

LengthDistribution = Literal["uniform", "static"]
_LENGTH_DISTRIBUTIONS = ("uniform", "static")


def compute_span_mask(
    shape: Sequence[int],
    mask_prob: float,
    mask_length: int,
    *,
    attention_mask: Optional[torch.Tensor] = None,
    length_distribution: LengthDistribution = "uniform",
    min_masks: int = 2,
    no_overlap: bool = True,
    min_space: int = 1,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Return a (batch, frames) bool mask, True = masked frame.

    Args:
        shape: ``(batch, frames)``.
        mask_prob: expected share of frames covered by spans before the
            no-overlap and equal-count rules (which lower it); in [0, 1].
            Note that ``min_masks`` spans are drawn even when it is 0.
        mask_length: mean span length (exact length when "static").
        attention_mask: optional (batch, frames), 1/True = real frame.  Only
            real frames are ever masked; masks are laid out over a row's real
            frames in order, so left or right padding both work.
        length_distribution: "uniform" or "static".
        min_masks: minimum number of spans drawn per row.
        no_overlap: place spans without overlap, keeping ``min_space`` free
            frames between them (the recipe's setting).
        min_space: free frames kept between spans when ``no_overlap``.
        generator: torch generator (CPU) used for every random draw.

    Rows too short to hold a span get fewer spans or none (placement stops at
    the first span that fits nowhere, as in the reference).  Because every
    row keeps the batch minimum of masked frames, one such row lowers the
    count for the whole batch; nothing raises.

    Returns:
        Bool tensor of ``shape``, on ``attention_mask``'s device if given,
        else on the CPU.
    """
    batch, frames = _check_args(
        shape, mask_prob, mask_length, attention_mask, length_distribution,
        min_masks, min_space, generator,
    )
    if attention_mask is not None:
        real = attention_mask.detach().to("cpu", torch.bool)
    else:
        real = torch.ones(batch, frames, dtype=torch.bool)

    # Per row: positions (in the padded row) of its masked frames.
    per_row: list[torch.Tensor] = []
    for b in range(batch):
        real_positions = real[b].nonzero().squeeze(1)
        spans = _sample_row_spans(
            int(real_positions.numel()), mask_prob, mask_length,
            length_distribution, min_masks, no_overlap, min_space, generator,
        )
        covered = _spans_to_indices(spans, int(real_positions.numel()))
        per_row.append(real_positions[covered])

    mask = torch.zeros(batch, frames, dtype=torch.bool)
    keep = min((len(idx) for idx in per_row), default=0)
    for b, idx in enumerate(per_row):
        if len(idx) > keep:
            # Equal count per row so the batch can be processed uniformly.
            idx = idx[torch.randperm(len(idx), generator=generator)[:keep]]
        mask[b, idx] = True

    if attention_mask is not None:
        mask = mask.to(attention_mask.device)
    return mask


def _check_args(
    shape: Sequence[int],
    mask_prob: float,
    mask_length: int,
    attention_mask: Optional[torch.Tensor],
    length_distribution: str,
    min_masks: int,
    min_space: int,
    generator: Optional[torch.Generator],
) -> tuple[int, int]:
    try:
        batch, frames = (int(n) for n in shape)
    except (TypeError, ValueError):
        raise ValueError(
            f"shape must be (batch, frames), two integers; got {shape!r}."
        ) from None
    if batch < 0 or frames < 0:
        raise ValueError(f"shape must not be negative; got {tuple(shape)}.")
    if not 0.0 <= float(mask_prob) <= 1.0:
        raise ValueError(
            f"mask_prob must be in [0, 1]; got {mask_prob}. It is the share "
            "of frames to cover with spans (0.8 or 0.4 in the recipes)."
        )
    if isinstance(mask_length, bool) or int(mask_length) != mask_length or mask_length < 1:
        raise ValueError(
            f"mask_length must be an integer >= 1; got {mask_length!r} "
            "(the recipes use 10)."
        )
    if length_distribution not in _LENGTH_DISTRIBUTIONS:
        raise ValueError(
            f"length_distribution must be one of {_LENGTH_DISTRIBUTIONS}; "
            f"got {length_distribution!r}."
        )
    if int(min_masks) != min_masks or min_masks < 0:
        raise ValueError(f"min_masks must be an integer >= 0; got {min_masks!r}.")
    if int(min_space) != min_space or min_space < 0:
        raise ValueError(f"min_space must be an integer >= 0; got {min_space!r}.")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(
            f"generator must be a torch.Generator or None; got {type(generator).__name__}."
        )
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(
            "generator must be a CPU torch.Generator (masks are drawn on the "
            f"CPU); got one on {generator.device}."
        )
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise ValueError(
                "attention_mask must be a (batch, frames) tensor with 1/True "
                f"for real frames; got {type(attention_mask).__name__}."
            )
        if tuple(attention_mask.shape) != (batch, frames):
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but shape is "
                f"{(batch, frames)}; pass the frame-level mask (after the conv "
                "feature extractor), not the sample-level one."
            )
        if attention_mask.dtype != torch.bool and not bool(
            ((attention_mask == 0) | (attention_mask == 1)).all()
        ):
            raise ValueError("attention_mask must hold only 0/1 (or bool) values.")
    return batch, frames


def _sample_row_spans(
    sz: int,
    mask_prob: float,
    mask_length: int,
    length_distribution: str,
    min_masks: int,
    no_overlap: bool,
    min_space: int,
    generator: Optional[torch.Generator],
) -> list[tuple[int, int]]:
    """Spans ``(start, length)`` for one row of ``sz`` real frames.

    Lengths-0 spans may appear (uniform lengths start at 0); they cover
    nothing.  Spans may reach past ``sz`` only when overlap is allowed.
    """
    if sz <= 0:
        return []
    u = torch.rand((), generator=generator).item()
    num_spans = max(min_masks, int(mask_prob * sz / mask_length + u))
    if num_spans == 0:
        return []
    if length_distribution == "static":
        lengths = [mask_length] * num_spans
    else:
        lengths = torch.randint(
            0, 2 * mask_length + 1, (num_spans,), generator=generator
        ).tolist()
    if sum(lengths) == 0:
        lengths[0] = min(mask_length, sz - 1)

    if no_overlap:
        return _place_without_overlap(sz, lengths, min_space, generator)
    return _place_with_overlap(sz, lengths, generator)


def _place_without_overlap(
    sz: int,
    lengths: list[int],
    min_space: int,
    generator: Optional[torch.Generator],
) -> list[tuple[int, int]]:
    # Two uniforms per span, drawn at once: one picks the interval, one the start.
    draws = torch.rand(2 * len(lengths), generator=generator).tolist()
    shortest = min(lengths)
    free = [(0, sz)]  # half-open intervals [s, e)
    spans: list[tuple[int, int]] = []
    for k, length in enumerate(sorted(lengths, reverse=True)):
        weights = [e - s if e - s >= length + min_space else 0 for s, e in free]
        total = sum(weights)
        if total == 0:
            break  # the reference stops at the first span that fits nowhere
        # Interval with probability proportional to its length.
        target = draws[2 * k] * total
        chosen = len(weights) - 1
        for i, w in enumerate(weights):
            if target < w:
                chosen = i
                break
            target -= w
        while weights[chosen] == 0:  # guard against float round-off at the end
            chosen -= 1
        s, e = free.pop(chosen)
        # Start uniform in [s, e - length); the exclusive end is the
        # reference's, and it leaves one frame free before the next part.
        # (With min_space 0 the range can be empty; then start at s.)
        n_starts = max(e - length - s, 1)
        start = s + min(int(draws[2 * k + 1] * n_starts), n_starts - 1)
        spans.append((start, length))
        if start - s - min_space >= shortest:
            free.append((s, start - min_space + 1))
        if e - start - length - min_space > shortest:
            free.append((start + length + min_space, e))
    return spans


def _place_with_overlap(
    sz: int,
    lengths: list[int],
    generator: Optional[torch.Generator],
) -> list[tuple[int, int]]:
    # As the reference: distinct starts in [0, sz - shortest); spans may
    # overlap and run past the end (those frames are dropped later).
    n_starts = sz - min(lengths)
    if n_starts <= len(lengths):
        n_starts = sz - len(lengths) - 1
    n_starts = max(n_starts, 1)
    count = min(len(lengths), n_starts)  # short rows: as many spans as there are starts
    starts = torch.randperm(n_starts, generator=generator)[:count].tolist()
    return list(zip(starts, lengths[:count]))


def _spans_to_indices(spans: list[tuple[int, int]], sz: int) -> torch.Tensor:
    covered = torch.zeros(sz, dtype=torch.bool)
    for start, length in spans:
        covered[start:start + length] = True
    return covered.nonzero().squeeze(1)
