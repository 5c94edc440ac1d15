#!/usr/bin/env python
"""Distil a HuBERT / WavLM / wav2vec 2.0 teacher into an ArmHubert student with masking distillation.

    python run_distill.py configs/demo/distill.yaml --teacher DIR          # bundled audio, minutes on a CPU
    accelerate launch run_distill.py configs/distill/armhubert-960h.yaml \\
        --librispeech_root /data/LibriSpeech --output_dir armhubert   # the paper's recipe

A YAML recipe from configs/ comes first; any option after it overrides the recipe. Every option is
listed by `python run_distill.py --help`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import HfArgumentParser, TrainingArguments, set_seed

from armhubert_training.arguments import DistillationDataArguments
from armhubert_training.audio import raw_waveform_feature_extractor
from armhubert_training.collators import AudioCollator
from armhubert_training.distillation_trainer import (DistillationArguments, DistillationMasker,
                                                     MaskingDistillationTrainer)
from armhubert_training.model_card import distilled_student_card
from armhubert_training.speech_datasets import build_dataset
from armhubert_training.speech_trainer import resolve_resume_checkpoint, setup_script_logging
from armhubert_training.teacher import FrozenTeacher, default_layer_map, load_teacher
from armhubert_training.yaml_arguments import parse_config_and_args
from configuration_armhubert import PRESETS, ArmHubertConfig
from modeling_armhubert import ArmHubertModel

logger = logging.getLogger("run_distill")


@dataclass
class ModelArguments:
    """Which teacher, and which student."""

    teacher: str = field(default="facebook/hubert-base-ls960", metadata={
        "help": "Teacher: a hub id or a local directory of a HubertModel, WavLMModel or Wav2Vec2Model "
                "(e.g. facebook/hubert-base-ls960, microsoft/wavlm-base)."})
    student_preset: str = field(default="armhubert", metadata={
        "help": f"Student architecture, one of {sorted(PRESETS)}. Its heads are sized from the teacher."})
    student_config: str | None = field(default=None, metadata={
        "help": "A config.json of an ArmHubertConfig to use instead of --student_preset."})
    config_overrides: str | None = field(default=None, metadata={
        "help": "JSON object of ArmHubertConfig fields to change, e.g. '{\"hidden_dropout\": 0.0}'; applied after "
                "--student_preset or --student_config. Unknown fields and values of the wrong type are refused."})
    teacher_layer_map: list[int] | None = field(default=None, metadata={
        "help": "Teacher layer (1-based) each student layer learns from, e.g. 2 4 6 8 10 12 for a 6-layer "
                "student of a 12-layer teacher. Default: the same layer when the depths match, else evenly spaced."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where downloaded teachers are stored."})
    precision: Literal["auto", "bf16", "fp16", "no"] = field(default="auto", metadata={
        "help": "Mixed precision: 'auto' = --bf16/--fp16 or accelerate launch's --mixed_precision if given, else "
                "bf16 on GPUs that support it, fp16 with loss scaling on older GPUs, fp32 on a CPU; 'bf16', 'fp16' "
                "or 'no' (fp32) choose it outright (contradicting one of those is an error)."})

    def __post_init__(self) -> None:
        # A typo in the overrides stops the run here, before the teacher and the data are loaded.
        ArmHubertConfig.parse_overrides(self.config_overrides, "--config_overrides")


def build_student(model_args: ModelArguments, teacher_hidden_size: int) -> ArmHubertModel:
    if model_args.student_config:
        config = ArmHubertConfig.from_json_file(model_args.student_config)
    else:
        config = ArmHubertConfig.from_preset(model_args.student_preset)
    # The distillation mask is passed explicitly, so the student's own SpecAugment stays off. The user's
    # overrides come last and the result is validated like a new config, whatever its source.
    config = config.with_overrides(model_args.config_overrides, "--config_overrides",
                                   projection_dim=teacher_hidden_size, mask_time_prob=0.0)
    return ArmHubertModel(config)


def check_same_frames(student: ArmHubertModel, teacher: FrozenTeacher) -> None:
    """Teacher and student must cut audio into the same frames for the layer-to-layer loss."""
    for samples in (400, 16_000, 16_321, 160_000):
        if int(student._get_feat_extract_output_lengths(samples)) != int(teacher.num_frames(samples)):
            raise ValueError("The student's conv feature encoder gives a different number of frames than the "
                             "teacher's; both need a total stride of 320 and a receptive field of 400 samples.")


def resolve_precision(training_args: TrainingArguments, precision: str) -> TrainingArguments:
    """The training arguments with the mixed precision that --precision chooses.

    TrainingArguments derives the mode it hands the Accelerator (`mixed_precision`) from bf16/fp16
    when it is built, so the choice is applied by building them anew, never by setting the flags
    afterwards. An explicit --bf16/--fp16 is honoured under 'auto' and never silently overridden.
    """
    # `accelerate launch --mixed_precision` arrives as ACCELERATE_MIXED_PRECISION: as explicit as --bf16.
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    explicit = ("bf16" if training_args.bf16 else "fp16" if training_args.fp16
                else launcher if launcher in ("bf16", "fp16") else None)
    if precision == "auto":
        if explicit is not None:
            precision = explicit
        elif not torch.cuda.is_available():
            precision = "no"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    elif explicit is not None and explicit != precision:
        source = f"--{explicit}" if training_args.bf16 or training_args.fp16 else f"accelerate's --mixed_precision {explicit}"
        raise ValueError(f"--precision {precision} contradicts {source}: give only one of them.")
    # bf16 without a GPU is CPU autocast, which Transformers allows only with use_cpu.
    use_cpu = training_args.use_cpu or (precision == "bf16" and not torch.cuda.is_available())
    return dataclasses.replace(training_args, bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=use_cpu)


def build_trainer(argv: list[str] | None = None) -> MaskingDistillationTrainer:
    """Parse the command line and set up the teacher, the student, the data and the Trainer."""
    parser = HfArgumentParser((ModelArguments, DistillationArguments, DistillationDataArguments, TrainingArguments),
                              description=__doc__)
    model_args, distill_args, data_args, training_args = parse_config_and_args(parser, argv)
    training_args.remove_unused_columns = False  # the batch is ours; the Trainer must not prune it
    training_args = resolve_precision(training_args, model_args.precision)
    if data_args.streaming:
        # Audio batches differ in length; let each process read its own batches from the stream
        # instead of the main process reading and broadcasting equal-shaped ones.
        training_args.accelerator_config.dispatch_batches = False

    setup_script_logging(training_args, "run_distill")
    logger.info("Distillation settings: %s", distill_args)
    set_seed(training_args.seed)

    teacher_model = load_teacher(model_args.teacher, cache_dir=model_args.cache_dir)
    student = build_student(model_args, teacher_model.config.hidden_size)
    layer_map = model_args.teacher_layer_map or default_layer_map(student.config.num_hidden_layers,
                                                                  teacher_model.config.num_hidden_layers)
    teacher = FrozenTeacher(teacher_model, layers=layer_map, share_features=distill_args.share_teacher_features)
    check_same_frames(student, teacher)
    num_head_parameters = sum(p.numel() for p in student.projection_heads.parameters())
    logger.info("Teacher %s (%.2f M parameters), layers %s; student %.2f M parameters (%.2f M without heads)",
                model_args.teacher, teacher_model.num_parameters() / 1e6, layer_map, student.num_parameters() / 1e6,
                (student.num_parameters() - num_head_parameters) / 1e6)

    train_dataset = build_dataset(data_args, "train", seed=training_args.seed) if training_args.do_train else None
    eval_dataset = build_dataset(data_args, "eval", seed=training_args.seed) if training_args.do_eval else None
    feature_extractor = raw_waveform_feature_extractor()

    def model_card():
        # Results as of now: the latest losses logged, the files skipped, the steps made.
        results = {}
        skipped = trainer.skipped_files_metrics()
        for entry in trainer.state.log_history:
            results.update({k: v for k, v in entry.items() if k in ("train_loss", "eval_loss")})
            skipped.update({k: v for k, v in entry.items() if k.startswith("eval_skipped_files")})
        # Totals always; a reason only when it left files out.
        results.update({k: v for k, v in skipped.items() if v or k in ("skipped_files", "eval_skipped_files")})
        results.update(optimisation_steps=trainer.state.global_step)
        return distilled_student_card(
            model_name=training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir)),
            teacher=model_args.teacher,
            datasets=["openslr/librispeech_asr"] if data_args.librispeech_root else [data_args.dataset_name],
            num_parameters=student.num_parameters(),
            num_parameters_without_heads=student.num_parameters() - num_head_parameters,
            recipe=recipe_summary(model_args, distill_args, data_args, training_args, layer_map),
            results=results,
        )

    trainer = MaskingDistillationTrainer(
        model=student, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        # The span mask is drawn in the collator, i.e. in the DataLoader workers, off the training step.
        data_collator=AudioCollator(span_mask=DistillationMasker.for_student(distill_args, student.config,
                                                                             training_args.seed)),
        processing_class=feature_extractor, teacher=teacher,
        distillation_args=distill_args, model_card_fn=model_card,
        max_batch_seconds=data_args.max_batch_seconds,
    )
    return trainer


def main(argv: list[str] | None = None) -> dict[str, float]:
    trainer = build_trainer(argv)
    training_args = trainer.args
    metrics: dict[str, float] = {}
    if training_args.do_train:
        # "last" resumes from the newest complete checkpoint in output_dir; a path from that checkpoint.
        checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        metrics.update(result.metrics, **trainer.skipped_files_metrics())
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="Distilled with run_distill.py")  # writes the card, then uploads
    else:
        trainer.create_model_card()
    return metrics


def recipe_summary(model_args, distill_args, data_args, training_args, layer_map) -> dict[str, object]:
    """The settings a reader of the model card needs to reproduce the run."""
    data = (f"LibriSpeech {' + '.join(data_args.train_splits)}" if data_args.librispeech_root
            else f"{data_args.dataset_name} ({' + '.join(data_args.train_splits)})")
    return {
        "teacher": model_args.teacher,
        "student": " ".join(filter(None, [model_args.student_config or model_args.student_preset,
                                          model_args.config_overrides])),
        "teacher layers": " ".join(map(str, layer_map)),
        "data": data,
        "mask": f"prob {distill_args.mask_prob}, length {distill_args.mask_length} "
                f"({distill_args.mask_length_distribution}), min space {distill_args.mask_min_space}",
        "loss": f"{distill_args.loss_type}, hint weight {distill_args.hint_weight}, last {distill_args.last_weight}",
        "optimizer": f"AdamW lr {training_args.learning_rate}, betas ({training_args.adam_beta1}, "
                     f"{training_args.adam_beta2}), eps {training_args.adam_epsilon}, "
                     f"weight decay {training_args.weight_decay}",
        "schedule": f"{getattr(training_args.lr_scheduler_type, 'value', training_args.lr_scheduler_type)}, "
                    f"warmup {training_args.warmup_steps} (below 1: a fraction of all steps)",
        "batch": f"{training_args.per_device_train_batch_size} x {training_args.gradient_accumulation_steps} "
                 f"accumulation x {training_args.world_size} processes",
        "precision": "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32",
    }


if __name__ == "__main__":
    main()
