"""Fluent Speech Commands as SUPERB's intent classification (IC) task reads it: ``data/{train,valid,test}_data.csv``;
three slots (action, object, location) whose values are indexed in order of first appearance in the train csv."""

from __future__ import annotations

import csv
from pathlib import Path

from .index import Utterance, require_dir, require_split
from .labels import SLOT_SEPARATOR, LabelSet

FLUENT_COMMANDS_SLOTS = ("action", "object", "location")
FLUENT_COMMANDS_CSV = {"train": "train_data.csv", "validation": "valid_data.csv", "test": "test_data.csv"}


def fluent_commands_label_set(root: Path) -> LabelSet:
    """The three slots, each value indexed in order of first appearance in the train csv (as SUPERB does)."""
    rows = _fluent_commands_rows(root, "train")
    return LabelSet(tuple((slot, tuple(dict.fromkeys(row[slot] for row in rows))) for slot in FLUENT_COMMANDS_SLOTS))


def _fluent_commands_rows(root: Path, split: str) -> list[dict[str, str]]:
    require_split(split, "fluent_commands")
    path = require_dir(root, "Fluent Speech Commands folder") / "data" / FLUENT_COMMANDS_CSV[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --corpus_root must be the fluent_speech_commands_dataset "
                                "folder, which holds data/train_data.csv, valid_data.csv and test_data.csv.")
    # utf-8-sig: a spreadsheet tool saves the csv with a byte-order mark (the csv module reads CRLF line ends).
    with open(path, encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = [column for column in ("path", *FLUENT_COMMANDS_SLOTS) if rows and column not in rows[0]]
    if missing:
        raise ValueError(f"{path} has no column(s) {missing}; its columns are {list(rows[0])}.")
    return rows


def fluent_commands_utterances(root: Path, split: str) -> list[Utterance]:
    """IC utterances of one split; the label is "action|object|location", the id the file stem."""
    return [(Path(row["path"]).stem, str(root / row["path"]),
             SLOT_SEPARATOR.join(row[slot] for slot in FLUENT_COMMANDS_SLOTS))
            for row in _fluent_commands_rows(root, split)]
