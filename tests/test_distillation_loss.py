"""Tests for armhubert_training.distillation_loss (docs/method.md §2, steps 4-6)."""

from pathlib import Path

import pytest
import torch

from armhubert_training.distillation_loss import (
    masking_distillation_loss,
    validation_distillation_loss,
)

REFERENCE = Path(__file__).resolve().parent / "fixtures" / "original" / "loss-reference.pt"


def _cases():
    return torch.load(REFERENCE)["cases"]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["loss_type"])
def test_matches_authors_values(case):
    expected = case["expected"]
    out = masking_distillation_loss(
        case["student_projections"], case["teacher_unmasked"], case["teacher_masked"],
        case["mask"], hint_weight=case["hint_weight"], last_weight=case["last_weight"],
        loss_type=case["loss_type"],
    )
    got = {
        "mask_hint_loss": out["mask_hint"],
        "unmask_hint_loss": out["unmask_hint"],
        "mask_rec_loss": out["mask_rec"],
        "unmask_rec_loss": out["unmask_rec"],
        "hint_loss": case["hint_weight"] * (out["mask_hint"] + out["unmask_hint"]),
        "rec_loss": case["last_weight"] * (out["mask_rec"] + out["unmask_rec"]),
        "total": out["loss"],
        "validation": validation_distillation_loss(
            case["student_projections"], case["teacher_unmasked"],
            hint_weight=case["hint_weight"], last_weight=case["last_weight"],
            loss_type=case["loss_type"],
        ),
    }
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].item() == pytest.approx(value, abs=1e-5, rel=1e-5), name


def _pad(tensors, extra, fill):
    return [
        torch.cat([t, torch.full((t.shape[0], extra, t.shape[2]), fill, dtype=t.dtype)], dim=1)
        for t in tensors
    ]


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["loss_type"])
@pytest.mark.parametrize("fill", [1e30, float("nan"), float("inf")])
def test_padding_counts_nowhere(case, fill):
    kwargs = dict(loss_type=case["loss_type"])
    s, tu, tm, mask = (
        case["student_projections"], case["teacher_unmasked"],
        case["teacher_masked"], case["mask"],
    )
    batch, frames = mask.shape
    extra = 9
    frame_mask = torch.cat(
        [torch.ones(batch, frames, dtype=torch.bool), torch.zeros(batch, extra, dtype=torch.bool)],
        dim=1,
    )
    # Padded frames claim to be both masked and unmasked across the rows.
    pad_mask = torch.zeros(batch, extra, dtype=torch.bool)
    pad_mask[::2] = True
    padded_mask = torch.cat([mask, pad_mask], dim=1)

    plain = masking_distillation_loss(s, tu, tm, mask, **kwargs)
    padded = masking_distillation_loss(
        _pad(s, extra, fill), _pad(tu, extra, -fill), _pad(tm, extra, fill),
        padded_mask, frame_mask=frame_mask, **kwargs,
    )
    for name in plain:
        assert torch.isfinite(padded[name])
        assert padded[name].item() == plain[name].item(), name

    val_plain = validation_distillation_loss(s, tu, **kwargs)
    val_padded = validation_distillation_loss(
        _pad(s, extra, fill), _pad(tu, extra, -fill), frame_mask=frame_mask, **kwargs
    )
    assert val_padded.item() == val_plain.item()


def test_padding_with_uneven_rows_matches_per_row_sum():
    # Rows of different real lengths: the result equals the sum over the rows'
    # real frames divided by the total number of real frames.
    torch.manual_seed(0)
    layers, batch, frames, dim = 3, 3, 20, 4
    s = [torch.randn(batch, frames, dim) for _ in range(layers)]
    tu = [torch.randn(batch, frames, dim) for _ in range(layers)]
    tm = [torch.randn(batch, frames, dim) for _ in range(layers)]
    mask = torch.rand(batch, frames) < 0.5
    lengths = [20, 7, 13]
    frame_mask = torch.arange(frames)[None, :] < torch.tensor(lengths)[:, None]
    out = masking_distillation_loss(s, tu, tm, mask, frame_mask=frame_mask)

    n_real = sum(lengths)
    expect = dict(mask_hint=0.0, unmask_hint=0.0, mask_rec=0.0, unmask_rec=0.0)
    for layer in range(layers):
        kind = "rec" if layer == layers - 1 else "hint"
        for b, length in enumerate(lengths):
            for t in range(length):
                if mask[b, t]:
                    err = (s[layer][b, t] - tu[layer][b, t]).pow(2).mean()
                    expect["mask_" + kind] += err.item() / n_real
                else:
                    err = (s[layer][b, t] - tm[layer][b, t]).pow(2).mean()
                    expect["unmask_" + kind] += err.item() / n_real
    for name, value in expect.items():
        assert out[name].item() == pytest.approx(value, rel=1e-5), name
    total = 0.1 * (expect["mask_hint"] + expect["unmask_hint"]) + expect["mask_rec"] + expect["unmask_rec"]
    assert out["loss"].item() == pytest.approx(total, rel=1e-5)


