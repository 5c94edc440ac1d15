"""Query-by-example matching as SUPERB scores it (s3prl's `quesst14_dtw`), batched in torch.

For one layer and one query split, the features of every query and every document are
z-normalised with statistics over all their frames together (`normalise_features`); then each query
is matched against each document:

    distance  d(i, j) = exp(1 - cos(q_i, x_j)) - 1, each query frame's row min-max scaled to [0, 1]
    DTW       g(0, j) = d(0, j);  g(i, j) = d(i, j) + min(g(i-1, j), g(i-1, j-1), g(i-1, j-2))
              (the "asymmetric" step pattern, open begin and open end: the match may start and end at
              any document frame)
    score     -min_j g(N-1, j) / N, N = query frames

A query of fewer than `MIN_QUERY_FRAMES` frames scores 0 against every document, as in s3prl.

s3prl runs one dtw-python job per (query, document) pair. Here the distances of one query against a
chunk of length-sorted documents are one matrix product, and the DTW recursion runs row by row over
the query frames for all documents of the chunk at once: each row depends only on the row before it,
so a row is three vector operations over (documents, frames). benchmarks/qbe_dtw.py checks the speed
against dtw-python, tests/test_query_by_example.py the numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

MIN_QUERY_FRAMES = 5
# Floors of s3prl: of the features' standard deviation and of a distance row's range.
_STD_FLOOR = 1e-9
_RANGE_FLOOR = 1e-9
# Elements of the (query frames, documents, document frames) cost tensor of one chunk (float32: 256 MiB).
COST_ELEMENTS_PER_CHUNK = 1 << 26


def normalise_features(features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each (frames, dim) tensor z-normalised per dimension with the mean and (unbiased) standard deviation
    of all frames of all of them (the standard deviation floored at 1e-9). The sums are taken in float64,
    tensor by tensor, so that the frames of a whole corpus are never copied into one tensor."""
    count = sum(len(f) for f in features)
    total = sum(f.double().sum(0) for f in features)
    squares = sum(f.double().square().sum(0) for f in features)
    mean = total / count
    std = ((squares - count * mean.square()).clamp_min(0.0) / max(count - 1, 1)).sqrt().clamp_min(_STD_FLOOR)
    mean, std = mean.to(features[0].dtype), std.to(features[0].dtype)
    return [(f - mean) / std for f in features]


def subsequence_dtw(cost: torch.Tensor) -> torch.Tensor:
    """Open-begin, open-end DTW with the asymmetric step pattern, for many documents against one query.

    Args:
        cost: (N, P, M) local distances of the query's N frames against P documents of up to M frames;
            +inf in a document's padding columns.

    Returns:
        (P,) the normalised distance of each document: min over end frames of the path cost, / N.
    """
    frames, pairs, columns = cost.shape
    # Two +inf columns in front stand for g(i-1, j-1) and g(i-1, j-2) before the first document frame.
    accumulated = torch.full((pairs, columns + 2), float("inf"), dtype=cost.dtype, device=cost.device)
    accumulated[:, 2:] = cost[0]
    best_predecessor = torch.empty(pairs, columns, dtype=cost.dtype, device=cost.device)
    for i in range(1, frames):
        torch.minimum(accumulated[:, 2:], accumulated[:, 1:-1], out=best_predecessor)
        torch.minimum(best_predecessor, accumulated[:, :-2], out=best_predecessor)
        torch.add(best_predecessor, cost[i], out=accumulated[:, 2:])
    return accumulated[:, 2:].amin(1) / frames


def local_distances(query: torch.Tensor, documents: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """s3prl's `cosine_exp` distance with per-row min-max scaling.

    Args:
        query: (N, D) unit-length query frames.
        documents: (P, M, D) unit-length document frames, zero-padded to M.
        lengths: (P,) real frames of each document.

    Returns:
        (N, P, M) distances in [0, 1] per (query frame, document) row; +inf in the padding.
    """
    pairs, columns, dim = documents.shape
    cosine = (query @ documents.reshape(-1, dim).T).view(len(query), pairs, columns)
    distance = torch.exp(1.0 - cosine) - 1.0
    padding = torch.arange(columns, device=query.device) >= lengths[:, None]  # (P, M)
    low = distance.masked_fill(padding, float("inf")).amin(-1, keepdim=True)
    high = distance.masked_fill(padding, float("-inf")).amax(-1, keepdim=True)
    scaled = (distance - low) / (high - low).clamp_min(_RANGE_FLOOR)
    return scaled.masked_fill_(padding, float("inf"))


def _unit(features: torch.Tensor) -> torch.Tensor:
    return features / features.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(features.dtype).tiny)


class DocumentChunks:
    """The documents of one layer, length-sorted and padded into chunks, ready to be matched.

    Args:
        documents: (frames, D) normalised features of each document (none empty).
        max_query_frames: the longest query, which sizes the chunks' cost tensors.
        device: where the chunks are kept and matched.
    """

    def __init__(self, documents: Sequence[torch.Tensor], max_query_frames: int, device: torch.device | str):
        order = sorted(range(len(documents)), key=lambda k: len(documents[k]))
        self.chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (indices, (P, M, D), (P,))
        self.count = len(documents)
        start = 0
        while start < len(order):
            stop = start + 1
            # Sorted: the chunk's longest document is its last one.
            while (stop < len(order) and (stop + 1 - start) * len(documents[order[stop]]) * max_query_frames
                   <= COST_ELEMENTS_PER_CHUNK):
                stop += 1
            members = order[start:stop]
            padded = torch.nn.utils.rnn.pad_sequence([_unit(documents[k]) for k in members], batch_first=True)
            lengths = torch.tensor([len(documents[k]) for k in members])
            self.chunks.append((torch.tensor(members, device=device), padded.to(device), lengths.to(device)))
            start = stop

    def scores(self, query: torch.Tensor) -> torch.Tensor:
        """(documents,) score of `query` ((N, D) normalised features) against every document, in the
        order given: -(DTW path cost / N); 0 for a query of fewer than MIN_QUERY_FRAMES frames."""
        device = self.chunks[0][1].device if self.chunks else query.device
        out = torch.zeros(self.count, dtype=query.dtype, device=device)
        if len(query) < MIN_QUERY_FRAMES:
            return out
        unit_query = _unit(query.to(device))
        for indices, padded, lengths in self.chunks:
            out[indices] = -subsequence_dtw(local_distances(unit_query, padded, lengths))
        return out
