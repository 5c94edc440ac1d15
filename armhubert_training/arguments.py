"""The scripts' command lines: argument dataclasses, one concept each, and how they are parsed.

A script gives `HfArgumentParser` the concepts it uses, composed into one dataclass per side (e.g.
run_asr_ctc.py's `ModelArguments(FineTuningArguments, SuperbFeatureArguments, CtcHeadArguments,
StudentSourceArguments)`), so that every option in its `--help` does something in that script and an
option name means the same in every script (tests/test_script_options.py checks both). A concept's
checks run in its `__post_init__`, which ends with `super().__post_init__()`: a dataclass composed of
several concepts runs the checks of all of them.

Command lines have the form `script.py [config.yaml] [--option value ...]`: the YAML file gives the
recipe, options on the command line override it. The YAML is turned into the equivalent options
placed before the user's, so both go through the same `HfArgumentParser` validation and the last
value of an option wins.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from transformers import HfArgumentParser

from configuration_armhubert import PRESETS, ArmHubertConfig


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the layout of the script's docstring and shows every default."""


def yaml_to_argv(path: str | Path) -> list[str]:
    """`{"max_steps": 10, "train_splits": ["a", "b"], "bf16": true}`
    -> `--max_steps 10 --train_splits a b --bf16 true`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Config file not found: {path}")
    try:
        recipe = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        # PyYAML's message names neither the file nor, for some errors, where the problem is.
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ValueError(f"{path}: invalid YAML{where}: {problem}. Fix the recipe there (options are written "
                         "'name: value', one per line).") from err
    if not isinstance(recipe, dict):
        raise ValueError(f"{path} must hold a mapping of option names to values, got {type(recipe).__name__}.")
    argv: list[str] = []
    for key, value in recipe.items():
        if value is None:
            continue
        argv.append(f"--{key}")
        if isinstance(value, list):
            argv.extend(str(item) for item in value)
        elif isinstance(value, dict):
            argv.append(json.dumps(value))
        elif isinstance(value, bool):
            argv.append("true" if value else "false")
        else:
            argv.append(str(value))
    return argv


def parse_config_and_args(parser: HfArgumentParser, argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse an optional leading YAML file plus command-line overrides into the parser's dataclasses."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith((".yaml", ".yml")):
        argv = yaml_to_argv(argv[0]) + argv[1:]
    return parser.parse_args_into_dataclasses(args=argv)


class ArgumentConcept:
    """Base of the argument dataclasses: the end of the chain of their `__post_init__` checks."""

    def __post_init__(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# Model side
# ----------------------------------------------------------------------------------------------


@dataclass
class HubCacheArguments(ArgumentConcept):
    cache_dir: str | None = field(default=None, metadata={"help": "Where models downloaded from the hub are stored."})


@dataclass
class ConfigOverridesArguments(ArgumentConcept):
    config_overrides: str | None = field(default=None, metadata={
        "help": "JSON object of ArmHubertConfig fields to change, applied last, e.g. "
                "'{\"hidden_dropout\": 0.0, \"final_dropout\": 0.0}'. Unknown fields and values of the wrong type "
                "are refused."})

    def __post_init__(self) -> None:
        # A typo in the overrides stops the run here, before any data or model is loaded.
        ArmHubertConfig.parse_overrides(self.config_overrides, "--config_overrides")
        super().__post_init__()


@dataclass
class StudentSourceArguments(HubCacheArguments, ConfigOverridesArguments):
    """Where a task run's student comes from: a saved model, an authors' checkpoint, or a random preset."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "The student: a directory or hub id of an ArmHubert model (written by run_distill.py or "
                "armhubert_training.convert_original_checkpoint), or an authors' Lightning checkpoint (*.ckpt), "
                "converted into OUTPUT_DIR/converted-student first. A model this script fine-tuned is evaluated "
                "(or trained further) with its own head and its own vocabulary or classes. Use this or "
                "--random_student_preset."})
    random_student_preset: str | None = field(default=None, metadata={
        "help": f"A randomly initialised student of this preset, one of {sorted(PRESETS)}, for smoke tests."})

    def __post_init__(self) -> None:
        if (self.model_name_or_path is None) == (self.random_student_preset is None):
            raise ValueError("Give exactly one model source: --model_name_or_path (a student or fine-tuned model) "
                             f"or --random_student_preset; got {self.model_name_or_path!r} and "
                             f"{self.random_student_preset!r}.")
        if self.random_student_preset is not None and self.random_student_preset not in PRESETS:
            raise ValueError(f"Unknown --random_student_preset {self.random_student_preset!r}; choose one of "
                             f"{sorted(PRESETS)}.")
        super().__post_init__()


@dataclass
class FineTuningArguments(ArgumentConcept):
    """Full fine-tuning of the student, as Transformers fine-tunes wav2vec 2.0 / HuBERT: the conv feature
    encoder frozen, SpecAugment-style masking of the frames."""

    freeze_feature_encoder: bool = field(default=True, metadata={
        "help": "When the whole student is fine-tuned: do not train the conv feature encoder (standard for "
                "wav2vec 2.0 / HuBERT fine-tuning)."})
    mask_time_prob: float = field(default=0.05, metadata={
        "help": "When the whole student is fine-tuned: SpecAugment-style time masking, the probability of each "
                "frame to start a masked span (Transformers' default for wav2vec 2.0 / HuBERT fine-tuning)."})
    mask_time_length: int = field(default=10, metadata={
        "help": "When the whole student is fine-tuned: frames per time-mask span."})
    mask_feature_prob: float = field(default=0.0, metadata={
        "help": "When the whole student is fine-tuned: the probability of each channel to start a masked span "
                "of channels."})
    mask_feature_length: int = field(default=10, metadata={
        "help": "When the whole student is fine-tuned: channels per feature-mask span."})


