#!/usr/bin/env python
"""Write Libri2Mix-style diarization folders from the bundled LibriSpeech audio, for the SD demo and tests.

    python -m tools.make_tiny_librimix outputs/tiny-librimix

Each mixture adds the first 1.6 s of two utterances of different speakers, the first from 0 s, the
second from a given offset (so that there is single-speaker speech, overlap and the other speaker
alone), and writes train/, dev/ and test/ as s3prl's LibriMix preparation does: wav.scp (absolute
paths), segments, utt2spk, reco2dur and rttm, each speaker's whole 1.6 s one segment. Training mixes
the train-clean-100 speakers; dev and test mix the dev-clean and test-clean speakers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile

LIBRISPEECH = Path(__file__).resolve().parents[1] / "data" / "tiny-librispeech" / "LibriSpeech"
RATE = 16_000
SOURCE_SECONDS = 1.6
# (first utterance, second utterance, second's onset in s) per mixture.
TRAIN = [("101-7311-0000", "102-9268-0000", 1.0), ("104-9541-0000", "101-7311-0001", 0.8),
         ("102-9268-0001", "104-9541-0001", 1.2), ("101-7311-0002", "104-9541-0002", 0.6)]
TEST = [("107-5712-0000", "110-2889-0000", 1.0), ("110-2889-0001", "107-5712-0001", 0.7)]


def write_split(folder: Path, mixtures: list[tuple[str, str, float]],
                extra: tuple[str, float] | None = None) -> dict[str, list[tuple[str, float, float]]]:
    """One split folder of `mixtures`; `extra` (utterance, onset) adds a third source to every mixture.
    Returns recording -> its turns [(speaker, start s, end s)]."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {path.stem: path for path in LIBRISPEECH.rglob("*.flac")}
    lines: dict[str, list[str]] = {name: [] for name in ("wav.scp", "segments", "utt2spk", "reco2dur", "rttm")}
    truth = {}
    for first, second, offset in mixtures:
        sources = [(first, 0.0), (second, offset), *([extra] if extra else [])]
        recording = f"{first}_{second}"
        length = round((max(onset for _, onset in sources) + SOURCE_SECONDS) * RATE)
        mixture = np.zeros(length, dtype=np.float32)
        truth[recording] = []
        for utterance, onset in sources:
            audio = soundfile.read(files[utterance], dtype="float32")[0][:round(SOURCE_SECONDS * RATE)]
            mixture[round(onset * RATE):round(onset * RATE) + len(audio)] += audio
            speaker, end = utterance.split("-")[0], onset + SOURCE_SECONDS
            segment = f"{recording}_{round(onset * 1000):06d}_{round(end * 1000):06d}"
            lines["segments"].append(f"{segment} {recording} {onset:.2f} {end:.2f}")
            lines["utt2spk"].append(f"{segment} {speaker}")
            lines["rttm"].append(f"SPEAKER\t{recording}\t1\t{onset:.2f}\t{SOURCE_SECONDS:.2f}\t<NA>\t<NA>\t{speaker}\t<NA>")
            truth[recording].append((speaker, onset, end))
        wav = (folder / f"{recording}.wav").resolve()
        soundfile.write(wav, mixture, RATE)
        lines["wav.scp"].append(f"{recording} {wav}")
        lines["reco2dur"].append(f"{recording} {length / RATE}")
    for name, content in lines.items():
        (folder / name).write_text("\n".join(content) + "\n")
    return truth


def make_tiny_librimix(root: Path) -> None:
    write_split(root / "train", TRAIN)
    write_split(root / "dev", TEST)
    write_split(root / "test", TEST)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, help="Where train/, dev/ and test/ are written.")
    make_tiny_librimix(parser.parse_args().output_dir)


if __name__ == "__main__":
    main()
