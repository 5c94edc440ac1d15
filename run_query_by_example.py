#!/usr/bin/env python
"""SUPERB query by example (QbE) of an ArmHubert student: spoken queries searched for in spoken
documents by dynamic time warping of one layer's features, scored as maximum term-weighted value (MTWV).

    python run_query_by_example.py configs/superb/qbe.yaml --model_name_or_path STUDENT \\
        --quesst14_root /data/quesst14Database

No head trains. As SUPERB (s3prl's quesst14_dtw) does: the student runs frozen over every English
document and query of QUESST 2014 (8 kHz audio resampled to 16 kHz, -3 dB gain); for each layer the
features are z-normalised over the frames of the split's queries and all documents, every query is
matched against every document by subsequence DTW (armhubert_training/subsequence_dtw.py), each
query's scores are z-normalised over the documents, and the STD list of all pairs is scored
(armhubert_training/term_detection.py). Every layer is scored on the dev queries; the best one is then
scored on the eval queries, which is the number SUPERB reports.

The scorer: the corpus's own (scoring/score-TWV-Cnxe.sh, a Java program: needs a Java runtime and bc)
when it can run, else this project's Python implementation of the standard MTWV definition, which has
not yet been checked against the official one on the real corpus. The results say which one gave the
number.

Written to --output_dir: features/ (each layer's features, float32, one file per layer),
<split>/layer_<i>/benchmark.stdlist.xml, dev_results.json (every layer's MTWV and the selected layer)
and eval_results.json (the selected layer's; `python -m armhubert_training.superb_report --qbe
OUTPUT_DIR` reads it). A query of fewer than 5 frames (0.1 s), including an empty or unreadable one,
scores 0 against every document, as in s3prl, and is counted; an unreadable document is left out of
the lists, counted and named.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import HfArgumentParser

from armhubert_training.arguments import HelpFormatter, QbeArguments, QbeModelArguments, parse_config_and_args
from armhubert_training.audio import SAMPLING_RATE, AudioError, load_audio
from armhubert_training.corpora.quesst14 import (
    QUESST14_SPLITS,
    quesst14_documents,
    quesst14_groundtruth,
    quesst14_queries,
)
from armhubert_training.input_effects import apply_gain_db
from armhubert_training.student_source import resolve_source
from armhubert_training.subsequence_dtw import MIN_QUERY_FRAMES, DocumentChunks, normalise_features
from armhubert_training.term_detection import (
    STDLIST_NAME,
    normalise_query_scores,
    official_scorer,
    official_twv,
    python_mtwv,
    read_occurrences,
    write_stdlist,
)
from configuration_armhubert import RECEPTIVE_FIELD_SAMPLES
from modeling_armhubert import ArmHubertModel

logger = logging.getLogger("run_query_by_example")

# s3prl loads QUESST with sox: mono, 16 kHz, gain -3 dB.
QUESST_GAIN_DB = -3.0
PYTHON_SCORER_NOTE = ("python: the standard MTWV definition (armhubert_training/term_detection.py), not yet checked "
                      "against the official QUESST scorer on the real corpus")

Item = tuple[str, Path]  # (id, audio path)


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------


def load_student(model_args: QbeModelArguments, output_dir: str, device: torch.device) -> tuple[ArmHubertModel, str]:
    """The frozen student in eval mode, and which features are matched ('hidden_states' or 'projected')."""
    source, config = resolve_source(model_args, output_dir)
    features = model_args.superb_features
    if features == "auto":
        features = "projected" if config.has_projection_heads else "hidden_states"
    if features == "projected" and not config.has_projection_heads:
        raise ValueError(f"--superb_features projected needs a student with distillation heads; "
                         f"{source or model_args.random_student_preset} has none: use hidden_states.")
    config = config.with_overrides(model_args.config_overrides, "--config_overrides")
    model = (ArmHubertModel(config) if source is None else
             ArmHubertModel.from_pretrained(source, config=config, cache_dir=model_args.cache_dir))
    return model.to(device).eval().requires_grad_(False), features


def available_layers(model: ArmHubertModel, features: str) -> list[int]:
    """hidden_states: 0 (the encoder input) .. L; projected: 1 .. L (the head on layer i)."""
    layers = model.config.num_hidden_layers
    return list(range(layers + 1)) if features == "hidden_states" else list(range(1, layers + 1))


class FeatureCache:
    """Every item's features at every layer, one float32 file per layer under `folder` (the corpus's
    features do not fit in memory for all layers at once); `layer(i)` reads one layer back."""

    def __init__(self, folder: Path, layers: list[int]):
        self.folder, self.layers = folder, layers
        self.frames: dict[str, int] = {}
        self.dim: int | None = None

    def _file(self, layer: int) -> Path:
        return self.folder / f"layer_{layer:02d}.f32"

    def fill(self, model: ArmHubertModel, features: str, items: list[Item], device: torch.device) -> list[str]:
        """Run the student over `items`; returns the ids of those that could not be decoded (0 frames)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        files = {layer: self._file(layer).open("wb") for layer in self.layers}
        unreadable = []
        try:
            for item_id, path in items:
                try:
                    waveform = apply_gain_db(load_audio(path, SAMPLING_RATE), QUESST_GAIN_DB)
                except AudioError as err:
                    logger.warning("%s: %s", item_id, err)
                    unreadable.append(item_id)
                    waveform = np.zeros(0, dtype=np.float32)
                if len(waveform) < RECEPTIVE_FIELD_SAMPLES:  # no frame
                    self.frames[item_id] = 0
                    continue
                with torch.no_grad():
                    output = model(torch.from_numpy(waveform)[None].to(device), output_hidden_states=True)
                states = (output.hidden_states if features == "hidden_states"
                          else (None, *output.projected_hidden_states))  # index i = layer i
                for layer, file in files.items():
                    array = states[layer][0].float().cpu().numpy()  # (frames, dim)
                    file.write(np.ascontiguousarray(array).tobytes())
                self.frames[item_id] = len(array)
                self.dim = array.shape[1]
        finally:
            for file in files.values():
                file.close()
        return unreadable

    def layer(self, layer: int, ids: list[str]) -> dict[str, torch.Tensor]:
        """{id: (frames, dim)} of the items `ids` at `layer` (every item was cached in `fill`'s order)."""
        flat = torch.from_numpy(np.fromfile(self._file(layer), dtype=np.float32).reshape(-1, self.dim or 1))
        out, start = {}, 0
        for item_id, count in self.frames.items():
            out[item_id] = flat[start:start + count]
            start += count
        return {item_id: out[item_id] for item_id in ids}


