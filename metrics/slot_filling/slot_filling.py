"""SUPERB's slot filling metrics as an `evaluate` metric that loads from this folder, without the Hub.

    evaluate.load("metrics/slot_filling").compute(
        predictions=["PLAY B-artist FRANK SINATRO E-artist ON SPOTIFY"],
        references=["PLAY B-artist FRANK SINATRA E-artist ON B-service SPOTIFY E-service"])
    # -> {"slot_type_f1": 0.667, "slot_value_cer": 8 / 20}

Each string is a decoded slot filling transcript: words, and each slot value wrapped as
"B-<slot> VALUE E-<slot>". Runs of spaces count as one. Per utterance the values are gathered by slot
(a slot may have several values); from a hypothesis value, nested tags are removed.

slot_type_f1: per utterance, the F1 of the SET of slot types of the hypothesis against that of the
reference (values and repetitions ignored): 1 when both have none, 0 when only one has none, else
2PR/(P+R) with P = share of hypothesis types in the reference, R = share of reference types in the
hypothesis. The result is the plain mean over utterances (a fraction; SUPERB reports it x100).

slot_value_cer: every reference value is paired with the hypothesis value of the same slot type that
has the lowest character error rate against it (the first such one; one hypothesis value may serve
several reference values), or with "" when the hypothesis lacks that type; hypothesis slots of other
types are ignored. The result is the character edits summed over all pairs of all utterances divided
by the summed length of the reference values (spaces count; NaN when the references hold no slot).
"""

import re

import datasets
import evaluate
from rapidfuzz.distance import Levenshtein

_SPAN = re.compile(r"B-(\S+) (.+?) E-\1")
_NESTED_TAGS = re.compile(r"B-\S+ | E-\S+")


def slot_values(text: str, remove_nested_tags: bool) -> dict[str, list[str]]:
    """Slot type -> its values in the order they occur in `text`."""
    values: dict[str, list[str]] = {}
    for slot, value in _SPAN.findall(re.sub(r" +", " ", text)):
        values.setdefault(slot, []).append(_NESTED_TAGS.sub("", value) if remove_nested_tags else value)
    return values


def type_f1(hypothesis: dict[str, list[str]], reference: dict[str, list[str]]) -> float:
    if not hypothesis or not reference:
        return float(not hypothesis and not reference)
    precision = sum(slot in reference for slot in hypothesis) / len(hypothesis)
    recall = sum(slot in hypothesis for slot in reference) / len(reference)
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def value_errors(hypothesis: dict[str, list[str]], reference: dict[str, list[str]]) -> tuple[int, int]:
    """(character edits, reference characters) over the reference values of one utterance."""
    edits = length = 0
    for slot, values in reference.items():
        for value in values:
            candidates = hypothesis.get(slot, [""])
            # Against one reference value, the lowest CER is the lowest edit count.
            edits += min(Levenshtein.distance(candidate, value) for candidate in candidates)
            length += len(value)
    return edits, length


class SlotFilling(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=__doc__,
            citation="",
            inputs_description="predictions: list of decoded hypotheses with slot tags; references: the same "
                               "for the reference transcripts.",
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string")}),
            reference_urls=["https://github.com/s3prl/s3prl"],
        )

    def _compute(self, predictions, references) -> dict[str, float]:
        f1s, edits, length = [], 0, 0
        for prediction, reference in zip(predictions, references):
            hypothesis_slots = slot_values(prediction, remove_nested_tags=True)
            reference_slots = slot_values(reference, remove_nested_tags=False)
            f1s.append(type_f1(hypothesis_slots, reference_slots))
            utterance_edits, utterance_length = value_errors(hypothesis_slots, reference_slots)
            edits, length = edits + utterance_edits, length + utterance_length
        return {"slot_type_f1": sum(f1s) / len(f1s) if f1s else float("nan"),
                "slot_value_cer": edits / length if length else float("nan")}
