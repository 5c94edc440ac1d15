"""Audio as the students take it: decoding any source into a 16 kHz mono waveform, and accounting for
the files that cannot be used.

- `load_audio` decodes one file / byte string / ``datasets`` audio dict into a float32 mono waveform
  at 16 kHz, raising `AudioError` for anything unusable; `header_duration(s)` read lengths from file
  headers without decoding, for indexing a corpus.
- `SKIP_REASONS` names why a file is left out; a corpus reader returns the ids it left out by reason
  (`Skipped`), `warn_skipped` names them in one warning, `skip_metrics` counts them as the
  ``skipped_files*`` metrics.

Waveforms are returned as decoded, without mean/variance normalisation: the method feeds raw
waveforms to both the teacher and the student.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Union

import librosa
import numpy as np
import soundfile as sf
from transformers import Wav2Vec2FeatureExtractor

from configuration_armhubert import RECEPTIVE_FIELD_SAMPLES

logger = logging.getLogger(__name__)

SAMPLING_RATE = 16_000
# How many offending file names a warning lists before it only gives the count.
_NAMES_IN_WARNINGS = 5

# Why a file was left out -> what the `skipped_files_<reason>` metric counts. The total of all
# reasons is `skipped_files`.
SKIP_REASONS: dict[str, str] = {
    "unreadable": "missing, empty or not audio when the corpus was indexed",
    "undecodable": "the header was readable but decoding failed: cut short, NaN/inf samples, or a length outside "
                   "the duration range (with --streaming, every row that fails when read); counted at each read",
    "too_short": f"shorter than the receptive field ({RECEPTIVE_FIELD_SAMPLES} samples)",
    "transcript_unreadable": "with a LibriSpeech transcript line (*.trans.txt) that is not UTF-8 text, or in a "
                             "chapter whose transcript cannot be read at all",
    "no_targets": "no usable transcript or label: none in the corpus' transcript file, one that cannot be turned "
                  "into training targets (a word missing from the pronunciation lexicon, a slot tag outside "
                  "slots.txt), a malformed label line (IEMOCAP), or no class folder (--corpus folder)",
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
    if source is None:  # an empty cell of a `datasets` dataset: one bad row, not a wrong argument
        raise AudioError(f"{name}: no audio (an empty cell of the dataset's audio column).")
    raise TypeError(f"cannot read audio from a {type(source).__name__}; expected a path, bytes or an audio dict")


def _unreadable(name: str, err: Exception) -> AudioError:
    return AudioError(
        f"{name}: cannot decode audio ({err}). The file is corrupt or in a format that neither "
        "libsndfile nor librosa can read; re-encode it as FLAC or WAV, or remove it from the corpus."
    )


def _header_too_long(name: str) -> AudioError:
    # libsndfile allocates the length the header announces before reading; a corrupt header can announce
    # more than memory holds.
    return AudioError(f"{name}: its header announces more audio than memory holds; the header is corrupt. "
                      "Re-encode the file as FLAC or WAV, or remove it from the corpus.")


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
        except MemoryError as err:
            raise _header_too_long(name) from err
        return data.T, rate
    try:
        data, rate = sf.read(unwrapped, dtype="float32", always_2d=True)
        return data.T, rate
    except MemoryError as err:
        raise _header_too_long(name) from err
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


# --------------------------------------------------------------------------- #
# Lengths from file headers (no decoding)
# --------------------------------------------------------------------------- #


def header_duration(source: AudioSource) -> float:
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


def _try_duration(path: str) -> float | None:
    try:
        return header_duration(path)
    except AudioError:
        return None


def header_durations(paths: list[str], num_workers: int | None) -> list[float | None]:
    """Each file's duration in seconds from its header (None = unreadable), read by `num_workers` threads."""
    if num_workers and num_workers > 1:
        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            return list(pool.map(_try_duration, paths))
    return [_try_duration(path) for path in paths]


# --------------------------------------------------------------------------- #
# Skip accounting
# --------------------------------------------------------------------------- #


def _shown(names: Sequence[str]) -> str:
    return ", ".join(names[:_NAMES_IN_WARNINGS]) + (", ..." if len(names) > _NAMES_IN_WARNINGS else "")


def warn_skipped(skipped: Sequence[str], total: int, where: str, why: str = "that are unreadable or empty") -> None:
    """One warning naming the first few of the `skipped` files of `total` in `where` (none if nothing was skipped)."""
    if skipped:
        logger.warning("Skipped %d of %d audio files in %s %s: %s", len(skipped), total, where, why, _shown(skipped))


def skip_metrics(dataset: Any, undecodable: int = 0) -> dict[str, int]:
    """``skipped_files`` (the total) and ``skipped_files_<reason>`` for each of `SKIP_REASONS`.

    Args:
        dataset: a dataset from `speech_datasets`; its `skipped` utterances (left out before
            decoding) are counted. Other datasets count nothing here.
        undecodable: items that came out None when read (the collators' ``num_skipped``).
    """
    counts = {reason: len(getattr(dataset, "skipped", {}).get(reason, ())) for reason in SKIP_REASONS}
    counts["undecodable"] += int(undecodable)
    return {"skipped_files": sum(counts.values()), **{f"skipped_files_{r}": n for r, n in counts.items()}}