def test_gradient_reaches_only_student():
    case = _cases()[0]
    s = [t.clone().requires_grad_(True) for t in case["student_projections"]]
    tu = [t.clone().requires_grad_(True) for t in case["teacher_unmasked"]]
    tm = [t.clone().requires_grad_(True) for t in case["teacher_masked"]]
    out = masking_distillation_loss(s, tu, tm, case["mask"])
    val = validation_distillation_loss(s, tu)
    (out["loss"] + val).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in s)
    assert all(t.grad is None for t in tu + tm)


def test_padded_nan_student_gives_finite_gradient():
    case = _cases()[0]
    batch, frames = case["mask"].shape
    s = [t.clone().requires_grad_(True) for t in _pad(case["student_projections"], 4, float("nan"))]
    frame_mask = torch.arange(frames + 4)[None, :].expand(batch, -1) < frames
    mask = torch.cat([case["mask"], torch.ones(batch, 4, dtype=torch.bool)], dim=1)
    out = masking_distillation_loss(
        s, _pad(case["teacher_unmasked"], 4, 0.0), _pad(case["teacher_masked"], 4, 0.0),
        mask, frame_mask=frame_mask,
    )
    out["loss"].backward()
    for t in s:
        assert torch.isfinite(t.grad).all()
        assert (t.grad[:, frames:] == 0).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_reduce_in_float32(dtype):
    case = _cases()[0]
    cast = lambda ts: [t.to(dtype) for t in ts]  # noqa: E731
    s, tu, tm = cast(case["student_projections"]), cast(case["teacher_unmasked"]), cast(case["teacher_masked"])
    out = masking_distillation_loss(s, tu, tm, case["mask"])
    # Reference: the same (rounded) inputs, computed entirely in float64.
    up = lambda ts: [t.double() for t in ts]  # noqa: E731
    ref = masking_distillation_loss(up(s), up(tu), up(tm), case["mask"])
    assert out["loss"].dtype == torch.float32
    assert out["loss"].item() == pytest.approx(ref["loss"].item(), rel=1e-5)
    val = validation_distillation_loss(s, tu)
    assert val.dtype == torch.float32
    assert val.item() == pytest.approx(validation_distillation_loss(up(s), up(tu)).item(), rel=1e-5)


def test_single_layer_has_no_hint_terms():
    case = _cases()[0]
    s, tu, tm = (case[k][-1:] for k in ("student_projections", "teacher_unmasked", "teacher_masked"))
    out = masking_distillation_loss(s, tu, tm, case["mask"])
    assert out["mask_hint"].item() == 0 and out["unmask_hint"].item() == 0
    assert out["loss"].item() == pytest.approx(case["expected"]["rec_loss"], abs=1e-5)


def _bad_inputs():
    case = _cases()[0]
    s, tu, tm, mask = (
        case["student_projections"], case["teacher_unmasked"],
        case["teacher_masked"], case["mask"],
    )
    wrong_d = [t[..., :8] for t in tu]
    return [
        ("layers", (s, tu[:-1], tm, mask), {}),
        ("layer", ([], [], [], mask), {}),
        ("shape", (s, wrong_d, tm, mask), {}),
        ("shape", (s, tu, [t[:, :-1] for t in tm], mask), {}),
        ("mask", (s, tu, tm, mask[:, :-1]), {}),
        ("mask", (s, tu, tm, mask.long()), {}),
        ("frame_mask", (s, tu, tm, mask), {"frame_mask": torch.ones(3, 5, dtype=torch.bool)}),
        ("loss_type", (s, tu, tm, mask), {"loss_type": "huber"}),
        ("batch, frames, features", ([t[0] for t in s], [t[0] for t in tu], [t[0] for t in tm], mask), {}),
    ]


@pytest.mark.parametrize("message, args, kwargs", _bad_inputs(), ids=lambda x: x if isinstance(x, str) else "")
def test_bad_inputs_raise(message, args, kwargs):
    with pytest.raises(ValueError, match=message):
        masking_distillation_loss(*args, **kwargs)


def test_validation_bad_inputs_raise():
    case = _cases()[0]
    s, tu = case["student_projections"], case["teacher_unmasked"]
    with pytest.raises(ValueError, match="loss_type"):
        validation_distillation_loss(s, tu, loss_type="mae")
    with pytest.raises(ValueError, match="layers"):
        validation_distillation_loss(s, tu[:2])
    with pytest.raises(ValueError, match="shape"):
        validation_distillation_loss(s, [t[:, :, :4] for t in tu])
    with pytest.raises(ValueError, match="frame_mask"):
        validation_distillation_loss(s, tu, frame_mask=torch.ones(3, 57))
