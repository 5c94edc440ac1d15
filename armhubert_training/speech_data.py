"""Speech data: turn a corpus into decoded 16 kHz mono training examples.

Both training scripts (``run_distill.py`` and ``run_asr_ctc.py``) read their audio
through this module, so that distillation and CTC fine-tuning see exactly the
same waveforms. The pipeline, top to bottom:

1. ``load_audio`` decodes one file / byte string / ``datasets`` audio dict into a
   float32 mono waveform at 16 kHz, raising ``AudioError`` for anything unusable.
2. ``librispeech_dataset`` (a local LibriSpeech folder), ``snips_dataset`` (a
   local Audio SNIPS folder) or ``hub_dataset`` (anything ``datasets.load_dataset``
   can open) produces an *index*: one row per utterance, audio not decoded.
3. ``build_dataset`` filters the index by duration (from file headers only) and
   wraps it in a torch dataset whose items are decoded on access:
   ``{"input_values": np.float32 (samples,), "text": str, "id": str}``, or
   ``None`` when the audio of that item cannot be decoded. It refuses a split
   left with no usable utterance, and records on the dataset (`skipped`) which
   utterances it left out and why.
4. ``AudioCollator`` pads items into a batch and counts the ``None`` ones.
5. ``skip_metrics`` turns both counts into the ``skipped_files*`` metrics.

Waveforms are returned as decoded, without mean/variance normalisation: the
method feeds raw waveforms to both the teacher and the student.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, Protocol, Union

import datasets
import librosa
import numpy as np
import soundfile as sf
import torch
from transformers import Wav2Vec2FeatureExtractor

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16_000
# The students' (and teachers') convolutional front-end has a receptive field
# of 400 samples (25 ms): shorter audio produces zero frames and breaks the model.
RECEPTIVE_FIELD_SAMPLES = 400
# Streaming datasets cannot be shuffled globally; examples are drawn at random
# from a buffer of this many upcoming examples instead.
STREAMING_SHUFFLE_BUFFER = 1_000
# How many offending file names a warning lists before it only gives the count.
_NAMES_IN_WARNINGS = 5

# Why a file was left out -> what the `skipped_files_<reason>` metric counts. The total of all
# reasons is `skipped_files`.
SKIP_REASONS: dict[str, str] = {
    "unreadable": "missing, empty or not audio when the corpus was indexed",
    "undecodable": "the header was readable but decoding failed: cut short, NaN/inf samples, or a length outside "
                   "the duration range (with --streaming, every row that fails when read)",
    "too_short": f"shorter than the receptive field ({RECEPTIVE_FIELD_SAMPLES} samples)",
    "transcript_unreadable": "in a LibriSpeech chapter whose transcript (*.trans.txt) cannot be read",
    "no_targets": "no usable transcript: none in the corpus' transcript file, or one that cannot be turned into "
                  "training targets (a word missing from the pronunciation lexicon, a slot tag outside slots.txt)",
}
# reason -> utterance ids left out for that reason, before any audio was decoded.
Skipped = dict[str, list[str]]

# A file path, the encoded bytes of a file, or a `datasets` audio dict:
# {"path": ..., "bytes": ...} (undecoded) or {"array": ..., "sampling_rate": ...}.
AudioSource = Union[str, os.PathLike, bytes, bytearray, Mapping[str, Any]]


def raw_waveform_feature_extractor() -> Wav2Vec2FeatureExtractor:
    """What students (and HuBERT/WavLM teachers) take: 16 kHz mono waveforms, not normalised,
    padded with zeros, with an attention mask."""
    return Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLING_RATE, padding_value=0.0,
                                    do_normalize=False, return_attention_mask=True)


_PADDER = raw_waveform_feature_extractor()


class AudioError(ValueError):
    """An audio source cannot be used: unreadable, empty, or non-finite samples."""


# --------------------------------------------------------------------------- #
# Decoding one source
# --------------------------------------------------------------------------- #


def _describe(source: AudioSource) -> str:
    """A short human-readable name for `source`, for error messages."""
    if isinstance(source, Mapping):
        if source.get("path"):
            return str(source["path"])
        return "<in-memory array>" if source.get("array") is not None else "<audio bytes>"
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes of audio>"
    return os.fspath(source) if isinstance(source, (str, os.PathLike)) else f"<{type(source).__name__}>"


def _unwrap(source: AudioSource, name: str) -> str | bytes | Mapping[str, Any]:
    """Reduce `source` to an existing file path, encoded bytes, or an {"array", "sampling_rate"} dict."""
    if isinstance(source, Mapping):
        if source.get("array") is not None:
            if source.get("sampling_rate") is None:
                raise AudioError(f"{name}: audio dict has an 'array' but no 'sampling_rate'.")
            return source
        # Prefer the bytes: in hub datasets "path" is often only the file's name
        # inside an archive and does not exist on this machine.
        if source.get("bytes") is not None:
            return bytes(source["bytes"])
        if source.get("path") is None:
            raise AudioError(f"{name}: audio dict has neither 'array', 'bytes' nor 'path' (keys: {sorted(source)}).")
        source = source["path"]
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.isfile(path):
            raise AudioError(f"{path}: no such audio file; check the path or re-create the dataset index.")
        return path
    raise TypeError(f"cannot read audio from a {type(source).__name__}; expected a path, bytes or an audio dict")


def _unreadable(name: str, err: Exception) -> AudioError:
    return AudioError(
        f"{name}: cannot decode audio ({err}). The file is corrupt or in a format that neither "
        "libsndfile nor librosa can read; re-encode it as FLAC or WAV, or remove it from the corpus."
    )


def _decode(source: AudioSource) -> tuple[np.ndarray, int]:
    """Decode `source` -> (samples (channels, frames) float32, native sampling rate)."""
    name = _describe(source)
    unwrapped = _unwrap(source, name)
    if isinstance(unwrapped, Mapping):
        # `datasets` stores decoded audio as (samples,) or (channels, samples).
        array = np.asarray(unwrapped["array"], dtype=np.float32)
        if array.ndim not in (1, 2):
            raise AudioError(
                f"{name}: audio array has shape {array.shape}; expected (samples,) or (channels, samples)."
            )
        return np.atleast_2d(array), int(unwrapped["sampling_rate"])
    if isinstance(unwrapped, bytes):
        try:
            data, rate = sf.read(io.BytesIO(unwrapped), dtype="float32", always_2d=True)
        except sf.SoundFileError as err:
            raise _unreadable(name, err) from err
        return data.T, rate
    try:
        data, rate = sf.read(unwrapped, dtype="float32", always_2d=True)
        return data.T, rate
    except sf.SoundFileError as sf_err:
        # librosa can still read some formats libsndfile cannot (through
        # audioread, when a backend is installed); its deprecation warning about
        # that fallback is noise here.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                data, rate = librosa.load(unwrapped, sr=None, mono=False, dtype=np.float32)
        except Exception as err:  # any decoder failure means the same thing: unreadable
            raise _unreadable(name, sf_err) from err
        return np.atleast_2d(data), int(rate)


def load_audio(source: AudioSource, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Decode `source` into a mono waveform at `sampling_rate`.

    Args:
        source: a file path, the encoded bytes of an audio file, or a `datasets`
            audio dict ({"path", "bytes"} or {"array", "sampling_rate"}; arrays
            are (samples,) or (channels, samples)).
        sampling_rate: target rate in Hz; other rates are resampled with librosa.

    Returns:
        float32 array of shape (samples,): the mean over channels, at `sampling_rate`.

    Raises:
        AudioError: the source cannot be decoded, has no samples, or contains NaN/inf.
    """
    name = _describe(source)
    samples, native_rate = _decode(source)  # (channels, frames)
    if samples.size == 0:
        raise AudioError(f"{name}: the audio is empty (0 samples); remove it from the corpus.")
    if not np.isfinite(samples).all():
        raise AudioError(f"{name}: the audio contains NaN or infinite samples; re-export or remove it.")
    mono = samples.mean(axis=0)
    if native_rate != sampling_rate:
        mono = librosa.resample(mono, orig_sr=native_rate, target_sr=sampling_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _header_duration(source: AudioSource) -> float:
    """Duration of `source` in seconds, read from the file header (no decoding).

    Raises AudioError when the header cannot be read or announces 0 frames.
    """
    name = _describe(source)
    unwrapped = _unwrap(source, name)
    if isinstance(unwrapped, Mapping):
        frames, rate = np.shape(unwrapped["array"])[-1], unwrapped["sampling_rate"]
    else:
        try:
            info = sf.info(io.BytesIO(unwrapped) if isinstance(unwrapped, bytes) else unwrapped)
            frames, rate = info.frames, info.samplerate
        except sf.SoundFileError as sf_err:
            if isinstance(unwrapped, bytes):
                raise _unreadable(name, sf_err) from sf_err
            try:  # the same librosa fallback as `_decode`
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return librosa.get_duration(path=unwrapped)
            except Exception as err:
                raise _unreadable(name, sf_err) from err
    if frames <= 0:
        raise AudioError(f"{name}: the audio is empty (0 samples); remove it from the corpus.")
    return frames / rate


def _column(dataset: datasets.Dataset, name: str) -> list[Any]:
    """All values of one column as a list.

    `dataset[name]` is a lazy `Column` in datasets 5 that decodes row by row;
    slicing a one-column view reads the column in one Arrow call instead.
    """
    return dataset.select_columns([name])[:][name]


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:_NAMES_IN_WARNINGS]) + (", ..." if len(names) > _NAMES_IN_WARNINGS else "")


