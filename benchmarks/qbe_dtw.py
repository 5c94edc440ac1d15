"""Query-by-example matching speed: (query, document) pairs per second of s3prl's way (scipy's cosine
distances and one dtw-python job per pair) and of the batched torch path (armhubert_training/
subsequence_dtw.py), and what that means for SUPERB's full English dev sweep.

Two measurements per device, both on random features of QUESST-like lengths:
  dtw    the DTW alone, from given (query frames x document frames) distance matrices
  pair   the whole match: z-normalised features -> cosine_exp distances, row min-max -> DTW

The reference runs single-threaded, as each of s3prl's worker processes does; the torch path is timed
with one thread (per core) and, with --device cuda, on the GPU.

    python -m benchmarks.qbe_dtw                    # writes benchmarks/results/qbe_dtw_cpu.json
    python -m benchmarks.qbe_dtw --device cuda --output benchmarks/results/qbe_dtw_cuda.json

The projection multiplies the pairs of the English dev sweep (queries x documents x layers) by the
time per pair. The English per-split counts are not published with the corpus description used here:
the defaults split the 2,714 English files like the whole corpus (12,492 documents, 560 dev and 555
eval queries), an estimate the JSON states; pass --queries / --documents when the real counts are known.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from armhubert_training.subsequence_dtw import DocumentChunks, subsequence_dtw
from benchmarks.bench_utils import RESULTS_DIR, command_line, machine_info, time_interleaved, write_json
from benchmarks.tables import qbe_dtw_table

ENGLISH_FILES = 2714
ALL_DOCUMENTS, ALL_DEV_QUERIES, ALL_EVAL_QUERIES = 12_492, 560, 555
_ALL = ALL_DOCUMENTS + ALL_DEV_QUERIES + ALL_EVAL_QUERIES
ESTIMATED_DOCUMENTS = round(ENGLISH_FILES * ALL_DOCUMENTS / _ALL)
ESTIMATED_DEV_QUERIES = round(ENGLISH_FILES * ALL_DEV_QUERIES / _ALL)


def reference_match(query: np.ndarray, document: np.ndarray) -> float:
    """s3prl's score of one pair, computed as s3prl does: (N, D) and (M, D) z-normalised features ->
    -(DTW cost / N), with scipy and dtw-python (the reference; both are development dependencies)."""
    from scipy.spatial.distance import cdist

    distance = np.exp(cdist(query, document, "cosine")) - 1
    low, high = distance.min(1, keepdims=True), distance.max(1, keepdims=True)
    distance = (distance - low) / np.clip(high - low, 1e-9, None)
    return -reference_dtw(distance)


def reference_dtw(cost: np.ndarray) -> float:
    """dtw-python's normalised distance of an (N, M) cost matrix: asymmetric steps, open begin and end."""
    import dtw

    return float(dtw.dtw(cost, step_pattern="asymmetric", keep_internals=False, distance_only=False,
                         open_begin=True, open_end=True).normalizedDistance)


def measure(device: str, query_frames: int, document_frames: int, dim: int, pairs: int, reference_pairs: int,
            repeats: int, seed: int) -> list[dict[str, Any]]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(query_frames, dim, generator=generator)
    # Document lengths spread +-50 % around the mean, as real ones are.
    lengths = torch.randint(document_frames // 2, document_frames * 3 // 2 + 1, (pairs,), generator=generator)
    documents = [torch.randn(int(n), dim, generator=generator) for n in lengths]
    costs = torch.rand(query_frames, pairs, document_frames, generator=generator)

    target = torch.device(device)
    costs_on_device = costs.to(target)
    chunks = DocumentChunks(documents, query_frames, target)
    # What is timed must be the same numbers: the torch path (float32) against the reference's.
    checked = min(reference_pairs, pairs)
    expected = np.array([reference_match(query.numpy(), documents[p].numpy()) for p in range(checked)])
    got = chunks.scores(query.to(target))[:checked].double().cpu().numpy()
    if not np.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise AssertionError(f"the torch path differs from the reference by up to {np.abs(got - expected).max():.2e}")

    # Round-robin, so that the load of a shared machine falls on both paths alike; the fastest call counts.
    seconds = time_interleaved({
        ("reference", "dtw"): lambda: [reference_dtw(costs[:, p].double().numpy()) for p in range(reference_pairs)],
        ("reference", "pair"): lambda: [reference_match(query.numpy(), documents[p].numpy())
                                        for p in range(reference_pairs)],
        ("fast", "dtw"): lambda: subsequence_dtw(costs_on_device),
        ("fast", "pair"): lambda: chunks.scores(query.to(target)),
    }, warmup=1, repeats=repeats, device=target)
    reference = {what: reference_pairs / min(seconds["reference", what]) for what in ("dtw", "pair")}
    fast = {what: pairs / min(seconds["fast", what]) for what in ("dtw", "pair")}
    rows = []
    for what in ("dtw", "pair"):
        rows.append({"what": what, "device": device, "threads": torch.get_num_threads() if device == "cpu" else None,
                     "reference_pairs_per_s": reference[what], "fast_pairs_per_s": fast[what],
                     "speedup": fast[what] / reference[what]})
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="Where the torch path runs: cpu (one thread) or cuda.")
    parser.add_argument("--query-frames", type=int, default=50, help="Query length in frames (20 ms each).")
    parser.add_argument("--document-frames", type=int, default=300, help="Mean document length in frames.")
    parser.add_argument("--dim", type=int, default=768, help="Feature dimension (768: the students' heads).")
    parser.add_argument("--pairs", type=int, default=1024, help="Documents matched per timing by the torch path.")
    parser.add_argument("--reference-pairs", type=int, default=100, help="Pairs timed for the reference.")
    parser.add_argument("--repeats", type=int, default=7, help="Rounds of timings (each path once per round); "
                        "the fastest of each path is kept.")
    parser.add_argument("--queries", type=int, default=ESTIMATED_DEV_QUERIES, help="English dev queries.")
    parser.add_argument("--documents", type=int, default=ESTIMATED_DOCUMENTS, help="English documents.")
    parser.add_argument("--layers", type=int, default=13, help="Layers swept (13: a 12-layer student's "
                                                               "hidden states).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the random features and distances.")
    parser.add_argument("--output", default=None, help="The JSON (default benchmarks/results/qbe_dtw_<device>.json).")
    args = parser.parse_args(argv)

    if args.device == "cpu":
        torch.set_num_threads(1)
    rows = measure(args.device, args.query_frames, args.document_frames, args.dim, args.pairs, args.reference_pairs,
                   args.repeats, args.seed)
    sweep_pairs = args.queries * args.documents * args.layers
    for row in rows:
        row["sweep_reference_hours_per_core"] = sweep_pairs / row["reference_pairs_per_s"] / 3600
        row["sweep_fast_hours"] = sweep_pairs / row["fast_pairs_per_s"] / 3600
    print(qbe_dtw_table(rows))
    setting = {"query_frames": args.query_frames, "document_frames": args.document_frames, "dim": args.dim,
               "sweep": {"queries": args.queries, "documents": args.documents, "layers": args.layers,
                         "counts": "estimated: the 2,714 English files split like the whole corpus"
                         if (args.queries, args.documents) == (ESTIMATED_DEV_QUERIES, ESTIMATED_DOCUMENTS)
                         else "given"}}
    write_json(args.output or RESULTS_DIR / f"qbe_dtw_{args.device.split(':')[0]}.json",
               {"command": command_line(__file__, argv), "machine": machine_info(args.device), "setting": setting,
                "rows": rows})
    return rows


if __name__ == "__main__":
    main()
