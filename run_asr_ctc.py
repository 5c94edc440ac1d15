#!/usr/bin/env python
"""CTC tasks on top of an ArmHubert student: speech recognition, phoneme recognition and slot filling
(fine-tuning, evaluation and transcription).

    python run_asr_ctc.py configs/demo/asr-linear.yaml --model_name_or_path STUDENT     # bundled audio, CPU minutes
    python run_asr_ctc.py configs/superb/asr-librispeech.yaml --model_name_or_path STUDENT \\
        --librispeech_root /data --output_dir armhubert-superb-asr     # the paper's SUPERB ASR setting
    python run_asr_ctc.py --model_name_or_path armhubert-superb-asr --librispeech_root /data \\
        --do_predict --predict_splits test-clean test-other --output_dir armhubert-superb-asr   # evaluate only
    python run_asr_ctc.py configs/superb/pr-librispeech.yaml --model_name_or_path STUDENT --librispeech_root /data \
        --lexicon librispeech-lexicon-200k-g2p.txt librispeech-lexicon-allothers-g2p.txt   # SUPERB PR
    python run_asr_ctc.py configs/superb/sf.yaml --model_name_or_path STUDENT --snips_root /data   # SUPERB SF

Three kinds of target (--targets):
  characters  letters and apostrophe of the upper-cased transcript, "|" between words; WER and CER.
  phonemes    the phones of each word from a pronunciation lexicon (--lexicon), SUPERB's 71 ARPAbet
              phones with stress; phone error rate `per`. An utterance with a word missing from the
              lexicon is left out and counted (skipped_files_no_targets, out_of_lexicon_words).
  slots       Audio SNIPS (--snips_root): the characters of the sentence with each slot value wrapped in
              B-<slot> / E-<slot> tokens; SUPERB's slot_type_f1 and slot_value_cer.

Two heads (--head):
  linear  full fine-tuning, as Transformers' run_speech_recognition_ctc.py does: a Linear CTC layer on
          the last layer, the conv feature encoder frozen, SpecAugment-style masking of the frames.
  superb  SUPERB's downstream protocol the paper reports: the student frozen (and in eval mode), a
          learned softmax-weighted sum of its layers (with --superb_spec_augment, SUPERB's SpecAugment on
          it while training), Linear(1024), 2 BiLSTM layers of 1024 units, CTC (ASR and SF; PR:
          Linear(256) and no BiLSTM).

STUDENT is a directory or hub id written by run_distill.py or by the checkpoint converter
(armhubert_training.convert_original_checkpoint), or an authors' .ckpt file, converted on the
fly; --random_student_preset gives a randomly initialised one for smoke tests. A directory written by
this script (a fine-tuned model) can be evaluated or fine-tuned further; it keeps its vocabulary
and head.

The vocabulary (<pad> = CTC blank, <unk>, with --append_eos <eos>, "|", then the units; see
armhubert_training/asr_vocabulary.py) is saved with the feature extractor as a Wav2Vec2Processor next
to the model, which then works with
`pipeline("automatic-speech-recognition", model=OUTPUT_DIR, trust_remote_code=True)` (a phoneme
model returns its phones, a slot filling model its tagged words).

--do_eval (on --eval_splits) and --do_predict (on each of --predict_splits) write
`<name>_predictions.tsv` (id, reference, hypothesis per utterance) and
`<name>_results.json` (WER and CER, PER, or slot-type F1 and slot-value CER; real-time factor, ...)
to --output_dir, with name "eval" or "predict_<split>". The metrics come from `evaluate` modules
shipped in metrics/, which load without the Hub. --max_duration_seconds only limits training: evaluation and prediction score
every utterance of their split. A YAML recipe from configs/ may come first; any option after it
overrides it. The Trainer that evaluates and transcribes is in armhubert_training/asr_trainer.py, the model card
in armhubert_training/model_card.py.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser, TrainingArguments, Wav2Vec2Processor, set_seed

from armhubert_training.arguments import AsrDataArguments, AsrModelArguments, HelpFormatter, parse_config_and_args
from armhubert_training.asr_trainer import CtcTrainer
from armhubert_training.asr_vocabulary import (
    CharacterTargets,
    CtcCollator,
    PhonemeTargets,
    SlotTargets,
    TargetEncoder,
    build_vocabulary,
    create_tokenizer,
    describe_characters,
    load_tokenizer,
    read_lexicon,
    read_slot_labels,
    slot_labels_of,
    target_units,
    unknown_tokens,
)
from armhubert_training.corpora.snips import snips_folder
from armhubert_training.model_card import asr_model_card
from armhubert_training.speech_datasets import SpeechDataset, build_dataset
from armhubert_training.speech_trainer import setup_script_logging, split_name
from armhubert_training.student_source import resolve_source, student_feature_extractor
from configuration_armhubert import ArmHubertConfig
from modeling_armhubert import ArmHubertForCTC, ArmHubertForSuperbCTC, ArmHubertPreTrainedModel

logger = logging.getLogger("run_asr_ctc")

HEADS = {"linear": ArmHubertForCTC, "superb": ArmHubertForSuperbCTC}
# What `pipeline("automatic-speech-recognition", model=DIR, trust_remote_code=True)` builds for our models.
CUSTOM_PIPELINES = {"automatic-speech-recognition": {
    "impl": "asr_pipeline.ArmHubertSpeechRecognitionPipeline", "pt": ["AutoModelForCTC"], "type": "multimodal"}}



# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def make_encoder(data_args: AsrDataArguments, units: str) -> TargetEncoder:
    """The target encoder of `units`: characters, phonemes from --lexicon, or slots from SNIPS' slots.txt."""
    if units == "phonemes":
        if not data_args.lexicon:
            raise ValueError("Phoneme targets need --lexicon (pronunciation lexicons in the LibriSpeech format).")
        lexicon = read_lexicon(data_args.lexicon)
        logger.info("Lexicon: %d words from %s", len(lexicon), " ".join(data_args.lexicon))
        return PhonemeTargets(lexicon, chars_to_ignore=data_args.chars_to_ignore)
    if units == "slots":
        if not data_args.snips_root:
            raise ValueError("Slot targets need --snips_root (an Audio SNIPS folder with its slots.txt).")
        return SlotTargets(read_slot_labels(snips_folder(Path(data_args.snips_root)) / "slots.txt"))
    return CharacterTargets(chars_to_ignore=data_args.chars_to_ignore)


