#!/usr/bin/env python
"""Audio classification on top of an ArmHubert student: fine-tuning, evaluation and prediction.

    python run_audio_classification.py configs/demo/classification.yaml --model_name_or_path STUDENT  # bundled audio
    python run_audio_classification.py configs/superb/ks.yaml --model_name_or_path STUDENT \\
        --corpus_root /data/speech_commands_v0.01 --speech_commands_test_root /data/speech_commands_test_set_v0.01
    python run_audio_classification.py --model_name_or_path armhubert-superb-ks --corpus speech_commands \\
        --corpus_root ... --speech_commands_test_root ... --do_predict --output_dir armhubert-superb-ks  # evaluate only

Two modes (--classifier_mode):
  superb     SUPERB's utterance-level protocol, which the paper reports for keyword spotting (KS), intent
             classification (IC), speaker identification (SID) and emotion recognition (ER): the student
             frozen (and in eval mode), a learned softmax-weighted sum of its layers, a frame-wise Linear(256),
             mean pooling over the real frames, a linear classifier.
  fine_tune  the whole student trained, as Transformers' run_audio_classification.py does with
             HubertForSequenceClassification (the conv feature encoder frozen, SpecAugment-style masking),
             on its last layer or, with --use_weighted_layer_sum, on a weighted sum of its layers.

Data: --corpus with --corpus_root reads SUPERB's corpora in their original download layouts
(speech_commands, fluent_commands, voxceleb1, iemocap with --fold N) or a folder of class folders
(folder: <root>/<split>/<label>/<audio file>); their splits are train, validation and test. --dataset_name
reads any `datasets` dataset with an audio column and a label column (--audio_column, --label_column).
SUPERB's input effects (--input_gain_db: its keyword spotting recipe attenuates every file by 3 dB) apply
to every file and are recorded in the model's config, so that its pipeline applies them too.
armhubert_training/corpora/ reads each corpus, one module per corpus. A label outside the classes
(fixed by the corpus, else those of the training data or of the fine-tuned model) stops the run before
training; unreadable files are skipped and counted.

STUDENT is a directory or hub id written by run_distill.py or by the checkpoint converter
(armhubert_training.convert_original_checkpoint), or an authors' .ckpt file, converted on the fly;
--random_student_preset gives a randomly initialised one for smoke tests. A directory written by this
script (a fine-tuned model) keeps its classes and head.

--do_eval (on --eval_splits) and --do_predict (on each of --predict_splits) write
`<name>_predictions.tsv` (id, label, prediction per utterance) and `<name>_results.json` (accuracy,
loss, counts) to --output_dir, with name "eval" or "predict_<split>". Intent classification labels
join the three slots' values with "|", and an utterance counts as right only when all three are. The
feature extractor is saved next to the model, which then works with
`pipeline("audio-classification", model=OUTPUT_DIR, trust_remote_code=True)`. A YAML recipe from configs/
may come first; any option after it overrides it.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import HfArgumentParser, TrainingArguments, set_seed

from armhubert_training.arguments import (
    ClassificationDataArguments,
    ClassificationModelArguments,
    HelpFormatter,
    parse_config_and_args,
)
from armhubert_training.classification_trainer import ClassificationTrainer
from armhubert_training.collators import ClassificationCollator
from armhubert_training.corpora.labels import LabelSet
from armhubert_training.input_effects import InputEffects
from armhubert_training.model_card import classification_model_card
from armhubert_training.speech_datasets import ClassificationData, build_classification_datasets
from armhubert_training.speech_trainer import setup_script_logging, split_name
from armhubert_training.student_source import resolve_source, student_feature_extractor
from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import ArmHubertForSequenceClassification

logger = logging.getLogger("run_audio_classification")

# What `pipeline("audio-classification", model=DIR, trust_remote_code=True)` builds for our models.
CUSTOM_PIPELINES = {"audio-classification": {
    "impl": "classification_pipeline.ArmHubertAudioClassificationPipeline",
    "pt": ["AutoModelForAudioClassification"], "type": "audio"}}



# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def is_fine_tuned(config: ArmHubertConfig) -> bool:
    return ArmHubertForSequenceClassification.__name__ in (config.architectures or [])


def classifier_config(model_args: ClassificationModelArguments, config: ArmHubertConfig, mode: str,
                      label_set: LabelSet, effects: InputEffects) -> ArmHubertConfig:
    """The student's config turned into that of a classifier of `label_set`'s classes in `mode`, recording the
    input `effects` its training applies (and its pipeline then applies)."""
    superb = mode == "superb"
    features = model_args.superb_features
    if features == "auto":
        features = "projected" if superb and config.has_projection_heads else "hidden_states"
    changes: dict[str, Any] = dict(
        **label_set.config_fields(), classifier_mode=mode, classifier_proj_size=model_args.classifier_proj_size,
        use_weighted_layer_sum=model_args.use_weighted_layer_sum, superb_features=features,
        custom_pipelines=CUSTOM_PIPELINES, bos_token_id=None, eos_token_id=None, **effects.config_fields())
    if not superb:
        # Gradient scaling belongs to distillation, not to fine-tuning.
        changes.update(layer_grad_scale=False, apply_spec_augment=True, mask_time_prob=model_args.mask_time_prob,
                       mask_time_length=model_args.mask_time_length, mask_feature_prob=model_args.mask_feature_prob,
                       mask_feature_length=model_args.mask_feature_length)
    if features == "hidden_states":
        changes["projection_dim"] = 0  # unused heads would only cost memory and time
    return config.with_overrides(model_args.config_overrides, "--config_overrides", **changes)


def load_model(model_args: ClassificationModelArguments, training_args: TrainingArguments, source: str | None,
               config: ArmHubertConfig, label_set: LabelSet,
               effects: InputEffects) -> ArmHubertForSequenceClassification:
    """The fine-tuned model at `source`, or a new classifier of `label_set` on the student at `source`."""
    if is_fine_tuned(config):
        if model_args.classifier_mode not in (None, config.classifier_mode):
            raise ValueError(f"{source} is a fine-tuned classifier in mode {config.classifier_mode!r}, but "
                             f"--classifier_mode {model_args.classifier_mode} was asked for; start from the student "
                             "instead, or drop --classifier_mode.")
        config = config.with_overrides(model_args.config_overrides, "--config_overrides",
                                       custom_pipelines=CUSTOM_PIPELINES)
        model = ArmHubertForSequenceClassification.from_pretrained(source, config=config,
                                                                   cache_dir=model_args.cache_dir)
    else:
        if not training_args.do_train:
            raise ValueError(f"{source or model_args.random_student_preset} is a student without a classifier: "
                             "--do_eval and --do_predict need a fine-tuned model. Add --do_train, or point "
                             "--model_name_or_path at a directory this script wrote.")
        config = classifier_config(model_args, config, model_args.classifier_mode or "superb", label_set, effects)
        model = (ArmHubertForSequenceClassification(config) if source is None else
                 ArmHubertForSequenceClassification.from_pretrained(source, config=config,
                                                                    cache_dir=model_args.cache_dir))
    if model.config.classifier_mode == "superb":
        model.freeze_base_model()  # from_pretrained marks every loaded weight trainable again
    elif model_args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("%s (mode %r) from %s: %.2f M parameters, %.2f M trained; %d classes", type(model).__name__,
                model.config.classifier_mode, source or f"preset {model_args.random_student_preset}",
                model.num_parameters() / 1e6, trainable / 1e6, model.config.num_labels)
    return model


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[ClassificationModelArguments, ClassificationDataArguments, TrainingArguments]:
    parser = HfArgumentParser((ClassificationModelArguments, ClassificationDataArguments, TrainingArguments), description=__doc__,
                              formatter_class=HelpFormatter)
    model_args, data_args, training_args = parse_config_and_args(parser, argv)
    return model_args, data_args, training_args


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(argv)
    setup_script_logging(training_args, "run_audio_classification")
    set_seed(training_args.seed)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("Nothing to do: give at least one of --do_train, --do_eval, --do_predict.")

    source, config = resolve_source(model_args, training_args.output_dir)
    # A fine-tuned model keeps the input effects it was trained with; a new one records those asked for.
    effects = (InputEffects.from_config(config) if is_fine_tuned(config) else
               InputEffects(data_args.input_gain_db, data_args.input_silence_removal))
    # Data before the model: a missing split or column, or an unknown label, fails before any weights load.
    data: ClassificationData = build_classification_datasets(
        data_args, training_args.do_train, training_args.do_eval, training_args.do_predict, training_args.seed,
        label_set=LabelSet.from_config(config) if is_fine_tuned(config) else None, split_key=split_name,
        effects=effects if effects.any else None)
    model = load_model(model_args, training_args, source, config, data.label_set, effects)
    feature_extractor = student_feature_extractor(source, model_args.cache_dir)

    metrics: dict[str, float] = {}
    trainer = ClassificationTrainer(
        model=model, args=training_args, train_dataset=data.train, eval_dataset=data.eval,
        data_collator=ClassificationCollator(data.label_set), processing_class=feature_extractor,
        label_set=data.label_set,
        model_card_fn=lambda: classification_model_card(model, model_args, data_args, training_args, metrics),
    )
    if training_args.do_train:
        metrics.update(trainer.train_and_save())
    if training_args.do_eval:
        metrics.update(trainer.record("eval", trainer.evaluate()))
    for name, dataset in data.predict.items():
        prefix = f"predict_{name}"
        metrics.update(trainer.record(prefix, trainer.predict(dataset, metric_key_prefix=prefix).metrics))
    if training_args.do_train:  # the card describes the model in output_dir, which only training writes
        trainer.publish("Fine-tuned with run_audio_classification.py")
    return metrics


if __name__ == "__main__":
    main()
