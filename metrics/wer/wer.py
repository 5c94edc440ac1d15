"""Word error rate as an `evaluate` metric that loads from this folder, without the Hub.

    evaluate.load("metrics/wer").compute(predictions=["A CAT"], references=["THE CAT"])  # -> 0.5

Corpus-level WER: (substitutions + deletions + insertions) summed over all utterances, divided by
the number of reference words, computed with jiwer. The transcripts are compared as given: normalise
them (case, punctuation) before calling, as run_asr_ctc.py does.
"""

import datasets
import evaluate
import jiwer


class WordErrorRate(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions: list of hypothesis strings; references: list of reference strings.",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://github.com/jitsi/jiwer"],
        )

    def _compute(self, predictions, references) -> float:
        return jiwer.process_words(list(references), list(predictions)).wer