def build_datasets(data_args: AsrDataArguments, training_args: TrainingArguments,
                   encoder: TargetEncoder) -> dict[str, Any]:
    """{"train": dataset or None, "eval": dataset or None, "predict": {name: dataset},
    "out_of_lexicon": {"train" / "eval" / "predict_<name>": Counter of the words missing from the lexicon}}.

    --max_duration_seconds only limits training: evaluation and prediction use every utterance, so
    that WER is over the whole split. Utterances whose transcript cannot be encoded are left out
    (SUPERB would stop instead): with phonemes, those with a word missing from the lexicon.
    """
    seed = training_args.seed
    if not data_args.text_column and (training_args.do_train or training_args.do_eval):
        raise ValueError("CTC training and evaluation need transcripts, but --text_column is empty. Name the "
                         "column that holds them (only --do_predict can run on audio without transcripts).")
    # Phoneme and slot encoders can refuse a transcript: they say which (`has_targets`) and why (`refusal`).
    refusals = ({"has_targets": encoder.has_targets, "refusal": encoder.refusal}
                if isinstance(encoder, (PhonemeTargets, SlotTargets)) else {})
    result: dict[str, Any] = {"train": None, "eval": None, "predict": {}, "out_of_lexicon": {}}

    def build(name: str, args: AsrDataArguments, split: str, **kwargs):
        seen = Counter(getattr(encoder, "missing_words", {}))
        dataset = build_dataset(args, split, seed=seed, **refusals, **kwargs)
        if isinstance(encoder, PhonemeTargets):
            missing = encoder.missing_words - seen
            result["out_of_lexicon"][name] = missing
            if missing:
                logger.warning("%s: left out %d utterances with words missing from the lexicon (%d words, %d "
                               "distinct): %s", name, len(dataset.skipped.get("no_targets", [])),
                               sum(missing.values()), len(missing),
                               ", ".join(f"{word} x{count}" for word, count in missing.most_common(20)))
        return dataset

    whole = replace(data_args, max_duration_seconds=None)
    if training_args.do_train:
        result["train"] = build("train", data_args, "train")
    if training_args.do_eval:
        result["eval"] = build("eval", whole, "eval")
    if training_args.do_predict:
        for split in data_args.predict_splits:
            one = replace(whole, eval_splits=[split], max_eval_samples=data_args.max_predict_samples)
            result["predict"][split_name(split)] = build(f"predict_{split_name(split)}", one, "eval",
                                                         purpose="prediction", option="--predict_splits")
    return result


def transcripts_of(dataset) -> list[str] | None:
    """Transcripts of a map-style dataset, from its index (no audio decoded); None when streaming."""
    if not isinstance(dataset, SpeechDataset):
        return None
    return dataset.index.select_columns(["text"])[:]["text"]


