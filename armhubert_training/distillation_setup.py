"""A distillation run set up from its parsed arguments: the precision, the teacher, the student, the
data and the `MaskingDistillationTrainer` (what run_distill.py trains, and what the benchmarks of a
real run measure)."""

from __future__ import annotations

import dataclasses
import logging
import os

import torch
from transformers import TrainingArguments, set_seed

from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import ArmHubertModel

from .arguments import DistillationDataArguments, DistillationModelArguments, DistilledStudentArguments
from .audio import raw_waveform_feature_extractor
from .collators import AudioCollator
from .distillation_trainer import DistillationArguments, DistillationMasker, MaskingDistillationTrainer
from .model_card import distilled_student_card
from .speech_datasets import build_dataset
from .teacher import FrozenTeacher, default_layer_map, load_teacher

logger = logging.getLogger(__name__)


def build_student(student_args: DistilledStudentArguments, teacher_hidden_size: int) -> ArmHubertModel:
    """The student; `teacher_hidden_size` 0 builds it without distillation heads (STaR needs none)."""
    if student_args.student_config:
        config = ArmHubertConfig.from_json_file(student_args.student_config)
    else:
        config = ArmHubertConfig.from_preset(student_args.student_preset)
    # The distillation mask is passed explicitly, so the student's own SpecAugment stays off. The user's
    # overrides come last and the result is validated like a new config, whatever its source.
    config = config.with_overrides(student_args.config_overrides, "--config_overrides",
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
        source = (f"--{explicit}" if training_args.bf16 or training_args.fp16
                  else f"accelerate's --mixed_precision {explicit}")
        raise ValueError(f"--precision {precision} contradicts {source}: give only one of them.")
    # bf16 without a GPU is CPU autocast, which Transformers allows only with use_cpu.
    use_cpu = training_args.use_cpu or (precision == "bf16" and not torch.cuda.is_available())
    return dataclasses.replace(training_args, bf16=precision == "bf16", fp16=precision == "fp16", use_cpu=use_cpu)


def build_distillation_trainer(model_args: DistillationModelArguments, distill_args: DistillationArguments,
                               data_args: DistillationDataArguments,
                               training_args: TrainingArguments) -> MaskingDistillationTrainer:
    """The Trainer of a distillation run, with the teacher, the student, the data and the model card."""
    training_args = resolve_precision(training_args, model_args.precision)
    if data_args.streaming:
        # Audio batches differ in length; let each process read its own batches from the stream
        # instead of the main process reading and broadcasting equal-shaped ones.
        training_args.accelerator_config.dispatch_batches = False
    logger.info("Distillation settings: %s", distill_args)
    set_seed(training_args.seed)

    teacher_model = load_teacher(model_args.teacher, cache_dir=model_args.cache_dir)
    star = distill_args.objective == "star"
    student = build_student(model_args, 0 if star else teacher_model.config.hidden_size)
    layer_map = model_args.teacher_layer_map or default_layer_map(student.config.num_hidden_layers,
                                                                  teacher_model.config.num_hidden_layers)
    teacher = FrozenTeacher(teacher_model, layers=layer_map, share_features=distill_args.share_teacher_features,
                            positional_conv_from_spectra=distill_args.teacher_positional_conv_from_spectra)
    check_same_frames(student, teacher)
    num_head_parameters = (sum(p.numel() for p in student.projection_heads.parameters())
                           if student.projection_heads is not None else 0)
    logger.info("Teacher %s (%.2f M parameters), layers %s; student %.2f M parameters (%.2f M without heads)",
                model_args.teacher, teacher_model.num_parameters() / 1e6, layer_map, student.num_parameters() / 1e6,
                (student.num_parameters() - num_head_parameters) / 1e6)

    train_dataset = build_dataset(data_args, "train", seed=training_args.seed) if training_args.do_train else None
    eval_dataset = build_dataset(data_args, "eval", seed=training_args.seed) if training_args.do_eval else None
    trainer = MaskingDistillationTrainer(
        model=student, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        # The span mask is drawn in the collator, i.e. in the DataLoader workers, off the training step;
        # STaR distils unmasked audio and draws none.
        data_collator=AudioCollator(span_mask=None if star else DistillationMasker.for_student(
            distill_args, student.config, training_args.seed)),
        processing_class=raw_waveform_feature_extractor(), teacher=teacher, distillation_args=distill_args,
        model_card_fn=lambda: distilled_student_card(trainer, student, model_args, distill_args, data_args,
                                                     training_args, layer_map),
        max_batch_seconds=data_args.max_batch_seconds,
    )
    return trainer
