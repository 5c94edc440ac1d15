#!/usr/bin/env python
"""Speaker verification (SUPERB's ASV) on top of an ArmHubert student: training, trial scoring, EER.

    python run_speaker_verification.py configs/superb/asv.yaml --model_name_or_path STUDENT \\
        --voxceleb1_root /data/VoxCeleb1 --trial_list /data/VoxCeleb1/voxceleb1_test_v2.txt
    python run_speaker_verification.py --model_name_or_path armhubert-superb-asv --voxceleb1_root /data/VoxCeleb1 \\
        --trial_list ... --do_predict --output_dir armhubert-superb-asv   # score a trained model only

The model (`ArmHubertForXVector`, SUPERB's head): the student frozen, a learned softmax-weighted sum of its
layers, Linear(512), five TDNN layers, mean and standard deviation over the real frames, two Linear(512) +
ReLU, trained with AM-softmax over the training speakers. A trial's score is the cosine of the two files'
embeddings (the first Linear's ReLU output).

Data: VoxCeleb1 in its download layout under --voxceleb1_root: every file of dev/wav trains (labelled by
its speaker folder); --do_predict scores --trial_list over test/wav. SUPERB's input effects (-3 dB gain,
sox-style silence removal: --input_gain_db, --input_silence_removal) are applied to every file and
recorded in the model's config. Training drops files shorter than --min_duration_seconds (SUPERB: 2 s) and
crops longer ones to a random --max_duration_seconds window (SUPERB: 8 s). A malformed trial line, or one
naming a missing file, stops the run at start-up; unreadable files are skipped and counted, and the trials
naming them too.

Checkpoint selection (--checkpoint_selection): 'best_test' is SUPERB's, which has no development set: every
checkpoint saved during training (--save_steps) is scored on the trial list and the lowest EER is reported
(`checkpoint_eers.json` lists them all). 'dev' holds --dev_speakers training speakers out, scores
--dev_trials trials among them at each evaluation, and scores the best checkpoint on the test trials once.

Outputs in --output_dir: `<name>_trial_scores.tsv` (first, second, label, score per trial) and
`<name>_results.json` (eer as a fraction, eer_threshold, trials, trials_skipped, skipped_files*), with
name "predict_test" (the reported test result) or "eval". To score two files with a trained model:

    from modeling_armhubert import ArmHubertForXVector
    from armhubert_training.verification_trainer import verify
    verify(ArmHubertForXVector.from_pretrained(OUTPUT_DIR), "a.wav", "b.wav")  # cosine; compare eer_threshold

A YAML recipe from configs/ may come first; any option after it overrides it.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from transformers import HfArgumentParser, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from armhubert_training.arguments import (
    HelpFormatter,
    SpeakerVerificationDataArguments,
    SpeakerVerificationModelArguments,
    parse_config_and_args,
)
from armhubert_training.collators import ClassificationCollator
from armhubert_training.corpora.index import check_not_empty, column, filter_by_length, utterance_index
from armhubert_training.corpora.labels import LabelSet, check_labels
from armhubert_training.corpora.voxceleb1_verification import (
    Trial,
    held_out_trials,
    read_trials,
    test_folder,
    train_folder,
    trial_utterances,
    training_utterances,
)
from armhubert_training.input_effects import InputEffects
from armhubert_training.model_card import speaker_verification_model_card
from armhubert_training.speech_datasets import LabelledSpeechDataset, TrialDataset
from armhubert_training.speech_trainer import setup_script_logging
from armhubert_training.student_source import resolve_source, student_feature_extractor
from armhubert_training.verification_trainer import SpeakerVerificationTrainer
from configuration_armhubert import RECEPTIVE_FIELD_SAMPLES, ArmHubertConfig
from modeling_armhubert import ArmHubertForXVector

logger = logging.getLogger("run_speaker_verification")

# The shortest file the head can embed: 16 frames (the 14 that SUPERB's TDNN layers take, and 2 for a standard
# deviation): the conv encoder's receptive field for the first, then one every 320 samples (its stride).
MIN_EMBEDDABLE_SAMPLES = RECEPTIVE_FIELD_SAMPLES + 15 * 320


def is_trained(config: ArmHubertConfig) -> bool:
    return ArmHubertForXVector.__name__ in (config.architectures or [])


def xvector_config(model_args: SpeakerVerificationModelArguments, data_args: SpeakerVerificationDataArguments,
                   config: ArmHubertConfig, speakers: LabelSet) -> ArmHubertConfig:
    """The student's config turned into that of an x-vector model over the training `speakers`."""
    features = model_args.superb_features
    if features == "auto":
        features = "projected" if config.has_projection_heads else "hidden_states"
    changes: dict[str, Any] = dict(
        **speakers.config_fields(), superb_features=features, am_softmax_scale=model_args.am_softmax_scale,
        am_softmax_margin=model_args.am_softmax_margin, bos_token_id=None, eos_token_id=None,
        **InputEffects(data_args.input_gain_db, data_args.input_silence_removal).config_fields())
    if features == "hidden_states":
        changes["projection_dim"] = 0
    return config.with_overrides(model_args.config_overrides, "--config_overrides", **changes)