def report_unknown_characters(name: str, dataset, vocab: dict[str, int], encoder: TargetEncoder) -> None:
    texts = transcripts_of(dataset)
    if not texts:
        return
    tokens = [encoder.encode(text).tokens for text in texts]
    counts = unknown_tokens(tokens, vocab)
    if counts:
        affected = sum(1 for one in tokens if unknown_tokens([one], vocab))
        logger.warning("%s: %d characters in %d of %d transcripts are outside the vocabulary and become <unk>: %s",
                       name, sum(counts.values()), affected, len(texts), describe_characters(counts))


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def fine_tuned_head(config: ArmHubertConfig) -> str | None:
    """'linear' or 'superb' when `config` belongs to a model this script fine-tuned, else None."""
    for head, model_class in HEADS.items():
        if model_class.__name__ in (config.architectures or []):
            return head
    return None


def head_config(model_args: AsrModelArguments, config: ArmHubertConfig, head: str, tokenizer) -> ArmHubertConfig:
    """The student's config turned into that of a CTC model with `head`."""
    changes: dict[str, Any] = dict(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        ctc_loss_reduction=model_args.ctc_loss_reduction, ctc_zero_infinity=model_args.ctc_zero_infinity,
        custom_pipelines=CUSTOM_PIPELINES,
    )
    if head == "linear":
        # Gradient scaling and the distillation heads belong to distillation, not to fine-tuning.
        changes.update(layer_grad_scale=False, projection_dim=0, apply_spec_augment=True,
                       mask_time_prob=model_args.mask_time_prob, mask_time_length=model_args.mask_time_length,
                       mask_feature_prob=model_args.mask_feature_prob,
                       mask_feature_length=model_args.mask_feature_length)
    else:
        features = model_args.superb_features
        if features == "auto":
            features = "projected" if config.has_projection_heads else "hidden_states"
        changes.update(superb_features=features, superb_projection_dim=model_args.superb_projection_dim,
                       superb_lstm_hidden_size=model_args.superb_lstm_hidden_size,
                       superb_lstm_layers=model_args.superb_lstm_layers,
                       superb_lstm_dropout=model_args.superb_lstm_dropout,
                       superb_spec_augment=model_args.superb_spec_augment)
        if features == "hidden_states":
            changes["projection_dim"] = 0  # unused heads would only cost memory and time
    return config.with_overrides(model_args.config_overrides, "--config_overrides", **changes)


def load_model_and_processor(model_args: AsrModelArguments, data_args: AsrDataArguments,
                             training_args: TrainingArguments, train_dataset,
                             encoder: TargetEncoder) -> tuple[ArmHubertPreTrainedModel, Wav2Vec2Processor]:
    source, config = resolve_source(model_args, training_args.output_dir)
    trained_head = fine_tuned_head(config)
    head = model_args.head or trained_head or "linear"

    if trained_head is not None:  # a model this script wrote: its own head and vocabulary
        if head != trained_head:
            raise ValueError(f"{source} is a fine-tuned model with the {trained_head!r} head, but --head {head} was "
                             f"asked for; start from the student instead, or drop --head.")
        if data_args.vocab_file:
            logger.warning("--vocab_file is ignored: %s brings its own vocabulary.", source)
        processor = Wav2Vec2Processor.from_pretrained(source, cache_dir=model_args.cache_dir)
        check_targets(source, processor.tokenizer.get_vocab(), encoder)
        config = config.with_overrides(model_args.config_overrides, "--config_overrides",
                                       custom_pipelines=CUSTOM_PIPELINES)
        model = HEADS[head].from_pretrained(source, config=config, cache_dir=model_args.cache_dir)
    else:
        if not training_args.do_train:
            raise ValueError(f"{source or model_args.random_student_preset} is a student without a CTC head: "
                             "--do_eval and --do_predict need a fine-tuned model. Add --do_train, or point "
                             "--model_name_or_path at a directory this script wrote.")
        tokenizer = make_tokenizer(data_args, train_dataset, training_args.output_dir, encoder)
        feature_extractor = student_feature_extractor(source, model_args.cache_dir)
        processor = Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer)
        config = head_config(model_args, config, head, tokenizer)
        if source is None:
            model = HEADS[head](config)
        else:
            model = HEADS[head].from_pretrained(source, config=config, cache_dir=model_args.cache_dir)

    if head == "linear" and model_args.freeze_feature_encoder:
        model.freeze_feature_encoder()
    if head == "superb":
        model.freeze_base_model()  # from_pretrained marks every loaded weight trainable again
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("%s (head %r) from %s: %.2f M parameters, %.2f M trained; vocabulary of %d tokens",
                type(model).__name__, head, source or f"preset {model_args.random_student_preset}",
                model.num_parameters() / 1e6, trainable / 1e6, len(processor.tokenizer))
    return model, processor


