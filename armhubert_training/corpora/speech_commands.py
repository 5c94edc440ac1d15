"""Speech Commands v0.01 as SUPERB's keyword spotting (KS) task reads it, as s3prl does.

Train and validation come from the training archive, split by the hash of the speaker part of each
file name (< 10 % validation, 10-20 % left out: the test portion of the list-less split, the test set
being its own archive); the 10 words keep their label, the other 20 become ``_unknown_``; each
background-noise file is a ``_silence_`` item whose audio is a random 1 s crop, drawn anew at each
read. Train and validation are sampled class-balanced. The test set (`--speech_commands_test_root`)
is labelled by its 12 folders.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..audio import Skipped
from .folder import folder_utterances
from .index import Utterance, require_dir, require_split

# 10 words, everything else, and background noise, in this order.
SPEECH_COMMANDS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SPEECH_COMMANDS_CLASSES = (*SPEECH_COMMANDS_WORDS, "_unknown_", "_silence_")
SPEECH_COMMANDS_NOISE = "_background_noise_"
SILENCE_SECONDS = 1.0
# The list-less split of Speech Commands (TensorFlow's `which_set`): hash modulus and the two cut-offs in %.
_MAX_UTTERANCES_PER_CLASS = 2**27 - 1
_VALIDATION_PERCENT, _TEST_PERCENT = 10.0, 10.0


def speech_commands_hash_split(file_name: str) -> str:
    """'train', 'validation' or 'test' of a Speech Commands file from the hash of its speaker part
    (the part before "_nohash_"), so that one speaker's recordings all fall in one split."""
    speaker = re.sub(r"_nohash_.*$", "", file_name)
    hashed = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percent = (hashed % (_MAX_UTTERANCES_PER_CLASS + 1)) * (100.0 / _MAX_UTTERANCES_PER_CLASS)
    if percent < _VALIDATION_PERCENT:
        return "validation"
    return "test" if percent < _VALIDATION_PERCENT + _TEST_PERCENT else "train"


def speech_commands_utterances(root: Path, split: str, test_root: Path | None) -> tuple[list[Utterance], Skipped]:
    """KS utterances of one split (see the module docstring), and those left out by reason (test:
    audio files outside the 12 class folders); ids are "<folder>/<file stem>"."""
    require_split(split, "speech_commands")
    if split == "test":
        if test_root is None:
            raise ValueError("The Speech Commands test set is its own archive (speech_commands_test_set_v0.01): "
                             "extract it and pass its folder as --speech_commands_test_root.")
        return folder_utterances(require_dir(test_root, "Speech Commands test folder"))
    require_dir(root, "Speech Commands folder")
    utterances = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name != SPEECH_COMMANDS_NOISE):
        label = folder.name if folder.name in SPEECH_COMMANDS_WORDS else "_unknown_"
        for path in sorted(folder.glob("*.wav")):
            if speech_commands_hash_split(path.name) == split:
                utterances.append((f"{folder.name}/{path.stem}", str(path), label))
    # Every background-noise recording is a silence item of both train and validation (cropped when read).
    for path in sorted((root / SPEECH_COMMANDS_NOISE).glob("*.wav")):
        utterances.append((f"{SPEECH_COMMANDS_NOISE}/{path.stem}", str(path), "_silence_"))
    return utterances, {}
