"""SUPERB's input effects: what s3prl does to a waveform before the upstream model sees it.

s3prl runs sox effects on every file of some tasks: keyword spotting ``gain -3.0``; speaker
verification ``gain -3.0`` then ``silence 1 0.1 0.1% -1 0.1 0.1%`` (an energy-based removal of the
silences at the start and in the middle). `InputEffects` names them; a task model records them in its
config (`input_gain_db`, `input_silence_removal`), so that its pipeline and its evaluation apply the
same ones as its training did.

`remove_silence` follows sox 14.4's `silence` effect sample by sample as s3prl calls it (mono, 16 kHz,
32-bit samples after `gain`): the RMS of a 20 ms window (cleared at every restart) against 0.1 % of
full scale; leading audio is dropped until 0.1 s of consecutive samples lie above the threshold (those
0.1 s are kept); after that, a stretch below it is kept when audio above it follows within 0.1 s, and
dropped once it reaches 0.1 s, after which the leading-silence search starts again. A stretch below
the threshold at the very end, shorter than 0.1 s, is kept; anything after the last restart that
never reaches 0.1 s above the threshold is dropped. Only floating-point rounding of the window sums
differs from sox.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SAMPLING_RATE = 16_000
# sox `silence 1 0.1 0.1% -1 0.1 0.1%`, as s3prl's speaker verification applies it.
SILENCE_SECONDS = 0.1
SILENCE_THRESHOLD = 0.001  # 0.1 % of full scale
# sox's RMS window: rate / 50 samples (20 ms).
_RMS_WINDOW = SAMPLING_RATE // 50
# sox samples are 32-bit integers; a float sample x in [-1, 1) is x * 2^31.
_SOX_SCALE = 2.0 ** 31
_SOX_INT32_MAX = 2 ** 31 - 1


def apply_gain_db(waveform: np.ndarray, db: float) -> np.ndarray:
    """`waveform` scaled by `db` decibels (sox `gain`): x * 10^(db / 20), float32."""
    if db == 0:
        return waveform
    return (np.asarray(waveform, dtype=np.float32) * np.float32(10.0 ** (db / 20.0))).astype(np.float32)


def _window_energies(waveform: np.ndarray) -> np.ndarray:
    """(len + 1,) running sums of the squared 32-bit samples (sox's scale), for window sums by difference."""
    return np.concatenate([[0.0], np.cumsum(np.square(waveform.astype(np.float64) * _SOX_SCALE))])


def _above_threshold(energies: np.ndarray, start: int, threshold: float) -> np.ndarray:
    """(samples - start,) bool: for every sample from `start` on, whether sox's RMS over the last 20 ms,
    in a window cleared at `start` (zeros before it), reaches `threshold` of full scale (sox compares the
    truncated 32-bit RMS with INT32_MAX)."""
    ends = np.arange(start + 1, len(energies))
    window_sums = energies[ends] - energies[np.maximum(ends - _RMS_WINDOW, start)]
    rms = np.floor(np.sqrt(np.maximum(window_sums, 0.0) / _RMS_WINDOW))
    return rms / _SOX_INT32_MAX >= threshold


def _first_run(flags: np.ndarray, value: bool, length: int, start: int) -> int | None:
    """The index of the last element of the first run of `length` consecutive `value`s in `flags` from
    `start` on, or None."""
    places = np.flatnonzero(flags[start:] == value)
    if len(places) < length:
        return None
    breaks = np.flatnonzero(np.diff(places) != 1) + 1
    run_starts = np.concatenate([[0], breaks])
    run_lengths = np.concatenate([breaks, [len(places)]]) - run_starts
    long_enough = np.flatnonzero(run_lengths >= length)
    if not len(long_enough):
        return None
    return start + int(places[run_starts[long_enough[0]]]) + length - 1


def remove_silence(waveform: np.ndarray, seconds: float = SILENCE_SECONDS,
                   threshold: float = SILENCE_THRESHOLD) -> np.ndarray:
    """sox `silence 1 <seconds> <threshold> -1 <seconds> <threshold>` on a mono 16 kHz float waveform
    (see the module docstring); float32, possibly empty."""
    waveform = np.asarray(waveform, dtype=np.float32)
    duration = round(seconds * SAMPLING_RATE)
    energies = _window_energies(waveform)
    kept: list[np.ndarray] = []
    position = 0  # where the window was last cleared (a restart)
    while position < len(waveform):
        above = _above_threshold(energies, position, threshold)
        # Leading silence: drop until `duration` consecutive samples lie above the threshold.
        found = _first_run(above, True, duration, 0)
        if found is None:
            break
        copy_from = found - duration + 1
        # Copy until `duration` consecutive samples lie below it; those are dropped, then restart.
        silence_end = _first_run(above, False, duration, found + 1)
        if silence_end is None:
            kept.append(waveform[position + copy_from:])
            break
        kept.append(waveform[position + copy_from:position + silence_end - duration + 1])
        position += silence_end + 1
    return np.concatenate(kept) if kept else np.zeros(0, dtype=np.float32)


@dataclass(frozen=True)
class InputEffects:
    """The effects applied to every waveform after decoding, in s3prl's order: gain, then silence removal."""

    gain_db: float = 0.0
    silence_removal: bool = False

    @classmethod
    def from_config(cls, config: Any) -> "InputEffects":
        """The effects a task model's config records (none for a config without the fields)."""
        return cls(float(getattr(config, "input_gain_db", 0.0) or 0.0),
                   bool(getattr(config, "input_silence_removal", False)))

    def config_fields(self) -> dict[str, Any]:
        return {"input_gain_db": self.gain_db, "input_silence_removal": self.silence_removal}

    @property
    def any(self) -> bool:
        return self.gain_db != 0 or self.silence_removal

    def __str__(self) -> str:
        """What a reader of a log or a model card needs: "a -3 dB gain, silence removal", or "none"."""
        parts = [f"a {self.gain_db:g} dB gain" if self.gain_db else "", "silence removal" if self.silence_removal else ""]
        return ", ".join(filter(None, parts)) or "none"

    def __call__(self, waveform: np.ndarray) -> np.ndarray:
        waveform = apply_gain_db(waveform, self.gain_db)
        return remove_silence(waveform) if self.silence_removal else waveform
