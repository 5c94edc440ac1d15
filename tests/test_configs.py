"""The paper's recipes in configs/ parse and carry the authors' settings (docs/method.md §2)."""

from __future__ import annotations

import pytest
from transformers import HfArgumentParser, TrainingArguments

from conftest import REPO, tiny_config
from armhubert_training.arguments import AsrModelArguments, DistillationDataArguments
from armhubert_training.arguments import DistillationModelArguments as ModelArguments
from armhubert_training.arguments import parse_config_and_args, yaml_to_argv
from armhubert_training.distillation_trainer import DistillationArguments
from configuration_armhubert import ArmHubertConfig

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
    parser = HfArgumentParser((ModelArguments, DistillationArguments, DistillationDataArguments, TrainingArguments))
    return parse_config_and_args(parser, list(argv))


@pytest.mark.parametrize("name", sorted(PAPER_RECIPES))
def test_paper_recipe(name):
    preset, teacher, lr, mask_prob, per_step, num_splits = PAPER_RECIPES[name]
    model, distill, data, training = parse(str(REPO / "configs" / "distill" / f"{name}.yaml"), "--report_to", "none")
    assert (model.student_preset, model.teacher, training.learning_rate, distill.mask_prob) == (
        preset, teacher, lr, mask_prob)
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps * 2 == per_step
    assert len(data.train_splits) == num_splits and data.eval_splits == ["dev-clean"]
    assert (training.adam_beta1, training.adam_beta2, training.adam_epsilon, training.weight_decay) == (
        0.9, 0.98, 1e-6, 1e-6)
    assert training.warmup_steps == 0.05 and training.num_train_epochs == 200
    assert (distill.mask_length, distill.mask_length_distribution, distill.mask_min_space,
            distill.mask_min_spans, distill.hint_weight, distill.loss_type) == (10, "uniform", 1, 2, 0.1, "mse")


def test_star_recipe():
    # STaR's published setting: HuBERT Base teacher, 960 h, the 22.31 M student, both Gram terms.
    model, distill, data, training = parse(str(REPO / "configs" / "distill" / "starhubert-960h.yaml"),
                                           "--report_to", "none")
    assert (model.student_preset, model.teacher, distill.objective, distill.star_loss_terms) == (
        "starhubert", "facebook/hubert-base-ls960", "star", ("layerwise", "intra"))
    assert distill.star_normalisation == "cosine"
    assert len(data.train_splits) == 3 and data.eval_splits == ["dev-clean"]
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps * 2 == 144


def test_command_line_overrides_the_yaml():
    model, distill, _, training = parse(str(REPO / "configs" / "demo" / "distill.yaml"), "--mask_prob", "0.3", "--max_steps",
                                        "7", "--teacher", "some/teacher")
    assert (distill.mask_prob, training.max_steps, model.teacher) == (0.3, 7, "some/teacher")


def test_yaml_values_become_options(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("a: 1\nb: [x, y]\nc: true\nd: null\ne: {k: 1}\n")
    assert yaml_to_argv(recipe) == ["--a", "1", "--b", "x", "y", "--c", "true", "--e", '{"k": 1}']
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        yaml_to_argv(tmp_path / "missing.yaml")


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("max_steps: 10\ntrain_splits: [train-clean-100, dev-clean\nlearning_rate: 5e-3\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: invalid YAML at line 3, column 14: expected ',' or ']'"):
        yaml_to_argv(recipe)


# --config_overrides of run_distill.py and of run_asr_ctc.py share one validated path:
# ArmHubertConfig.with_overrides / parse_overrides.

def _asr_model_args(overrides: str):
    return AsrModelArguments(random_student_preset="armhubert", config_overrides=overrides)


def test_unknown_override_fields_are_refused_with_the_valid_fields():
    with pytest.raises(ValueError, match=r"--config_overrides: unknown ArmHubertConfig field\(s\) \['hiden_size'\]"
                                         r"\. Valid fields: .*\bhidden_size\b.*\breuse_pattern\b"):
        parse(str(REPO / "configs" / "demo" / "distill.yaml"), "--config_overrides", '{"hiden_size": 64}')
    with pytest.raises(ValueError, match=r"--config_overrides: unknown ArmHubertConfig field\(s\) \['final_dropuot'\]"):
        _asr_model_args('{"final_dropuot": 0.0}')


@pytest.mark.parametrize("overrides, error, message", [
    ('{"hidden_size": "480"}', TypeError, r"field 'hidden_size' must be an int, got '480'"),
    ('{"hidden_size": true}', TypeError, r"field 'hidden_size' must be an int, got True"),
    ('{"reuse_pattern": "TFTF"}', TypeError, r"field 'reuse_pattern' must be a list of bool or null"),
    ('{"hidden_dropout": "0.1"}', TypeError, r"field 'hidden_dropout' must be a number"),
    ("{hidden_size: 64}", ValueError, r"--config_overrides is not valid JSON"),
    ('[["hidden_size", 64]]', ValueError, r"--config_overrides must be a JSON object"),
])
def test_override_values_of_the_wrong_type_or_bad_json_are_refused(overrides, error, message):
    with pytest.raises(error, match=message):
        ArmHubertConfig.parse_overrides(overrides, "--config_overrides")
    with pytest.raises(error, match=message):
        ModelArguments(config_overrides=overrides)
    with pytest.raises(error, match=message):
        _asr_model_args(overrides)


def test_the_old_name_of_config_overrides_is_refused():
    # One name in both scripts: the distillation script's former --student_overrides is not an option any more.
    with pytest.raises(ValueError, match=r"not used by the HfArgumentParser: \['--student_overrides'"):
        parse(str(REPO / "configs" / "demo" / "distill.yaml"), "--student_overrides", '{"hidden_size": 64}')
    model = parse(str(REPO / "configs" / "demo" / "distill.yaml"), "--config_overrides", '{"hidden_dropout": 0.0}')[0]
    assert model.config_overrides == '{"hidden_dropout": 0.0}'


def test_wrong_types_in_code_name_the_field():
    with pytest.raises(TypeError, match=r"field 'hidden_size' must be an int, got '480' \(str\)"):
        ArmHubertConfig(hidden_size="480")


def test_student_config_with_overrides_is_validated_like_a_preset(tmp_path):
    from armhubert_training.distillation_setup import build_student

    config_file = tmp_path / "student.json"
    tiny_config().to_json_file(config_file)  # 4 layers, reuse_pattern of 4 entries
    args = ModelArguments(student_config=str(config_file), config_overrides='{"num_hidden_layers": 2}')
    with pytest.raises(ValueError, match="--config_overrides gives an invalid config: reuse_pattern has 4 entries "
                                         "but num_hidden_layers is 2"):
        build_student(args, teacher_hidden_size=768)
    # Valid overrides apply on top of the file, after the script's own settings.
    args = ModelArguments(student_config=str(config_file),
                          config_overrides='{"hidden_dropout": 0, "mask_time_prob": 0.1}')
    config = build_student(args, teacher_hidden_size=768).config
    assert (config.hidden_size, config.projection_dim, config.hidden_dropout, config.mask_time_prob) == (
        64, 768, 0, 0.1)
