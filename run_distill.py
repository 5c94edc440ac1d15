#!/usr/bin/env python
"""Distil a HuBERT / WavLM / wav2vec 2.0 teacher into an ArmHubert student with masking distillation.

    python run_distill.py configs/demo/distill.yaml --teacher DIR          # bundled audio, minutes on a CPU
    accelerate launch run_distill.py configs/distill/armhubert-960h.yaml \\
        --librispeech_root /data/LibriSpeech --output_dir armhubert   # the paper's recipe

A YAML recipe from configs/ comes first; any option after it overrides the recipe. Every option is
listed by `python run_distill.py --help`. The run (teacher, student, data, Trainer, model card) is set
up by armhubert_training/distillation_setup.py.
"""

from __future__ import annotations

from transformers import HfArgumentParser, TrainingArguments

from armhubert_training.arguments import (
    DistillationDataArguments, DistillationModelArguments, HelpFormatter, parse_config_and_args,
)
from armhubert_training.distillation_setup import build_distillation_trainer
from armhubert_training.distillation_trainer import DistillationArguments, MaskingDistillationTrainer
from armhubert_training.speech_trainer import resolve_resume_checkpoint, setup_script_logging


def parse_args(argv: list[str] | None = None) -> tuple[DistillationModelArguments, DistillationArguments,
                                                       DistillationDataArguments, TrainingArguments]:
    parser = HfArgumentParser((DistillationModelArguments, DistillationArguments, DistillationDataArguments,
                               TrainingArguments), description=__doc__, formatter_class=HelpFormatter)
    return parse_config_and_args(parser, argv)


def build_trainer(argv: list[str] | None = None) -> MaskingDistillationTrainer:
    """Parse the command line and set up the teacher, the student, the data and the Trainer."""
    model_args, distill_args, data_args, training_args = parse_args(argv)
    setup_script_logging(training_args)
    return build_distillation_trainer(model_args, distill_args, data_args, training_args)


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


if __name__ == "__main__":
    main()
