"""A folder of class folders, ``<root>/<split>/<label>/<audio file>``: the `audiofolder` layout, read
without `datasets`.

Every audio file under a class folder belongs to that class, at any depth
(``train/101/session2/x.wav`` is class 101). Hidden files and folders (".DS_Store", "._x.wav",
".ipynb_checkpoints") are not part of the corpus. An audio file directly in ``<root>`` has no class: it
is left out, counted as ``no_targets`` and named in a warning.
"""

from __future__ import annotations

from pathlib import Path

from ..audio import Skipped, warn_skipped
from .index import Utterance, files_under

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def folder_utterances(root: Path) -> tuple[list[Utterance], Skipped]:
    """<root>/<label>/.../<file>: every audio file of every class folder, and the audio files outside
    any class folder (left out). Ids are "<label>/<path below the class folder, without suffix>"."""
    entries = sorted(path for path in root.iterdir() if not path.name.startswith("."))
    utterances = [(f"{folder.name}/{path.relative_to(folder).with_suffix('').as_posix()}", str(path), folder.name)
                  for folder in entries if folder.is_dir() for path in _audio_files(folder)]
    unlabelled = [path.name for path in entries if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES]
    warn_skipped(unlabelled, len(utterances) + len(unlabelled), str(root),
                 "that lie outside any class folder, so have no label (move each into <split>/<label>/)")
    return utterances, {"no_targets": unlabelled}


def _audio_files(folder: Path) -> list[Path]:
    """The audio files under `folder` at any depth, sorted, skipping hidden names; a linked folder is
    followed, each real folder read once (a link loop ends)."""
    return files_under(folder, lambda name: Path(name).suffix.lower() in AUDIO_SUFFIXES, skip_hidden=True)
