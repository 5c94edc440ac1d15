"""The paper's recipes in configs/ parse and carry the authors' settings (docs/method.md §2)."""

from __future__ import annotations

import pytest
from transformers import HfArgumentParser, TrainingArguments

from conftest import REPO
from distillation_trainer import DistillationArguments
from run_distill import ModelArguments
from speech_data import DataArguments
from yaml_arguments import parse_config_and_args, yaml_to_argv

# name: (preset, teacher, peak lr, mask prob, utterances per step on 2 GPUs, train splits)
PAPER_RECIPES = {
    "armhubert-960h": ("armhubert", "facebook/hubert-base-ls960", 5e-3, 0.8, 144, 3),
    "armhubert-s-100h": ("armhubert-s", "facebook/hubert-base-ls960", 5e-3, 0.4, 36, 1),
    "armhubert-s-960h": ("armhubert-s", "facebook/hubert-base-ls960", 5e-3, 0.8, 144, 3),
    "armwavlm-s-100h": ("armwavlm-s", "microsoft/wavlm-base", 5e-3, 0.4, 36, 1),
    "armwavlm-s-960h": ("armwavlm-s", "microsoft/wavlm-base", 5e-3, 0.8, 144, 3),
    "maskhubert-960h": ("maskhubert", "facebook/hubert-base-ls960", 5e-4, 0.8, 144, 3),
}


def parse(*argv: str):
    parser = HfArgumentParser((ModelArguments, DistillationArguments, DataArguments, TrainingArguments))
    return parse_config_and_args(parser, list(argv))


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_paper_recipe(name):
    preset, teacher, lr, mask_prob, per_step, num_splits = PAPER_RECIPES[name]
    model, distill, data, training = parse(str(REPO / "configs" / f"{name}.yaml"), "--report_to", "none")
    assert (model.student_preset, model.teacher, training.learning_rate, distill.mask_prob) == (
        preset, teacher, lr, mask_prob)
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps * 2 == per_step
    assert len(data.train_splits) == num_splits and data.eval_splits == ["dev-clean"]
    assert (training.adam_beta1, training.adam_beta2, training.adam_epsilon, training.weight_decay) == (
        0.9, 0.98, 1e-6, 1e-6)
    assert training.warmup_steps == 0.05 and training.num_train_epochs == 200
    assert (distill.mask_length, distill.mask_length_distribution, distill.mask_min_space,
            distill.mask_min_spans, distill.hint_weight, distill.loss_type) == (10, "uniform", 1, 2, 0.1, "mse")


def test_command_line_overrides_the_yaml():
    model, distill, _, training = parse(str(REPO / "configs" / "demo.yaml"), "--mask_prob", "0.3", "--max_steps",
                                        "7", "--teacher", "some/teacher")
    assert (distill.mask_prob, training.max_steps, model.teacher) == (0.3, 7, "some/teacher")


def test_yaml_values_become_options(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("a: 1\nb: [x, y]\nc: true\nd: null\ne: {k: 1}\n")
    assert yaml_to_argv(recipe) == ["--a", "1", "--b", "x", "y", "--c", "true", "--e", '{"k": 1}']
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        yaml_to_argv(tmp_path / "missing.yaml")
