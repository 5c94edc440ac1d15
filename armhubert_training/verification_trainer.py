"""`SpeakerVerificationTrainer`: trains `ArmHubertForXVector` on speaker-labelled batches and scores trial lists.

Scoring a split (`evaluate`, `predict`) embeds every file of a `TrialDataset` once, scores each trial by
the cosine of its two embeddings (as SUPERB does), writes `<name>_trial_scores.tsv` (first, second,
label, score) and reports the equal error rate as s3prl computes it (`equal_error_rate`): `<name>_eer`
(a fraction), `<name>_eer_threshold`, `<name>_trials`, `<name>_trials_skipped` (trials naming a file
that was left out or failed when read) and the `skipped_files*` counts. `verify` scores two files with a
trained model in one call.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from .audio import AudioSource, load_audio, skip_metrics
from .input_effects import InputEffects
from .speech_trainer import ScoredSplit, SplitScoringTrainer

TRIAL_SCORE_COLUMNS = ("first", "second", "label", "score")


def equal_error_rate(labels: Sequence[int], scores: Sequence[float]) -> tuple[float, float]:
    """(EER, threshold) of trial `scores` (higher = same speaker) against `labels` (1 = same speaker), as
    s3prl computes them: the point where the ROC curve, interpolated linearly between its corners, meets
    false-acceptance rate = 1 - true-acceptance rate; the threshold interpolated there. EER is a fraction."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.min() == labels.max():
        raise ValueError("The equal error rate needs target (1) and non-target (0) trials; these trials have only "
                         f"{int(labels[0])}.")
    false_accepts, true_accepts, thresholds = roc_curve(labels, scores, pos_label=1)
    eer = brentq(lambda x: 1.0 - x - interp1d(false_accepts, true_accepts)(x), 0.0, 1.0)
    return float(eer), float(interp1d(false_accepts, thresholds)(eer))


def write_trial_scores(path: Path, rows: Sequence[tuple[str, str, str, float]]) -> None:
    """A TSV file with one "first, second, label, score" row per trial under a header row (label 1 = same
    speaker, 0 = different, empty = unknown)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(TRIAL_SCORE_COLUMNS)
        writer.writerows((first, second, label, repr(float(score))) for first, second, label, score in rows)


def read_trial_scores(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


class SpeakerVerificationTrainer(SplitScoringTrainer):
    """A Trainer for `ArmHubertForXVector` on `ClassificationCollator` batches (speaker labels); its splits to
    score are `TrialDataset`s."""

    def pop_bookkeeping(self, inputs: dict[str, Any]) -> None:
        inputs.pop("id", None), inputs.pop("label", None)

    def embed(self, dataloader) -> tuple[dict[str, torch.Tensor], int]:
        """id -> embedding (D,) of every file the loader yields, and how many failed when read."""

        def embed_batch(batch: dict[str, Any]) -> list[tuple[str, torch.Tensor]]:
            with self.autocast_smart_context_manager():
                vectors = self.model(input_values=batch["input_values"],
                                     attention_mask=batch["attention_mask"]).embeddings.float().cpu()
            return list(zip(batch["id"], vectors))

        rows, undecodable = self.score_batches(dataloader, embed_batch)
        return dict(rows), undecodable

    def run_split(self, dataset, name: str, dataloader=None) -> ScoredSplit:
        """Embed the files of `dataset` (a `TrialDataset`), score its trials, write `<name>_trial_scores.tsv`;
        metrics prefixed "<name>_" (see the module docstring)."""
        dataloader = dataloader if dataloader is not None else self.get_test_dataloader(dataset)
        embeddings, undecodable = self.embed(dataloader)
        rows, skipped_trials = [], 0
        for trial in dataset.trials:
            if trial.first not in embeddings or trial.second not in embeddings:
                skipped_trials += 1
                continue
            score = float(self.model.verification_score(embeddings[trial.first], embeddings[trial.second]))
            label = "" if trial.target is None else str(int(trial.target))
            rows.append((trial.first, trial.second, label, score))
        metrics: dict[str, float] = {"trials": len(rows), "trials_skipped": skipped_trials,
                                     **skip_metrics(dataset, undecodable)}
        labelled = [(int(label), score) for _, _, label, score in rows if label]
        if labelled and len({label for label, _ in labelled}) == 2:
            metrics["eer"], metrics["eer_threshold"] = equal_error_rate(*zip(*labelled))
        if self.is_world_process_zero():
            write_trial_scores(Path(self.args.output_dir) / f"{name}_trial_scores.tsv", rows)
        return ScoredSplit(ids=[f"{first} {second}" for first, second, _, _ in rows],
                           references=[label for _, _, label, _ in rows],
                           predictions=[f"{score:.6f}" for *_, score in rows],
                           metrics={f"{name}_{key}": value for key, value in metrics.items()})


def verify(model, first: AudioSource, second: AudioSource) -> float:
    """The trial score (cosine of the speaker embeddings) of two recordings (paths, bytes or audio dicts) under
    a trained `ArmHubertForXVector`, with the input effects its config records; higher = more likely the same
    speaker (compare with the `eer_threshold` of its test results)."""
    effects = InputEffects.from_config(model.config)
    device = next(model.parameters()).device
    model.eval()
    embeddings = []
    for source in (first, second):
        waveform = torch.from_numpy(effects(load_audio(source)))[None].to(device)
        with torch.no_grad():
            embeddings.append(model(input_values=waveform).embeddings[0])
    return float(model.verification_score(*embeddings))
