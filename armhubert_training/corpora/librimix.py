"""Libri2Mix as SUPERB's speaker diarization (SD) task reads it: the Kaldi-style folders that s3prl's
LibriMix preparation (`scripts/prepare_diarization.py`) writes, one per split (train, dev, test):

    wav.scp    <recording> <wav path>                      (16 kHz; other rates are resampled)
    segments   <segment> <recording> <start s> <end s>     one speech segment of one speaker
    utt2spk    <segment> <speaker>
    reco2dur   <recording> <duration s>
    rttm       SPEAKER <recording> 1 <start s> <duration s> <NA> <NA> <speaker> <NA>   (the DER reference)

A recording's speakers are its segments' speakers, sorted; its label frames are `frame_shift`
samples long (the student's conv stride: 20 ms), `int(duration * 16000 / frame_shift)` of them, and
a segment is active on frames [rint(start * 16000 / frame_shift), rint(end * 16000 / frame_shift)).
Recordings are cut into chunks of `chunk_frames` label frames (the last one shorter), as s3prl does.

A malformed line, or a wav.scp line naming a missing file, stops the run at start-up with the file
and line; so does a recording with more speakers than the model has outputs. An unreadable audio file
is left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import SAMPLING_RATE, Skipped, header_durations, warn_skipped
from .index import require_dir

LIBRIMIX_SPLITS = ("train", "dev", "test")
KALDI_FILES = ("wav.scp", "segments", "utt2spk", "reco2dur", "rttm")


@dataclass
class Turn:
    """One speaker speaking, in seconds."""

    speaker: str
    start: float
    end: float


@dataclass
class Recording:
    """One mixture: its audio, length in label frames, speakers (sorted) and their turns."""

    id: str
    path: str
    frames: int
    speakers: list[str]
    turns: list[Turn] = field(default_factory=list)

    def labels(self, frame_shift: int, start: int, end: int, num_speakers: int) -> np.ndarray:
        """(end - start, num_speakers) float32 0/1 speaker activities of label frames [start, end)."""
        activity = np.zeros((end - start, num_speakers), dtype=np.float32)
        for turn in self.turns:
            first = int(np.rint(turn.start * SAMPLING_RATE / frame_shift))
            last = int(np.rint(turn.end * SAMPLING_RATE / frame_shift))
            first, last = max(first, start), min(last, end)
            if first < last:
                activity[first - start:last - start, self.speakers.index(turn.speaker)] = 1.0
        return activity


def _fields(path: Path, count: int, form: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-empty line of a Kaldi-style file of `count` fields."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a LibriMix split folder holds {', '.join(KALDI_FILES)} (as "
                                "s3prl's LibriMix scripts/prepare_diarization.py writes them).")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != count:
            raise ValueError(f"{path} line {number} is {line!r}; expected {form!r}.")
        rows.append((number, parts))
    return rows


def _seconds(path: Path, number: int, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"{path} line {number}: {text!r} is not a time in seconds (a number >= 0).")
    return value


def read_rttm(path: Path) -> dict[str, list[Turn]]:
    """recording -> its turns, from an RTTM file of SPEAKER lines."""
    if not path.is_file():
        raise FileNotFoundError(f"RTTM file {path} not found.")
    turns: dict[str, list[Turn]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] != "SPEAKER" or len(parts) < 8:
            raise ValueError(f"{path} line {number} is {line!r}; expected 'SPEAKER <recording> <channel> <start s> "
                             "<duration s> <NA> <NA> <speaker> <NA>'.")
        start, duration = _seconds(path, number, parts[3]), _seconds(path, number, parts[4])
        turns.setdefault(parts[1], []).append(Turn(parts[7], start, start + duration))
    return turns


def librimix_recordings(root: Path, split: str, frame_shift: int, num_speakers: int,
                        num_workers: int | None = None) -> tuple[list[Recording], Skipped]:
    """The readable recordings of one split folder `root`/`split`, and {"unreadable": ids} (named in a
    warning). Every file of the folder is checked first (see the module docstring)."""
    if split not in LIBRIMIX_SPLITS:
        raise ValueError(f"LibriMix has the splits {list(LIBRIMIX_SPLITS)} (s3prl's data/train, dev, test), not "
                         f"{split!r}; name them with --train_splits, --eval_splits and --predict_splits.")
    folder = require_dir(root / split, f"LibriMix split {split!r}: folder")
    wav_scp = folder / "wav.scp"
    paths: dict[str, str] = {}
    for number, (recording, wav) in _fields(wav_scp, 2, "<recording> <wav path>"):
        if not Path(wav).is_file():
            raise FileNotFoundError(f"{wav_scp} line {number}: {wav} does not exist; regenerate the mixtures or fix "
                                    "the path (wav.scp holds absolute paths).")
        paths[recording] = wav
    durations = {recording: _seconds(folder / "reco2dur", number, duration)
                 for number, (recording, duration) in _fields(folder / "reco2dur", 2, "<recording> <duration s>")}
    speakers = {segment: speaker for _, (segment, speaker) in _fields(folder / "utt2spk", 2, "<segment> <speaker>")}
    turns: dict[str, list[Turn]] = {recording: [] for recording in paths}
    segments = folder / "segments"
    for number, (segment, recording, start, end) in _fields(segments, 4, "<segment> <recording> <start s> <end s>"):
        start_seconds, end_seconds = _seconds(segments, number, start), _seconds(segments, number, end)
        if recording not in paths or segment not in speakers:
            missing = "wav.scp" if recording not in paths else "utt2spk"
            raise ValueError(f"{segments} line {number}: {segment if missing == 'utt2spk' else recording} is not in "
                             f"{missing}; the split folder's files do not belong together.")
        turns[recording].append(Turn(speakers[segment], start_seconds, end_seconds))
    read_rttm(folder / "rttm")  # the DER reference: malformed lines stop the run now, not after training
    recordings = []
    for recording, wav in paths.items():
        if recording not in durations:
            raise ValueError(f"{folder / 'reco2dur'} has no line for {recording} (in {wav_scp}).")
        names = sorted({turn.speaker for turn in turns[recording]})
        if len(names) > num_speakers:
            raise ValueError(f"Recording {recording} of {folder} has {len(names)} speakers ({', '.join(names)}) "
                             f"but the model has {num_speakers} outputs; train a head with --num_speakers "
                             f"{len(names)} or leave the recording out.")
        frames = int(durations[recording] * SAMPLING_RATE / frame_shift)
        recordings.append(Recording(recording, wav, frames, names, turns[recording]))
    readable = header_durations([r.path for r in recordings], num_workers)
    skipped: Skipped = {"unreadable": [r.id for r, seconds in zip(recordings, readable) if seconds is None]}
    warn_skipped(skipped["unreadable"], len(recordings), f"LibriMix {split}")
    return [r for r, seconds in zip(recordings, readable) if seconds is not None], skipped


def chunk_bounds(frames: int, chunk_frames: int) -> list[tuple[int, int]]:
    """[start, end) label frames of a recording's chunks: whole chunks, then the rest (s3prl's chunking)."""
    return [(start, min(start + chunk_frames, frames)) for start in range(0, frames, chunk_frames)]
