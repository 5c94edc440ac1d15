"""STaR's temporal Gram matrix losses (armhubert_training/temporal_relation_loss.py, docs/method.md §5)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from conftest import tiny_config
from test_distillation import distill_argv
from armhubert_training.temporal_relation_loss import star_loss
from modeling_armhubert import ArmHubertModel
from run_distill import main


def _layers(count: int, batch: int, frames: int, width: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, frames, width, generator=generator, dtype=torch.float64) for _ in range(count)]


def _hand_distance(t_left, t_right, s_left, s_right, normalise) -> float:
    """Mean squared Gram difference of one utterance, written out entry by entry."""
    frames = len(t_left)
    prepared = [[normalise(frame) for frame in x] for x in (t_left, t_right, s_left, s_right)]
    total = 0.0
    for i in range(frames):
        for j in range(frames):
            teacher = float(prepared[0][i] @ prepared[1][j])
            student = float(prepared[2][i] @ prepared[3][j])
            total += (teacher - student) ** 2
    return total / frames**2


@pytest.mark.parametrize("normalisation", ["cosine", "width", "none"])
def test_equals_a_hand_computation_with_padding(normalisation):
    teacher, student = _layers(3, 2, 5, 6, seed=0), _layers(3, 2, 5, 4, seed=1)
    lengths = [5, 3]  # the second utterance has two padded frames
    real = torch.arange(5)[None, :] < torch.tensor(lengths)[:, None]
    normalise = {"cosine": lambda f: f / f.norm(), "width": lambda f: f / len(f) ** 0.5,
                 "none": lambda f: f}[normalisation]
    layerwise = intra = 0.0
    for b, n in enumerate(lengths):
        t = [layer[b, :n] for layer in teacher]
        s = [layer[b, :n] for layer in student]
        layerwise += sum(_hand_distance(t[l], t[l], s[l], s[l], normalise) for l in range(3)) / 2
        intra += sum(_hand_distance(t[l - 1], t[l], s[l - 1], s[l], normalise) for l in (1, 2)) / 2
    out = star_loss(student, teacher, real, normalisation=normalisation, chunk_frames=2)
    assert out["tgm_layerwise"].item() == pytest.approx(layerwise, rel=1e-5)
    assert out["tgm_intra"].item() == pytest.approx(intra, rel=1e-5)
    assert out["loss"].item() == pytest.approx(layerwise + intra, rel=1e-5)
    only_layerwise = star_loss(student, teacher, real, terms=["layerwise"], normalisation=normalisation)
    assert only_layerwise["loss"].item() == pytest.approx(layerwise, rel=1e-5)
    assert only_layerwise["tgm_intra"].item() == 0


def test_zero_when_the_student_reproduces_the_teacher():
    teacher = _layers(3, 2, 7, 8, seed=2)
    out = star_loss([t.clone() for t in teacher], teacher)
    assert out["loss"].item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("fill", [0.0, 1e30, float("nan")])
def test_padding_counts_nowhere(fill):
    teacher, student = _layers(2, 3, 9, 6, seed=3), _layers(2, 3, 9, 4, seed=4)
    lengths = [9, 4, 6]
    real = torch.arange(9)[None, :] < torch.tensor(lengths)[:, None]
    padded_t = [torch.where(real[..., None], t, fill) for t in teacher]
    padded_s = [torch.where(real[..., None], s, fill) for s in student]
    batch = star_loss(padded_s, padded_t, real, chunk_frames=4)
    alone = [star_loss([s[b:b + 1, :n] for s in student], [t[b:b + 1, :n] for t in teacher])
             for b, n in enumerate(lengths)]
    for name in ("tgm_layerwise", "tgm_intra", "loss"):
        expected = sum(item[name].item() for item in alone) / len(lengths)  # each utterance counts once
        assert batch[name].item() == pytest.approx(expected, rel=1e-6), name


def test_cosine_grams_compare_across_widths():
    # A student whose 4 channels are an orthogonal map of the teacher's 4, scaled by 7 and embedded
    # among 6 zero channels, has the teacher's cosine Grams, hence loss 0 despite widths 4 and 10.
    teacher = _layers(2, 2, 6, 4, seed=5)
    rotation, _ = torch.linalg.qr(torch.randn(4, 4, generator=torch.Generator().manual_seed(6), dtype=torch.float64))
    student = [torch.cat([7 * t @ rotation, torch.zeros(2, 6, 6, dtype=torch.float64)], dim=-1) for t in teacher]
    assert star_loss(student, teacher, normalisation="cosine")["loss"].item() == pytest.approx(0.0, abs=1e-10)
    # Raw Grams see the scale, so they are not comparable without a normalisation.
    assert star_loss(student, teacher, normalisation="none")["loss"].item() > 1.0


def test_gradients_reach_every_student_layer():
    torch.manual_seed(0)
    config = tiny_config(projection_dim=0, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    student = ArmHubertModel(config)
    values = torch.randn(2, 8000)
    attention_mask = torch.ones(2, 8000, dtype=torch.long)
    attention_mask[1, 5000:] = 0
    outputs = student(values, attention_mask=attention_mask, output_hidden_states=True)
    frames = outputs.last_hidden_state.shape[1]
    real = student._get_feature_vector_attention_mask(frames, attention_mask)
    teacher = _layers(config.num_hidden_layers, 2, frames, 24, seed=7)
    star_loss(list(outputs.hidden_states[1:]), [t.float() for t in teacher], real)["loss"].backward()
    for i, layer in enumerate(student.encoder.layers):
        grads = [p.grad for p in layer.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), f"layer {i} got no gradient"
        assert sum(g.abs().sum() for g in grads) > 0, f"layer {i} got a zero gradient"


@pytest.mark.parametrize("kwargs, message", [
    ({"terms": ["layerwise", "attention"]}, "STaR terms"),
    ({"normalisation": "batch"}, "normalisation must be one of"),
])
def test_bad_options_are_refused(kwargs, message):
    teacher = _layers(2, 1, 3, 4, seed=8)
    with pytest.raises(ValueError, match=message):
        star_loss(teacher, teacher, **kwargs)


def test_short_star_distillation_learns_without_heads_or_masks(tmp_path, offline_hf, tiny_teacher_dir):
    output_dir = tmp_path / "star"
    # The same dev batches scored before the first step and after the last: the loss must fall.
    metrics = main(distill_argv(tiny_teacher_dir, output_dir, "--objective", "star", "--max_steps", "24",
                                "--save_steps", "24", "--eval_steps", "24", "--eval_on_start", "true",
                                "--star_chunk_frames", "64"))
    state = json.loads((output_dir / "trainer_state.json").read_text())
    eval_losses = [entry["eval_loss"] for entry in state["log_history"] if "eval_loss" in entry]
    assert len(eval_losses) >= 2 and eval_losses[-1] < 0.9 * eval_losses[0], eval_losses
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 24
    assert all(entry["loss"] == pytest.approx(entry["tgm_layerwise"] + entry["tgm_intra"], rel=1e-3)
               and "mask_rec" not in entry for entry in logged)
    assert math.isfinite(metrics["eval_loss"])
    config = json.loads((output_dir / "config.json").read_text())
    assert config["projection_dim"] == 0  # no heads were built
    card = (output_dir / "README.md").read_text()
    assert "star" in yaml.safe_load(card.split("---")[1])["tags"]
    assert "| objective | STaR (temporal Gram matrices, unmasked) |" in card


def test_grams_stay_in_fp32_under_bf16_autocast():
    teacher, student = _layers(2, 2, 40, 48, seed=9), _layers(2, 2, 40, 24, seed=10)
    teacher, student = [t.float() for t in teacher], [s.float() for s in student]
    reference = star_loss(student, teacher)["loss"]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        mixed = star_loss(student, teacher)["loss"]
    assert mixed.dtype == torch.float32
    assert mixed.item() == pytest.approx(reference.item(), rel=1e-6)
