#!/usr/bin/env python
"""SUPERB speaker diarization (SD) on top of an ArmHubert student: training, evaluation and scoring.

    python run_diarization.py configs/superb/sd.yaml --model_name_or_path STUDENT \\
        --librimix_root /data/s3prl/downstream/diarization/data
    python run_diarization.py --model_name_or_path armhubert-superb-sd --librimix_root ... --do_predict \\
        --output_dir armhubert-superb-sd  # score a trained model on test

SUPERB's protocol (s3prl's `diarization` task): the student frozen (and in eval mode), a learned
softmax-weighted sum of its layers, one unidirectional LSTM(512) and a Linear to one activity logit
per speaker and 20 ms frame, trained with the permutation-invariant BCE on Libri2Mix (2 speakers per
mixture). Recordings are cut into chunks of --chunk_frames frames (SUPERB: 2000, 40 s), each its own
item.

Data: --librimix_root is the folder s3prl's LibriMix preparation (scripts/prepare_diarization.py)
writes: train/, dev/ and test/, each with wav.scp, segments, utt2spk, reco2dur and rttm
(armhubert_training/corpora/librimix.py reads them). A malformed line, a wav.scp line naming a missing
file or a recording with more speakers than --num_speakers stops the run at start-up; unreadable audio
is skipped and counted.

--do_eval (on --eval_splits) writes `eval_results.json` with s3prl's frame metrics: `accuracy` (which
selects the checkpoint, as SUPERB does), `frame_der` and the loss. --do_predict (on each of
--predict_splits) also writes one RTTM file per setting (--rttm_thresholds x --rttm_median_filters) to
`predict_<split>_rttm/` and `predict_<split>_results.json` with each setting's DER
(`der_threshold_<t>_median_<m>`, collar 0, overlaps scored) and `der`, the lowest, which SUPERB reports.
A YAML recipe from configs/ may come first; any option after it overrides it.
"""

from __future__ import annotations

import logging

from transformers import HfArgumentParser, TrainingArguments, set_seed

from armhubert_training.arguments import (
    DiarizationDataArguments,
    DiarizationModelArguments,
    HelpFormatter,
    parse_config_and_args,
)
from armhubert_training.collators import DiarizationCollator
from armhubert_training.diarization_trainer import DiarizationTrainer
from armhubert_training.model_card import diarization_model_card
from armhubert_training.speech_datasets import build_diarization_datasets
from armhubert_training.speech_trainer import setup_script_logging, split_name
from armhubert_training.student_source import resolve_source, student_feature_extractor
from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import ArmHubertForSuperbDiarization

logger = logging.getLogger("run_diarization")


def is_diarization_model(config: ArmHubertConfig) -> bool:
    return ArmHubertForSuperbDiarization.__name__ in (config.architectures or [])


def diarization_config(model_args: DiarizationModelArguments, config: ArmHubertConfig) -> ArmHubertConfig:
    """The student's config turned into that of SUPERB's diarization model."""
    features = model_args.superb_features
    if features == "auto":
        features = "projected" if config.has_projection_heads else "hidden_states"
    speakers = {index: f"speaker_{index}" for index in range(model_args.num_speakers)}
    changes = dict(num_labels=model_args.num_speakers, id2label=speakers,
                   label2id={name: index for index, name in speakers.items()},
                   diarization_lstm_hidden_size=model_args.diarization_lstm_hidden_size, superb_features=features,
                   bos_token_id=None, eos_token_id=None)
    if features == "hidden_states":
        changes["projection_dim"] = 0  # unused heads would only cost memory and time
    return config.with_overrides(model_args.config_overrides, "--config_overrides", **changes)


def load_model(model_args: DiarizationModelArguments, training_args: TrainingArguments, source: str | None,
               config: ArmHubertConfig) -> ArmHubertForSuperbDiarization:
    """The diarization model at `source`, or a new one on the student at `source`."""
    if is_diarization_model(config):
        if config.num_labels != model_args.num_speakers:
            raise ValueError(f"{source} has {config.num_labels} speaker outputs, not --num_speakers "
                             f"{model_args.num_speakers}; drop the option or start from the student.")
        config = config.with_overrides(model_args.config_overrides, "--config_overrides")
        model = ArmHubertForSuperbDiarization.from_pretrained(source, config=config, cache_dir=model_args.cache_dir)
    else:
        if not training_args.do_train:
            raise ValueError(f"{source or model_args.random_student_preset} is a student without a diarization "
                             "head: --do_eval and --do_predict need a model this script trained. Add --do_train.")
        config = diarization_config(model_args, config)
        model = (ArmHubertForSuperbDiarization(config) if source is None else
                 ArmHubertForSuperbDiarization.from_pretrained(source, config=config, cache_dir=model_args.cache_dir))
    model.freeze_base_model()  # from_pretrained marks every loaded weight trainable again
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("%s from %s: %.2f M parameters, %.2f M trained; %d speakers", type(model).__name__,
                source or f"preset {model_args.random_student_preset}", model.num_parameters() / 1e6,
                trainable / 1e6, model.config.num_labels)
    return model


def parse_args(argv: list[str] | None = None) -> tuple[DiarizationModelArguments, DiarizationDataArguments,
                                                       TrainingArguments]:
    parser = HfArgumentParser((DiarizationModelArguments, DiarizationDataArguments, TrainingArguments),
                              description=__doc__, formatter_class=HelpFormatter)
    return parse_config_and_args(parser, argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(argv)
    setup_script_logging(training_args, "run_diarization")
    set_seed(training_args.seed)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("Nothing to do: give at least one of --do_train, --do_eval, --do_predict.")

    source, config = resolve_source(model_args, training_args.output_dir)
    # Data before the model: a malformed corpus file fails before any weights load.
    speakers = config.num_labels if is_diarization_model(config) else model_args.num_speakers
    data = build_diarization_datasets(data_args, config.total_stride, speakers, training_args.do_train,
                                      training_args.do_eval, training_args.do_predict, split_key=split_name)
    model = load_model(model_args, training_args, source, config)

    metrics: dict[str, float] = {}
    trainer = DiarizationTrainer(
        model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=DiarizationCollator(), processing_class=student_feature_extractor(source, model_args.cache_dir),
        thresholds=data_args.rttm_thresholds, medians=data_args.rttm_median_filters,
        model_card_fn=lambda: diarization_model_card(model, model_args, training_args, metrics))
    if training_args.do_train:
        metrics.update(trainer.train_and_save())
    if training_args.do_eval:
        metrics.update(trainer.record("eval", trainer.evaluate()))
    for name, dataset in data.predict.items():
        prefix = f"predict_{name}"
        metrics.update(trainer.record(prefix, trainer.predict(dataset, metric_key_prefix=prefix).metrics))
    if training_args.do_train:  # the card describes the model in output_dir, which only training writes
        trainer.publish("Trained with run_diarization.py")
    return metrics


if __name__ == "__main__":
    main()
