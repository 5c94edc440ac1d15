"""VoxCeleb1 as SUPERB's speaker verification (ASV) task reads it, in the download layout:

    <root>/dev/wav/<speaker>/<video>/<n>.wav    training: every file, labelled by its speaker folder
    <root>/test/wav/<speaker>/<video>/<n>.wav   test: the files the trial list names
    trial list                                  lines "<1|0> <speaker/video/n.wav> <speaker/video/n.wav>",
                                                paths relative to test/wav (1 = same speaker)

SUPERB scores the official VoxCeleb1-O list (37,720 trials). A malformed trial line or one that names
a missing file stops the run at start-up, naming the file and line. `held_out_trials` draws trials
among training speakers kept out of training: a development set that SUPERB does not have.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .index import Utterance, require_dir

AUDIO_SUFFIXES = (".wav", ".flac")


@dataclass(frozen=True)
class Trial:
    """One verification trial: two utterance ids and whether they share a speaker (None = unknown)."""

    first: str
    second: str
    target: bool | None


def train_folder(root: Path) -> Path:
    return require_dir(Path(root) / "dev" / "wav", "VoxCeleb1 training folder (dev/wav of the dev archive)")


def test_folder(root: Path) -> Path:
    return require_dir(Path(root) / "test" / "wav", "VoxCeleb1 test folder (test/wav of the test archive)")


def utterance_id(path: Path, folder: Path) -> str:
    """"<speaker>/<video>/<n>.wav": the path relative to its wav folder, as trial lists name files."""
    return path.relative_to(folder).as_posix()


def training_utterances(root: Path) -> list[Utterance]:
    """(id, path, speaker) of every audio file under <root>/dev/wav (SUPERB trains on all of them); the
    speaker is the folder two levels above the file."""
    folder = train_folder(root)
    files = sorted(path for path in folder.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES and path.is_file())
    utterances = []
    for path in files:
        relative = path.relative_to(folder)
        if len(relative.parts) != 3:
            raise ValueError(f"{path}: VoxCeleb1 files sit at dev/wav/<speaker>/<video>/<n>.wav; move it there or "
                             "out of the corpus.")
        utterances.append((utterance_id(path, folder), str(path), relative.parts[0]))
    if not utterances:
        raise ValueError(f"{folder} holds no audio files (*.wav): the training split is empty. Point "
                         "--voxceleb1_root at the folder holding dev/wav/<speaker>/<video>/<n>.wav.")
    return utterances


def read_trials(trial_file: Path, folder: Path) -> list[Trial]:
    """The trials of `trial_file`, every file checked to exist under `folder`.

    Raises:
        FileNotFoundError: the list, or a file a line names, is missing (file and line named).
        ValueError: a line is not "<1|0> <path> <path>", or the list has no trial.
    """
    trial_file = Path(trial_file)
    if not trial_file.is_file():
        raise FileNotFoundError(f"Trial list {trial_file} not found; pass VoxCeleb1's trial list (veri_test.txt, "
                                "SUPERB: voxceleb1_test_v2.txt) as --trial_list.")
    trials = []
    for number, line in enumerate(trial_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise ValueError(f"{trial_file} line {number} is {line!r}; expected '<1|0> <speaker/video/n.wav> "
                             "<speaker/video/n.wav>' (1 = same speaker).")
        for relative in parts[1:]:
            if not (folder / relative).is_file():
                raise FileNotFoundError(f"{trial_file} line {number} names {relative}, which is not in {folder}; "
                                        "check --voxceleb1_root and --trial_list.")
        trials.append(Trial(parts[1], parts[2], parts[0] == "1"))
    if not trials:
        raise ValueError(f"{trial_file} holds no trial: the test split is empty.")
    return trials


def trial_utterances(trials: list[Trial], folder: Path) -> list[Utterance]:
    """(id, path, "") of every file the trials name, once each, in order of first mention."""
    ids = dict.fromkeys(name for trial in trials for name in (trial.first, trial.second))
    return [(name, str(folder / name), "") for name in ids]


def held_out_trials(utterances: list[Utterance], speakers: int, trials: int,
                    seed: int) -> tuple[list[Utterance], list[Trial]]:
    """Keep `speakers` training speakers (drawn by `seed`) out of training and draw `trials` trials among
    their utterances, half of them target trials.

    Returns the remaining training utterances and the trials (ids as in `utterances`).
    """
    by_speaker: dict[str, list[str]] = {}
    for utt_id, _, speaker in utterances:
        by_speaker.setdefault(speaker, []).append(utt_id)
    if not 2 <= speakers < len(by_speaker):
        raise ValueError(f"--dev_speakers {speakers}: needs at least 2 held-out speakers and leaves at least one of "
                         f"the {len(by_speaker)} training speakers to train on.")
    rng = random.Random(seed)
    held = sorted(rng.sample(sorted(by_speaker), speakers))
    if all(len(by_speaker[speaker]) < 2 for speaker in held):
        raise ValueError(f"The held-out speakers {held} have one utterance each: no target trial can be drawn.")
    drawn = []
    for number in range(trials):
        if number % 2 == 0:
            speaker = rng.choice([s for s in held if len(by_speaker[s]) >= 2])
            first, second = rng.sample(by_speaker[speaker], 2)
            drawn.append(Trial(first, second, True))
        else:
            one, other = rng.sample(held, 2)
            drawn.append(Trial(rng.choice(by_speaker[one]), rng.choice(by_speaker[other]), False))
    remaining = [utterance for utterance in utterances if utterance[2] not in held]
    return remaining, drawn
