"""IEMOCAP as SUPERB's emotion recognition (ER) task reads it: labels from
``SessionN/dialog/EmoEvaluation/*.txt``; neu, hap (with exc merged into it), ang, sad; the others
dropped. `--fold N` tests on session N; the other four are shuffled (seed 0) into 80 % train and
20 % validation.

A label line without its utterance and emotion fields is malformed: its utterance is left out,
counted as ``no_targets`` in the split it falls into, and named by file and line in a warning.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..audio import Skipped, warn_skipped
from .index import Utterance, require_dir, require_split

# Four classes in this order; "excited" counts as happy.
IEMOCAP_CLASSES = ("neu", "hap", "ang", "sad")
IEMOCAP_MERGED = {"exc": "hap"}
IEMOCAP_SESSIONS = 5
IEMOCAP_DEV_RATIO = 0.2
IEMOCAP_SPLIT_SEED = 0


def iemocap_utterances(root: Path, split: str, fold: int) -> tuple[list[Utterance], Skipped]:
    """ER utterances of one split for test session `fold` (see the module docstring), and the
    "<label file>:<line>" of the malformed label lines it left out. Ids are utterance names."""
    require_split(split, "iemocap")
    if not 1 <= fold <= IEMOCAP_SESSIONS:
        raise ValueError(f"--fold must be 1 to {IEMOCAP_SESSIONS} (the session held out for testing), got {fold}.")
    sessions = [fold] if split == "test" else [s for s in range(1, IEMOCAP_SESSIONS + 1) if s != fold]
    # An utterance, or the location of a malformed line: it keeps its place in the train/validation
    # shuffle, so that it is counted once, in the split it falls into.
    rows: list[Utterance | str] = []
    for session in sessions:
        folder = require_dir(root / f"Session{session}", "IEMOCAP session folder")
        for labels in sorted(require_dir(folder / "dialog" / "EmoEvaluation", "IEMOCAP label folder").glob("*.txt")):
            lines = labels.read_text(encoding="utf-8", errors="replace").splitlines()
            for number, line in enumerate(lines, 1):
                if not line.startswith("["):  # only the "[start - end]\tutterance\temotion\t[v, a, d]" lines
                    continue
                fields = [field for field in line.split("\t") if field]
                if len(fields) < 3:
                    rows.append(f"{labels.relative_to(root)}:{number}")
                    continue
                name, emotion = fields[1], IEMOCAP_MERGED.get(fields[2], fields[2])
                if emotion in IEMOCAP_CLASSES:
                    dialog = name.rsplit("_", 1)[0]
                    rows.append((name, str(folder / "sentences" / "wav" / dialog / f"{name}.wav"), emotion))
    if split != "test":
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(IEMOCAP_SPLIT_SEED)).tolist()
        train_size = int((1 - IEMOCAP_DEV_RATIO) * len(rows))
        rows = [rows[i] for i in (order[:train_size] if split == "train" else order[train_size:])]
    malformed = [row for row in rows if isinstance(row, str)]
    warn_skipped(malformed, len(rows), f"IEMOCAP {root} split {split!r} (--fold {fold})",
                 "whose EmoEvaluation line (file:line below) lacks the utterance or emotion field (expected "
                 "'[start - end]<TAB>utterance<TAB>emotion<TAB>[V, A, D]')")
    return [row for row in rows if not isinstance(row, str)], {"no_targets": malformed}
