"""Where a task run's student comes from (`arguments.StudentSourceArguments`): a directory or hub id
written by run_distill.py or by the checkpoint converter, an authors' Lightning checkpoint converted
on the fly, a model a task script fine-tuned, or a randomly initialised preset for smoke tests."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import AutoFeatureExtractor, FeatureExtractionMixin

from configuration_armhubert import ArmHubertConfig

from .arguments import StudentSourceArguments
from .audio import raw_waveform_feature_extractor

logger = logging.getLogger(__name__)


def resolve_source(student: StudentSourceArguments, output_dir: str) -> tuple[str | None, ArmHubertConfig]:
    """(weights path or hub id, or None for a random preset; its config). Converts an authors' .ckpt
    into `output_dir`/converted-student."""
    if student.random_student_preset is not None:
        return None, ArmHubertConfig.from_preset(student.random_student_preset)
    source = student.model_name_or_path
    if source.endswith(".ckpt"):
        from .convert_original_checkpoint import convert

        converted = Path(output_dir) / "converted-student"
        logger.info("Converting the authors' checkpoint %s into %s", source, converted)
        convert(Path(source), converted)
        source = str(converted)
    return source, ArmHubertConfig.from_pretrained(source, cache_dir=student.cache_dir)


def student_feature_extractor(source: str | None, cache_dir: str | None) -> FeatureExtractionMixin:
    """The student's feature extractor; raw 16 kHz waveforms without normalisation when it has none."""
    if source is not None:
        try:
            return AutoFeatureExtractor.from_pretrained(source, cache_dir=cache_dir)
        except (OSError, ValueError):
            pass
    return raw_waveform_feature_extractor()
