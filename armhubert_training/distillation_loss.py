"""Masking-distillation losses (docs/method.md §2, steps 4-6).

The student sees masked input.  For every student layer's projected output:

* masked frames are pulled towards the *unmasked* teacher (the student has to
  reconstruct what it cannot see), and
* unmasked real frames are pulled towards the *masked* teacher (so the student
  also learns how the teacher behaves around a mask).

The per-frame loss is the mean over features of the squared (``"mse"``) or
absolute (``"l1"``) error.  Layers ``0..L-2`` are "hint" layers, the last one
is the "rec" layer.  Each of the four terms is a sum over its frames (and, for
hint terms, over the hint layers) divided by the number of real frames.

The authors' code divides by ``batch * frames`` and counts padded frames as
unmasked; here padded frames (``frame_mask`` False) count nowhere, which is
the same thing when there is no padding.  Padded frames are selected away,
never multiplied by zero, so NaN or inf in padding cannot leak in.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

__all__ = ["masking_distillation_loss", "validation_distillation_loss"]

_LOSS_TYPES = ("mse", "l1")


def masking_distillation_loss(
    student_projections: Sequence[torch.Tensor],
    teacher_unmasked: Sequence[torch.Tensor],
    teacher_masked: Sequence[torch.Tensor],
    mask: torch.Tensor,
    frame_mask: Optional[torch.Tensor] = None,
    hint_weight: float = 0.1,
    last_weight: float = 1.0,
    loss_type: str = "mse",
) -> dict[str, torch.Tensor]:
    """Masking-distillation loss over L layers.

    Args:
        student_projections: L tensors (B, T, D), the student's projected
            layer outputs.
        teacher_unmasked: L tensors (B, T, D), teacher on clean input.
        teacher_masked: L tensors (B, T, D), teacher on masked input.
        mask: (B, T) bool, True = masked frame.
        frame_mask: (B, T) bool, True = real frame; None = all real.
        hint_weight: weight of the hint terms (layers 0..L-2).
        last_weight: weight of the last-layer ("rec") terms.
        loss_type: "mse" or "l1".

    Returns:
        Dict of float32 scalars: ``loss`` = hint_weight * (mask_hint +
        unmask_hint) + last_weight * (mask_rec + unmask_rec), and the four
        unweighted terms ``mask_hint``, ``unmask_hint``, ``mask_rec``,
        ``unmask_rec``.  With L == 1 both hint terms are 0.
    """
    _check_loss_type(loss_type)
    _check_layers(
        {"student_projections": student_projections,
         "teacher_unmasked": teacher_unmasked,
         "teacher_masked": teacher_masked}
    )
    batch, frames = student_projections[0].shape[:2]
    device = student_projections[0].device
    mask = _check_frame_level("mask", mask, batch, frames, device)
    real = _real_frames(frame_mask, batch, frames, device)
    n_real = real.sum().clamp_min(1).to(torch.float32)  # no real frame: loss 0, not NaN

    # Index tensors computed once (one host sync each), reused for every layer.
    # Selecting frames, rather than weighting by 0/1, keeps NaN in padding out.
    masked = (mask & real).nonzero(as_tuple=True)
    unmasked = (~mask & real).nonzero(as_tuple=True)

    terms = []  # per layer: (sum over masked frames, sum over unmasked real frames)
    for student, clean, noisy in zip(student_projections, teacher_unmasked, teacher_masked):
        terms.append((
            _frame_loss(student[masked], clean.detach()[masked], loss_type).sum(),
            _frame_loss(student[unmasked], noisy.detach()[unmasked], loss_type).sum(),
        ))

    zero = torch.zeros((), dtype=torch.float32, device=device)
    mask_hint = sum((m for m, _ in terms[:-1]), zero) / n_real
    unmask_hint = sum((u for _, u in terms[:-1]), zero) / n_real
    mask_rec = terms[-1][0] / n_real
    unmask_rec = terms[-1][1] / n_real
    loss = hint_weight * (mask_hint + unmask_hint) + last_weight * (mask_rec + unmask_rec)
    return {
        "loss": loss,
        "mask_hint": mask_hint,
        "unmask_hint": unmask_hint,
        "mask_rec": mask_rec,
        "unmask_rec": unmask_rec,
    }


def validation_distillation_loss(
    student_projections: Sequence[torch.Tensor],
    teacher_unmasked: Sequence[torch.Tensor],
    frame_mask: Optional[torch.Tensor] = None,
    hint_weight: float = 0.1,
    last_weight: float = 1.0,
    loss_type: str = "mse",
) -> torch.Tensor:
    """Unmasked validation loss (docs/method.md §2, step 6).

    All real frames against the unmasked teacher: hint_weight * (sum over hint
    layers of the mean per-element loss) + last_weight * (mean per-element
    loss of the last layer).  Means run over real frames only.  Returns a
    float32 scalar.
    """
    _check_loss_type(loss_type)
    _check_layers(
        {"student_projections": student_projections,
         "teacher_unmasked": teacher_unmasked}
    )
    batch, frames = student_projections[0].shape[:2]
    device = student_projections[0].device
    real = _real_frames(frame_mask, batch, frames, device)
    n_real = real.sum().clamp_min(1).to(torch.float32)

    # Every frame has D features, so the mean of per-frame means over real
    # frames is the mean per-element loss.
    real = real.nonzero(as_tuple=True)
    layer_means = [
        _frame_loss(student[real], clean.detach()[real], loss_type).sum() / n_real
        for student, clean in zip(student_projections, teacher_unmasked)
    ]
    zero = torch.zeros((), dtype=torch.float32, device=device)
    return hint_weight * sum(layer_means[:-1], zero) + last_weight * layer_means[-1]


def _frame_loss(prediction: torch.Tensor, target: torch.Tensor, loss_type: str) -> torch.Tensor:
    """(N, D) -> (N,) mean over features, computed in float32 (bf16/fp16 safe)."""
    diff = prediction.float() - target.float()
    error = diff.square() if loss_type == "mse" else diff.abs()
    return error.mean(dim=-1)


def _check_loss_type(loss_type: str) -> None:
    if loss_type not in _LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {_LOSS_TYPES}; got {loss_type!r}.")


def _check_layers(named: dict[str, Sequence[torch.Tensor]]) -> None:
    lengths = {name: len(layers) for name, layers in named.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"all inputs must hold one tensor per layer, the same number of layers; got {lengths}."
        )
    if next(iter(lengths.values())) < 1:
        raise ValueError("at least one layer is needed; got empty lists.")
    reference = next(iter(named.values()))[0]
    if not isinstance(reference, torch.Tensor) or reference.dim() != 3:
        raise ValueError(
            "layer outputs must be (batch, frames, features) tensors; got "
            f"{getattr(reference, 'shape', type(reference).__name__)}."
        )
    for name, layers in named.items():
        for i, tensor in enumerate(layers):
            if not isinstance(tensor, torch.Tensor) or tensor.shape != reference.shape:
                raise ValueError(
                    f"{name}[{i}] has shape {tuple(getattr(tensor, 'shape', ()))}, expected "
                    f"{tuple(reference.shape)} like student_projections[0]; project the "
                    "student outputs to the teacher size and align the frames first."
                )


def _check_frame_level(
    name: str, tensor: torch.Tensor, batch: int, frames: int, device: torch.device
) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != (batch, frames):
        raise ValueError(
            f"{name} must be a (batch, frames) = {(batch, frames)} tensor; got "
            f"{tuple(getattr(tensor, 'shape', ())) or type(tensor).__name__}."
        )
    if tensor.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor; got dtype {tensor.dtype}.")
    return tensor.to(device)


def _real_frames(
    frame_mask: Optional[torch.Tensor], batch: int, frames: int, device: torch.device
) -> torch.Tensor:
    if frame_mask is None:
        return torch.ones(batch, frames, dtype=torch.bool, device=device)
    return _check_frame_level("frame_mask", frame_mask, batch, frames, device)
