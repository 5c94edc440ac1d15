"""`CtcTrainer`: fine-tunes, evaluates and transcribes CTC models on batches from `asr_vocabulary.CtcCollator`.

Evaluation (`evaluate`, also run during training with --eval_strategy) and prediction
(`predict`) go in four steps, each its own function:

1. `CtcTrainer.run_transcription` runs the model over a dataloader and collects, per utterance,
   its id, reference, greedy hypothesis, duration and share of the decode time (`Transcription`);
2. `CtcTrainer.decode_batch` / `greedy_decode`: one batch's forward pass and greedy CTC decoding;
3. `CtcTrainer.score`: the task's metrics (`evaluate` modules: WER and CER of characters, PER of
   phonemes, SUPERB's slot-type F1 and slot-value CER of slot filling; `TASK_METRICS`), loss,
   real-time factor and counts;
4. `write_predictions`: the per-utterance `<name>_predictions.tsv` (the Trainer's `save_metrics`
   writes the `<name>_results.json` summary).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import evaluate
import torch

from modeling_armhubert import ArmHubertPreTrainedModel

from .asr_pipeline import eos_as_blank
from .asr_vocabulary import target_units
from .audio import SAMPLING_RATE, skip_metrics
from .speech_trainer import ScoredSplit, SplitScoringTrainer

# What is scored for each kind of target (`asr_vocabulary.target_units`); the first one selects checkpoints.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "characters": ("wer", "cer"),
    "phonemes": ("per",),  # the word error rate of phone strings: phone edits / reference phones
    "slots": ("slot_type_f1", "slot_value_cer"),
}


class TranscribedUtterance(NamedTuple):
    """One row of a `*_predictions.tsv` file, plus the timings behind the real-time factor."""

    id: str
    reference: str
    hypothesis: str
    seconds: float  # audio duration
    decode_seconds: float  # this utterance's share of its batch's forward pass and decoding


@dataclass
class Transcription:
    """What `CtcTrainer.run_transcription` collects over a split, before scoring."""

    utterances: list[TranscribedUtterance] = field(default_factory=list)
    loss_total: float = 0.0  # CTC loss summed over the utterances that have a transcript
    loss_items: int = 0  # how many utterances `loss_total` sums over
    skipped: int = 0  # items whose audio failed when read (dropped by the collator)
    unknown_characters: int = 0  # transcript characters that became <unk>


class CtcTrainer(SplitScoringTrainer):
    """A Trainer for CTC models whose batches come from `CtcCollator`.

    Training counts skipped (unreadable) audio files and characters that became <unk>, and logs
    both. `evaluate` and `predict` decode greedily, score WER and CER with `evaluate`, measure
    the real-time factor, and write per-utterance hypotheses.
    """

    pipeline_files = (Path(__file__).resolve().parent / "asr_pipeline.py",)
    host_length_inputs = ("input_lengths", "label_lengths")

    def __init__(self, *args, wer_metric: str, cer_metric: str, slot_filling_metric: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.wer_metric, self.cer_metric, self.slot_filling_metric = wer_metric, cer_metric, slot_filling_metric
        self.unknown_characters = 0

    @property
    def tokenizer(self):
        return self.processing_class.tokenizer

    @staticmethod
    def _pop_bookkeeping(inputs: dict[str, Any]) -> tuple[list[str], list[str], int]:
        """Take (texts, ids, unknown characters) out of a batch (`num_skipped` is taken by `count_skipped`)."""
        unknown = inputs.pop("num_unknown_chars", None)
        return inputs.pop("text", []), inputs.pop("id", []), int(unknown) if unknown is not None else 0

    def pop_bookkeeping(self, inputs: dict[str, Any]) -> None:
        _, _, unknown = self._pop_bookkeeping(inputs)
        self.unknown_characters += unknown

    def training_counts(self) -> dict[str, int]:
        return {**super().training_counts(), "unknown_characters": self.unknown_characters}

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs["unknown_characters"] = self.unknown_characters
        super().log(logs, start_time)

    def run_split(self, dataset, name: str, dataloader=None) -> ScoredSplit:
        """Greedy CTC transcription of `dataset`; writes `<name>_predictions.tsv` and scores it.

        Metrics (prefixed "<name>_"): see `score`.
        """
        dataloader = dataloader if dataloader is not None else self.get_test_dataloader(dataset)
        transcription = self.run_transcription(dataloader)
        metrics = {f"{name}_{key}": value for key, value in self.score(transcription, dataset).items()}
        if self.is_world_process_zero():
            write_predictions(Path(self.args.output_dir) / f"{name}_predictions.tsv", transcription.utterances)
        utterances = transcription.utterances
        return ScoredSplit(ids=[u.id for u in utterances], references=[u.reference for u in utterances],
                           predictions=[u.hypothesis for u in utterances], metrics=metrics)

    def run_transcription(self, dataloader) -> Transcription:
        """Run the model over `dataloader` and collect every utterance's hypothesis, with the loss and
        counts summed over all processes (each transcribes its own share of the batches)."""
        result = Transcription()

        def transcribe(batch: dict[str, Any]) -> list[TranscribedUtterance]:
            texts, ids, _ = self._pop_bookkeeping(batch)
            attention_mask, labels = batch["attention_mask"], batch.get("labels")
            if labels is not None and self.tokenizer.unk_token_id is not None:
                # Counted on the labels scored (the collator's count includes items left out as repeats).
                result.unknown_characters += int((labels == self.tokenizer.unk_token_id).sum())
            logits, hypotheses, decode_seconds = self.decode_batch(batch["input_values"], attention_mask)
            if labels is not None and labels.numel() and any(texts):
                result.loss_total += self.batch_loss(logits, labels, attention_mask)
                result.loss_items += len(hypotheses)
            seconds = (attention_mask.sum(-1).float() / SAMPLING_RATE).tolist()
            share = decode_seconds / len(hypotheses)
            return [TranscribedUtterance(*row)
                    for row in zip(ids, texts, hypotheses, seconds, [share] * len(hypotheses))]

        utterances, skipped = self.score_batches(dataloader, transcribe)
        counts = torch.tensor([result.loss_total, result.loss_items, result.unknown_characters],
                              device=self.args.device)
        loss_total, loss_items, unknown = self.accelerator.reduce(counts, "sum").tolist()
        return Transcription(utterances, loss_total, int(loss_items), skipped, int(unknown))

    def decode_batch(self, input_values: torch.Tensor,
                     attention_mask: torch.Tensor) -> tuple[torch.Tensor, list[str], float]:
        """(logits (B, T, vocab), greedy hypotheses, seconds the forward pass and decoding took).

        The time excludes data loading, so that the real-time factor measures the model alone.
        """
        on_gpu = self.args.device.type == "cuda"
        if on_gpu:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad(), self.autocast_smart_context_manager():
            logits = self.model(input_values=input_values, attention_mask=attention_mask).logits
        hypotheses = greedy_decode(self.model, self.tokenizer, logits, attention_mask)
        if on_gpu:
            torch.cuda.synchronize()
        return logits, hypotheses, time.perf_counter() - start

    def batch_loss(self, logits: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor) -> float:
        """The batch's CTC loss summed over its utterances, whatever `ctc_loss_reduction` is."""
        with torch.no_grad():
            loss = float(self.model.ctc_loss(logits.float(), labels, attention_mask))
        return loss * (len(logits) if self.model.config.ctc_loss_reduction == "mean" else 1)

    def score(self, transcription: Transcription, dataset) -> dict[str, float]:
        """The metrics of a transcribed split, not yet prefixed.

        The task's `TASK_METRICS` (when there are references; all corpus-level except slot_type_f1, a
        mean over utterances), loss (when there are labels), rtf = decode time / audio
        duration, and the counts of utterances, audio seconds, characters that became <unk>, and
        files left out (`skipped_files` and one `skipped_files_<reason>` per
        `audio.SKIP_REASONS`, those of `dataset`'s index plus those that failed when read).
        """
        utterances = transcription.utterances
        audio_seconds = sum(utterance.seconds for utterance in utterances)
        decode_seconds = sum(utterance.decode_seconds for utterance in utterances)
        metrics: dict[str, float] = {
            "utterances": len(utterances), "audio_seconds": audio_seconds, "decode_seconds": decode_seconds,
            "rtf": decode_seconds / audio_seconds if audio_seconds else math.nan,
            "unknown_characters": transcription.unknown_characters,
            **skip_metrics(dataset, transcription.skipped),
        }
        references = [utterance.reference for utterance in utterances]
        if any(references):
            hypotheses = [utterance.hypothesis for utterance in utterances]
            metrics.update(self.task_metrics(hypotheses, references))
        if transcription.loss_items:
            metrics["loss"] = transcription.loss_total / transcription.loss_items
        return metrics

    def task_metrics(self, hypotheses: list[str], references: list[str]) -> dict[str, float]:
        """`TASK_METRICS` of the model's kind of target, on decoded hypotheses and references."""
        units = target_units(self.tokenizer.get_vocab())
        strings = dict(predictions=hypotheses, references=references)
        if units == "slots":
            return load_metric(self.slot_filling_metric).compute(**strings)
        wer = load_metric(self.wer_metric).compute(**strings)
        if units == "phonemes":
            return {"per": wer}
        return {"wer": wer, "cer": load_metric(self.cer_metric).compute(**strings)}


def greedy_decode(model: ArmHubertPreTrainedModel, tokenizer, logits: torch.Tensor,
                  attention_mask: torch.Tensor) -> list[str]:
    """Best path CTC decoding of each utterance over its own frames only: what the pipeline decodes
    for that utterance alone, whatever the padding of the batch (<eos> decoded like the blank)."""
    frames = model._get_feat_extract_output_lengths(attention_mask.sum(-1)).tolist()
    predicted = eos_as_blank(logits.argmax(dim=-1).cpu(), tokenizer)
    return [tokenizer.decode(predicted[i, :n].tolist(), skip_special_tokens=False) for i, n in enumerate(frames)]


def load_metric(path_or_name: str) -> evaluate.EvaluationModule:
    """An `evaluate` metric kept in memory (no cache files written next to the run)."""
    return evaluate.load(path_or_name, keep_in_memory=True)


def write_predictions(path: Path, utterances: list[TranscribedUtterance]) -> None:
    """A TSV file with one "id, reference, hypothesis" row per utterance, under a header row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["id", "reference", "hypothesis"])
        writer.writerows(utterance[:3] for utterance in utterances)


def read_predictions(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a `*_predictions.tsv` file: [{"id", "reference", "hypothesis"}, ...]."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))

