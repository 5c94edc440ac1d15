"""Any dataset `datasets.load_dataset` can open (a hub name or a local path), audio read undecoded."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import partial
from typing import Any

import datasets
import numpy as np

from ..audio import AudioError, Skipped, header_duration, warn_skipped
from .index import column

# Streaming datasets cannot be shuffled globally; examples are drawn at random
# from a buffer of this many upcoming examples instead.
STREAMING_SHUFFLE_BUFFER = 1_000


def _split_names(split: str) -> list[str]:
    """Plain split names in a `datasets` split expression ("train[:10%]+test" -> ["train", "test"])."""
    return [re.sub(r"\[.*\]$", "", part.strip()) for part in split.split("+")]


def hub_dataset(
    name: str,
    config: str | None = None,
    split: str = "train",
    audio_column: str = "audio",
    text_column: str | None = "text",
    streaming: bool = False,
    **load_kwargs: Any,
) -> datasets.Dataset | datasets.IterableDataset:
    """Open one split of a `datasets` dataset (hub name or local path) without decoding audio.

    An `Audio` column is cast to ``Audio(decode=False)``, so rows carry
    ``{"path", "bytes"}`` dicts that `load_audio` decodes: `datasets` would
    otherwise decode with torchcodec/ffmpeg. Audio columns holding plain paths
    (absolute, or relative to the working directory) or bytes are left as
    they are: `load_audio` reads those too.

    Args:
        name: hub dataset name or local path, as for `datasets.load_dataset`.
        config: dataset configuration name, if any.
        split: split name or expression ("train", "train[:100]", "train+validation").
        audio_column: column holding the audio.
        text_column: column holding the transcript; None or "" for audio-only data.
        streaming: return an `IterableDataset` that reads lazily.
        **load_kwargs: forwarded to `datasets.load_dataset` (e.g. data_files, cache_dir, revision).

    Raises:
        ValueError: the split or a column does not exist (the message lists what does).
        RuntimeError: `datasets` needs torchcodec to build this dataset (folder-based
            audio datasets such as "audiofolder") and it is not installed.
    """
    try:
        dataset = datasets.load_dataset(name, config, split=split, streaming=streaming, **load_kwargs)
    except ValueError as err:
        try:
            available = datasets.get_dataset_split_names(name, config, **load_kwargs)
        except Exception:  # cannot list splits: the original error is the best we have
            raise err from None
        missing = [s for s in _split_names(split) if s not in available]
        if missing:
            raise ValueError(
                f"dataset {name!r} (config {config!r}) has no split {missing[0]!r}; available splits: {available}. "
                "Name them with --train_splits, --eval_splits or --predict_splits."
            ) from err
        raise
    except datasets.exceptions.DatasetGenerationError as err:
        if isinstance(err.__cause__, ImportError) and "torchcodec" in str(err.__cause__):
            raise RuntimeError(
                f"datasets cannot build {name!r} without torchcodec (it re-encodes audio of folder-based "
                "datasets such as 'audiofolder'). Store the audio in parquet/arrow files, or as a CSV/JSON "
                "column of file paths, or install torchcodec."
            ) from err
        raise

    columns = dataset.column_names
    if columns is None:  # a streaming dataset whose features are only known from its rows
        columns = list(next(iter(dataset)).keys())
    for role, column_name in (("audio", audio_column), ("text", text_column)):
        if column_name and column_name not in columns:
            raise ValueError(
                f"dataset {name!r} split {split!r} has no {role} column {column_name!r}; its columns are {columns}. "
                f"Set --{role}_column to one of them."
            )
    if dataset.features is not None and isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    return dataset


def row_id_and_text(row: Mapping[str, Any], position: int, audio_column: str,
                    text_column: str | None) -> tuple[str, str]:
    """Utterance id and transcript of a hub row.

    The id is the row's "id" column, else its audio file name, else "#<position>".
    """
    audio = row[audio_column]
    if row.get("id") is not None:
        utt_id = str(row["id"])
    elif isinstance(audio, Mapping) and audio.get("path"):
        utt_id = os.path.basename(audio["path"])
    elif isinstance(audio, str):
        utt_id = os.path.basename(audio)
    else:
        utt_id = f"#{position}"
    text = row[text_column] if text_column else None
    return utt_id, text or ""


def _hub_row_metadata(row: dict[str, Any], position: int, audio_column: str, text_column: str | None) -> dict[str, Any]:
    """`datasets.map` function: id, text and header duration (-1 when unreadable) of one hub row."""
    utt_id, text = row_id_and_text(row, position, audio_column, text_column)
    try:
        duration = header_duration(row[audio_column])
    except AudioError:
        duration = -1.0
    return {"id": utt_id, "text": text, "duration": duration}


def hub_index(
    dataset: datasets.Dataset, audio_column: str, text_column: str | None, num_workers: int | None
) -> tuple[datasets.Dataset, Skipped]:
    """Columns id, text, duration (seconds) and `audio_column` for a map-style hub dataset, and
    {"unreadable": ids}.

    Unreadable or empty rows are dropped with one warning, as in `librispeech_dataset`.
    """
    # Only the small metadata columns are written by `map` (and cached by
    # `datasets`); the audio column is re-attached without being copied.
    metadata = dataset.map(
        partial(_hub_row_metadata, audio_column=audio_column, text_column=text_column),
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=num_workers,
        desc="Reading audio headers",
    )
    index = datasets.concatenate_datasets([dataset.select_columns([audio_column]), metadata], axis=1)
    readable = np.asarray(column(metadata, "duration")) >= 0
    skipped: Skipped = {"unreadable": []}
    if not readable.all():
        ids = column(metadata, "id")
        skipped["unreadable"] = [ids[i] for i in np.flatnonzero(~readable)]
        warn_skipped(skipped["unreadable"], len(index), "the dataset")
        index = index.select(np.flatnonzero(readable))
    return index, skipped


def hub_labelled_index(name: str, config: str | None, split: str, audio_column: str, label_column: str,
                       num_workers: int | None) -> tuple[datasets.Dataset, Skipped, list[str] | None]:
    """A hub index whose text is the label: (index, skipped, the ClassLabel names of the label column or None)."""
    dataset = hub_dataset(name, config, split, audio_column, text_column=None)
    if label_column not in dataset.column_names:
        raise ValueError(f"dataset {name!r} split {split!r} has no label column {label_column!r}; its "
                         f"columns are {dataset.column_names}. Set --label_column to one of them.")
    feature = dataset.features[label_column]
    names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    values = column(dataset, label_column)
    labels = [names[v] if names is not None and v is not None and v >= 0 else ("" if v is None else str(v))
              for v in values]
    # The row ids ("id" column, else the file names) name the utterances in the predictions.
    kept = [audio_column] + (["id"] if "id" in dataset.column_names else [])
    dataset = dataset.select_columns(kept).add_column("_label", labels)
    index, skipped = hub_index(dataset, audio_column, "_label", num_workers)
    return index, skipped, names
