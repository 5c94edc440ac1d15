"""IEMOCAP as SUPERB's emotion recognition (ER) task reads it: labels from
``SessionN/dialog/EmoEvaluation/*.txt``; neu, hap (with exc merged into it), ang, sad; the others
dropped. `--fold N` tests on session N; the other four are shuffled (seed 0) into 80 % train and
20 % validation."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from .index import Utterance, require_dir, require_split

# Four classes in this order; "excited" counts as happy.
IEMOCAP_CLASSES = ("neu", "hap", "ang", "sad")
IEMOCAP_MERGED = {"exc": "hap"}
IEMOCAP_SESSIONS = 5
IEMOCAP_DEV_RATIO = 0.2
IEMOCAP_SPLIT_SEED = 0


def iemocap_utterances(root: Path, split: str, fold: int) -> list[Utterance]:
    """ER utterances of one split for test session `fold` (see the module docstring); ids are utterance names."""
    require_split(split, "iemocap")
    if not 1 <= fold <= IEMOCAP_SESSIONS:
        raise ValueError(f"--fold must be 1 to {IEMOCAP_SESSIONS} (the session held out for testing), got {fold}.")
    sessions = [fold] if split == "test" else [s for s in range(1, IEMOCAP_SESSIONS + 1) if s != fold]
    utterances = []
    for session in sessions:
        folder = require_dir(root / f"Session{session}", "IEMOCAP session folder")
        for labels in sorted((folder / "dialog" / "EmoEvaluation").glob("*.txt")):
            for line in labels.read_text(encoding="utf-8", errors="replace").splitlines():
                if not line.startswith("["):  # only the "[start - end]\tutterance\temotion\t[v, a, d]" lines
                    continue
                fields = [field for field in re.split(r"\t", line) if field]
                name, emotion = fields[1], IEMOCAP_MERGED.get(fields[2], fields[2])
                if emotion in IEMOCAP_CLASSES:
                    dialog = name.rsplit("_", 1)[0]
                    utterances.append((name, str(folder / "sentences" / "wav" / dialog / f"{name}.wav"), emotion))
    if split == "test":
        return utterances
    order = torch.randperm(len(utterances), generator=torch.Generator().manual_seed(IEMOCAP_SPLIT_SEED)).tolist()
    train_size = int((1 - IEMOCAP_DEV_RATIO) * len(utterances))
    chosen = order[:train_size] if split == "train" else order[train_size:]
    return [utterances[i] for i in chosen]
