"""Scoring speaker diarization as SUPERB does: speaker activities -> RTTM turns -> DER.

- `activity_turns` turns one recording's sigmoid outputs (frames, speakers) into turns, as s3prl's
  `make_rttm.py` does: a speaker is active where its output exceeds the threshold, the decisions are
  median-filtered along time (width 1 = none), and each run of active frames is a turn;
- `write_rttm` writes them (times to 10 ms, speakers named `<recording>_<k>`);
- `diarization_error_rate` scores RTTM turns against the reference with pyannote.metrics: no collar,
  overlapped speech scored, the scored region the extent of reference and hypothesis (what dscore's
  default UEM amounts to), speakers mapped one-to-one to maximise their overlap, errors pooled over the
  recordings. It reproduces dscore's reference test (DER 26.3931 %; tests/test_diarization.py);
- `FrameErrors` counts s3prl's frame-level errors (accuracy and frame DER), which select the
  checkpoint on the dev split.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pyannote.core import Annotation, Segment
from pyannote.metrics.diarization import DiarizationErrorRate
from scipy.signal import medfilt

from .corpora.librimix import Turn


def activity_turns(recording: str, activities: np.ndarray, threshold: float, median: int,
                   frame_seconds: float) -> list[Turn]:
    """Turns of `activities` (frames, speakers) sigmoid outputs, speakers named `<recording>_<k>`."""
    decisions = (activities > threshold).astype(np.float64)
    if median > 1:
        decisions = medfilt(decisions, (median, 1))
    turns = []
    for speaker in range(decisions.shape[1]):
        padded = np.concatenate([[0.0], decisions[:, speaker], [0.0]])
        edges = np.flatnonzero(np.diff(padded))  # run starts at even positions, ends at odd ones
        turns += [Turn(f"{recording}_{speaker}", start * frame_seconds, end * frame_seconds)
                  for start, end in zip(edges[::2], edges[1::2])]
    return turns


def write_rttm(path: Path, turns: Mapping[str, Iterable[Turn]]) -> None:
    """One SPEAKER line per turn, recording after recording (times in seconds, to 10 ms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for recording, recording_turns in turns.items():
            for turn in recording_turns:
                handle.write(f"SPEAKER {recording} 1 {turn.start:.2f} {turn.end - turn.start:.2f} <NA> <NA> "
                             f"{turn.speaker} <NA>\n")


def _annotation(recording: str, turns: Iterable[Turn]) -> Annotation:
    annotation = Annotation(uri=recording)
    for number, turn in enumerate(turns):
        if turn.end > turn.start:
            annotation[Segment(turn.start, turn.end), number] = turn.speaker
    return annotation


def diarization_error_rate(reference: Mapping[str, list[Turn]], hypothesis: Mapping[str, list[Turn]],
                           recordings: Iterable[str]) -> float:
    """DER (a fraction) of `hypothesis` over `recordings`: (missed + false alarm + confused speaker time)
    / reference speaker time, pooled over the recordings (see the module docstring)."""
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    with warnings.catch_warnings():
        # "uem was approximated by the union of reference and hypothesis extents": what we ask for.
        warnings.filterwarnings("ignore", message=".*uem.*approximated", category=UserWarning)
        for recording in recordings:
            metric(_annotation(recording, reference.get(recording, [])),
                   _annotation(recording, hypothesis.get(recording, [])))
    return float(abs(metric))


@dataclass
class FrameErrors:
    """s3prl's frame-level diarization counts (decision = logit > 0, labels in the loss's best speaker order),
    summed over the chunks of a split."""

    correct: int = 0  # (frame, speaker) decisions that equal the label
    decisions: int = 0
    missed: int = 0
    false_alarm: int = 0
    confusion: int = 0
    speech: int = 0  # active (frame, speaker) labels

    def add(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One chunk's `logits` and aligned `labels`, both (frames, speakers)."""
        decided, active = logits > 0, labels > 0.5
        n_ref, n_sys = active.sum(-1), decided.sum(-1)
        n_both = (active & decided).sum(-1)
        self.correct += int((decided == active).sum())
        self.decisions += decided.numel()
        self.missed += int((n_ref - n_sys).clamp(min=0).sum())
        self.false_alarm += int((n_sys - n_ref).clamp(min=0).sum())
        self.confusion += int((torch.minimum(n_ref, n_sys) - n_both).sum())
        self.speech += int(n_ref.sum())

    def metrics(self) -> dict[str, float]:
        """accuracy (over frames and speakers) and frame_der ((missed + false alarm + confusion) / speech)."""
        return {"accuracy": self.correct / max(self.decisions, 1),
                "frame_der": (self.missed + self.false_alarm + self.confusion) / max(self.speech, 1)}