def _warn_skipped(skipped: Sequence[str], total: int, where: str,
                  why: str = "that are unreadable or empty") -> None:
    if skipped:
        logger.warning("Skipped %d of %d audio files in %s %s: %s", len(skipped), total, where, why, _shown(skipped))


def skip_metrics(dataset: Any, undecodable: int = 0) -> dict[str, int]:
    """``skipped_files`` (the total) and ``skipped_files_<reason>`` for each of `SKIP_REASONS`.

    Args:
        dataset: a dataset from `build_dataset`; its `skipped` utterances (left out before
            decoding) are counted. Other datasets count nothing here.
        undecodable: items that came out None when read (the collators' ``num_skipped``).
    """
    counts = {reason: len(getattr(dataset, "skipped", {}).get(reason, ())) for reason in SKIP_REASONS}
    counts["undecodable"] += int(undecodable)
    return {"skipped_files": sum(counts.values()), **{f"skipped_files_{r}": n for r, n in counts.items()}}


# --------------------------------------------------------------------------- #
# Indexing a corpus (no audio decoded)
# --------------------------------------------------------------------------- #

_LIBRISPEECH_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "path": datasets.Value("string"),
        "duration": datasets.Value("float64"),
        "text": datasets.Value("string"),
        "speaker_id": datasets.Value("int64"),
    }
)


