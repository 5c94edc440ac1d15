"""QUESST 2014 as SUPERB's query-by-example task (QbE) reads it: the English entries of the corpus's
language lists, in its download layout (docs/superb.md, "Query by example").

    quesst14Database/
      Audio/quesst14_NNNNN.wav              search documents (8 kHz)
      dev_queries/quesst14_dev_NNNN.wav     queries of the dev split
      eval_queries/quesst14_eval_NNNN.wav   queries of the eval split
      scoring/language_key_utterances.lst   '<relative path> <language>' per document
      scoring/language_key_{dev,eval}.lst   the same per query
      scoring/groundtruth_quesst14_{dev,eval}/   what the scorer compares against

A list's paths start with the corpus folder's own name (`quesst14Database/Audio/...`): that first
component is replaced by the root given. Only lines of the language `nnenglish` are read, as SUPERB
does. Every list and every listed English file must exist: a run takes hours, so a missing one stops
it at start-up, named.
"""

from __future__ import annotations

from pathlib import Path

from .index import require_dir

QUESST14_SPLITS = ("dev", "eval")
ENGLISH = "nnenglish"
DOCUMENT_LIST = "language_key_utterances.lst"


def _english_entries(root: Path, list_name: str) -> list[tuple[str, Path]]:
    """(id, audio path) of every English line of scoring/`list_name`; the id is the file name without
    its suffix (quesst14_00001, quesst14_dev_0001)."""
    list_file = require_dir(root, "QUESST 2014 folder") / "scoring" / list_name
    if not list_file.is_file():
        raise FileNotFoundError(f"QUESST 2014 list {list_file} not found; --quesst14_root must be the extracted "
                                "quesst14Database folder, with scoring/language_key_*.lst.")
    entries = []
    for number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or "/" not in parts[0]:
            raise ValueError(f"{list_file} line {number} is {line!r}; expected '<corpus folder>/<relative path> "
                             "<language>', e.g. 'quesst14Database/Audio/quesst14_00001.wav nnenglish'.")
        relative, language = parts
        if language != ENGLISH:
            continue
        path = root / relative.split("/", 1)[1]
        if not path.is_file():
            raise FileNotFoundError(f"{path}, listed in {list_file} line {number}, does not exist; the corpus is "
                                    "incomplete: extract quesst14Database.tgz again.")
        entries.append((path.stem, path))
    if not entries:
        raise ValueError(f"{list_file} lists no {ENGLISH} entries; SUPERB's QbE uses the English part of QUESST "
                         "2014 only, so check that this is the corpus's own list.")
    return entries


def quesst14_documents(root: Path) -> list[tuple[str, Path]]:
    """The English search documents: (id, path) in list order."""
    return _english_entries(Path(root), DOCUMENT_LIST)


def quesst14_queries(root: Path, split: str) -> list[tuple[str, Path]]:
    """The English queries of `split` ("dev" or "eval"): (id, path) in list order."""
    if split not in QUESST14_SPLITS:
        raise ValueError(f"QUESST 2014 has the query splits {list(QUESST14_SPLITS)}, not {split!r}.")
    return _english_entries(Path(root), f"language_key_{split}.lst")


def quesst14_groundtruth(root: Path, split: str) -> Path:
    """The scorer's ground-truth folder of `split` (scoring/groundtruth_quesst14_<split>/)."""
    return require_dir(Path(root) / "scoring" / f"groundtruth_quesst14_{split}", f"QUESST 2014 {split} ground truth")
