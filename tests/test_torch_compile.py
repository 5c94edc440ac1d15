"""`run_distill.py --torch_compile true` (the student compiled by the Trainer, Inductor, dynamic shapes) on
batches of different lengths: the same losses and gradient norms as eager; and the gradient scaling it relies on.
For inference, `torch.compile(model.eval(), fullgraph=True)`: one graph, the outputs of eager."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from conftest import pad_batch, tiny_config
from modeling_armhubert import ArmHubertForSequenceClassification, ArmHubertModel, grad_scale
from run_distill import build_trainer
from test_distillation import NO_DROPOUT, distill_argv


def test_grad_scale_is_identity_forward_and_scales_the_gradient():
    tensor = torch.randn(3, 5, 4, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 5, 4, dtype=torch.float64)
    scaled = grad_scale(tensor, 0.375)
    assert torch.equal(scaled, tensor)  # bit for bit
    scaled.backward(upstream)
    assert torch.equal(tensor.grad, upstream * 0.375)


def _logged(trainer, key: str) -> list[float]:
    return [entry[key] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.slow
def test_compiled_student_distils_like_eager(tmp_path, offline_hf, tiny_teacher_dir):
    """Three steps of the bundled audio, three different batch lengths (a static graph, then a dynamic one).
    The gradient norm is compared too: an earlier compiled backward lost the layer gradient scaling while
    the losses of the first steps still agreed."""
    common = ["--max_steps", "3", "--save_strategy", "no", "--eval_strategy", "no", "--do_eval", "false",
              "--dataloader_num_workers", "0"]
    runs = {}
    for compiled in ("false", "true"):
        trainer = build_trainer(distill_argv(tiny_teacher_dir, tmp_path / compiled, *common, "--torch_compile",
                                             compiled, overrides=NO_DROPOUT))
        lengths = {batch["input_values"].shape[1] for batch in itertools.islice(trainer.get_train_dataloader(), 3)}
        trainer.train()
        runs[compiled] = trainer
    assert runs["true"].args.torch_compile and not runs["false"].args.torch_compile
    assert len(lengths) == 3  # the first three batches, as trained on
    torch._dynamo.reset()  # no compiled graphs of this test's student left for the next one
    for key in ("loss", "grad_norm"):
        eager, compiled = _logged(runs["false"], key), _logged(runs["true"], key)
        assert len(eager) == 3
        np.testing.assert_allclose(compiled, eager, rtol=1e-4)


@pytest.mark.slow
def test_fullgraph_compiled_inference_equals_eager():
    """The conv front ends are compiled with the rest in eval mode (left to eager only when training), so
    the whole forward is one graph: the bare student on a padded batch, then a task model with dynamic
    shapes on two batch lengths."""
    torch.manual_seed(0)
    student = ArmHubertModel(tiny_config()).eval()
    classifier = ArmHubertForSequenceClassification(tiny_config(num_labels=5, classifier_mode="superb",
                                                                classifier_proj_size=16)).eval()
    try:
        with torch.no_grad():
            values, mask = pad_batch([torch.randn(4000), torch.randn(2700)])
            compiled = torch.compile(student, fullgraph=True)(values, attention_mask=mask, output_hidden_states=True)
            eager = student(values, attention_mask=mask, output_hidden_states=True)
            for got, want in zip(compiled.hidden_states, eager.hidden_states):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
            compiled_classifier = torch.compile(classifier, fullgraph=True, dynamic=True)
            for lengths in ([3000, 2100], [5121, 1601]):
                values, mask = pad_batch([torch.randn(length) for length in lengths])
                torch.testing.assert_close(compiled_classifier(values, attention_mask=mask).logits,
                                           classifier(values, attention_mask=mask).logits, rtol=1e-5, atol=1e-5)
    finally:
        torch._dynamo.reset()