def _librispeech_folder(root: Path) -> Path:
    if (root / "LibriSpeech").is_dir():
        return root / "LibriSpeech"
    if root.is_dir():
        return root
    raise FileNotFoundError(
        f"LibriSpeech root {root} does not exist; pass the folder that contains LibriSpeech/ (or LibriSpeech/ itself)."
    )


def _try_duration(path: str) -> float | None:
    try:
        return _header_duration(path)
    except AudioError:
        return None


def header_durations(paths: list[str], num_workers: int | None) -> list[float | None]:
    """Each file's duration in seconds from its header (None = unreadable), read by `num_workers` threads."""
    if num_workers and num_workers > 1:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            return list(pool.map(_try_duration, paths))
    return [_try_duration(path) for path in paths]


def librispeech_dataset(
    root: str | os.PathLike, splits: Sequence[str], num_workers: int | None = None
) -> datasets.Dataset:
    """Index a local LibriSpeech folder in its original layout.

    Expects ``<root>/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
    next to ``<speaker>-<chapter>.trans.txt`` (one "ID TRANSCRIPT" line per
    utterance); `root` may also be the ``LibriSpeech`` folder itself. Only file
    headers are read. Utterances whose file is missing, unreadable or empty are
    skipped and reported in one warning; a chapter whose transcript cannot be
    read (e.g. not UTF-8) is skipped with a warning naming the transcript.

    Args:
        root: folder containing ``LibriSpeech/``, or ``LibriSpeech/`` itself.
        splits: split folder names, e.g. ["train-clean-100", "train-clean-360"].
        num_workers: threads reading headers (helps on network file systems).

    Returns:
        A `datasets.Dataset` with one row per utterance, in split / speaker /
        chapter / utterance order, and columns ``id`` (str), ``path`` (str),
        ``duration`` (float, seconds), ``text`` (str), ``speaker_id`` (int).

    Raises:
        FileNotFoundError: `root` or one of the `splits` does not exist.
    """
    return _librispeech_index(root, splits, num_workers)[0]


def _librispeech_where(root: str | os.PathLike, splits: Sequence[str]) -> str:
    return f"{_librispeech_folder(Path(root))} {list(splits)}"


def _librispeech_index(
    root: str | os.PathLike, splits: Sequence[str], num_workers: int | None = None
) -> tuple[datasets.Dataset, Skipped]:
    """`librispeech_dataset`, plus the ids it left out: {"unreadable": [...], "transcript_unreadable": [...]}."""
    if not splits:
        raise ValueError("no LibriSpeech splits given")
    corpus = _librispeech_folder(Path(root))
    utterances: list[tuple[str, str, str]] = []  # (id, path, text)
    skipped: Skipped = {"unreadable": [], "transcript_unreadable": []}
    for split in splits:
        split_dir = corpus / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in corpus.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"LibriSpeech split {split!r} not found: {split_dir} does not exist. "
                f"Splits found in {corpus}: {found or 'none'}."
            )
        for transcript in sorted(split_dir.glob("*/*/*.trans.txt")):
            try:
                lines = transcript.read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError) as err:
                # Like an unreadable audio file: the chapter is left out, the run goes on.
                lost = sorted(path.stem for path in transcript.parent.glob("*.flac"))
                skipped["transcript_unreadable"].extend(lost)
                logger.warning(
                    "Skipped chapter %s (%d audio files): its transcript %s cannot be read (%s). "
                    "Re-save it as UTF-8 text to use these utterances.",
                    transcript.parent, len(lost), transcript, err,
                )
                continue
            for line in lines:
                if line.strip():
                    utt_id, _, text = line.strip().partition(" ")
                    utterances.append((utt_id, str(transcript.parent / f"{utt_id}.flac"), text))

    durations = header_durations([path for _, path, _ in utterances], num_workers)

    columns: dict[str, list] = {name: [] for name in _LIBRISPEECH_FEATURES}
    unreadable_files = []
    for (utt_id, path, text), duration in zip(utterances, durations):
        if duration is None:
            unreadable_files.append(Path(path).name)
            skipped["unreadable"].append(utt_id)
            continue
        columns["id"].append(utt_id)
        columns["path"].append(path)
        columns["duration"].append(duration)
        columns["text"].append(text)
        columns["speaker_id"].append(int(utt_id.split("-")[0]))
    _warn_skipped(unreadable_files, len(utterances), f"{corpus} {list(splits)}")
    return datasets.Dataset.from_dict(columns, features=_LIBRISPEECH_FEATURES), skipped


# Audio SNIPS as SUPERB's slot filling task uses it: 16 synthetic voices, each reading every sentence
# of the corpus; each split is read by its own voices (the other voices' files in a split folder are
# not used).
SNIPS_SPEAKERS: dict[str, tuple[str, ...]] = {
    "train": ("Ivy", "Joanna", "Joey", "Justin", "Kendra", "Kimberly", "Matthew", "Salli"),
    "valid": ("Aditi", "Amy", "Geraint", "Nicole"),
    "test": ("Brian", "Emma", "Raveena", "Russell"),
}
SNIPS_TRANSCRIPTS = "all.iob.snips.txt"


