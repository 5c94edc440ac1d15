"""Spoken term detection output and its score: the STD list the QUESST scorer reads, and the maximum
term-weighted value (MTWV), SUPERB's QbE metric.

- `normalise_query_scores`: each query's scores z-normalised over its documents; `YES` above 2, as in
  s3prl (only the actual TWV uses the decision; MTWV sweeps the threshold).
- `write_stdlist`: the `benchmark.stdlist.xml` of s3prl, one `<term>` per (query, document) pair.
- `official_twv`: the scorer shipped in the corpus (`scoring/score-TWV-Cnxe.sh`, a Java program), when
  Java is installed; its actTWV, maxTWV and threshold.
- `python_mtwv`: the standard definition, from the ground truth's RTTM, for machines without Java:
  beta = (C_fa / C_miss)(1 / P_target - 1) = 12.49 (C_miss 100, C_fa 1, P_target 0.0008) and
  TWV(t) = 1 - mean over queries with at least one occurrence of [P_miss(q, t) + beta P_fa(q, t)],
  P_miss = 1 - hits / occurrences, P_fa = false alarms / (documents - occurrences), a trial detected
  when its score >= t; MTWV = max over t (0 when nothing is detected). It has not yet been checked
  against the official scorer on the real corpus (docs/superb.md says where the two may differ).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

YES_THRESHOLD = 2.0
STDLIST_NAME = "benchmark.stdlist.xml"
# Costs and prior of the QUESST scorer (score-TWV-Cnxe.sh).
C_MISS, C_FA, P_TARGET = 100.0, 1.0, 0.0008
BETA = (C_FA / C_MISS) * (1.0 / P_TARGET - 1.0)
# The score the official scorer gives trials missing from the list (s3prl passes -10).
DEFAULT_SCORE = -10
_OFFICIAL_LINE = re.compile(r"actTWV:\s*(\S+)\s+maxTWV:\s*(\S+)\s+Threshold:\s*(\S+)")


def normalise_query_scores(scores: np.ndarray) -> np.ndarray:
    """(queries, documents) raw scores -> each row z-normalised (population std, floored at 1e-9)."""
    mean = scores.mean(axis=1, keepdims=True)
    std = np.clip(scores.std(axis=1, keepdims=True), 1e-9, None)
    return (scores - mean) / std


def write_stdlist(path: Path, query_ids: Sequence[str], document_ids: Sequence[str], scores: np.ndarray) -> Path:
    """The STD list of normalised `scores` (queries, documents): every pair once, in s3prl's layout."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<stdlist termlist_filename="{STDLIST_NAME}" indexing_time="1.00" language="english" '
             'index_size="1" system_id="benchmark">']
    for query_id, row in zip(query_ids, scores):
        lines.append(f'  <detected_termlist termid="{query_id}" term_search_time="1.0" oov_term_count="1">')
        lines.extend(f'    <term file="{document_id}" channel="1" tbeg="0.000" dur="0.00" score="{score:.4f}" '
                     f'decision="{"YES" if score > YES_THRESHOLD else "NO"}"/>'
                     for document_id, score in zip(document_ids, row))
        lines.append("  </detected_termlist>")
    lines.append("</stdlist>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_occurrences(groundtruth: Path) -> set[tuple[str, str]]:
    """{(query id, document id)} of the LEXEME lines of the ground truth's RTTM files."""
    rttms = sorted(Path(groundtruth).glob("*.rttm"))
    if not rttms:
        raise FileNotFoundError(f"No *.rttm in {groundtruth}; it must be the corpus's scoring/groundtruth_quesst14_* "
                                "folder.")
    occurrences = set()
    for rttm in rttms:
        for number, line in enumerate(rttm.read_text(encoding="utf-8").splitlines(), 1):
            fields = line.split()
            if not fields or fields[0] != "LEXEME":
                continue
            if len(fields) < 6:
                raise ValueError(f"{rttm} line {number} is {line!r}; a LEXEME line has the document in field 2 and "
                                 "the query in field 6.")
            occurrences.add((fields[5], fields[1]))
    return occurrences


def python_mtwv(query_ids: Sequence[str], document_ids: Sequence[str], scores: np.ndarray,
                occurrences: set[tuple[str, str]]) -> dict[str, float | int]:
    """MTWV over the (query, document) trials of `scores`, by the definition of the module docstring.

    Returns {"mtwv", "threshold" (the lowest score detected at the maximum; inf when nothing is),
    "queries_scored" (with at least one occurrence among the documents)}.
    """
    truth = np.array([[(q, d) in occurrences for d in document_ids] for q in query_ids], dtype=bool).reshape(
        len(query_ids), len(document_ids))
    occurring = truth.sum(1)
    kept = occurring > 0
    if not kept.any():
        return {"mtwv": 0.0, "threshold": float("inf"), "queries_scored": 0}
    truth, trial_scores, occurring = truth[kept], scores[kept], occurring[kept]
    queries = len(occurring)
    # What detecting each trial adds to TWV: a hit removes 1/occurrences of that query's P_miss, a false
    # alarm adds beta/(documents - occurrences) to its P_fa; averaged over the queries.
    non_occurring = np.maximum(len(document_ids) - occurring, 1)
    gain = np.where(truth, 1.0 / occurring[:, None], -BETA / non_occurring[:, None]) / queries
    flat_scores, flat_gain = trial_scores.ravel(), gain.ravel()
    order = np.argsort(-flat_scores, kind="stable")
    sorted_scores, twv = flat_scores[order], np.cumsum(flat_gain[order])
    # Only thresholds between distinct scores: tied trials are detected together.
    last_of_tie = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    candidates = np.flatnonzero(last_of_tie)
    best = candidates[np.argmax(twv[candidates])]
    if twv[best] <= 0.0:
        return {"mtwv": 0.0, "threshold": float("inf"), "queries_scored": queries}
    return {"mtwv": float(twv[best]), "threshold": float(sorted_scores[best]), "queries_scored": queries}


def official_scorer(scoring_dir: Path) -> Path | None:
    """The corpus's scorer script when it and what it runs (bash, Java, bc) are installed, else None."""
    script = Path(scoring_dir) / "score-TWV-Cnxe.sh"
    installed = all(shutil.which(program) for program in ("bash", "java", "bc"))
    return script if script.is_file() and installed else None


def official_twv(script: Path, stdlist_dir: Path, groundtruth: Path) -> dict[str, float]:
    """Run the official scorer on the folder holding a `benchmark.stdlist.xml`: {"mtwv" (its maxTWV),
    "act_twv", "threshold"}."""
    # The scorer also writes its result to score.out; one left by an earlier run in the same folder must
    # not stand in for this run's when the scorer fails.
    score_file = Path(stdlist_dir) / "score.out"
    score_file.unlink(missing_ok=True)
    result = subprocess.run(["bash", script.name, str(Path(stdlist_dir).resolve()), Path(groundtruth).name,
                             str(DEFAULT_SCORE)], cwd=script.parent, capture_output=True, text=True)
    output = result.stdout + result.stderr
    if score_file.is_file():
        output += score_file.read_text(errors="replace")
    match = _OFFICIAL_LINE.search(output)
    if match is None:
        raise RuntimeError(f"{script} (exit {result.returncode}) printed no 'actTWV: ... maxTWV: ... Threshold: ...' "
                           f"line for {stdlist_dir}; its output ends with:\n{output[-2000:]}\nCheck Java and bc, or "
                           "pass --scorer python.")
    act, best, threshold = (float(value) for value in match.groups())
    return {"mtwv": best, "act_twv": act, "threshold": threshold}