def trial_dataset(trials: list[Trial], folder: Path, data_args: SpeakerVerificationDataArguments,
                  effects: InputEffects, where: str, option: str) -> TrialDataset:
    """The files of `trials` (relative to `folder`), indexed from their headers, whole, with `effects`."""
    index, skipped = utterance_index(trial_utterances(trials, folder), data_args.preprocessing_num_workers, where)
    index, skipped["too_short"], out_of_range = filter_by_length(index, MIN_EMBEDDABLE_SAMPLES, None, where)
    check_not_empty(index, skipped, out_of_range, f"trials, {where}", option, data_args)
    return TrialDataset(index, "path", min_length=MIN_EMBEDDABLE_SAMPLES, crop=False, skipped=skipped,
                        effects=effects if effects.any else None, trials=trials)


def build_datasets(data_args: SpeakerVerificationDataArguments, training_args: TrainingArguments,
                   effects: InputEffects, speakers: LabelSet | None):
    """(training dataset or None, development trials or None, test trials or None, the training speakers)."""
    root = Path(data_args.voxceleb1_root)
    train = dev = test = None
    if training_args.do_predict:  # a bad trial list stops the run before anything else is read
        folder = test_folder(root)
        trials = read_trials(data_args.trial_file, folder)
        test = trial_dataset(trials, folder, data_args, effects, f"VoxCeleb1 {folder} trials of {data_args.trial_file}",
                             "--trial_list")
    if training_args.do_train or data_args.dev_speakers:
        utterances = training_utterances(root)
        if data_args.dev_speakers:
            utterances, dev_trials = held_out_trials(utterances, data_args.dev_speakers, data_args.dev_trials,
                                                     training_args.seed)
            dev = trial_dataset(dev_trials, train_folder(root), data_args, effects,
                                f"held-out speakers of {train_folder(root)}", "--dev_speakers")
        if training_args.do_train:
            where = f"VoxCeleb1 {train_folder(root)}"
            index, skipped = utterance_index(utterances, data_args.preprocessing_num_workers, where)
            index, skipped["too_short"], out_of_range = filter_by_length(
                index, data_args.min_audio_samples, None if data_args.crop_to_max_duration else
                data_args.max_audio_samples, where)
            check_not_empty(index, skipped, out_of_range, f"training data, {where}", "--voxceleb1_root", data_args)
            if speakers is None:
                speakers = LabelSet.single(sorted(set(column(index, "text"))))
            else:  # training on from a trained model: its AM-softmax has a row for its own speakers only
                check_labels(speakers, column(index, "text"), f"{where} (the speakers of the model trained on)")
            train = LabelledSpeechDataset(
                index, "path", min_length=data_args.min_audio_samples, max_length=data_args.max_audio_samples,
                crop=data_args.crop_to_max_duration, seed=training_args.seed, skipped=skipped,
                effects=effects if effects.any else None)
    return train, dev, test, speakers


def load_model(model_args: SpeakerVerificationModelArguments, data_args: SpeakerVerificationDataArguments,
               source: str | None, config: ArmHubertConfig, speakers: LabelSet) -> ArmHubertForXVector:
    if is_trained(config):
        config = config.with_overrides(model_args.config_overrides, "--config_overrides")
    else:
        config = xvector_config(model_args, data_args, config, speakers)
    model = (ArmHubertForXVector(config) if source is None else
             ArmHubertForXVector.from_pretrained(source, config=config, cache_dir=model_args.cache_dir))
    model.freeze_base_model()  # from_pretrained marks every loaded weight trainable again
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("ArmHubertForXVector from %s: %.2f M parameters, %.2f M trained; %d training speakers; %s",
                source or f"preset {model_args.random_student_preset}", model.num_parameters() / 1e6,
                trainable / 1e6, model.config.num_labels, InputEffects.from_config(model.config))
    return model