def snips_folder(root: Path) -> Path:
    """The SNIPS folder of an Audio SNIPS root (the folder holding SNIPS/, or SNIPS/ itself)."""
    folder = root / "SNIPS" if (root / "SNIPS").is_dir() else root
    if not (folder / SNIPS_TRANSCRIPTS).is_file():
        raise FileNotFoundError(
            f"No Audio SNIPS corpus at {root}: {folder / SNIPS_TRANSCRIPTS} does not exist. Pass the folder that "
            f"contains SNIPS/ (or SNIPS/ itself) with {SNIPS_TRANSCRIPTS}, slots.txt and train/ valid/ test/ "
            "folders of 16 kHz wav files, as s3prl's SNIPS preparation writes it (see README.md)."
        )
    return folder


def snips_dataset(root: str | os.PathLike, splits: Sequence[str], num_workers: int | None = None) -> datasets.Dataset:
    """Index a local Audio SNIPS folder in the layout SUPERB's preparation writes.

    Expects ``<root>/SNIPS/<split>/<Voice>-snips-<split>-<n>.wav`` and ``<root>/SNIPS/all.iob.snips.txt``
    with one line per file, ``<Voice>-snips-<split>-<n> BOS <WORDS> EOS<TAB>O <slot per word> <intent>``;
    `root` may also be the ``SNIPS`` folder itself. The splits "train", "valid" and "test" keep only
    the files of their voices (`SNIPS_SPEAKERS`); a folder of another name keeps all its files. A file
    without a transcript line is skipped (reason "no_targets") and reported in one warning.

    Returns:
        A `datasets.Dataset` with columns ``id``, ``path``, ``duration`` (seconds) and ``text`` (the
        annotated line after the id: words, tab, slot tags and intent), sorted by split and id.
    """
    return _snips_index(root, splits, num_workers)[0]


def _snips_index(root: str | os.PathLike, splits: Sequence[str],
                 num_workers: int | None = None) -> tuple[datasets.Dataset, Skipped]:
    if not splits:
        raise ValueError("no SNIPS splits given")
    corpus = snips_folder(Path(root))
    transcripts = {}
    for line in (corpus / SNIPS_TRANSCRIPTS).read_text(encoding="utf-8").splitlines():
        utt_id, _, text = line.strip().partition(" ")
        if utt_id:
            transcripts[utt_id] = text
    paths: list[Path] = []
    for split in splits:
        split_dir = corpus / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in corpus.iterdir() if p.is_dir())
            raise FileNotFoundError(f"SNIPS split {split!r} not found: {split_dir} does not exist. "
                                    f"Splits found in {corpus}: {found or 'none'}.")
        voices = SNIPS_SPEAKERS.get(split)
        paths += [path for path in sorted(split_dir.rglob("*.wav"))
                  if voices is None or path.stem.split("-", 1)[0] in voices]
    skipped: Skipped = {"unreadable": [], "no_targets": [path.stem for path in paths if path.stem not in transcripts]}
    _warn_skipped(skipped["no_targets"], len(paths), f"{corpus} {list(splits)}",
                  f"without a line in {SNIPS_TRANSCRIPTS}")
    paths = [path for path in paths if path.stem in transcripts]
    if num_workers and num_workers > 1:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            durations = list(pool.map(_try_duration, map(str, paths)))
    else:
        durations = [_try_duration(str(path)) for path in paths]
    columns: dict[str, list] = {"id": [], "path": [], "duration": [], "text": []}
    for path, duration in zip(paths, durations):
        if duration is None:
            skipped["unreadable"].append(path.stem)
            continue
        columns["id"].append(path.stem)
        columns["path"].append(str(path))
        columns["duration"].append(duration)
        columns["text"].append(transcripts[path.stem])
    _warn_skipped(skipped["unreadable"], len(paths), f"{corpus} {list(splits)}")
    features = datasets.Features({name: _LIBRISPEECH_FEATURES[name] for name in columns})
    return datasets.Dataset.from_dict(columns, features=features), skipped


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
    for role, column in (("audio", audio_column), ("text", text_column)):
        if column and column not in columns:
            raise ValueError(
                f"dataset {name!r} split {split!r} has no {role} column {column!r}; its columns are {columns}. "
                f"Set --{role}_column to one of them."
            )
    if dataset.features is not None and isinstance(dataset.features[audio_column], datasets.Audio):
        dataset = dataset.cast_column(audio_column, datasets.Audio(decode=False))
    return dataset


