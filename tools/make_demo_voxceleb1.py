#!/usr/bin/env python3
"""Write a tiny VoxCeleb1 in its download layout from the bundled LibriSpeech audio, for the speaker
verification demo and tests.

  ROOT/dev/wav/id<speaker>/yt/<n>.wav    training: the 3 speakers of train-clean-100 (6 files each)
  ROOT/test/wav/id<speaker>/yt/<n>.wav   test: the speakers of dev-clean and test-clean (4 files each)
  ROOT/veri_test.txt                     6 trials over test/wav, 3 of them same-speaker

16 kHz mono WAV, each file the first --seconds of a bundled utterance (all of them speech, so the
silence removal of SUPERB's recipe keeps most of it).

  python -m tools.make_demo_voxceleb1 ROOT [--seconds 3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import soundfile

LIBRISPEECH = Path(__file__).resolve().parents[1] / "data" / "tiny-librispeech" / "LibriSpeech"
TRAIN_SPEAKERS, TEST_SPEAKERS = ("101", "102", "104"), ("107", "110")
TRIALS = ("1 id107/yt/0000.wav id107/yt/0001.wav", "1 id110/yt/0000.wav id110/yt/0002.wav",
          "0 id107/yt/0000.wav id110/yt/0001.wav", "0 id107/yt/0002.wav id110/yt/0003.wav",
          "1 id107/yt/0002.wav id107/yt/0003.wav", "0 id107/yt/0001.wav id110/yt/0000.wav")


def make_demo_voxceleb1(root: Path, seconds: float = 3.0) -> Path:
    """Write the layout above under `root`; returns `root`."""
    for folder, speakers, count in (("dev/wav", TRAIN_SPEAKERS, 6), ("test/wav", TEST_SPEAKERS, 4)):
        for speaker in speakers:
            for number, flac in enumerate(sorted(LIBRISPEECH.glob(f"*/{speaker}/*/*.flac"))[:count]):
                target = root / folder / f"id{speaker}" / "yt" / f"{number:04d}.wav"
                target.parent.mkdir(parents=True, exist_ok=True)
                audio, rate = soundfile.read(flac, dtype="float32")
                soundfile.write(target, audio[:round(seconds * rate)], rate)
    (root / "veri_test.txt").write_text("\n".join(TRIALS) + "\n")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="Where to write the corpus.")
    parser.add_argument("--seconds", type=float, default=3.0, help="Length of each file (the bundled utterance's "
                                                                   "start).")
    args = parser.parse_args()
    print(make_demo_voxceleb1(args.root, args.seconds))


if __name__ == "__main__":
    main()