def select_on_test(trainer: SpeakerVerificationTrainer, test: TrialDataset, output_dir: Path) -> dict[str, float]:
    """SUPERB's selection: score every saved checkpoint on the test trials (the trained model itself when none
    was saved); the lowest EER is the reported result, written as predict_test_*; checkpoint_eers.json lists
    them all. The model is left with the selected weights."""
    checkpoints = {Path(path).name: Path(path) / "model.safetensors"
                   for path in sort_checkpoints(str(output_dir), PREFIX_CHECKPOINT_DIR)
                   if (Path(path) / "model.safetensors").is_file()}
    results: dict[str, dict[str, float]] = {}
    for name, weights in (checkpoints or {"final": None}).items():
        if weights is not None:
            trainer.model.load_state_dict(load_file(str(weights)), strict=False)
        results[name] = trainer.predict(test, metric_key_prefix=f"{name}_test").metrics
    best = min(results, key=lambda name: results[name].get(f"{name}_test_eer", float("inf")))
    if checkpoints:
        trainer.model.load_state_dict(load_file(str(checkpoints[best])), strict=False)
    metrics = {key.replace(f"{best}_test", "predict_test", 1): value for key, value in results[best].items()}
    metrics["predict_test_selected_checkpoint"] = best
    if trainer.is_world_process_zero():
        shutil.copyfile(output_dir / f"{best}_test_trial_scores.tsv", output_dir / "predict_test_trial_scores.tsv")
        (output_dir / "checkpoint_eers.json").write_text(json.dumps(
            {name: result.get(f"{name}_test_eer") for name, result in results.items()}, indent=2) + "\n")
    return metrics


def parse_args(argv: list[str] | None = None) -> tuple[SpeakerVerificationModelArguments,
                                                       SpeakerVerificationDataArguments, TrainingArguments]:
    parser = HfArgumentParser((SpeakerVerificationModelArguments, SpeakerVerificationDataArguments,
                               TrainingArguments), description=__doc__, formatter_class=HelpFormatter)
    model_args, data_args, training_args = parse_config_and_args(parser, argv)
    return model_args, data_args, training_args


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(argv)
    setup_script_logging(training_args, "run_speaker_verification")
    set_seed(training_args.seed)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("Nothing to do: give at least one of --do_train, --do_eval, --do_predict.")
    if training_args.do_eval and not data_args.dev_speakers:
        raise ValueError("--do_eval scores the held-out development trials: give --dev_speakers N (SUPERB has no "
                         "development set; --do_predict scores the test trials).")
    if training_args.do_train and data_args.checkpoint_selection == "dev" and not (
            training_args.load_best_model_at_end and training_args.metric_for_best_model == "eer"
            and not training_args.greater_is_better):
        raise ValueError("--checkpoint_selection dev keeps the checkpoint with the lowest development EER: add "
                         "--eval_strategy steps --load_best_model_at_end true --metric_for_best_model eer "
                         "--greater_is_better false (and --eval_steps equal to --save_steps).")

    source, config = resolve_source(model_args, training_args.output_dir)
    trained = is_trained(config)
    if not trained and not training_args.do_train:
        raise ValueError(f"{source or model_args.random_student_preset} is a student without a speaker head: add "
                         "--do_train, or point --model_name_or_path at a model this script trained.")
    # A trained model keeps the effects it was trained with; a new one records those asked for.
    effects = (InputEffects.from_config(config) if trained else
               InputEffects(data_args.input_gain_db, data_args.input_silence_removal))
    speakers = LabelSet.from_config(config) if trained else None
    train, dev, test, speakers = build_datasets(data_args, training_args, effects, speakers)
    model = load_model(model_args, data_args, source, config, speakers)

    metrics: dict[str, float] = {}
    trainer = SpeakerVerificationTrainer(
        model=model, args=training_args, train_dataset=train, eval_dataset=dev,
        data_collator=ClassificationCollator(speakers),
        processing_class=student_feature_extractor(source, model_args.cache_dir),
        model_card_fn=lambda: speaker_verification_model_card(model, model_args, training_args, metrics))
    if training_args.do_train:
        metrics.update(trainer.train_and_save())
    if training_args.do_eval:
        metrics.update(trainer.record("eval", trainer.evaluate()))
    if test is not None:
        if training_args.do_train and data_args.checkpoint_selection == "best_test":
            predict_metrics = select_on_test(trainer, test, Path(training_args.output_dir))
            trainer.save_model()  # the model in output_dir is the one the reported EER belongs to
        else:
            predict_metrics = trainer.predict(test, metric_key_prefix="predict_test").metrics
        metrics.update(trainer.record("predict_test", predict_metrics))
    if training_args.do_train:  # the card describes the model in output_dir, which only training writes
        trainer.publish("Trained with run_speaker_verification.py")
    return metrics


if __name__ == "__main__":
    main()
