"""Character error rate as an `evaluate` metric that loads from this folder, without the Hub.

    evaluate.load("metrics/cer").compute(predictions=["A CAT"], references=["A CAR"])  # -> 0.2

Corpus-level CER: character edits summed over all utterances, divided by the number of reference
characters (spaces between words count as characters), computed with jiwer.
"""

import datasets
import evaluate
import jiwer


class CharacterErrorRate(evaluate.Metric):
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
        return jiwer.process_characters(list(references), list(predictions)).cer
