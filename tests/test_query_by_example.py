"""Query by example: the DTW against dtw-python, MTWV against a hand-computed toy, and a whole run on a
tiny QUESST 2014 layout written from the bundled audio."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import resample_poly

from armhubert_training.corpora.quesst14 import quesst14_documents, quesst14_queries
from armhubert_training.subsequence_dtw import DocumentChunks, local_distances, normalise_features, subsequence_dtw
from armhubert_training.term_detection import normalise_query_scores, official_twv, python_mtwv, write_stdlist
from benchmarks.qbe_dtw import reference_dtw, reference_match
from conftest import LIBRISPEECH

# ----------------------------------------------------------------------------------------------
# DTW and distances against dtw-python and scipy
# ----------------------------------------------------------------------------------------------


def test_dtw_equals_dtw_python_worked_example():
    # dtw-python's own open-begin/open-end test: query [2.01, 3.01] in [1, 2, 3, 4], |x - y|:
    # the match ends at the reference's third value, distance 0.02, normalised 0.01.
    cost = torch.tensor([[abs(q - r) for r in (1.0, 2.0, 3.0, 4.0)] for q in (2.01, 3.01)], dtype=torch.float64)
    assert subsequence_dtw(cost[:, None, :]).item() == pytest.approx(0.01, abs=1e-12)
    assert reference_dtw(cost.numpy()) == pytest.approx(0.01, abs=1e-12)


def test_dtw_equals_dtw_python_on_random_matrices():
    generator = torch.Generator().manual_seed(0)
    for query_frames, columns in [(1, 1), (1, 7), (5, 1), (7, 3), (30, 80), (80, 30)]:
        costs = torch.rand(query_frames, 6, columns, generator=generator, dtype=torch.float64)
        expected = [reference_dtw(costs[:, p].numpy()) for p in range(6)]
        assert subsequence_dtw(costs).tolist() == pytest.approx(expected, rel=1e-12)


def test_batched_match_equals_s3prl_per_pair_with_padding_and_chunks(monkeypatch):
    # Documents of different lengths, several chunks (a tiny chunk budget): padding must not leak.
    monkeypatch.setattr("armhubert_training.subsequence_dtw.COST_ELEMENTS_PER_CHUNK", 20 * 40 * 3)
    generator = torch.Generator().manual_seed(1)
    documents = [torch.randn(n, 16, generator=generator, dtype=torch.float64) for n in (40, 3, 17, 25, 1, 9, 33)]
    query = torch.randn(20, 16, generator=generator, dtype=torch.float64)
    chunks = DocumentChunks(documents, len(query), "cpu")
    assert len(chunks.chunks) > 1
    expected = [reference_match(query.numpy(), d.numpy()) for d in documents]
    assert chunks.scores(query).tolist() == pytest.approx(expected, rel=1e-9)


def test_s3prl_toy_match():
    # The toy of s3prl's match() worked out by hand: cosine_exp, row min-max, then the path 0->1, 1->2
    # of cost 0.0525 over 2 query frames.
    query = torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    document = torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.7, 0.7], [-1.0, 0.0]], dtype=torch.float64)
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    distances = local_distances(unit(query), unit(document)[None], torch.tensor([4]))
    assert distances[:, 0].tolist() == [pytest.approx(row, abs=1e-4) for row in
                                        ([0.8497, 0, 0.1957, 1], [0, 0.2280, 0.0525, 1])]
    assert -subsequence_dtw(distances).item() == pytest.approx(-0.0263, abs=1e-4)


def test_short_query_scores_zero():
    documents = [torch.randn(10, 4), torch.randn(12, 4)]
    assert DocumentChunks(documents, 4, "cpu").scores(torch.randn(4, 4)).tolist() == [0.0, 0.0]


def test_minus_3_db_gain_as_sox_applies_it():
    from armhubert_training.input_effects import apply_gain_db

    # sox gain -3: amplitude x 10^(-3/20) = 0.70795.
    assert apply_gain_db(np.array([1.0, -0.5], dtype=np.float32), -3.0).tolist() == pytest.approx([0.70795, -0.35397],
                                                                                                 abs=1e-5)


def test_feature_normalisation_over_all_frames():
    features = [torch.randn(7, 3) * 5 + 2, torch.randn(11, 3)]
    stacked = torch.cat(normalise_features(features))
    assert stacked.mean(0).abs().max() < 1e-5 and (stacked.std(0) - 1).abs().max() < 1e-5


# ----------------------------------------------------------------------------------------------
# MTWV and the STD list
# ----------------------------------------------------------------------------------------------

TOY_QUERIES, TOY_DOCUMENTS = ["q1", "q2"], ["d1", "d2", "d3", "d4", "d5"]
TOY_SCORES = np.array([[2.5, 0.3, -0.1, -1.0, 0.9], [0.2, 1.8, 2.2, -0.5, -1.2]])
TOY_OCCURRENCES = {("q1", "d1"), ("q2", "d3"), ("q2", "d5")}


def test_mtwv_equals_the_hand_computed_toy():
    # beta = 12.49. Detect >= 2.5: q2 misses both (P_miss 1): TWV 0.5; >= 2.2: q2 finds 1 of 2: 0.75;
    # >= 1.8: q2 adds a false alarm (12.49 / 3): -1.33. The maximum is 0.75 at 2.2.
    result = python_mtwv(TOY_QUERIES, TOY_DOCUMENTS, TOY_SCORES, TOY_OCCURRENCES)
    assert result["mtwv"] == pytest.approx(0.75)
    assert result["threshold"] == 2.2 and result["queries_scored"] == 2
    # A query without occurrences does not count.
    with_unseen = python_mtwv(TOY_QUERIES + ["q3"], TOY_DOCUMENTS, np.vstack([TOY_SCORES, np.full(5, 9.0)]),
                              TOY_OCCURRENCES)
    assert with_unseen["mtwv"] == pytest.approx(0.75)


def test_official_scorer_is_run_as_superb_runs_it_and_its_line_parsed(tmp_path):
    # A stand-in for the corpus's score-TWV-Cnxe.sh: checks its arguments, prints the real one's line.
    scoring = tmp_path / "scoring"
    (scoring / "groundtruth_quesst14_dev").mkdir(parents=True)
    script = scoring / "score-TWV-Cnxe.sh"
    script.write_text('[ "$PWD" = "%s" ] && [ -d "$1" ] && [ "$2" = groundtruth_quesst14_dev ] && [ "$3" = -10 ] || '
                      'exit 3\necho "actTWV: 0.40079603  maxTWV: 0.41911224  Threshold: 5.2125"\n' % scoring)
    (tmp_path / "lists").mkdir()
    result = official_twv(script, tmp_path / "lists", scoring / "groundtruth_quesst14_dev")
    assert result == {"mtwv": 0.41911224, "act_twv": 0.40079603, "threshold": 5.2125}
    # A failing scorer is an error, even where an earlier run left its score.out in the same folder.
    script.write_text("exit 1\n")
    (tmp_path / "lists" / "score.out").write_text("actTWV: 0.1  maxTWV: 0.2  Threshold: 3.0\n")
    with pytest.raises(RuntimeError, match="maxTWV"):
        official_twv(script, tmp_path / "lists", scoring / "groundtruth_quesst14_dev")


def test_query_score_normalisation_and_stdlist(tmp_path):
    normalised = normalise_query_scores(TOY_SCORES)
    row = TOY_SCORES[0]
    assert normalised[0] == pytest.approx((row - row.mean()) / row.std())
    path = write_stdlist(tmp_path / "benchmark.stdlist.xml", TOY_QUERIES, TOY_DOCUMENTS, normalised)
    terms = {(termlist.get("termid"), term.get("file")): term
             for termlist in ElementTree.parse(path).getroot() for term in termlist}
    assert len(terms) == 10
    assert terms["q1", "d1"].get("score") == f"{normalised[0, 0]:.4f}"
    assert [key for key, term in terms.items() if term.get("decision") == "YES"] == [
        key for key, value in zip(terms, normalised.ravel()) if value > 2]


# ----------------------------------------------------------------------------------------------
# A tiny QUESST 2014 layout from the bundled audio: each query cut from one document
# ----------------------------------------------------------------------------------------------

RATE = 8000
QUERY_SOURCES = {"quesst14_dev_0001": 0, "quesst14_dev_0002": 1, "quesst14_eval_0001": 2}


def _write(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, subtype="PCM_16")


def make_quesst(root: Path) -> Path:
    """quesst14Database/ with 4 English documents (one of them at 16 kHz), one Czech document and query,
    3 queries each cut from one document, one query too short to have 5 frames, an empty one, and the
    ground truth."""
    corpus = root / "quesst14Database"
    files = sorted((LIBRISPEECH / "train-clean-100").rglob("*.flac"))[:5]
    documents = [resample_poly(soundfile.read(f, dtype="float32")[0][:48000], 1, 2) for f in files]  # 3 s, 8 kHz
    for k, samples in enumerate(documents):
        if k == 1:  # another sample rate: resampled on load
            _write(corpus / "Audio" / "quesst14_00002.wav", resample_poly(samples, 2, 1), 16000)
        else:
            _write(corpus / "Audio" / f"quesst14_{k + 1:05d}.wav", samples)
    lines = {"utterances": [f"quesst14Database/Audio/quesst14_{k + 1:05d}.wav nnenglish" for k in range(4)] +
             ["quesst14Database/Audio/quesst14_00005.wav czech"], "dev": [], "eval": []}
    for query, source in QUERY_SOURCES.items():
        split = query.split("_")[1]
        _write(corpus / f"{split}_queries" / f"{query}.wav", documents[source][4000:10400])  # 0.8 s
        lines[split].append(f"quesst14Database/{split}_queries/{query}.wav nnenglish")
    _write(corpus / "dev_queries" / "quesst14_dev_0003.wav", documents[0][:600])  # 75 ms: < 5 frames
    _write(corpus / "dev_queries" / "quesst14_dev_0004.wav", documents[4][:8000])
    _write(corpus / "dev_queries" / "quesst14_dev_0005.wav", np.zeros(0, dtype=np.float32))
    lines["dev"] += ["quesst14Database/dev_queries/quesst14_dev_0003.wav nnenglish",
                     "quesst14Database/dev_queries/quesst14_dev_0004.wav czech",
                     "quesst14Database/dev_queries/quesst14_dev_0005.wav nnenglish"]
    (corpus / "scoring").mkdir()
    for name, entries in lines.items():
        (corpus / "scoring" / f"language_key_{name}.lst").write_text("\n".join(entries) + "\n")
    for split in ("dev", "eval"):
        truth = corpus / "scoring" / f"groundtruth_quesst14_{split}"
        truth.mkdir()
        (truth / f"quesst14_{split}.rttm").write_text("".join(
            f"LEXEME quesst14_{source + 1:05d} 1 0.50 0.80 {query} <NA> <NA> <NA>\n"
            for query, source in QUERY_SOURCES.items() if split in query))
    return corpus


@pytest.fixture(scope="module")
def quesst(tmp_path_factory) -> Path:
    return make_quesst(tmp_path_factory.mktemp("quesst"))


def test_reader_keeps_english_entries_only(quesst):
    assert [d for d, _ in quesst14_documents(quesst)] == [f"quesst14_{k:05d}" for k in range(1, 5)]
    assert [q for q, _ in quesst14_queries(quesst, "dev")] == ["quesst14_dev_0001", "quesst14_dev_0002",
                                                               "quesst14_dev_0003", "quesst14_dev_0005"]


def test_missing_list_or_listed_file_stops_naming_it(tmp_path):
    corpus = make_quesst(tmp_path)
    (corpus / "Audio" / "quesst14_00003.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"quesst14_00003\.wav.*language_key_utterances\.lst line 3"):
        quesst14_documents(corpus)
    (corpus / "scoring" / "language_key_eval.lst").unlink()
    with pytest.raises(FileNotFoundError, match=r"language_key_eval\.lst"):
        quesst14_queries(corpus, "eval")
    # A list without English lines would only fail after hours of feature extraction.
    (corpus / "scoring" / "language_key_dev.lst").write_text("quesst14Database/dev_queries/quesst14_dev_0004.wav czech\n")
    with pytest.raises(ValueError, match=r"language_key_dev\.lst lists no nnenglish entries"):
        quesst14_queries(corpus, "dev")


def test_run_finds_each_query_in_its_document(quesst, student_dir, tmp_path):
    import run_query_by_example

    output = tmp_path / "qbe"
    results = run_query_by_example.main([
        "configs/superb/qbe.yaml", "--model_name_or_path", str(student_dir), "--quesst14_root", str(quesst),
        "--superb_features", "hidden_states", "--scorer", "python", "--device", "cpu",
        "--output_dir", str(output)])
    dev, evaluation = (json.loads((output / f"{s}_results.json").read_text()) for s in ("dev", "eval"))
    assert results["dev"] == dev and sorted(dev["layers"]) == ["0", "1", "2", "3", "4"]
    # The too-short and the empty query score 0, counted; the empty one also as unreadable.
    assert dev["queries"] == 4 and dev["documents"] == 4 and dev["queries_under_5_frames"] == 2
    assert dev["queries_unreadable"] == 1 and dev["skipped_files"] == 0
    assert evaluation["layer"] == dev["selected_layer"] and evaluation["scorer"].startswith("python")
    assert dev["selected_layer"] == max(range(5), key=lambda layer: dev["layers"][str(layer)]["mtwv"])

    documents = [f"quesst14_{k:05d}" for k in range(1, 5)]
    found_at_some_layer = {query: False for query in QUERY_SOURCES}
    for split, layers in (("dev", range(5)), ("eval", [evaluation["layer"]])):
        for layer in layers:
            text = (output / split / f"layer_{layer}" / "benchmark.stdlist.xml").read_text()
            pairs = re.findall(r'termid="(\w+)"|file="(\w+)" channel="1" tbeg="0.000" dur="0.00" score="([-\d.]+)"',
                               text)
            scores, query = {}, None
            for termid, document, score in pairs:
                if termid:
                    query = termid
                else:
                    scores[query, document] = float(score)
            short = ["quesst14_dev_0003", "quesst14_dev_0005"] if split == "dev" else []
            queries = [q for q in QUERY_SOURCES if split in q] + short
            # Every English pair once, nothing else (no Czech document or query).
            assert sorted(scores) == sorted((q, d) for q in queries for d in documents)
            assert len(pairs) == len(queries) * (len(documents) + 1)
            assert all(scores[q, d] == 0.0 for q in short for d in documents)
            for query in queries:
                if query in QUERY_SOURCES:
                    best = max(documents, key=lambda d: scores[query, d])
                    found_at_some_layer[query] |= best == documents[QUERY_SOURCES[query]]
    assert all(found_at_some_layer.values()), found_at_some_layer

    # The report reads the eval MTWV of the run.
    from armhubert_training import superb_report

    rows = superb_report.main(["--name", "mine", "--qbe", str(output), "--no-published"])
    assert rows["mine"]["qbe"] == evaluation["mtwv"]