# ----------------------------------------------------------------------------------------------
# Scoring one layer on one split
# ----------------------------------------------------------------------------------------------


def match_layer(queries: list[torch.Tensor], documents: list[torch.Tensor], device: torch.device) -> np.ndarray:
    """(queries, documents) raw scores: z-normalised features, then -(DTW cost / query frames)."""
    normalised = normalise_features(queries + documents)
    queries, documents = normalised[:len(queries)], normalised[len(queries):]
    chunks = DocumentChunks(documents, max(len(q) for q in queries), device)
    return torch.stack([chunks.scores(q) for q in queries]).double().cpu().numpy()


def score_split(scores: np.ndarray, query_ids: list[str], document_ids: list[str], stdlist_dir: Path,
                groundtruth: Path, scorer: Path | None) -> dict[str, Any]:
    """Write the STD list of the raw `scores` and score it: {"mtwv", "threshold", ...}; with the official
    scorer also "act_twv" and the Python MTWV ("python_mtwv")."""
    normalised = normalise_query_scores(scores)
    write_stdlist(stdlist_dir / STDLIST_NAME, query_ids, document_ids, normalised)
    python = python_mtwv(query_ids, document_ids, normalised, read_occurrences(groundtruth))
    if scorer is None:
        return python
    # Both: the Python MTWV beside the official one checks it on the real corpus.
    return {**official_twv(scorer, stdlist_dir, groundtruth), "python_mtwv": python["mtwv"]}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> tuple[QbeModelArguments, QbeArguments]:
    parser = HfArgumentParser((QbeModelArguments, QbeArguments), description=__doc__, formatter_class=HelpFormatter)
    model_args, qbe_args = parse_config_and_args(parser, argv)
    return model_args, qbe_args


def choose_scorer(qbe_args: QbeArguments) -> Path | None:
    """The official scorer script, or None for the Python MTWV."""
    script = official_scorer(Path(qbe_args.quesst14_root) / "scoring")
    if qbe_args.scorer == "official" and script is None:
        raise FileNotFoundError("--scorer official needs the corpus's scoring/score-TWV-Cnxe.sh and a Java runtime "
                                "(java), bash and bc on the PATH; install them, or use --scorer python.")
    return None if qbe_args.scorer == "python" else script


