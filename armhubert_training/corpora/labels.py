"""The classes of an utterance classification task (`LabelSet`) and the check of a corpus' labels."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Joins the values of a several-slot label: "activate|lights|kitchen".
SLOT_SEPARATOR = "|"


@dataclass(frozen=True)
class LabelSet:
    """The classes of a task: one slot of values, or several slots (intent classification) whose
    label strings join one value per slot with "|" ("activate|lights|kitchen")."""

    slots: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def single(cls, values: Iterable[str]) -> LabelSet:
        return cls((("label", tuple(values)),))

    @property
    def is_multi_slot(self) -> bool:
        return len(self.slots) > 1

    @property
    def num_labels(self) -> int:
        return sum(len(values) for _, values in self.slots)

    def encode(self, label: str) -> list[int]:
        """A label string -> its value index in each slot (raises KeyError for an unknown one)."""
        parts = label.split(SLOT_SEPARATOR) if self.is_multi_slot else [label]
        if len(parts) != len(self.slots) or any(part not in values for part, (_, values) in zip(parts, self.slots)):
            raise KeyError(label)
        return [values.index(part) for part, (_, values) in zip(parts, self.slots)]

    def decode(self, indices: Sequence[int]) -> str:
        """Value indices (one per slot) -> the label string."""
        return SLOT_SEPARATOR.join(values[i] for i, (_, values) in zip(indices, self.slots))

    def unknown(self, labels: Iterable[str]) -> dict[str, int]:
        """label -> count, for the labels that are not in this set."""
        counts: dict[str, int] = {}
        for label in labels:
            try:
                self.encode(label)
            except KeyError:
                counts[label] = counts.get(label, 0) + 1
        return counts

    def absent(self, labels: Iterable[str]) -> list[str]:
        """The classes that none of `labels` has, in class order ("slot=value" when there are several slots)."""
        seen: list[set[int]] = [set() for _ in self.slots]  # per slot, the value indices met
        for label in labels:
            for slot_seen, index in zip(seen, self.encode(label)):
                slot_seen.add(index)
        return [f"{slot}={value}" if self.is_multi_slot else value
                for (slot, values), slot_seen in zip(self.slots, seen)
                for index, value in enumerate(values) if index not in slot_seen]

    def config_fields(self) -> dict[str, Any]:
        """`num_labels`, `id2label`, `label2id` and the slot fields of an ArmHubertConfig for these classes."""
        if self.is_multi_slot:
            names = [f"{slot}={value}" for slot, values in self.slots for value in values]
            slot_names, slot_sizes = [slot for slot, _ in self.slots], [len(values) for _, values in self.slots]
        else:
            names, slot_names, slot_sizes = list(self.slots[0][1]), None, None
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)},
                "classifier_slot_names": slot_names, "classifier_slot_sizes": slot_sizes}

    @classmethod
    def from_config(cls, config) -> LabelSet:
        """The classes of a fine-tuned model, from its config."""
        names = [config.id2label[i] for i in range(config.num_labels)]
        if not config.classifier_slot_names:
            return cls.single(names)
        slots = []
        for slot, block in config.slot_slices:
            slots.append((slot, tuple(name.removeprefix(f"{slot}=") for name in names[block])))
        return cls(tuple(slots))


def check_labels(label_set: LabelSet, labels: Sequence[str], where: str) -> None:
    """Refuse labels outside `label_set`, naming them and the valid ones."""
    unknown = label_set.unknown(labels)
    if unknown:
        shown = ", ".join(f"{label!r} ({count}x)" for label, count in list(unknown.items())[:10])
        valid = [list(values) for _, values in label_set.slots]
        raise ValueError(f"{sum(unknown.values())} label(s) of {where} are outside the label set: {shown}. The "
                         f"classes are {valid[0] if len(valid) == 1 else valid} (fixed by the task, taken from the "
                         "training data, or those of the fine-tuned model). Fix the labels or train on data that "
                         "has these classes.")
