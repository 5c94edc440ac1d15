#!/usr/bin/env python
"""Write a LibriSpeech-layout corpus of synthetic audio with LibriSpeech's utterance lengths.

For throughput measurements of the real data path (FLAC decoding, length grouping, padding) at
any size, where the real corpus is not at hand. The audio is noise under a syllable-rate
envelope at speech level (FLAC compresses it about as well as speech, so decoding costs the
same); the transcripts are placeholders.

    python tools/make_synthetic_librispeech.py ROOT --utterances 480                  # train-clean-100
    python tools/make_synthetic_librispeech.py ROOT --split dev-clean --utterances 64 --seed 1

Layout written (as the real corpus):
  ROOT/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
  ROOT/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000


def sample_durations(count: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    """Utterance lengths in seconds shaped like LibriSpeech's training sets.

    LibriSpeech cut its books into segments of at most 35 s; most are 10-17 s long and a minority
    are short sentences. Drawn here as 80 % normal(14.5 s, 2 s) clipped to 10-17.5 s, 18 % uniform
    2-10 s and 2 % uniform 17.5-35 s: mean about 13.2 s (`mean_duration`). `scale` shrinks every length
    (tiny runs).
    """
    rng = np.random.default_rng(seed)
    kind = rng.random(count)
    durations = np.where(kind < 0.80, np.clip(rng.normal(14.5, 2.0, count), 10.0, 17.5),
                         np.where(kind < 0.98, rng.uniform(2.0, 10.0, count), rng.uniform(17.5, 35.0, count)))
    return np.maximum(durations * scale, 0.05)


def mean_duration(scale: float = 1.0) -> float:
    """The mean of `sample_durations`' lengths in seconds (from a million draws: 13.17 s at scale 1)."""
    return float(sample_durations(1_000_000, seed=1, scale=scale).mean())


def speech_like_audio(seconds: float, seed: int) -> np.ndarray:
    """Low-passed noise under a 4 Hz envelope, peak level about 0.3: float32 (seconds * 16000,)."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * SAMPLE_RATE)
    noise = np.convolve(rng.standard_normal(samples), np.ones(8) / 8, mode="same")
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4.0 * np.arange(samples) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi))
    return (0.3 * noise * envelope).astype(np.float32)


def _write_utterance(job: tuple[str, float, int]) -> None:
    path, seconds, seed = job
    sf.write(path, speech_like_audio(seconds, seed), SAMPLE_RATE, format="FLAC", subtype="PCM_16")


def write_corpus(root: str | os.PathLike, durations: np.ndarray, split: str = "train-clean-100", seed: int = 0,
                 workers: int | None = None, utterances_per_chapter: int = 50) -> float:
    """Write one split, one speaker per `utterances_per_chapter` utterances; returns its hours of audio."""
    jobs, first_speaker = [], 100 + 1000 * seed
    for start in range(0, len(durations), utterances_per_chapter):
        speaker, chapter = first_speaker + start // utterances_per_chapter, 1000
        folder = Path(root) / "LibriSpeech" / split / str(speaker) / str(chapter)
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, seconds in enumerate(durations[start:start + utterances_per_chapter]):
            utt_id = f"{speaker}-{chapter}-{i:04d}"
            jobs.append((str(folder / f"{utt_id}.flac"), float(seconds), seed * 10**6 + start + i))
            lines.append(f"{utt_id} SYNTHETIC UTTERANCE {start + i}")
        (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    with ProcessPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(_write_utterance, jobs, chunksize=8))
    return float(durations.sum()) / 3600


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", help="Folder to write LibriSpeech/ into.")
    parser.add_argument("--split", default="train-clean-100", help="Split folder name (default train-clean-100).")
    parser.add_argument("--utterances", type=int, default=480, help="Number of utterances (default 480).")
    parser.add_argument("--scale", type=float, default=1.0, help="Multiply every length by this (default 1).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the lengths, audio and speaker ids.")
    parser.add_argument("--workers", type=int, default=None, help="Processes writing files (default: cores, 16 at most).")
    args = parser.parse_args()
    durations = sample_durations(args.utterances, args.seed, args.scale)
    hours = write_corpus(args.root, durations, args.split, args.seed, args.workers)
    print(f"wrote {args.utterances} utterances, {hours:.2f} h (mean {durations.mean():.1f} s, "
          f"{durations.min():.1f}-{durations.max():.1f} s) to {args.root}/LibriSpeech/{args.split}")


if __name__ == "__main__":
    main()