def main(argv: list[str] | None = None) -> dict[str, Any]:
    model_args, qbe_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    device = torch.device(qbe_args.device if qbe_args.device != "auto" else
                          "cuda" if torch.cuda.is_available() else "cpu")
    output_dir = Path(qbe_args.output_dir)

    # Everything a run needs is checked before the hours of work: lists, files, ground truth, scorer.
    root = Path(qbe_args.quesst14_root)
    documents = quesst14_documents(root)
    queries = {split: quesst14_queries(root, split) for split in QUESST14_SPLITS}
    groundtruth = {split: quesst14_groundtruth(root, split) for split in QUESST14_SPLITS}
    scorer = choose_scorer(qbe_args)
    scorer_name = "official" if scorer is not None else PYTHON_SCORER_NOTE
    model, features = load_student(model_args, str(output_dir), device)
    layers = available_layers(model, features)
    if qbe_args.layers:
        unknown = sorted(set(qbe_args.layers) - set(layers))
        if unknown:
            raise ValueError(f"--layers {unknown}: the student's {features} features are the layers {layers}.")
        layers = sorted(set(qbe_args.layers))
    logger.info("QUESST 2014, English: %d documents, %s queries; %s features of layers %s; scorer %s",
                len(documents), {s: len(q) for s, q in queries.items()}, features, layers, scorer_name)

    started = time.perf_counter()
    cache = FeatureCache(output_dir / "features", layers)
    unreadable = set(cache.fill(model, features, documents + queries["dev"] + queries["eval"], device))
    extraction_seconds = time.perf_counter() - started
    document_ids = [d for d, _ in documents if cache.frames[d] > 0]
    left_out = [d for d, _ in documents if cache.frames[d] == 0]
    if left_out:
        logger.warning("Left out %d of %d documents that are unreadable, empty or shorter than %d samples: %s",
                       len(left_out), len(documents), RECEPTIVE_FIELD_SAMPLES, ", ".join(left_out[:5]))
    if not document_ids:
        raise ValueError(f"No usable document in {root}/Audio: every English document was left out (see the "
                         "warnings above).")

    def run_split(split: str, split_layers: list[int]) -> dict[str, Any]:
        query_ids = [q for q, _ in queries[split]]
        short = [q for q in query_ids if cache.frames[q] < MIN_QUERY_FRAMES]
        if short:
            logger.warning("%d of %d %s queries have fewer than %d frames and score 0, as in s3prl: %s", len(short),
                           len(query_ids), split, MIN_QUERY_FRAMES, ", ".join(short[:5]))
        per_layer: dict[str, dict[str, Any]] = {}
        for layer in split_layers:
            layer_started = time.perf_counter()
            features_of = cache.layer(layer, query_ids + document_ids)
            scores = match_layer([features_of[q] for q in query_ids], [features_of[d] for d in document_ids], device)
            matched = time.perf_counter() - layer_started
            result = score_split(scores, query_ids, document_ids, output_dir / split / f"layer_{layer}",
                                 groundtruth[split], scorer)
            per_layer[str(layer)] = {**result, "dtw_seconds": round(matched, 2)}
            logger.info("%s layer %d: MTWV %.4f (%d x %d pairs matched in %.1f s)", split, layer, result["mtwv"],
                        len(query_ids), len(document_ids), matched)
        unreadable_documents = [d for d in left_out if d in unreadable]
        return {"split": split, "features": features, "scorer": scorer_name, "queries": len(query_ids),
                "documents": len(document_ids), "queries_under_5_frames": len(short),
                "queries_unreadable": len(unreadable & set(query_ids)),
                "skipped_files": len(left_out), "skipped_files_unreadable": len(unreadable_documents),
                "skipped_files_too_short": len(left_out) - len(unreadable_documents), "layers": per_layer}

    dev = run_split("dev", layers)
    best = max(layers, key=lambda layer: dev["layers"][str(layer)]["mtwv"])  # the first of equals: the lowest layer
    dev.update(selected_layer=best, feature_extraction_seconds=round(extraction_seconds, 2))
    evaluation = run_split("eval", [best])
    evaluation.update(layer=best, mtwv=evaluation["layers"][str(best)]["mtwv"],
                      dev_mtwv=dev["layers"][str(best)]["mtwv"])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "dev_results.json").write_text(json.dumps(dev, indent=2) + "\n")
    (output_dir / "eval_results.json").write_text(json.dumps(evaluation, indent=2) + "\n")
    logger.info("Best dev layer %d (MTWV %.4f); eval MTWV %.4f (%s)", best, evaluation["dev_mtwv"],
                evaluation["mtwv"], scorer_name)
    return {"dev": dev, "eval": evaluation}


if __name__ == "__main__":
    main()
