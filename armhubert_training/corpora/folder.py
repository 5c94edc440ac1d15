"""A folder of class folders, ``<root>/<split>/<label>/<audio file>``: the `audiofolder` layout, read
without `datasets`."""

from __future__ import annotations

from pathlib import Path

from .index import Utterance

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def folder_utterances(root: Path) -> list[Utterance]:
    """<root>/<label>/<file>: every audio file of every class folder; ids are "<label>/<file stem>"."""
    return [(f"{folder.name}/{path.stem}", str(path), folder.name)
            for folder in sorted(p for p in root.iterdir() if p.is_dir())
            for path in sorted(folder.iterdir()) if path.suffix.lower() in AUDIO_SUFFIXES]
