"""STaR losses: distilling temporal relations through temporal Gram matrices (docs/method.md §5).

A layer's output F (N real frames x d channels) gives the temporal Gram matrix G = F Fᵀ (N x N):
entry (i, j) relates frame i to frame j and the channels are summed away, so a 768-wide teacher
and a 432-wide student are compared without projection heads.

* layer-wise term: sum over the mapped layers l of D(G_l(teacher), G_l(student));
* intra-layer term: the same on Ǧ_l = F_{l-1} F_lᵀ, the Gram between two consecutive layers'
  outputs, for l = 2..L of the mapped layers (the first layer's input is not among them).

D is the mean squared difference over the N x N entries of one utterance's real frames; utterances
are averaged over the batch (each counts once, whatever its length), layers summed.  Padded frames
are selected away before any Gram is formed, so they count nowhere.

Raw Grams grow with the width and the feature scale, so the features are normalised first
(`normalisation`): "cosine" (default) divides each frame by its L2 norm, making every entry a
cosine in [-1, 1] whatever the width; "width" divides G by d; "none" keeps raw products.  The
published method states none of this: the choice is the project's.

Memory: the N x N difference of a long utterance (1750 frames at 35 s) is never held whole.  It is
made in blocks of `chunk_frames` rows, and each block is recomputed in the backward pass
(activation checkpointing), so one step keeps O(chunk_frames x N) per utterance at a time.  The
products run in fp32, also under bf16/fp16 autocast.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

__all__ = ["NORMALISATIONS", "STAR_TERMS", "star_loss", "temporal_gram_distance"]

NORMALISATIONS = ("cosine", "width", "none")
STAR_TERMS = ("layerwise", "intra")


def temporal_gram_distance(
    teacher: tuple[torch.Tensor, torch.Tensor],
    student: tuple[torch.Tensor, torch.Tensor],
    real: torch.Tensor,
    normalisation: str = "cosine",
    chunk_frames: int = 1024,
) -> torch.Tensor:
    """Mean over the batch of the mean squared difference between teacher and student Grams.

    Args:
        teacher: (left, right), each (B, T, D_t): the Gram is left @ rightᵀ (left is right for the
            layer-wise Gram, the previous layer's output for the intra-layer one).
        student: (left, right), each (B, T, D_s).
        real: (B, T) bool, True = real frame.
        normalisation: "cosine", "width" or "none" (module docstring).
        chunk_frames: rows of the Gram difference made at a time.

    Returns:
        float32 scalar; utterances without a real frame count as 0 and are left out of the mean.
    """
    batch = real.shape[0]
    lengths = real.sum(dim=1)
    total = torch.zeros((), dtype=torch.float32, device=real.device)
    counted = 0
    for b in range(batch):
        n = int(lengths[b])
        if n == 0:
            continue
        rows = real[b].nonzero(as_tuple=True)[0]  # frames need not be a prefix
        t_left, t_right = (_normalised(x[b, rows], normalisation) for x in teacher)
        s_left, s_right = (_normalised(x[b, rows], normalisation) for x in student)
        squared = torch.zeros((), dtype=torch.float32, device=real.device)
        for start in range(0, n, chunk_frames):
            stop = min(start + chunk_frames, n)
            args = (t_left[start:stop], t_right, s_left[start:stop], s_right)
            if torch.is_grad_enabled() and (s_left.requires_grad or s_right.requires_grad):
                squared = squared + checkpoint(_block_squared_error, *args, use_reentrant=False)
            else:
                squared = squared + _block_squared_error(*args)
        total = total + squared / (n * n)
        counted += 1
    return total / max(counted, 1)


def star_loss(
    student_layers: Sequence[torch.Tensor],
    teacher_layers: Sequence[torch.Tensor],
    frame_mask: torch.Tensor | None = None,
    terms: Sequence[str] = STAR_TERMS,
    normalisation: str = "cosine",
    chunk_frames: int = 1024,
) -> dict[str, torch.Tensor]:
    """The STaR objective over L mapped layers.

    Args:
        student_layers: L tensors (B, T, D_s), the student's layer outputs.
        teacher_layers: L tensors (B, T, D_t), the teacher layers mapped to them.
        frame_mask: (B, T) bool, True = real frame; None = all real.
        terms: which terms make the loss: any of "layerwise", "intra".
        normalisation, chunk_frames: as in `temporal_gram_distance`.

    Returns:
        Dict of float32 scalars: ``loss`` = the sum of the chosen terms, and both unweighted terms
        ``tgm_layerwise`` (sum over L layers) and ``tgm_intra`` (sum over L-1 consecutive pairs; 0
        when L == 1); a term not chosen is 0.
    """
    unknown = set(terms) - set(STAR_TERMS)
    if unknown or not terms:
        raise ValueError(f"STaR terms must be a non-empty selection of {STAR_TERMS}; got {list(terms)}.")
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {NORMALISATIONS}; got {normalisation!r}.")
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be positive; got {chunk_frames}.")
    if len(student_layers) != len(teacher_layers) or not student_layers:
        raise ValueError(f"One teacher layer per student layer is needed; got {len(student_layers)} student and "
                         f"{len(teacher_layers)} teacher layers.")
    batch, frames = student_layers[0].shape[:2]
    for name, layers in (("student", student_layers), ("teacher", teacher_layers)):
        for i, layer in enumerate(layers):
            if layer.dim() != 3 or tuple(layer.shape[:2]) != (batch, frames):
                raise ValueError(f"{name} layer {i} has shape {tuple(layer.shape)}; every layer must be "
                                 f"(batch, frames, channels) with (batch, frames) = {(batch, frames)}.")
    device = student_layers[0].device
    if frame_mask is None:
        real = torch.ones(batch, frames, dtype=torch.bool, device=device)
    elif tuple(frame_mask.shape) != (batch, frames) or frame_mask.dtype != torch.bool:
        raise ValueError(f"frame_mask must be a bool (batch, frames) = {(batch, frames)} tensor; got "
                         f"{frame_mask.dtype} {tuple(frame_mask.shape)}.")
    else:
        real = frame_mask.to(device)
    teacher_layers = [layer.detach() for layer in teacher_layers]

    def distance(t_left, t_right, s_left, s_right):
        return temporal_gram_distance((t_left, t_right), (s_left, s_right), real, normalisation, chunk_frames)

    zero = torch.zeros((), dtype=torch.float32, device=device)
    layerwise = intra = zero
    if "layerwise" in terms:
        layerwise = sum((distance(t, t, s, s) for t, s in zip(teacher_layers, student_layers)), zero)
    if "intra" in terms:
        intra = sum((distance(teacher_layers[i - 1], teacher_layers[i], student_layers[i - 1], student_layers[i])
                     for i in range(1, len(student_layers))), zero)
    return {"loss": layerwise + intra, "tgm_layerwise": layerwise, "tgm_intra": intra}


def _normalised(features: torch.Tensor, normalisation: str) -> torch.Tensor:
    """(N, D) -> float32 (N, D) scaled so that Grams of different widths are comparable."""
    features = features.float()
    if normalisation == "cosine":
        return F.normalize(features, dim=-1, eps=1e-6)
    if normalisation == "width":
        return features / features.shape[-1] ** 0.5  # G / d
    return features


def _block_squared_error(t_left: torch.Tensor, t_right: torch.Tensor,
                         s_left: torch.Tensor, s_right: torch.Tensor) -> torch.Tensor:
    """Sum of squared differences of rows [start, stop) of the two Grams: (c, D) x (N, D) -> scalar.

    In fp32 even under mixed precision: Gram entries are sums over hundreds of channels and the loss a
    small difference of them, which bf16 products would drown.
    """
    with torch.autocast(device_type=t_left.device.type, enabled=False):
        return (t_left @ t_right.T - s_left @ s_right.T).square().sum()
