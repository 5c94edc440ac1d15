"""VoxCeleb1 as SUPERB's speaker identification (SID) task reads it: the identification split file
(1 = train, 2 = validation, 3 = test) over ``<root>/*/wav/<speaker>/<video>/<n>.wav``; the label is the
speaker id. (Training crops utterances longer than 8 s to a random 8 s window: the recipe's
--max_duration_seconds.)"""

from __future__ import annotations

from pathlib import Path

from .index import Utterance, require_dir, require_split
from .labels import LabelSet

VOXCELEB1_CODES = {"train": "1", "validation": "2", "test": "3"}


def _voxceleb1_split_lines(split_file: Path) -> list[tuple[str, str]]:
    if not split_file.is_file():
        raise FileNotFoundError(f"VoxCeleb1 split file {split_file} not found; pass the identification split "
                                "(iden_split.txt, lines '<1|2|3> <speaker>/<video>/<n>.wav') as "
                                "--voxceleb1_split_file.")
    lines = []
    for number, line in enumerate(split_file.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            parts = line.split()
            if len(parts) != 2 or parts[0] not in VOXCELEB1_CODES.values():
                raise ValueError(f"{split_file} line {number} is {line!r}; "
                                 "expected '<1|2|3> <speaker>/<video>/<n>.wav'.")
            lines.append((parts[0], parts[1]))
    return lines


def voxceleb1_label_set(split_file: Path) -> LabelSet:
    """The speakers of the split file, sorted (id10001 ... id11251: SUPERB's class order)."""
    return LabelSet.single(sorted({path.split("/")[0] for _, path in _voxceleb1_split_lines(split_file)}))


def voxceleb1_utterances(root: Path, split: str, split_file: Path) -> list[Utterance]:
    """SID utterances of one split: every split-file line with its code, found under <root>/*/wav/
    (the dev and test archives extracted side by side). The id is "<speaker>/<video>/<n>"."""
    require_split(split, "voxceleb1")
    wav_folders = sorted(require_dir(root, "VoxCeleb1 folder").glob("*/wav")) or [root / "wav"]
    utterances = []
    for code, relative in _voxceleb1_split_lines(split_file):
        if code != VOXCELEB1_CODES[split]:
            continue
        found = next((folder / relative for folder in wav_folders if (folder / relative).is_file()),
                     wav_folders[0] / relative)  # a missing file is skipped as unreadable
        utterances.append((relative.removesuffix(".wav"), str(found), relative.split("/")[0]))
    return utterances
