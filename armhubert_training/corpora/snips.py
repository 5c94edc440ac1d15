"""Audio SNIPS as SUPERB's slot filling (SF) task uses it, in the layout s3prl's preparation writes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import datasets

from ..audio import Skipped, warn_skipped
from .index import files_under, utterance_index

# 16 synthetic voices, each reading every sentence of the corpus; each split is read by its own
# voices (the other voices' files in a split folder are not used).
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
    return snips_index(root, splits, num_workers)[0]


def snips_index(root: str | os.PathLike, splits: Sequence[str],
                num_workers: int | None = None) -> tuple[datasets.Dataset, Skipped]:
    """`snips_dataset`, plus the ids it left out: {"unreadable": [...], "no_targets": [...]}."""
    if not splits:
        raise ValueError("no SNIPS splits given")
    corpus = snips_folder(Path(root))
    transcripts = {}
    try:
        text_lines = (corpus / SNIPS_TRANSCRIPTS).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise ValueError(f"{corpus / SNIPS_TRANSCRIPTS} is not UTF-8 text ({err}); s3prl's preparation writes it "
                         "as UTF-8: prepare the corpus again, or re-save the file as UTF-8.") from err
    for line in text_lines:
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
        paths += [path for path in files_under(split_dir, lambda name: name.endswith(".wav"))
                  if voices is None or path.stem.split("-", 1)[0] in voices]
    no_targets = [path.stem for path in paths if path.stem not in transcripts]
    where = f"{corpus} {list(splits)}"
    warn_skipped(no_targets, len(paths), where, f"without a line in {SNIPS_TRANSCRIPTS}")
    utterances = [(path.stem, str(path), transcripts[path.stem]) for path in paths if path.stem in transcripts]
    index, unreadable = utterance_index(utterances, num_workers, where)
    return index, {"unreadable": unreadable["unreadable"], "no_targets": no_targets}
