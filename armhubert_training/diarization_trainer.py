"""`DiarizationTrainer`: trains and scores `ArmHubertForSuperbDiarization` on `DiarizationCollator` batches.

Evaluation (`evaluate`, also run during training with --eval_strategy) scores s3prl's frame-level
metrics on the chunks: `accuracy` (of the per-frame, per-speaker decisions, which SUPERB selects the
checkpoint by), `frame_der` and the loss. Prediction (`predict`) also joins each recording's chunks,
writes one RTTM file per (threshold, median filter) setting to `<name>_rttm/` and scores each for DER
against the split's reference RTTM; `der` is the lowest, as SUPERB reports it, and
`der_threshold_<t>_median_<m>` each setting's (fractions, like every rate of the project).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from modeling_armhubert import permutation_invariant_bce

from .audio import SAMPLING_RATE, skip_metrics
from .corpora.librimix import read_rttm
from .diarization_scoring import FrameErrors, activity_turns, diarization_error_rate, write_rttm
from .speech_datasets import DiarizationChunkDataset
from .speech_trainer import ScoredSplit, SplitScoringTrainer


def setting_name(threshold: float, median: int) -> str:
    return f"threshold_{threshold:g}_median_{median}"


class DiarizationTrainer(SplitScoringTrainer):
    """A Trainer for `ArmHubertForSuperbDiarization`.

    Args:
        thresholds, medians: the RTTM settings `predict` scores (each threshold with each median width).
    """

    def __init__(self, *args, thresholds: Sequence[float], medians: Sequence[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.thresholds, self.medians = list(thresholds), list(medians)
        self._scores_rttm = False

    def pop_bookkeeping(self, inputs: dict[str, Any]) -> None:
        inputs.pop("id", None), inputs.pop("start", None)

    def predict(self, test_dataset, ignore_keys=None, metric_key_prefix: str = "test"):
        self._scores_rttm = True
        try:
            return super().predict(test_dataset, ignore_keys, metric_key_prefix)
        finally:
            self._scores_rttm = False

    def run_split(self, dataset: DiarizationChunkDataset, name: str, dataloader=None) -> ScoredSplit:
        """Run the model over the chunks of `dataset`; frame metrics, and with `predict` the RTTMs and DER.
        Metrics are prefixed "<name>_"."""
        dataloader = dataloader if dataloader is not None else self.get_test_dataloader(dataset)
        errors = FrameErrors()
        loss = [0.0, 0]  # loss summed over label frames, label frames

        def run_chunks(batch: dict[str, Any]) -> list[tuple[str, int, np.ndarray]]:
            """(recording, first frame, sigmoid outputs (frames, S)) of each chunk of the batch."""
            with self.autocast_smart_context_manager():
                logits = self.model(input_values=batch["input_values"],
                                    attention_mask=batch["attention_mask"]).logits.float()
            lengths = self.model.label_frame_lengths(batch["attention_mask"])
            batch_loss, orders = permutation_invariant_bce(logits, batch["labels"], lengths)
            loss[0] += float(batch_loss) * int(lengths.sum())
            loss[1] += int(lengths.sum())
            batch_chunks = []
            for row, (recording, start) in enumerate(zip(batch["id"], batch["start"])):
                frames = int(lengths[row])
                errors.add(logits[row, :frames].cpu(), batch["labels"][row, :frames, orders[row]].cpu())
                batch_chunks.append((recording, start, torch.sigmoid(logits[row, :frames]).cpu().numpy()))
            return batch_chunks

        chunks, undecodable = self.score_batches(dataloader, run_chunks)
        loss_total, frames_total = loss
        if self.accelerator.num_processes > 1:
            errors = FrameErrors(*(int(x) for x in self.accelerator.reduce(
                torch.tensor(list(vars(errors).values()), device=self.args.device), "sum").tolist()))
            loss_total, frames_total = self.accelerator.reduce(
                torch.tensor(loss, device=self.args.device, dtype=torch.float64), "sum").tolist()

        activities: dict[str, list[tuple[int, np.ndarray]]] = {}
        for recording, start, outputs in chunks:
            activities.setdefault(recording, []).append((start, outputs))
        joined = {recording: np.concatenate([outputs for _, outputs in sorted(parts, key=lambda part: part[0])])
                  for recording, parts in activities.items()}
        metrics: dict[str, float] = {"recordings": len(joined), "chunks": len(chunks), **errors.metrics(),
                                     **skip_metrics(dataset, int(undecodable))}
        if frames_total:
            metrics["loss"] = loss_total / frames_total
        predictions = [""] * len(joined)
        if self._scores_rttm and joined:
            metrics.update(self._score_rttm(dataset, name, joined))
            best = setting_name(metrics["der_threshold"], int(metrics["der_median"]))
            best_turns = read_rttm(Path(self.args.output_dir) / f"{name}_rttm" / f"{best}.rttm")
            # A recording's prediction: its turns under the best setting, "speaker start end" per line.
            predictions = ["\n".join(f"{turn.speaker} {turn.start:.2f} {turn.end:.2f}"
                                     for turn in best_turns.get(recording, [])) for recording in joined]
        return ScoredSplit(ids=list(joined), references=[""] * len(joined), predictions=predictions,
                           metrics={f"{name}_{key}": value for key, value in metrics.items()})

    def _score_rttm(self, dataset: DiarizationChunkDataset, name: str,
                    activities: dict[str, np.ndarray]) -> dict[str, float]:
        """Write `<name>_rttm/<setting>.rttm` for every setting and score each file as written."""
        frame_seconds = dataset.frame_shift / SAMPLING_RATE
        folder = Path(self.args.output_dir) / f"{name}_rttm"
        scores: dict[tuple[float, int], float] = {}
        for median in self.medians:
            for threshold in self.thresholds:
                path = folder / f"{setting_name(threshold, median)}.rttm"
                if self.is_world_process_zero():
                    write_rttm(path, {recording: activity_turns(recording, outputs, threshold, median, frame_seconds)
                                      for recording, outputs in activities.items()})
                self.accelerator.wait_for_everyone()
                scores[threshold, median] = diarization_error_rate(dataset.reference, read_rttm(path), activities)
        (threshold, median), der = min(scores.items(), key=lambda item: item[1])
        return {"der": der, "der_threshold": threshold, "der_median": median,
                **{f"der_{setting_name(t, m)}": value for (t, m), value in scores.items()}}