def _row_id_and_text(row: Mapping[str, Any], position: int, audio_column: str,
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
    utt_id, text = _row_id_and_text(row, position, audio_column, text_column)
    try:
        duration = _header_duration(row[audio_column])
    except AudioError:
        duration = -1.0
    return {"id": utt_id, "text": text, "duration": duration}


def _hub_index(
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
    readable = np.asarray(_column(metadata, "duration")) >= 0
    skipped: Skipped = {"unreadable": []}
    if not readable.all():
        ids = _column(metadata, "id")
        skipped["unreadable"] = [ids[i] for i in np.flatnonzero(~readable)]
        _warn_skipped(skipped["unreadable"], len(index), "the dataset")
        index = index.select(np.flatnonzero(readable))
    return index, skipped


# --------------------------------------------------------------------------- #
# Arguments
# --------------------------------------------------------------------------- #


@dataclass
class DataArguments:
    """Where the audio comes from and which utterances to use (shared by both scripts)."""

    librispeech_root: str | None = field(
        default=None,
        metadata={"help": "Local LibriSpeech corpus in its original layout: the folder containing LibriSpeech/ "
                          "(or LibriSpeech/ itself). Use this or --dataset_name."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "A `datasets` dataset to read instead of a LibriSpeech folder: a hub name or a local "
                          "path (parquet/arrow/CSV/JSON files). Use this or --librispeech_root."},
    )
    dataset_config: str | None = field(
        default=None, metadata={"help": "Configuration name of --dataset_name, if it has several."}
    )
    train_splits: list[str] | None = field(
        default=None,
        metadata={"help": "What to train on. With --librispeech_root: split folders, e.g. train-clean-100 "
                          "train-clean-360 train-other-500 (default: train-clean-100). With --dataset_name: split "
                          "names or expressions, e.g. train.100 or 'train[:1000]', joined into one "
                          "(default: train)."},
    )
    eval_splits: list[str] | None = field(
        default=None,
        metadata={"help": "What to evaluate on, read like --train_splits (default: dev-clean with "
                          "--librispeech_root, validation with --dataset_name)."},
    )
    audio_column: str = field(default="audio", metadata={"help": "Column of --dataset_name holding the audio."})
    text_column: str = field(
        default="text",
        metadata={"help": "Column of --dataset_name holding the transcript; an empty string for audio-only data "
                          "(items then have text '')."},
    )
    streaming: bool = field(
        default=False,
        metadata={"help": "Read --dataset_name lazily instead of downloading it first. The datasets then have no "
                          "length (set --max_steps) and cannot be grouped by length; training data is shuffled "
                          f"within a buffer of {STREAMING_SHUFFLE_BUFFER} examples."},
    )
    max_duration_seconds: float | None = field(
        default=None,
        metadata={"help": "Longest audio to use, in seconds (default: no limit, as in the paper). run_distill.py "
                          "crops or drops longer utterances (--crop_to_max_duration); run_asr_ctc.py drops them "
                          "from its training data."},
    )
    crop_to_max_duration: bool = field(
        default=True,
        metadata={"help": "With --max_duration_seconds: crop longer utterances to a random window of that length, "
                          "drawn anew for each (seed, item, epoch) (true), or drop them (false)."},
    )
    max_batch_seconds: float | None = field(
        default=None,
        metadata={"help": "Bound each training batch by padded audio too: at most per_device_train_batch_size "
                          "utterances AND (utterances x longest one) <= this many seconds, batches formed from "
                          "length-sorted utterances, so long utterances come in small batches (no out-of-memory) "
                          "and short ones in large batches (little padding). Default: no bound, batches of "
                          "per_device_train_batch_size utterances (the paper's recipes). Must be at least the "
                          "longest training utterance."},
    )
    min_duration_seconds: float = field(
        default=RECEPTIVE_FIELD_SAMPLES / SAMPLING_RATE,
        metadata={"help": "Drop utterances shorter than this, in seconds. At least 0.025 s (400 samples, the "
                          "receptive field of the convolutional front-end: shorter audio yields no frames)."},
    )
    preprocessing_num_workers: int | None = field(
        default=None,
        metadata={"help": "Workers reading audio headers when indexing (threads for a LibriSpeech folder, "
                          "processes for a map-style --dataset_name)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training utterances (after filtering), for quick runs."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N evaluation utterances (after filtering), for quick runs."}
    )

    def __post_init__(self) -> None:
        self._check_source_and_default_splits()
        if self.max_batch_seconds is not None and self.max_batch_seconds <= 0:
            raise ValueError(f"--max_batch_seconds must be positive, got {self.max_batch_seconds}.")
        for name in ("train_splits", "eval_splits"):
            if not getattr(self, name) or not all(getattr(self, name)):
                raise ValueError(f"--{name} needs at least one split name, and no empty one; got {getattr(self, name)}.")
        if self.streaming and self.dataset_name is None:
            raise ValueError("--streaming applies to --dataset_name only; a local corpus folder is indexed instead.")
        if self.min_audio_samples < RECEPTIVE_FIELD_SAMPLES:
            raise ValueError(
                f"--min_duration_seconds must be at least {RECEPTIVE_FIELD_SAMPLES / SAMPLING_RATE} s "
                f"({RECEPTIVE_FIELD_SAMPLES} samples, the model's receptive field); got {self.min_duration_seconds}."
            )
        if self.max_audio_samples is not None and self.max_audio_samples < self.min_audio_samples:
            raise ValueError(
                f"--max_duration_seconds ({self.max_duration_seconds}) must not be below "
                f"--min_duration_seconds ({self.min_duration_seconds})."
            )
        for name in ("max_train_samples", "max_eval_samples", "preprocessing_num_workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer; got {getattr(self, name)}.")

    def _check_source_and_default_splits(self) -> None:
        """Exactly one data source; split names default by source. Scripts whose sources need more than
        `data_sources` lists override this."""
        # An empty value unsets a source given by a YAML recipe: --librispeech_root "" --dataset_name X
        self.librispeech_root = self.librispeech_root or None
        self.dataset_name = self.dataset_name or None
        sources = self.data_sources()
        if sum(value is not None for _, value in sources.values()) != 1:
            raise ValueError(
                "Give exactly one data source: "
                + ", ".join(f"{option} ({what})" for option, (what, _) in sources.items()) + "; got "
                + ", ".join(f"{option} {value!r}" for option, (_, value) in sources.items()) + "."
            )
        # The defaults depend on the source: LibriSpeech names its splits by folder, `datasets` by role.
        librispeech = self.librispeech_root is not None
        if self.train_splits is None:
            self.train_splits = ["train-clean-100"] if librispeech else ["train"]
        if self.eval_splits is None:
            self.eval_splits = ["dev-clean"] if librispeech else ["validation"]

    def data_sources(self) -> dict[str, tuple[str, str | None]]:
        """Option -> (what it reads, its value) for every data source; exactly one must be given."""
        return {"--librispeech_root": ("a local LibriSpeech folder", self.librispeech_root),
                "--dataset_name": ("a `datasets` dataset", self.dataset_name)}

    @property
    def min_audio_samples(self) -> int:
        return round(self.min_duration_seconds * SAMPLING_RATE)

    @property
    def max_audio_samples(self) -> int | None:
        return None if self.max_duration_seconds is None else round(self.max_duration_seconds * SAMPLING_RATE)


# --------------------------------------------------------------------------- #
# Torch datasets
# --------------------------------------------------------------------------- #


class _DecodingDataset:
    """What the map-style and streaming datasets share: decoding, skipping, duration limits.

    Lengths are in samples at 16 kHz. Audio shorter than `min_length`, or
    longer than `max_length` when not cropping, is out of range.
    Utterances longer than `max_length` are cropped to a random window when
    `crop` is true; the window depends only on (seed, position, epoch).
    `set_epoch` moves the windows; call it at the start of every epoch
    (accelerate's data loader does not always forward its own `set_epoch` to
    the dataset, e.g. under DDP). DataLoader workers get a copy of the dataset
    when an epoch's iterator starts, so call it before that, and avoid
    persistent workers if crops should change between epochs.
    """

    def __init__(self, audio_column: str, min_length: int, max_length: int | None, crop: bool, seed: int) -> None:
        self.audio_column = audio_column
        self.min_length = min_length
        self.max_length = max_length
        self.crop = crop
        self.seed = seed
        self.epoch = 0
        # Ids whose audio failed to decode in this process; each is logged once.
        self.failed_ids: set[str] = set()
        # Utterances left out before any decoding, by reason (see SKIP_REASONS); none when streaming.
        self.skipped: Skipped = {reason: [] for reason in SKIP_REASONS}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _note_failure(self, utt_id: str, problem: str) -> None:
        """Log a file that came out unusable when read, once per id in this process."""
        if utt_id not in self.failed_ids:
            self.failed_ids.add(utt_id)
            logger.warning("Skipping utterance %s (%d failed so far): %s", utt_id, len(self.failed_ids), problem)

    def _load(self, source: AudioSource, utt_id: str) -> np.ndarray | None:
        """Decoded audio, or None (logged the first time for this id) if it fails."""
        try:
            return load_audio(source)
        except AudioError as err:
            self._note_failure(utt_id, str(err))
            return None

    def _in_range(self, length: int) -> bool:
        too_long = self.max_length is not None and not self.crop and length > self.max_length
        return length >= self.min_length and not too_long

    def _item(self, audio: np.ndarray, text: str, utt_id: str, position: int) -> dict[str, Any]:
        if self.crop and self.max_length is not None and len(audio) > self.max_length:
            rng = np.random.default_rng((self.seed, position, self.epoch))
            start = int(rng.integers(0, len(audio) - self.max_length + 1))
            audio = audio[start:start + self.max_length]
        # The epoch travels with the item: a collator in a DataLoader worker seeds the span mask with it.
        return {"input_values": audio, "text": text, "id": utt_id, "epoch": self.epoch}


class SpeechDataset(_DecodingDataset, torch.utils.data.Dataset):
    """Map-style dataset over an utterance index; audio is decoded in `__getitem__`.

    The index should already be filtered to the duration range (`build_dataset`
    does this from the file headers).

    Attributes:
        index: the `datasets.Dataset` behind it, with columns ``id``, ``text``,
            ``duration`` (seconds) and the audio column; read it for anything
            that needs no audio (e.g. its transcripts, to build a vocabulary).
        lengths: samples per item at 16 kHz (after cropping), from the header
            durations, for length-grouped batching without decoding.
        skipped: reason -> ids of the utterances of the split left out before
            decoding (see `SKIP_REASONS`); `skip_metrics` counts them.
    """

    def __init__(self, index: datasets.Dataset, audio_column: str, min_length: int,
                 max_length: int | None = None, crop: bool = True, seed: int = 0,
                 skipped: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__(audio_column, min_length, max_length, crop, seed)
        for reason, ids in (skipped or {}).items():
            self.skipped[reason] = list(ids)
        self.index = index
        lengths = [round(duration * SAMPLING_RATE) for duration in _column(index, "duration")]
        if crop and max_length is not None:
            lengths = [min(length, max_length) for length in lengths]
        self.lengths: list[int] = lengths

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, position: int) -> dict[str, Any] | None:
        """-> {"input_values": float32 (samples,), "text": str, "id": str}, or None if the audio fails."""
        row = self.index[position]
        audio = self._load(row[self.audio_column], row["id"])
        if audio is None:
            return None
        if not self._in_range(len(audio)):
            # The header promised a length in range but the file decodes to
            # another one: treat it like any other unusable file.
            self._note_failure(row["id"], f"decodes to {len(audio)} samples, outside the duration range.")
            return None
        return self._item(audio, row["text"], row["id"], position)


class StreamingSpeechDataset(_DecodingDataset, torch.utils.data.IterableDataset):
    """Iterable dataset over a streaming `datasets.IterableDataset`; decodes as it goes.

    Yields the same items as `SpeechDataset` (None for audio that fails to
    decode, or that is shorter than the receptive field: both are named and
    counted). Other utterances outside the duration range are left out, as the
    index filter does for map-style data. In DataLoader workers, the `datasets`
    source splits its shards between the workers.
    """

    def __init__(self, source: datasets.IterableDataset, audio_column: str, text_column: str | None,
                 min_length: int, max_length: int | None = None, crop: bool = True, seed: int = 0) -> None:
        super().__init__(audio_column, min_length, max_length, crop, seed)
        self.source = source
        self.text_column = text_column

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.source.set_epoch(epoch)  # reshuffles the stream

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        for position, row in enumerate(self.source):
            utt_id, text = _row_id_and_text(row, position, self.audio_column, self.text_column)
            audio = self._load(row[self.audio_column], utt_id)
            if audio is not None and len(audio) < RECEPTIVE_FIELD_SAMPLES:
                # Unusable for the model, not merely outside a chosen range: named and counted.
                self._note_failure(utt_id, f"decodes to {len(audio)} samples, fewer than the receptive field "
                                           f"({RECEPTIVE_FIELD_SAMPLES}).")
                audio = None
            if audio is None:
                yield None
            elif self._in_range(len(audio)):
                yield self._item(audio, text, utt_id, position)


def _filter_by_length(index: datasets.Dataset, min_length: int, max_length: int | None,
                      where: str) -> tuple[datasets.Dataset, list[str], int]:
    """Keep utterances with min_length <= length (<= max_length when given), from header durations.

    Returns (kept index, ids shorter than the receptive field, how many others the range dropped).
    Audio shorter than the receptive field is unusable and reported as skipped (named in a
    warning); the rest of the range is the user's choice and only logged as a count.
    """
    lengths = np.rint(np.asarray(_column(index, "duration"), dtype=np.float64) * SAMPLING_RATE)
    too_short = lengths < RECEPTIVE_FIELD_SAMPLES
    keep = lengths >= min_length
    if max_length is not None:
        keep &= lengths <= max_length
    too_short_ids: list[str] = []
    if too_short.any():
        ids = _column(index, "id")
        too_short_ids = [ids[i] for i in np.flatnonzero(too_short)]
        _warn_skipped(too_short_ids, len(index), where, f"shorter than the receptive field "
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


def _check_not_empty(index: datasets.Dataset, skipped: Skipped, out_of_range: int, what: str,
                     data_args: DataArguments, option: str) -> None:
    """Stop at start-up, saying why, when a split has no usable utterance left (rather than
    failing in the first batch, or after training at the first evaluation)."""
    if len(index):
        return
    reasons = [f"{len(ids)} {SKIP_REASONS[reason]}" for reason, ids in skipped.items() if ids]
    if out_of_range:
        longest = "none" if data_args.max_duration_seconds is None else data_args.max_duration_seconds
        reasons.append(f"{out_of_range} outside the duration limits (--min_duration_seconds "
                       f"{data_args.min_duration_seconds}, --max_duration_seconds {longest})")
    if reasons:
        why = "every utterance was left out: " + "; ".join(reasons) + "."
        fix = ("Repair or remove the files named in the warnings above" if skipped and any(skipped.values())
               else "Widen the duration limits")
    else:
        why = ("it holds no utterances (no <speaker>/<chapter>/*.trans.txt transcripts in it)."
               if data_args.librispeech_root is not None else "it has no rows.")
        fix = "Check the path and the split names"
    raise ValueError(f"No usable utterance in the {what} ({option}): {why} {fix}, or choose another split.")


def build_dataset(data_args: DataArguments, split: Literal["train", "eval"], seed: int = 0,
                  purpose: str | None = None, option: str | None = None,
                  has_targets: Callable[[str], bool] | None = None) -> SpeechDataset | StreamingSpeechDataset:
    """The training or evaluation dataset described by `data_args`.

    Args:
        data_args: the data source and filters.
        split: "train" (`train_splits`) or "eval" (`eval_splits`). With --librispeech_root these
            are split folders; with --dataset_name split names or expressions, read as one split
            joined with "+" (["train", "validation[:10]"] -> "train+validation[:10]").
        seed: seeds the crop windows and the streaming shuffle (pass TrainingArguments.seed).
        purpose: what the data is for, in error messages (default "training" / "evaluation").
        option: the option that named the splits, in error messages (default "--train_splits" /
            "--eval_splits").
        has_targets: transcript -> whether training targets can be made of it; utterances for which
            it says False are left out (reason "no_targets"). Not applied to streaming datasets.

    Returns:
        A map-style `SpeechDataset`, or a `StreamingSpeechDataset` when
        ``data_args.streaming``. Items are ``{"input_values": np.float32
        (samples,), "text": str, "id": str}``, or None for audio that fails to
        decode (logged once per file; `AudioCollator` drops and counts them).
        Its `skipped` holds the utterances left out before decoding, by reason.

    Raises:
        ValueError: a map-style split has no usable utterance left (none found, all
            unreadable, or all outside the duration limits); the message says which
            split and why. A streaming split cannot be checked before it is read.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', not {split!r}")
    is_train = split == "train"
    max_items = data_args.max_train_samples if is_train else data_args.max_eval_samples
    limits = dict(min_length=data_args.min_audio_samples, max_length=data_args.max_audio_samples,
                  crop=data_args.crop_to_max_duration, seed=seed)
    text_column = data_args.text_column or None
    splits = data_args.train_splits if is_train else data_args.eval_splits

    if data_args.librispeech_root is not None:
        index, skipped = _librispeech_index(data_args.librispeech_root, splits, data_args.preprocessing_num_workers)
        audio_column = "path"
        where = f"LibriSpeech {_librispeech_where(data_args.librispeech_root, splits)}"
    elif getattr(data_args, "snips_root", None) is not None:  # a source of run_asr_ctc.py's data arguments
        index, skipped = _snips_index(data_args.snips_root, splits, data_args.preprocessing_num_workers)
        audio_column = "path"
        where = f"Audio SNIPS {snips_folder(Path(data_args.snips_root))} {list(splits)}"
    else:
        hub_split = "+".join(splits)
        hub = hub_dataset(data_args.dataset_name, data_args.dataset_config, hub_split,
                          data_args.audio_column, text_column, streaming=data_args.streaming)
        where = f"{data_args.dataset_name} split {hub_split!r}"
        audio_column = data_args.audio_column
        if data_args.streaming:
            if max_items is not None:
                hub = hub.take(max_items)
            if is_train:
                hub = hub.shuffle(seed=seed, buffer_size=STREAMING_SHUFFLE_BUFFER)
            return StreamingSpeechDataset(hub, audio_column, text_column, **limits)
        index, skipped = _hub_index(hub, audio_column, text_column, data_args.preprocessing_num_workers)

    if has_targets is not None:
        keep = [has_targets(text) for text in _column(index, "text")]
        if not all(keep):
            ids = _column(index, "id")
            skipped.setdefault("no_targets", []).extend(ids[i] for i, kept in enumerate(keep) if not kept)
            index = index.select([i for i, kept in enumerate(keep) if kept])
    index, skipped["too_short"], out_of_range = _filter_by_length(
        index, data_args.min_audio_samples, None if data_args.crop_to_max_duration else data_args.max_audio_samples,
        where)
    what = f"{purpose or ('training' if is_train else 'evaluation')} data, {where}"
    option = option or ("--train_splits" if is_train else "--eval_splits")
    _check_not_empty(index, skipped, out_of_range, what, data_args, option)
    if max_items is not None:
        index = index.select(range(min(max_items, len(index))))
    return SpeechDataset(index, audio_column, skipped=skipped, **limits)


# --------------------------------------------------------------------------- #
# Batching
# --------------------------------------------------------------------------- #


class BatchMasker(Protocol):
    """Draws a batch's frame mask in the collator: sample-level attention_mask (B, S), the B utterance ids
    and the epoch -> bool (B, T), True = masked frame."""

    def __call__(self, attention_mask: torch.Tensor, utterance_ids: Sequence[str], epoch: int) -> torch.Tensor: ...


@dataclass
class AudioCollator:
    """Pad items from `build_dataset` into a batch, dropping the None ones.

    Returns:
        ``input_values``: float32 (B, S), zero-padded on the right;
        ``attention_mask``: long (B, S), 1 for real samples, 0 for padding;
        ``text``: list of B transcripts (when the items have "text");
        ``id``: list of B utterance ids (when the items have "id");
        ``num_skipped``: long scalar tensor, how many None items were dropped;
        ``mask_time_indices``: bool (B, T), only with `span_mask`: the frames to
        mask, T the number of frames the model makes of S samples.
        B is the number of non-None items and S the longest of them. If every
        item is None, the batch is empty:
        ``input_values`` and ``attention_mask`` of shape (0, 0), ``num_skipped``
        = number of items, no ``text``; test ``input_values.shape[0] == 0``.

    With `span_mask` (e.g. `distillation_trainer.DistillationMasker`), the
    collator also draws the batch's span mask. It then runs in the DataLoader
    workers instead of the training step; it is seeded only by what the items
    carry (their "id"s and "epoch"), so a batch gets the same mask wherever it
    is collated.
    """

    span_mask: BatchMasker | None = None

    def __call__(self, items: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
        present = [item for item in items if item is not None]
        num_skipped = torch.tensor(len(items) - len(present), dtype=torch.long)
        if not present:
            return {
                "input_values": torch.zeros(0, 0, dtype=torch.float32),
                "attention_mask": torch.zeros(0, 0, dtype=torch.long),
                "num_skipped": num_skipped,
            }
        # The feature extractor's own padding: zeros on the right and a 1/0 attention mask.
        padded = _PADDER.pad({"input_values": [np.asarray(item["input_values"], dtype=np.float32) for item in present]},
                             padding="longest", return_attention_mask=True, return_tensors="pt")
        attention_mask = padded["attention_mask"].long()
        batch: dict[str, Any] = {"input_values": padded["input_values"].float(), "attention_mask": attention_mask}
        if "text" in present[0]:
            batch["text"] = [item["text"] for item in present]
        if "id" in present[0]:
            batch["id"] = [item["id"] for item in present]
        batch["num_skipped"] = num_skipped
        if self.span_mask is not None:
            if "id" not in present[0]:
                raise ValueError("Drawing the span mask in the collator needs an 'id' in every item (it seeds "
                                 "the mask); build the dataset with `build_dataset`, whose items have one.")
            # Items without an epoch (datasets other than build_dataset's) count as epoch 0.
            epoch = int(present[0].get("epoch", 0))
            batch["mask_time_indices"] = self.span_mask(attention_mask, batch["id"], epoch)
        return batch
