"""What can break only on a CUDA GPU: device placement, the fused attention kernels with padding
masks, bf16 autocast, and a distillation run's precision. Skipped on machines without one
(`pytest -m cuda` selects these)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from transformers import HubertConfig, HubertModel

from conftest import bundled_waveforms, pad_batch, tiny_config
from armhubert_training.teacher import FrozenTeacher
from modeling_armhubert import ArmHubertModel

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


def _student_and_batch(count: int = 3):
    torch.manual_seed(0)
    model = ArmHubertModel(tiny_config()).eval()
    waveforms = bundled_waveforms(count=count)
    values, mask = pad_batch(waveforms)
    return model, waveforms, values, mask


def test_cuda_outputs_equal_cpu_outputs_and_bf16_stays_close():
    model, _, values, mask = _student_and_batch()
    with torch.no_grad():
        want = model(values, attention_mask=mask, output_hidden_states=True)
        model.cuda()
        got = model(values.cuda(), attention_mask=mask.cuda(), output_hidden_states=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(values.cuda(), attention_mask=mask.cuda(), output_hidden_states=True)
    frames = want.last_hidden_state.shape[1]
    real = model._get_feature_vector_attention_mask(frames, mask)[..., None]
    for g, h, w in zip(got.projected_hidden_states, half.projected_hidden_states, want.projected_hidden_states):
        # TF32 may run the float32 matrix products on a GPU: 1e-3 covers it.
        assert relative_error(g.cpu() * real, w * real) < 1e-3
        assert relative_error(h.cpu() * real, w * real) < 3e-2


def test_padded_batch_equals_each_item_alone_on_cuda():
    """The fused attention kernels with a padding mask on the GPU."""
    model, waveforms, values, mask = _student_and_batch()
    model.cuda()
    with torch.no_grad():
        batched = model(values.cuda(), attention_mask=mask.cuda()).last_hidden_state
        for b, waveform in enumerate(waveforms):
            alone = model(waveform[None].cuda()).last_hidden_state
            assert relative_error(batched[b, : alone.shape[1]], alone[0]) < 1e-3


def assert_no_host_device_synchronisation(step: Callable[[], None]) -> None:
    """Runs `step` twice: once to pick kernels (which may synchronise), then under CUDA's sync debug mode
    "error", where any synchronisation raises."""
    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def test_a_training_step_makes_no_host_device_synchronisation():
    """The student's training forward and backward on the distillation path (span masks from the collator)
    queue their kernels without waiting for the GPU: CUDA's sync debug mode raises on any synchronisation."""
    model, _, values, mask = _student_and_batch()
    model.cuda().train()
    values, mask = values.cuda(), mask.cuda()
    mask_time_indices = torch.zeros(values.shape[0], model._get_feat_extract_output_lengths(values.shape[1]),
                                    dtype=torch.bool, device="cuda")
    mask_time_indices[:, 5:15] = True

    def step():
        out = model(values, attention_mask=mask, mask_time_indices=mask_time_indices, output_hidden_states=True)
        sum(state.square().mean() for state in out.projected_hidden_states).backward()

    assert_no_host_device_synchronisation(step)


@pytest.mark.parametrize("name", ["superb-ctc", "classification-superb", "classification-fine-tune", "xvector",
                                  "diarization"])
def test_a_task_model_training_step_makes_no_host_device_synchronisation(name, tmp_path):
    """The same for the SUPERB task models (and the classifier that fine-tunes the student with SpecAugment), as
    their Trainers call them on their collators' batches: SpecAugment, the LSTMs' packing, the length checks.
    The CTC head stops at its logits: PyTorch's CUDA CTC loss copies the lengths to the device itself, with a
    blocking copy."""
    from test_host_reads import TASKS, ctc_tokenizer, task_model_and_batch, to_device

    model, batch = task_model_and_batch(name, ctc_tokenizer(tmp_path))
    trainer = TASKS[name].trainer(model, tmp_path)
    model.cuda().train()
    inputs = to_device(batch, torch.device("cuda"))

    def step():
        if name == "superb-ctc":
            logits = model(input_values=inputs["input_values"], attention_mask=inputs["attention_mask"],
                           input_lengths=inputs["input_lengths"]).logits
            loss = logits.float().logsumexp(-1).mean()
        else:
            loss = trainer.compute_loss(model, dict(inputs))  # it takes the bookkeeping out of its batch
        loss.backward()

    assert_no_host_device_synchronisation(step)


def test_shared_teacher_features_under_bf16_autocast():
    torch.manual_seed(0)
    config = HubertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                          conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          mask_time_prob=0.05)
    teacher = FrozenTeacher(HubertModel(config), layers=[1, 3]).cuda()
    values, mask_samples = pad_batch(bundled_waveforms(count=3))
    values, mask_samples = values.cuda(), mask_samples.cuda()
    frames = int(teacher.num_frames(values.shape[1]))
    mask = torch.rand(3, frames, generator=torch.Generator().manual_seed(0)).cuda() < 0.5
    with torch.autocast("cuda", dtype=torch.bfloat16):
        shared = teacher(values, mask_samples, mask)
        teacher.share_features = False
        separate = teacher(values, mask_samples, mask)
    for got, want in zip(shared[0] + shared[1], separate[0] + separate[1]):
        assert relative_error(got, want) < 1e-2


def test_distillation_on_cuda_runs_in_bf16_close_to_fp32(tmp_path, offline_hf, tiny_teacher_dir):
    from run_distill import build_trainer
    from test_distillation import distill_argv

    common = ["--max_steps", "3", "--save_strategy", "no", "--eval_strategy", "no", "--do_eval", "false"]
    losses = {}
    for precision, mixed_precision in (("auto", "bf16"), ("no", "no")):
        trainer = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / precision, *common,
                                             "--precision", precision))
        assert trainer.accelerator.mixed_precision == mixed_precision
        assert trainer.args.device.type == "cuda"
        trainer.train()
        assert next(trainer.model.parameters()).device.type == "cuda"
        losses[mixed_precision] = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses["bf16"]) == 3 and np.all(np.isfinite(losses["bf16"]))
    np.testing.assert_allclose(losses["bf16"], losses["no"], rtol=5e-2)
