#!/usr/bin/env python
"""Speech recognition on top of an ArmHubert student: CTC fine-tuning, evaluation and transcription.

    python run_asr_ctc.py configs/asr-linear-demo.yaml --model_name_or_path STUDENT     # bundled audio, CPU minutes
    python run_asr_ctc.py configs/superb-asr-librispeech.yaml --model_name_or_path STUDENT \\
        --librispeech_root /data --output_dir armhubert-superb-asr     # the paper's SUPERB ASR setting
    python run_asr_ctc.py --model_name_or_path armhubert-superb-asr --librispeech_root /data \\
        --do_predict --predict_splits test-clean test-other --output_dir armhubert-superb-asr   # evaluate only

Two heads (--head):
  linear  full fine-tuning, as Transformers' run_speech_recognition_ctc.py does: a Linear CTC layer on
          the last layer, the conv feature encoder frozen, SpecAugment-style masking of the frames.
  superb  the SUPERB ASR protocol the paper reports: the student frozen (and in eval mode), a learned
          softmax-weighted sum of its layers, Linear(1024), 2 BiLSTM layers of 1024 units, CTC.

STUDENT is a directory or hub id written by run_distill.py or convert_original_checkpoint.py (or
an authors' .ckpt file, converted on the fly); --student_preset gives a randomly initialised one
for smoke tests. A directory written by this script (a fine-tuned model) can be evaluated or
fine-tuned further; it keeps its vocabulary and head.

The character vocabulary (letters and apostrophe of the training transcripts, upper-cased, "|"
between words, <pad> = CTC blank, <unk>) is saved with the feature extractor as a
Wav2Vec2Processor next to the model, which then works with
`pipeline("automatic-speech-recognition", model=OUTPUT_DIR, trust_remote_code=True)`.

--do_eval (on --eval_splits / --eval_split) and --do_predict (on each of --predict_splits, or
--predict_split) write `<name>_predictions.tsv` (id, reference, hypothesis per utterance) and
`<name>_results.json` (WER, CER, real-time factor, ...) to --output_dir, with name "eval" or
"predict_<split>". WER and CER come from `evaluate` metric modules shipped in metrics/, which load
without the Hub. --max_duration_seconds only limits training: evaluation and prediction score
every utterance of their split. A YAML recipe from configs/ may come first; any option after it
overrides it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import evaluate
import torch
from huggingface_hub import ModelCard, ModelCardData
from transformers import (
    AutoFeatureExtractor,
    HfArgumentParser,
    TrainingArguments,
    Wav2Vec2Processor,
    set_seed,
)

from asr_vocabulary import (
    CtcCollator,
    build_vocabulary,
    create_tokenizer,
    describe_characters,
    load_tokenizer,
    normalize_transcript,
    unknown_characters,
)
from configuration_armhubert import PRESETS, ArmHubertConfig
from modeling_armhubert import ArmHubertForCTC, ArmHubertForSuperbCTC, ArmHubertPreTrainedModel
from speech_data import (
    SAMPLING_RATE,
    DataArguments,
    SpeechDataset,
    build_dataset,
    raw_waveform_feature_extractor,
    skip_metrics,
)
from speech_trainer import SpeechTrainer, resolve_resume_checkpoint, setup_script_logging
from yaml_arguments import parse_config_and_args

logger = logging.getLogger("run_asr_ctc")

REPO = Path(__file__).resolve().parent
HEADS = {"linear": ArmHubertForCTC, "superb": ArmHubertForSuperbCTC}
PIPELINE_MODULE = REPO / "asr_pipeline.py"
# What `pipeline("automatic-speech-recognition", model=DIR, trust_remote_code=True)` builds for our models.
CUSTOM_PIPELINES = {"automatic-speech-recognition": {
    "impl": "asr_pipeline.ArmHubertSpeechRecognitionPipeline", "pt": ["AutoModelForCTC"], "type": "multimodal"}}


@dataclass
class ModelArguments:
    """Which student, which head, and the head's settings."""

    model_name_or_path: str | None = field(default=None, metadata={
        "help": "The student: a directory or hub id of an ArmHubert model (written by run_distill.py or "
                "convert_original_checkpoint.py), or an authors' Lightning checkpoint (*.ckpt), converted into "
                "OUTPUT_DIR/converted-student first. A model fine-tuned by this script is evaluated (or trained "
                "further) with its own vocabulary and head. Use this or --student_preset."})
    student_preset: str | None = field(default=None, metadata={
        "help": f"A randomly initialised student of this architecture, one of {sorted(PRESETS)} (smoke tests only)."})
    head: Literal["linear", "superb"] | None = field(default=None, metadata={
        "help": "'linear': full fine-tuning with a Linear CTC head on the last layer. 'superb': SUPERB's ASR "
                "protocol (frozen student, weighted sum of its layers, BiLSTM, CTC). Default: the head of a "
                "fine-tuned --model_name_or_path, else 'linear'."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where models from the hub are stored."})
    freeze_feature_encoder: bool = field(default=True, metadata={
        "help": "--head linear: do not train the conv feature encoder (standard for CTC fine-tuning)."})
    mask_time_prob: float = field(default=0.05, metadata={
        "help": "--head linear: SpecAugment-style time masking, the probability of each frame to start a masked "
                "span (Transformers' default for wav2vec 2.0 / HuBERT fine-tuning)."})
    mask_time_length: int = field(default=10, metadata={"help": "--head linear: frames per time-mask span."})
    mask_feature_prob: float = field(default=0.0, metadata={
        "help": "--head linear: the probability of each channel to start a masked span of channels."})
    mask_feature_length: int = field(default=10, metadata={"help": "--head linear: channels per feature-mask span."})
    superb_features: Literal["auto", "projected", "hidden_states"] = field(default="auto", metadata={
        "help": "--head superb: what the weighted sum is taken over. 'projected': the outputs of the student's "
                "distillation heads, one per layer (the features the authors gave SUPERB); 'hidden_states': the "
                "encoder input and every layer's output; 'auto': 'projected' when the student has heads."})
    superb_projection_dim: int = field(default=1024, metadata={
        "help": "--head superb: width of the Linear before the BiLSTM (SUPERB: 1024)."})
    superb_lstm_hidden_size: int = field(default=1024, metadata={
        "help": "--head superb: units per direction of each BiLSTM layer (SUPERB: 1024)."})
    superb_lstm_layers: int = field(default=2, metadata={"help": "--head superb: BiLSTM layers (SUPERB: 2)."})
    superb_lstm_dropout: float = field(default=0.2, metadata={
        "help": "--head superb: dropout after each BiLSTM layer (SUPERB: 0.2)."})
    ctc_loss_reduction: Literal["mean", "sum"] = field(default="mean", metadata={
        "help": "'mean': each utterance's CTC loss divided by its label length, averaged over the batch "
                "(PyTorch's and SUPERB's default); 'sum': summed over the batch."})
    ctc_zero_infinity: bool = field(default=True, metadata={
        "help": "Zero the loss of utterances whose transcript is too long for their frames (infinite CTC loss) "
                "instead of letting it break training."})
    config_overrides: str | None = field(default=None, metadata={
        "help": "JSON object of other ArmHubertConfig fields to change for training, e.g. "
                "'{\"hidden_dropout\": 0.0, \"final_dropout\": 0.0}'. Unknown fields and values of the wrong type "
                "are refused."})

    def __post_init__(self) -> None:
        if (self.model_name_or_path is None) == (self.student_preset is None):
            raise ValueError("Give exactly one model source: --model_name_or_path (a student or fine-tuned model) "
                             f"or --student_preset; got {self.model_name_or_path!r} and {self.student_preset!r}.")
        if self.student_preset is not None and self.student_preset not in PRESETS:
            raise ValueError(f"Unknown --student_preset {self.student_preset!r}; choose one of {sorted(PRESETS)}.")
        # A typo in the overrides stops the run here, before the data and the model are loaded.
        ArmHubertConfig.parse_overrides(self.config_overrides, "--config_overrides")


@dataclass
class AsrDataArguments(DataArguments):
    """The shared data arguments of speech_data.py, plus transcripts, prediction splits and metrics."""

    crop_to_max_duration: bool = field(default=False, metadata={
        "help": "Must stay false for CTC: a cropped utterance no longer matches its transcript. Utterances longer "
                "than --max_duration_seconds are dropped from training instead."})
    predict_splits: list[str] = field(default_factory=lambda: ["test-clean"], metadata={
        "help": "With --librispeech_root: the split folders --do_predict transcribes, each scored on its own."})
    predict_split: str = field(default="test", metadata={
        "help": "With --dataset_name: the split (or split expression) --do_predict transcribes."})
    max_predict_samples: int | None = field(default=None, metadata={
        "help": "Transcribe only the first N utterances of each prediction split, for quick runs."})
    chars_to_ignore: str = field(default="", metadata={
        "help": "Characters removed from transcripts before anything else, e.g. ',?.!;:\"' for corpora with "
                "punctuation. Transcripts are upper-cased and their whitespace collapsed; any other character "
                "outside the vocabulary becomes <unk> (counted and logged)."})
    vocab_file: str | None = field(default=None, metadata={
        "help": "A vocab.json to use instead of building one from the training transcripts (needed with "
                "--streaming, whose transcripts are not known up front)."})
    wer_metric: str = field(default=str(REPO / "metrics" / "wer"), metadata={
        "help": "What evaluate.load() loads for WER: the local module shipped in metrics/wer (works offline), or "
                "e.g. 'wer' for the Hub's."})
    cer_metric: str = field(default=str(REPO / "metrics" / "cer"), metadata={
        "help": "What evaluate.load() loads for CER (default: the local module in metrics/cer)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop_to_max_duration:
            raise ValueError("--crop_to_max_duration true cannot be used for CTC: a cropped utterance no longer "
                             "matches its transcript. Leave it false; longer utterances are then dropped.")
        if self.max_predict_samples is not None and self.max_predict_samples < 1:
            raise ValueError(f"--max_predict_samples must be a positive integer; got {self.max_predict_samples}.")


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def split_name(split: str) -> str:
    """A split name or expression as a file-name part: 'test[:10%]' -> 'test_10'."""
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", split).strip("_")


def build_datasets(data_args: AsrDataArguments, training_args: TrainingArguments) -> dict[str, Any]:
    """{"train": dataset or None, "eval": dataset or None, "predict": {name: dataset}}.

    --max_duration_seconds only limits training: evaluation and prediction use every utterance, so
    that WER is over the whole split.
    """
    seed = training_args.seed
    if not data_args.text_column and (training_args.do_train or training_args.do_eval):
        raise ValueError("CTC training and evaluation need transcripts, but --text_column is empty. Name the "
                         "column that holds them (only --do_predict can run on audio without transcripts).")
    whole = replace(data_args, max_duration_seconds=None)
    result: dict[str, Any] = {"train": None, "eval": None, "predict": {}}
    if training_args.do_train:
        result["train"] = build_dataset(data_args, "train", seed=seed)
    if training_args.do_eval:
        result["eval"] = build_dataset(whole, "eval", seed=seed)
    if training_args.do_predict:
        if data_args.librispeech_root is not None:
            for split in data_args.predict_splits:
                one = replace(whole, eval_splits=[split], max_eval_samples=data_args.max_predict_samples)
                result["predict"][split_name(split)] = build_dataset(one, "eval", seed=seed, purpose="prediction")
        else:
            one = replace(whole, eval_split=data_args.predict_split, max_eval_samples=data_args.max_predict_samples)
            result["predict"][split_name(data_args.predict_split)] = build_dataset(one, "eval", seed=seed,
                                                                                   purpose="prediction")
    return result


def transcripts_of(dataset, chars_to_ignore: str) -> list[str] | None:
    """Normalised transcripts of a map-style dataset, from its index (no audio decoded); None when streaming."""
    if not isinstance(dataset, SpeechDataset):
        return None
    return [normalize_transcript(text, chars_to_ignore) for text in dataset.index.select_columns(["text"])[:]["text"]]


def report_unknown_characters(name: str, dataset, vocab: dict[str, int], chars_to_ignore: str) -> None:
    texts = transcripts_of(dataset, chars_to_ignore)
    if not texts:
        return
    counts = unknown_characters(texts, vocab)
    if counts:
        affected = sum(1 for text in texts if unknown_characters([text], vocab))
        logger.warning("%s: %d characters in %d of %d transcripts are outside the vocabulary and become <unk>: %s",
                       name, sum(counts.values()), affected, len(texts), describe_characters(counts))


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------


def resolve_source(model_args: ModelArguments, output_dir: str) -> tuple[str | None, ArmHubertConfig]:
    """(weights path or hub id, or None for a random preset; its config). Converts an authors' .ckpt."""
    if model_args.student_preset is not None:
        return None, ArmHubertConfig.from_preset(model_args.student_preset)
    source = model_args.model_name_or_path
    if source.endswith(".ckpt"):
        from convert_original_checkpoint import convert

        converted = Path(output_dir) / "converted-student"
        logger.info("Converting the authors' checkpoint %s into %s", source, converted)
        convert(Path(source), converted)
        source = str(converted)
    return source, ArmHubertConfig.from_pretrained(source, cache_dir=model_args.cache_dir)


def fine_tuned_head(config: ArmHubertConfig) -> str | None:
    """'linear' or 'superb' when `config` belongs to a model this script fine-tuned, else None."""
    for head, model_class in HEADS.items():
        if model_class.__name__ in (config.architectures or []):
            return head
    return None


def head_config(model_args: ModelArguments, config: ArmHubertConfig, head: str, tokenizer) -> ArmHubertConfig:
    """The student's config turned into that of a CTC model with `head`."""
    changes: dict[str, Any] = dict(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=None,
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
                       superb_lstm_dropout=model_args.superb_lstm_dropout)
        if features == "hidden_states":
            changes["projection_dim"] = 0  # unused heads would only cost memory and time
    return config.with_overrides(model_args.config_overrides, "--config_overrides", **changes)


def load_model_and_processor(model_args: ModelArguments, data_args: AsrDataArguments,
                             training_args: TrainingArguments, train_dataset) -> tuple[ArmHubertPreTrainedModel,
                                                                                       Wav2Vec2Processor]:
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
        config = config.with_overrides(model_args.config_overrides, "--config_overrides",
                                       custom_pipelines=CUSTOM_PIPELINES)
        model = HEADS[head].from_pretrained(source, config=config, cache_dir=model_args.cache_dir)
    else:
        if not training_args.do_train:
            raise ValueError(f"{source or model_args.student_preset} is a student without a CTC head: --do_eval and "
                             "--do_predict need a fine-tuned model. Add --do_train, or point --model_name_or_path "
                             "at a directory this script wrote.")
        tokenizer = make_tokenizer(data_args, train_dataset, training_args.output_dir)
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
                type(model).__name__, head, source or f"preset {model_args.student_preset}",
                model.num_parameters() / 1e6, trainable / 1e6, len(processor.tokenizer))
    return model, processor


def make_tokenizer(data_args: AsrDataArguments, train_dataset, output_dir: str):
    """The tokenizer of --vocab_file, or of a vocabulary built from the training transcripts."""
    if data_args.vocab_file:
        load_tokenizer(data_args.vocab_file)  # checks the layout
        return create_tokenizer(json.loads(Path(data_args.vocab_file).read_text(encoding="utf-8")), output_dir)
    texts = transcripts_of(train_dataset, data_args.chars_to_ignore)
    if texts is None:
        raise ValueError("With --streaming the training transcripts are not known up front: pass --vocab_file "
                         "(a vocab.json, e.g. from a previous run) to give the vocabulary.")
    vocab = build_vocabulary(texts)
    logger.info("Vocabulary of %d tokens from %d training transcripts: %s", len(vocab), len(texts),
                " ".join(token for token in vocab))
    return create_tokenizer(vocab, output_dir)


def student_feature_extractor(source: str | None, cache_dir: str | None):
    """The student's feature extractor; raw 16 kHz waveforms without normalisation when it has none."""
    if source is not None:
        try:
            return AutoFeatureExtractor.from_pretrained(source, cache_dir=cache_dir)
        except (OSError, ValueError):
            pass
    return raw_waveform_feature_extractor()


# ----------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------


class CtcTrainer(SpeechTrainer):
    """A Trainer for CTC models whose batches come from `CtcCollator`.

    Training counts skipped (unreadable) audio files and characters that became <unk>, and logs
    both. `evaluate` (also run during training with --eval_strategy) and `transcribe` decode
    greedily, score WER and CER with `evaluate`, measure the real-time factor, and write
    per-utterance hypotheses and a summary.
    """

    def __init__(self, *args, wer_metric: str, cer_metric: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.wer_metric, self.cer_metric = wer_metric, cer_metric
        self.unknown_characters = 0

    @property
    def tokenizer(self):
        return self.processing_class.tokenizer

    @staticmethod
    def _pop_bookkeeping(inputs: dict[str, Any]) -> tuple[list[str], list[str], int]:
        """Take (texts, ids, unknown characters) out of a batch (`num_skipped` is taken by `count_skipped`)."""
        unknown = inputs.pop("num_unknown_chars", None)
        return inputs.pop("text", []), inputs.pop("id", []), int(unknown) if unknown is not None else 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.count_skipped(inputs)
        _, _, unknown = self._pop_bookkeeping(inputs)
        self.unknown_characters += unknown
        if self.is_empty(inputs):
            loss = self.zero_loss(model)
            return (loss, None) if return_outputs else loss
        outputs = model(input_values=inputs["input_values"], attention_mask=inputs["attention_mask"],
                        labels=inputs["labels"])
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs["unknown_characters"] = self.unknown_characters
        super().log(logs, start_time)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        super()._save(output_dir, state_dict)
        if self.args.should_save:  # the pipeline class named in config.custom_pipelines travels with the model
            target = Path(output_dir if output_dir is not None else self.args.output_dir) / PIPELINE_MODULE.name
            target.write_text(PIPELINE_MODULE.read_text())

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics = self.transcribe(dataset, metric_key_prefix, self.get_eval_dataloader(dataset))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def transcribe(self, dataset, name: str, dataloader=None) -> dict[str, float]:
        """Greedy CTC transcription of `dataset`; writes `<name>_predictions.tsv` and returns the metrics.

        Metrics (prefixed "<name>_"): wer, cer (when there are references), loss, rtf = decode time /
        audio duration (decode time = model forward + greedy decoding, without data loading), and
        the counts of utterances, audio seconds, characters that became <unk>, and files left out
        (`skipped_files` and one `skipped_files_<reason>` per `speech_data.SKIP_REASONS`).
        """
        dataloader = dataloader if dataloader is not None else self.get_test_dataloader(dataset)
        model = self.model
        model.eval()
        tokenizer = self.tokenizer
        on_gpu = self.args.device.type == "cuda"
        rows: list[tuple[str, str, str, float, float]] = []  # id, reference, hypothesis, seconds, decode seconds
        loss_total, loss_items, skipped_total, unknown_total = 0.0, 0, 0, 0
        for batch in dataloader:
            texts, ids, unknown = self._pop_bookkeeping(batch)
            skipped_total += int(batch.pop("num_skipped", 0))  # counted per split, not into training's count
            unknown_total += unknown
            if self.is_empty(batch):
                continue
            batch = self._prepare_inputs(batch)
            values, attention_mask, labels = batch["input_values"], batch["attention_mask"], batch.get("labels")
            if on_gpu:
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.no_grad(), self.autocast_smart_context_manager():
                logits = model(input_values=values, attention_mask=attention_mask).logits
            frames = model._get_feat_extract_output_lengths(attention_mask.sum(-1)).tolist()
            predicted = logits.argmax(dim=-1).cpu()
            # Only each utterance's own frames: what the pipeline decodes for that utterance alone.
            hypotheses = [tokenizer.decode(predicted[i, :n].tolist(), skip_special_tokens=False)
                          for i, n in enumerate(frames)]
            if on_gpu:
                torch.cuda.synchronize()
            share = (time.perf_counter() - start) / len(hypotheses)
            seconds = (attention_mask.sum(-1).float() / SAMPLING_RATE).tolist()
            if labels is not None and labels.numel() and any(texts):
                with torch.no_grad():
                    loss = model.ctc_loss(logits.float(), labels, attention_mask)
                loss_total += float(loss) * (len(hypotheses) if model.config.ctc_loss_reduction == "mean" else 1)
                loss_items += len(hypotheses)
            batch_rows = list(zip(ids, texts, hypotheses, seconds, [share] * len(hypotheses)))
            if self.accelerator.num_processes > 1:  # every process transcribed its own share of the batches
                batch_rows = self.accelerator.gather_for_metrics(batch_rows, use_gather_object=True)
            rows.extend(batch_rows)

        counts = torch.tensor([loss_total, loss_items, skipped_total, unknown_total], device=self.args.device)
        loss_total, loss_items, skipped_total, unknown_total = self.accelerator.reduce(counts, "sum").tolist()
        audio_seconds = sum(row[3] for row in rows)
        decode_seconds = sum(row[4] for row in rows)
        metrics: dict[str, float] = {
            "utterances": len(rows), "audio_seconds": audio_seconds, "decode_seconds": decode_seconds,
            "rtf": decode_seconds / audio_seconds if audio_seconds else math.nan,
            "unknown_characters": int(unknown_total), **skip_metrics(dataset, int(skipped_total)),
        }
        references = [row[1] for row in rows]
        if any(references):
            hypotheses = [row[2] for row in rows]
            metrics["wer"] = load_metric(self.wer_metric).compute(predictions=hypotheses, references=references)
            metrics["cer"] = load_metric(self.cer_metric).compute(predictions=hypotheses, references=references)
        if loss_items:
            metrics["loss"] = loss_total / loss_items
        metrics = {f"{name}_{key}": value for key, value in metrics.items()}
        if self.is_world_process_zero():
            write_predictions(Path(self.args.output_dir) / f"{name}_predictions.tsv", rows)
        return metrics


def asr_model_card(model, model_args: ModelArguments, data_args: AsrDataArguments,
                   training_args: TrainingArguments, metrics: dict[str, float]) -> ModelCard:
    """A model card for a fine-tuned model: what it is, how to use it, its results and recipe."""
    name = training_args.hub_model_id or os.path.basename(os.path.normpath(training_args.output_dir))
    source = model_args.model_name_or_path or f"preset {model_args.student_preset}"
    is_hub_id = "/" in source and not os.path.exists(source) and not source.endswith(".ckpt")
    superb = isinstance(model, ArmHubertForSuperbCTC)
    head = (f"the SUPERB ASR protocol: the student frozen, a softmax-weighted sum of its "
            f"{model.config.superb_features.replace('_', ' ')} features, {model.config.superb_lstm_layers} BiLSTM "
            f"layers of {model.config.superb_lstm_hidden_size} units and a character CTC layer" if superb
            else "a character CTC layer on the last layer, the whole student fine-tuned (conv encoder frozen)")
    data = (f"LibriSpeech {' + '.join(data_args.train_splits)}" if data_args.librispeech_root
            else f"{data_args.dataset_name} ({data_args.train_split})")
    length = (f"{training_args.max_steps} steps" if training_args.max_steps > 0
              else f"{training_args.num_train_epochs:g} epochs")
    batch = (f"{training_args.per_device_train_batch_size} x {training_args.gradient_accumulation_steps} "
             f"accumulation x {training_args.world_size} processes")
    optimizer = getattr(training_args.optim, "value", training_args.optim)
    schedule = getattr(training_args.lr_scheduler_type, "value", training_args.lr_scheduler_type)
    eval_split = " + ".join(data_args.eval_splits) if data_args.librispeech_root else data_args.eval_split
    results = ["| split | WER | CER | real-time factor |", "|---|---|---|---|"]
    for prefix in sorted({key.rsplit("_", 1)[0] for key in metrics if key.endswith("_wer")}):
        split = eval_split if prefix == "eval" else prefix.removeprefix("predict_")
        results.append(f"| {split} | {100 * metrics[prefix + '_wer']:.2f} % | "
                       f"{100 * metrics[prefix + '_cer']:.2f} % | {metrics[prefix + '_rtf']:.4f} |")
    card_data = ModelCardData(library_name="transformers", pipeline_tag="automatic-speech-recognition",
                              tags=["audio", "speech", "ctc", "armhubert", "recycle-and-distill"]
                              + (["superb"] if superb else []),
                              base_model=source if is_hub_id else None, metrics=["wer", "cer"], license="mit")
    return ModelCard(f"""---
{card_data.to_yaml()}
---

# {name}

Speech recognition with an ArmHubert student (Recycle-and-Distill, [paper](https://arxiv.org/abs/2305.11685))
from `{source}`, with {head}. Greedy CTC decoding over upper-case characters, no language model.

## Usage

```python
from transformers import pipeline

asr = pipeline("automatic-speech-recognition", model="{name}", trust_remote_code=True)
asr("speech.flac")["text"]          # or a 16 kHz float waveform
```

## Results

{chr(10).join(results) if len(results) > 2 else "No evaluation was run."}

## Training

Fine-tuned with `run_asr_ctc.py` of the armhubert project on {data}: {length}, batch {batch},
{optimizer} lr {training_args.learning_rate:g} ({schedule} schedule), weight decay {training_args.weight_decay:g}.
""")


def load_metric(path_or_name: str):
    return evaluate.load(path_or_name, keep_in_memory=True)


def write_predictions(path: Path, rows: list[tuple[str, str, str, float, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "reference", "hypothesis"])
        writer.writerows(row[:3] for row in rows)


def read_predictions(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a `*_predictions.tsv` file: [{"id", "reference", "hypothesis"}, ...]."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help keeps the layout of the module docstring and shows every default."""


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, AsrDataArguments, TrainingArguments]:
    parser = HfArgumentParser((ModelArguments, AsrDataArguments, TrainingArguments), description=__doc__,
                              formatter_class=HelpFormatter)
    model_args, data_args, training_args = parse_config_and_args(parser, argv)
    training_args.remove_unused_columns = False  # the batch is ours; the Trainer must not prune it
    if data_args.streaming:
        # Audio batches differ in length: each process reads its own batches from the stream instead
        # of the main process reading them all and broadcasting equal-shaped ones.
        training_args.accelerator_config.dispatch_batches = False
    if training_args.metric_for_best_model and training_args.metric_for_best_model.split("_")[-1] in ("wer", "cer"):
        training_args.greater_is_better = False  # error rates: lower is better
    return model_args, data_args, training_args


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, training_args = parse_args(argv)
    setup_script_logging(training_args, "run_asr_ctc", "asr_vocabulary")
    set_seed(training_args.seed)
    if not (training_args.do_train or training_args.do_eval or training_args.do_predict):
        raise ValueError("Nothing to do: give at least one of --do_train, --do_eval, --do_predict.")

    # Data first: a missing split or column fails before any model is loaded.
    data = build_datasets(data_args, training_args)
    model, processor = load_model_and_processor(model_args, data_args, training_args, data["train"])
    vocab = processor.tokenizer.get_vocab()
    for name, dataset in [("train", data["train"]), ("eval", data["eval"]), *data["predict"].items()]:
        if dataset is not None:
            report_unknown_characters(name, dataset, vocab, data_args.chars_to_ignore)

    metrics: dict[str, float] = {}
    trainer = CtcTrainer(
        model=model, args=training_args, train_dataset=data["train"], eval_dataset=data["eval"],
        data_collator=CtcCollator(processor.tokenizer, chars_to_ignore=data_args.chars_to_ignore),
        processing_class=processor, wer_metric=data_args.wer_metric, cer_metric=data_args.cer_metric,
        model_card_fn=lambda: asr_model_card(model, model_args, data_args, training_args, metrics),
    )
    if training_args.do_train:
        # "last" resumes from the newest complete checkpoint in output_dir; a path from that checkpoint.
        checkpoint = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()
        train_metrics = dict(result.metrics, train_unknown_characters=trainer.unknown_characters,
                             **{f"train_{key}": value for key, value in trainer.skipped_files_metrics().items()})
        trainer.log_metrics("train", train_metrics)
        trainer.save_metrics("train", train_metrics)
        trainer.save_state()
        metrics.update(train_metrics)
        if isinstance(model, ArmHubertForSuperbCTC):
            logger.info("Learned layer weights (softmax): %s",
                        " ".join(f"{w:.3f}" for w in model.layer_weight_distribution.tolist()))
    if training_args.do_eval:
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    for name, dataset in data["predict"].items():
        predict_metrics = trainer.transcribe(dataset, f"predict_{name}")
        trainer.log_metrics(f"predict_{name}", predict_metrics)
        trainer.save_metrics(f"predict_{name}", predict_metrics)
        metrics.update(predict_metrics)
    if training_args.do_train:  # the card describes the model in output_dir, which only training writes
        if training_args.push_to_hub:
            trainer.push_to_hub(commit_message="Fine-tuned with run_asr_ctc.py")  # writes the card, then uploads
        else:
            trainer.create_model_card()
    return metrics


if __name__ == "__main__":
    main()