def check_targets(source: str, vocab: dict[str, int], encoder: TargetEncoder) -> None:
    """Refuse a vocabulary made for other targets than `encoder` encodes, or for other slot labels."""
    units = target_units(vocab)
    if units != encoder.units:
        needs = {"phonemes": "--targets phonemes --lexicon FILE", "slots": "--targets slots --snips_root DIR",
                 "characters": "--targets characters"}[units]
        raise ValueError(f"{source} has a vocabulary of {units}, but the data is encoded as {encoder.units}; "
                         f"pass {needs}.")
    if units == "slots" and set(slot_labels_of(vocab)) != set(encoder.slot_labels):
        raise ValueError(f"The slot labels of {source} differ from those of the corpus' slots.txt: "
                         f"{sorted(set(slot_labels_of(vocab)) ^ set(encoder.slot_labels))}.")


def make_tokenizer(data_args: AsrDataArguments, train_dataset, output_dir: str, encoder: TargetEncoder):
    """The tokenizer of --vocab_file, or of a vocabulary built from the training transcripts."""
    if data_args.vocab_file:
        load_tokenizer(data_args.vocab_file)  # checks the layout
        vocab = json.loads(Path(data_args.vocab_file).read_text(encoding="utf-8"))
        check_targets(data_args.vocab_file, vocab, encoder)
        return create_tokenizer(vocab, output_dir)
    texts = transcripts_of(train_dataset)
    if texts is None:
        raise ValueError("With --streaming the training transcripts are not known up front: pass --vocab_file "
                         "(a vocab.json, e.g. from a previous run) to give the vocabulary.")
    vocab = build_vocabulary(texts, encoder, append_eos=data_args.append_eos)
    logger.info("Vocabulary of %d tokens from %d training transcripts: %s", len(vocab), len(texts),
                " ".join(token for token in vocab))
    return create_tokenizer(vocab, output_dir)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[AsrModelArguments, AsrDataArguments, TrainingArguments]:
    parser = HfArgumentParser((AsrModelArguments, AsrDataArguments, TrainingArguments), description=__doc__,
                              formatter_class=HelpFormatter)
    model_args, data_args, training_args = parse_config_and_args(parser, argv)
    if data_args.streaming:
        # Audio batches differ in length: each process reads its own batches from the stream instead
        # of the main process reading them all and broadcasting equal-shaped ones.
        training_args.accelerator_config.dispatch_batches = False
    if training_args.metric_for_best_model and training_args.metric_for_best_model.split("_")[-1] in ("wer", "cer",
                                                                                                      "per"):
        training_args.greater_is_better = False  # error rates: lower is better
    return model_args, data_args, training_args


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(argv)
    setup_script_logging(training_args, "run_asr_ctc")
    set_seed(training_args.seed)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("Nothing to do: give at least one of --do_train, --do_eval, --do_predict.")

    # Data first: a missing split or column fails before any model is loaded.
    encoder = make_encoder(data_args, data_args.default_targets())
    data = build_datasets(data_args, training_args, encoder)
    model, processor = load_model_and_processor(model_args, data_args, training_args, data["train"], encoder)
    vocab = processor.tokenizer.get_vocab()
    for name, dataset in [("train", data["train"]), ("eval", data["eval"]), *data["predict"].items()]:
        if dataset is not None:
            report_unknown_characters(name, dataset, vocab, encoder)
    # Phoneme targets: the words missing from the lexicon in each split ("train", "eval", "predict_<name>").
    out_of_lexicon = {name: {f"{name}_out_of_lexicon_words": sum(words.values())}
                      for name, words in data["out_of_lexicon"].items()}

    metrics: dict[str, float] = {}
    trainer = CtcTrainer(
        model=model, args=training_args, train_dataset=data["train"], eval_dataset=data["eval"],
        data_collator=CtcCollator(processor.tokenizer, encoder=encoder),
        processing_class=processor, wer_metric=data_args.wer_metric, cer_metric=data_args.cer_metric,
        slot_filling_metric=data_args.slot_filling_metric,
        model_card_fn=lambda: asr_model_card(model, model_args, data_args, training_args, metrics, encoder.units),
        max_batch_seconds=data_args.max_batch_seconds,
    )
    if training_args.do_train:
        metrics.update(trainer.train_and_save(**out_of_lexicon.get("train", {})))
    if training_args.do_eval:
        metrics.update(trainer.record("eval", dict(trainer.evaluate(), **out_of_lexicon.get("eval", {}))))
    for name, dataset in data["predict"].items():
        prefix = f"predict_{name}"
        predict_metrics = dict(trainer.predict(dataset, metric_key_prefix=prefix).metrics,
                               **out_of_lexicon.get(prefix, {}))
        metrics.update(trainer.record(prefix, predict_metrics))
    if training_args.do_train:  # the card describes the model in output_dir, which only training writes
        trainer.publish("Fine-tuned with run_asr_ctc.py")
    return metrics


if __name__ == "__main__":
    main()
