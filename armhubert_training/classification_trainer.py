"""`ClassificationTrainer`: trains, evaluates and runs utterance classifiers on `ClassificationCollator` batches.

Evaluation (`evaluate`, also run during training with --eval_strategy) and prediction (`predict`)
collect per utterance its id, reference label and predicted label (the best value of every slot,
joined with "|" for intent classification), write them to `<name>_predictions.tsv` and score
accuracy: the share of utterances whose every slot is right (plus `accuracy_<slot>` per slot for a
model with several). The Trainer's `save_metrics` writes the `<name>_results.json` summary.

Speech Commands' train and validation data are sampled class-balanced, with replacement, as SUPERB
does (`sample_weights` of the dataset): training draws anew each epoch (seeded by seed and epoch),
evaluation draws the same resample every time, so that successive evaluations are comparable.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from .audio import skip_metrics
from .corpora.labels import LabelSet
from .speech_trainer import EpochSeededSampler, ScoredSplit, SplitScoringTrainer

PREDICTION_COLUMNS = ("id", "label", "prediction")


class BalancedEpochSampler(EpochSeededSampler, WeightedRandomSampler):
    """`len(weights)` draws with replacement in proportion to `weights`, redrawn by (seed, epoch)."""

    def __init__(self, weights: Sequence[float], seed: int):
        super().__init__(weights, num_samples=len(weights), replacement=True)
        self._init_epoch_seed(seed)


class ClassificationTrainer(SplitScoringTrainer):
    """A Trainer for `ArmHubertForSequenceClassification` on batches from `ClassificationCollator`."""

    # The pipeline class, the audio decoding it shares with the ASR pipeline, and SUPERB's input effects.
    pipeline_files = tuple(Path(__file__).resolve().parent / name
                           for name in ("classification_pipeline.py", "asr_pipeline.py", "input_effects.py"))

    def __init__(self, *args, label_set: LabelSet, **kwargs):
        super().__init__(*args, **kwargs)
        self.label_set = label_set

    def pop_bookkeeping(self, inputs: dict[str, Any]) -> None:
        inputs.pop("id", None), inputs.pop("label", None)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if getattr(dataset, "sample_weights", None) is not None:
            return self.epoch_seeded(BalancedEpochSampler(dataset.sample_weights, self.data_seed))
        return super()._get_train_sampler(train_dataset)

    def _get_eval_sampler(self, eval_dataset):
        if getattr(eval_dataset, "sample_weights", None) is not None:
            return WeightedRandomSampler(eval_dataset.sample_weights, len(eval_dataset), replacement=True,
                                         generator=torch.Generator().manual_seed(self.data_seed))
        return super()._get_eval_sampler(eval_dataset)

    def run_split(self, dataset, name: str, dataloader=None) -> ScoredSplit:
        """Classify `dataset`; write `<name>_predictions.tsv` and score it. Metrics, prefixed "<name>_":
        utterances, accuracy (and accuracy_<slot> with several slots) and loss when the data has labels,
        and the `skipped_files*` counts."""
        dataloader = dataloader if dataloader is not None else self.get_test_dataloader(dataset)
        loss = [0.0, 0]  # summed loss, items

        def classify(batch: dict[str, Any]) -> list[tuple[str, str, str]]:
            ids, references = batch.pop("id"), batch.pop("label")
            with self.autocast_smart_context_manager():
                logits = self.model(input_values=batch["input_values"], attention_mask=batch["attention_mask"]).logits
            if "labels" in batch:
                loss[0] += float(self.model.classification_loss(logits.float(), batch["labels"])) * len(ids)
                loss[1] += len(ids)
            predicted = [self.label_set.decode(row) for row in self.model.predict_slots(logits).tolist()]
            return list(zip(ids, references, predicted))

        rows, undecodable = self.score_batches(dataloader, classify)
        loss_total, loss_items = self.accelerator.reduce(
            torch.tensor(loss, device=self.args.device, dtype=torch.float64), "sum").tolist()

        metrics: dict[str, float] = {"utterances": len(rows), **accuracies(rows, self.label_set),
                                     **skip_metrics(dataset, int(undecodable))}
        if loss_items:
            metrics["loss"] = loss_total / loss_items
        if self.is_world_process_zero():
            write_predictions(Path(self.args.output_dir) / f"{name}_predictions.tsv", rows)
        ids, references, predictions = (list(column) for column in zip(*rows)) if rows else ([], [], [])
        return ScoredSplit(ids=ids, references=references, predictions=predictions,
                           metrics={f"{name}_{key}": value for key, value in metrics.items()})


def accuracies(rows: Sequence[tuple[str, str, str]], label_set: LabelSet) -> dict[str, float]:
    """accuracy over the (id, reference, prediction) rows that have a reference: the share predicted
    exactly (every slot right); with several slots also accuracy_<slot>. Empty without references."""
    scored = [(reference, prediction) for _, reference, prediction in rows if reference]
    if not scored:
        return {}
    result = {"accuracy": sum(reference == prediction for reference, prediction in scored) / len(scored)}
    if label_set.is_multi_slot:
        for i, (slot, _) in enumerate(label_set.slots):
            right = sum(reference.split("|")[i] == prediction.split("|")[i] for reference, prediction in scored)
            result[f"accuracy_{slot}"] = right / len(scored)
    return result


def write_predictions(path: Path, rows: Sequence[tuple[str, str, str]]) -> None:
    """A TSV file with one "id, label, prediction" row per utterance, under a header row."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(PREDICTION_COLUMNS)
        writer.writerows(rows)


def read_predictions(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a `*_predictions.tsv` file: [{"id", "label", "prediction"}, ...]."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))