@dataclass
class SuperbFeatureArguments(ArgumentConcept):
    superb_features: Literal["auto", "projected", "hidden_states"] = field(default="auto", metadata={
        "help": "What a learned weighted sum of the student's layers is taken over. 'projected': the outputs of "
                "the student's distillation heads, one per layer (the features the authors gave SUPERB); "
                "'hidden_states': the encoder input and every layer's output; 'auto': 'projected' when the student "
                "is frozen (SUPERB's protocol) and has heads, else 'hidden_states'."})


@dataclass
class CtcHeadArguments(ArgumentConcept):
    """The CTC model's head: a Linear layer on the last layer, or SUPERB's weighted sum, BiLSTM and CTC."""

    head: Literal["linear", "superb"] | None = field(default=None, metadata={
        "help": "'linear': full fine-tuning with a Linear CTC head on the last layer. 'superb': SUPERB's ASR "
                "protocol (frozen student, weighted sum of its layers, BiLSTM, CTC). Default: the head of a "
                "fine-tuned --model_name_or_path, else 'linear'."})
    superb_projection_dim: int = field(default=1024, metadata={
        "help": "--head superb: width of the Linear before the BiLSTM (SUPERB: 1024)."})
    superb_lstm_hidden_size: int = field(default=1024, metadata={
        "help": "--head superb: units per direction of each BiLSTM layer (SUPERB: 1024)."})
    superb_lstm_layers: int = field(default=2, metadata={
        "help": "--head superb: BiLSTM layers (SUPERB ASR and slot filling: 2; phoneme recognition: 0, the CTC "
                "layer then reads the projection)."})
    superb_lstm_dropout: float = field(default=0.2, metadata={
        "help": "--head superb: dropout after each BiLSTM layer (SUPERB: 0.2)."})
    superb_spec_augment: bool = field(default=False, metadata={
        "help": "--head superb: SUPERB's SpecAugment on the weighted-sum features while training (time warp "
                "window 5, 4 channel bands < 50 wide, 2 frame bands < 40 wide, zeroed), as SUPERB's ASR recipe "
                "does. Its sizes are ArmHubertConfig fields (superb_time_warp_window, ...): change them with "
                "--config_overrides."})
    ctc_loss_reduction: Literal["mean", "sum"] = field(default="mean", metadata={
        "help": "'mean': each utterance's CTC loss divided by its label length, averaged over the batch "
                "(PyTorch's and SUPERB's default); 'sum': summed over the batch."})
    ctc_zero_infinity: bool = field(default=True, metadata={
        "help": "Zero the loss of utterances whose transcript is too long for their frames (infinite CTC loss) "
                "instead of letting it break training."})


@dataclass
class ClassifierHeadArguments(ArgumentConcept):
    """The utterance classifier: SUPERB's protocol on a frozen student, or the whole student fine-tuned."""

    classifier_mode: Literal["superb", "fine_tune"] | None = field(default=None, metadata={
        "help": "'superb': SUPERB's protocol (frozen student, weighted sum of its layers, Linear, mean pooling, "
                "Linear). 'fine_tune': the whole student trained. Default: the mode of a fine-tuned "
                "--model_name_or_path, else 'superb'."})
    classifier_proj_size: int = field(default=256, metadata={
        "help": "Width of the frame-wise Linear before mean pooling (SUPERB: 256)."})
    use_weighted_layer_sum: bool = field(default=False, metadata={
        "help": "--classifier_mode fine_tune: classify a learned weighted sum of the layers instead of the last one."})

    def __post_init__(self) -> None:
        if self.classifier_proj_size < 1:
            raise ValueError(f"--classifier_proj_size must be a positive integer; got {self.classifier_proj_size}.")
        super().__post_init__()


@dataclass
class TeacherArguments(HubCacheArguments):
    """The teacher a student is distilled from, and which of its layers each student layer learns."""

    teacher: str = field(default="facebook/hubert-base-ls960", metadata={
        "help": "Teacher: a hub id or a local directory of a HubertModel, WavLMModel or Wav2Vec2Model "
                "(e.g. facebook/hubert-base-ls960, microsoft/wavlm-base)."})
    teacher_layer_map: list[int] | None = field(default=None, metadata={
        "help": "Teacher layer (1-based) each student layer learns from, e.g. 2 4 6 8 10 12 for a 6-layer "
                "student of a 12-layer teacher. Default: the same layer when the depths match, else evenly spaced."})


@dataclass
class DistilledStudentArguments(ConfigOverridesArguments):
    """The architecture a teacher is distilled into (its distillation heads are sized from the teacher)."""

    student_preset: str = field(default="armhubert", metadata={
        "help": f"Student architecture, one of {sorted(PRESETS)}. Its heads are sized from the teacher."})
    student_config: str | None = field(default=None, metadata={
        "help": "A config.json of an ArmHubertConfig to use instead of --student_preset."})


@dataclass
class MixedPrecisionArguments(ArgumentConcept):
    precision: Literal["auto", "bf16", "fp16", "no"] = field(default="auto", metadata={
        "help": "Mixed precision: 'auto' = --bf16/--fp16 or accelerate launch's --mixed_precision if given, else "
                "bf16 on GPUs that support it, fp16 with loss scaling on older GPUs, fp32 on a CPU; 'bf16', 'fp16' "
                "or 'no' (fp32) choose it outright (contradicting one of those is an error)."})


@dataclass
class DistillationModelArguments(MixedPrecisionArguments, DistilledStudentArguments, TeacherArguments):
    """Which teacher, which student, in which precision (run_distill.py's, and the benchmarks' of it)."""
