"""LibriSpeech in its original layout: the corpus of distillation and of SUPERB's ASR and PR tasks."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import datasets

from ..audio import Skipped, header_durations, warn_skipped
from .index import files_under

logger = logging.getLogger(__name__)

LIBRISPEECH_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "path": datasets.Value("string"),
        "duration": datasets.Value("float64"),
        "text": datasets.Value("string"),
        "speaker_id": datasets.Value("int64"),
    }
)
# Why a split the reader found empty is empty, for `index.check_not_empty`.
NO_UTTERANCES = "it holds no utterances (no <speaker>/<chapter>/*.trans.txt transcripts in it)."


def librispeech_folder(root: Path) -> Path:
    """The LibriSpeech folder of `root` (the folder holding LibriSpeech/, or LibriSpeech/ itself)."""
    if (root / "LibriSpeech").is_dir():
        return root / "LibriSpeech"
    if root.is_dir():
        return root
    raise FileNotFoundError(
        f"LibriSpeech root {root} does not exist; pass the folder that contains LibriSpeech/ (or LibriSpeech/ itself)."
    )


def librispeech_dataset(
    root: str | os.PathLike, splits: Sequence[str], num_workers: int | None = None
) -> datasets.Dataset:
    """Index a local LibriSpeech folder in its original layout.

    Expects ``<root>/LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac``
    next to ``<speaker>-<chapter>.trans.txt`` (one "ID TRANSCRIPT" line per
    utterance); `root` may also be the ``LibriSpeech`` folder itself. Only file
    headers are read. Utterances whose file is missing, unreadable or empty are
    skipped and reported in one warning; so are utterances whose transcript line
    is not UTF-8 text (the rest of their chapter is kept). A chapter whose
    transcript cannot be read at all is skipped with a warning naming it.

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
    return librispeech_index(root, splits, num_workers)[0]


def librispeech_index(
    root: str | os.PathLike, splits: Sequence[str], num_workers: int | None = None
) -> tuple[datasets.Dataset, Skipped]:
    """`librispeech_dataset`, plus the ids it left out: {"unreadable": [...], "transcript_unreadable": [...]}."""
    if not splits:
        raise ValueError("no LibriSpeech splits given")
    corpus = librispeech_folder(Path(root))
    utterances: list[tuple[str, str, str]] = []  # (id, path, text)
    skipped: Skipped = {"unreadable": [], "transcript_unreadable": []}
    undecodable_lines: list[str] = []  # "<id> (<transcript>:<line>)"
    for split in splits:
        split_dir = corpus / split
        if not split_dir.is_dir():
            found = sorted(p.name for p in corpus.iterdir() if p.is_dir())
            raise FileNotFoundError(
                f"LibriSpeech split {split!r} not found: {split_dir} does not exist. "
                f"Splits found in {corpus}: {found or 'none'}."
            )
        for transcript in files_under(split_dir, lambda name: name.endswith(".trans.txt"), depth=2):
            try:
                lines = transcript.read_bytes().splitlines()
            except OSError as err:
                # Like an unreadable audio file: the chapter is left out, the run goes on.
                lost = sorted(path.stem for path in transcript.parent.glob("*.flac"))
                skipped["transcript_unreadable"].extend(lost)
                logger.warning(
                    "Skipped chapter %s (%d audio files): its transcript %s cannot be read (%s).",
                    transcript.parent, len(lost), transcript, err,
                )
                continue
            for number, raw in enumerate(lines, start=1):
                # Decoded line by line: a stray byte in another encoding costs its utterance, not the chapter.
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    utt_id = raw.split(maxsplit=1)[0].decode("utf-8", errors="replace")
                    skipped["transcript_unreadable"].append(utt_id)
                    undecodable_lines.append(f"{utt_id} ({transcript}:{number})")
                    continue
                if line:
                    utt_id, _, text = line.partition(" ")
                    utterances.append((utt_id, str(transcript.parent / f"{utt_id}.flac"), text))
    where = f"{corpus} {list(splits)}"
    warn_skipped(undecodable_lines, len(utterances) + len(undecodable_lines), where,
                 "whose transcript line is not UTF-8 text (re-save the *.trans.txt as UTF-8 to use them)")

    durations = header_durations([path for _, path, _ in utterances], num_workers)

    columns: dict[str, list] = {name: [] for name in LIBRISPEECH_FEATURES}
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
    warn_skipped(unreadable_files, len(utterances), where)
    return datasets.Dataset.from_dict(columns, features=LIBRISPEECH_FEATURES), skipped
