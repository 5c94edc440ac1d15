"""What every corpus reader shares: the *index* of a split (one row per utterance, no audio decoded)
and the checks on it.

An index is a `datasets.Dataset` with columns ``id``, ``duration`` (seconds, from the file header),
``text`` (transcript, or label as a string) and the audio (``path``, or a hub dataset's audio column).
Readers return it with the ids they left out by reason (`audio.Skipped`); `filter_by_length` then
applies the duration range and `check_not_empty` stops a run whose split has nothing left.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Protocol

import datasets
import numpy as np

from configuration_armhubert import RECEPTIVE_FIELD_SAMPLES

from ..audio import SAMPLING_RATE, SKIP_REASONS, Skipped, header_durations, warn_skipped



class DurationLimits(Protocol):
    """The duration limits a split was filtered with (the scripts' length options), for messages."""

    min_duration_seconds: float
    max_duration_seconds: float | None


logger = logging.getLogger(__name__)

INDEX_FEATURES = datasets.Features({"id": datasets.Value("string"), "path": datasets.Value("string"),
                                    "duration": datasets.Value("float64"), "text": datasets.Value("string")})
# The splits of the classification corpora read in their download layout.
SPLITS = ("train", "validation", "test")

Utterance = tuple[str, str, str]  # (id, audio path, transcript or label)


def column(dataset: datasets.Dataset, name: str) -> list[Any]:
    """All values of one column as a list.

    `dataset[name]` is a lazy `Column` in datasets 5 that decodes row by row;
    slicing a one-column view reads the column in one Arrow call instead.
    """
    return dataset.select_columns([name])[:][name]


def utterance_index(utterances: list[Utterance], num_workers: int | None,
                    where: str) -> tuple[datasets.Dataset, Skipped]:
    """Index rows (id, path, duration, text) of the readable utterances, from file headers, and
    {"unreadable": ids} (named in one warning)."""
    durations = header_durations([path for _, path, _ in utterances], num_workers)
    columns: dict[str, list] = {"id": [], "path": [], "duration": [], "text": []}
    skipped: Skipped = {"unreadable": []}
    for (utt_id, path, text), duration in zip(utterances, durations):
        if duration is None:
            skipped["unreadable"].append(utt_id)
            continue
        for name, value in zip(columns, (utt_id, path, duration, text)):
            columns[name].append(value)
    warn_skipped(skipped["unreadable"], len(utterances), where)
    return datasets.Dataset.from_dict(columns, features=INDEX_FEATURES), skipped


def files_under(folder: Path, wanted: Callable[[str], bool], depth: int | None = None,
                skip_hidden: bool = False) -> list[Path]:
    """The files under `folder` whose names `wanted` accepts, `depth` folders down when given, sorted.
    Linked folders are followed, each real folder read once (a link loop ends); with `skip_hidden`, names
    starting with "." are left out. A folder that cannot be listed (permissions, a failing disk) is named
    in a warning and left out with what it holds, where a glob would skip it silently."""

    def warn(err: OSError) -> None:
        logger.warning("Skipped folder %s: it cannot be listed (%s); the files under it are left out.",
                       err.filename, err.strerror or err)

    def visible(name: str) -> bool:
        return not (skip_hidden and name.startswith("."))

    found, seen = [], {os.path.realpath(folder)}
    for current, folders, names in os.walk(folder, onerror=warn, followlinks=True):
        level = len(Path(current).relative_to(folder).parts)
        if depth is None or level == depth:
            found += [Path(current) / name for name in names if visible(name) and wanted(name)]
        descend = []  # os.walk goes into these only: not below `depth`, each real folder once
        if depth is None or level < depth:
            for name in filter(visible, folders):
                real = os.path.realpath(os.path.join(current, name))
                if real not in seen:
                    seen.add(real)
                    descend.append(name)
        folders[:] = descend
    return sorted(found)


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} {path} does not exist or is not a folder; check --corpus_root "
                                "(the folder of the corpus as downloaded and extracted).")
    return path


def require_split(split: str, corpus: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"--corpus {corpus} has the splits {list(SPLITS)}, not {split!r}; name them with "
                         "--train_splits, --eval_splits and --predict_splits.")


def filter_by_length(index: datasets.Dataset, min_length: int, max_length: int | None,
                     where: str) -> tuple[datasets.Dataset, list[str], int]:
    """Keep utterances with min_length <= length (<= max_length when given), from header durations.

    Returns (kept index, ids shorter than the receptive field, how many others the range dropped).
    Audio shorter than the receptive field is unusable and reported as skipped (named in a
    warning); the rest of the range is the user's choice and only logged as a count.
    """
    lengths = np.rint(np.asarray(column(index, "duration"), dtype=np.float64) * SAMPLING_RATE)
    too_short = lengths < RECEPTIVE_FIELD_SAMPLES
    keep = lengths >= min_length
    if max_length is not None:
        keep &= lengths <= max_length
    too_short_ids: list[str] = []
    if too_short.any():
        ids = column(index, "id")
        too_short_ids = [ids[i] for i in np.flatnonzero(too_short)]
        warn_skipped(too_short_ids, len(index), where, f"shorter than the receptive field "
                     f"({RECEPTIVE_FIELD_SAMPLES} samples, {RECEPTIVE_FIELD_SAMPLES / SAMPLING_RATE} s)")
    out_of_range = int((~keep & ~too_short).sum())
    if out_of_range:
        logger.info(
            "Dropped %d of %d utterances outside the duration range [%d, %s] samples.",
            out_of_range, len(index), min_length, max_length if max_length is not None else "inf",
        )
    if not keep.all():
        index = index.select(np.flatnonzero(keep))
    return index, too_short_ids, out_of_range


def check_not_empty(index: datasets.Dataset, skipped: Skipped, out_of_range: int, what: str, option: str,
                    lengths: DurationLimits, no_rows: str = "it has no rows.") -> None:
    """Stop at start-up, saying why, when a split has no usable utterance left (rather than
    failing in the first batch, or after training at the first evaluation).

    Args:
        what: the split, as the message names it ("training data, LibriSpeech ...").
        option: the option that named the split ("--train_splits").
        lengths: the duration limits `filter_by_length` applied, for the message.
        no_rows: why a split that the reader found empty is empty (the reader knows its layout).
    """
    if len(index):
        return
    reasons = [f"{len(ids)} {SKIP_REASONS[reason]}" for reason, ids in skipped.items() if ids]
    if out_of_range:
        longest = "none" if lengths.max_duration_seconds is None else lengths.max_duration_seconds
        reasons.append(f"{out_of_range} outside the duration limits (--min_duration_seconds "
                       f"{lengths.min_duration_seconds}, --max_duration_seconds {longest})")
    if reasons:
        why = "every utterance was left out: " + "; ".join(reasons) + "."
        fix = ("Repair or remove the files named in the warnings above" if skipped and any(skipped.values())
               else "Widen the duration limits")
    else:
        why = no_rows
        fix = "Check the path and the split names"
    raise ValueError(f"No usable utterance in the {what} ({option}): {why} {fix}, or choose another split.")
